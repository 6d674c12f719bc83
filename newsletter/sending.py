"""The send use case: everything `newsletter send` decides, for the CLI, a scheduler or workers.

A send is decided in the order a user needs it, cheap and certain things first, so that a missing
SMTP password is reported before a 20-second content check:

1. settings, the issue's folder, the unsubscribe signing secret, the transport (its password or
   API key, via `make_transport`) and whether it is reachable (`transport.check()`), the DKIM key
   when `[dkim]` is set and the transport delivers our MIME bytes as they are;
2. the content check (`checks.check_issue`): errors stop the send unless forced
   (`CheckFailedError` carries the findings, so the caller can show them);
3. the plan (`plan_send`): what will be sent, how many are subscribed, how far an earlier run got,
   whether the content changed since the send started;
4. delivery (`deliver`): the audience is frozen and every recipient sent at most once
   (`delivery.sender.send_issue`), resumably.

Also the test send (`send_test_copies`: reviewers validated, nothing recorded) and the dry run
(`rehearse`). Nothing here prints, prompts, installs signal handlers or keeps global state: the
caller shows the plan, asks, and passes a stop event and a progress callback; collaborators (the
environment, the transport factory, the content checker) are arguments, so a long-running
process and several workers can call it side by side.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .audience import Subscriber, SubscriberStatus, SubscriberStore
from .audience.tokenbook import opaque_token_maker
from .checks import check_issue
from .checks.model import CheckReport
from .config import Settings, parse_address
from .content import Issue, load_issue, resolve_issue_folder
from .delivery.ledger import Ledger, State
from .delivery.message import MessageTemplate
from .delivery.mime import list_identifier
from .delivery.ratelimit import RateLimiter
from .delivery.sender import (
    DryRunReport,
    SendOptions,
    SendProgress,
    SendReport,
    StoreAudience,
    TestSendResult,
    dry_run,
    send_issue,
    send_test,
)
from .delivery.transports import describe_transport, make_transport
from .delivery.transports.base import Transport
from .dkim import signer_from_settings
from .errors import ConfigError, Problem, ProjectError
from .inbox.process import apply_refusals
from .render import render_issue
from .render.model import RenderedIssue

__all__ = [
    "CheckFailedError",
    "Checker",
    "Rehearsal",
    "SendPlan",
    "SendRequest",
    "TransportFactory",
    "deliver",
    "plan_send",
    "rehearse",
    "send_test_copies",
    "signing_secret",
]

TransportFactory = Callable[[Settings, Mapping[str, str]], Transport]


class Checker(Protocol):
    """Checks an issue before it is sent (`checks.check_issue` fits)."""

    def __call__(
        self, issue: Issue, rendered: RenderedIssue, settings: Settings, *, offline: bool
    ) -> CheckReport: ...


@dataclass(frozen=True)
class SendRequest:
    """What the user asked for (the options of `newsletter send`)."""

    issue: str
    link_check: bool = True
    force: bool = False
    retry_failed: bool = False
    resend_uncertain: bool = False
    wait_for_deferred: bool = True


class CheckFailedError(ProjectError):
    """The content check found errors and the send was not forced; nothing was sent."""

    def __init__(self, findings: CheckReport) -> None:
        super().__init__(
            f"the check found {len(findings.errors)} error(s); nothing was sent",
            hint="Fix them (see 'newsletter check'), or send anyway with --force.",
        )
        self.findings = findings


@dataclass(frozen=True)
class SendPlan:
    """A send that passed every check, and what the user should see before confirming it.

    `content_changed` is true when an earlier run of this issue sent a different version: the
    caller must get the user's consent and pass `accept_changed=True` to `deliver`.
    """

    settings: Settings
    request: SendRequest
    template: MessageTemplate
    transport: Transport
    findings: CheckReport
    issue: str
    subject: str
    sender: str
    transport_description: str
    subscribed: int
    already_sent: int
    uncertain: int
    failed_before: int
    content_changed: bool
    concurrency: int


@dataclass(frozen=True)
class Rehearsal:
    """A dry run: the check's findings and every message rendered (nothing sent or recorded)."""

    findings: CheckReport
    report: DryRunReport


def signing_secret(settings: Settings) -> bytes:
    """The secret that signs unsubscribe links; a ConfigError saying how to set one if none."""
    secret = settings.secret()
    if secret is None:
        raise ConfigError(
            [
                Problem(
                    f"no signing secret for unsubscribe links: set the environment variable "
                    f"{settings.unsubscribe.secret_env}, or put one in .newsletter-secret",
                    file=settings.config_path,
                    key="unsubscribe.secret_env",
                )
            ],
            hint="A long random value, e.g. from: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'",
        )
    return secret


def plan_send(
    settings: Settings,
    request: SendRequest,
    *,
    environ: Mapping[str, str] = os.environ,
    transport_factory: TransportFactory = make_transport,
    checker: Checker = check_issue,
) -> SendPlan:
    """Steps 1-3: fail fast on settings, secrets and the transport, check the content, plan.

    Raises `ConfigError` (no secret, no password or API key, a bad DKIM key),
    `TransportUnavailableError` (server unreachable, login refused), `CheckFailedError`, or
    what loading and rendering the issue raise.
    """
    folder = resolve_issue_folder(settings.root, request.issue)
    secret = signing_secret(settings)
    transport = _checked_transport(settings, environ, transport_factory)
    issue = _Issue.load(settings, folder, secret)
    template = issue.template(transport)
    findings = _gate(checker, issue, request)
    with (
        SubscriberStore(settings.database()) as store,
        Ledger(settings.database()) as ledger,
    ):
        issue_ledger = ledger.issue(template.issue)
        counts = issue_ledger.counts()
        if not ledger.is_locked(template.issue):
            # Rows a killed run left `sending` are uncertain too (the next run marks them so).
            counts[State.UNCERTAIN] += counts.get(State.SENDING, 0)
        stored = issue_ledger.fingerprint()
        subscribed = store.count(SubscriberStatus.SUBSCRIBED)
    rendered = issue.rendered
    return SendPlan(
        settings=settings,
        request=request,
        template=template,
        transport=transport,
        findings=findings,
        issue=rendered.name,
        subject=rendered.subject.fill(lambda slot: slot.default or f"{{{slot.path}}}"),
        sender=str(settings.sender),
        transport_description=describe_transport(settings),
        subscribed=subscribed,
        already_sent=counts.get(State.SENT, 0),
        uncertain=counts.get(State.UNCERTAIN, 0),
        failed_before=counts.get(State.FAILED, 0),
        content_changed=stored is not None and stored != template.fingerprint,
        # The outbox writes files one by one; SMTP and providers use parallel connections.
        concurrency=settings.transport.connections if settings.transport.kind != "outbox" else 1,
    )


def deliver(
    plan: SendPlan,
    *,
    accept_changed: bool = False,
    stop: threading.Event | None = None,
    progress: Callable[[SendProgress], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> SendReport:
    """Step 4: freeze the audience and send everyone who has not had the issue yet.

    `accept_changed` is the user's consent to send a changed version to the rest (checked again
    under the run lock: `LedgerError` if the content changed and it is False). Setting `stop`
    finishes the messages in flight and returns a report with `interrupted` set.
    """
    settings = plan.settings
    sending = settings.sending
    options = SendOptions(
        concurrency=plan.concurrency,
        max_attempts=sending.max_attempts,
        pause_after_failures=sending.pause_after_failures,
        retry_failed=plan.request.retry_failed,
        resend_uncertain=plan.request.resend_uncertain,
        accept_changed_content=accept_changed,
        wait_for_deferred=plan.request.wait_for_deferred,
    )
    started = clock()
    with (
        SubscriberStore(settings.database()) as store,
        Ledger(settings.database(), durable=sending.durable) as ledger,
    ):
        report = send_issue(
            plan.template,
            StoreAudience(store),
            transport=plan.transport,
            ledger=ledger,
            limiter=RateLimiter(sending.rate_per_second, sending.rate_per_hour),
            options=options,
            clock=clock,
            stop=stop,
            progress=progress,
        )
        _bounce_refused(settings, store, report, since=started)
        return report


def _bounce_refused(
    settings: Settings, store: SubscriberStore, report: SendReport, *, since: float
) -> None:
    """Recipients the server refused for good during this run are bounces, judged like DSNs
    (a hard one marks them bounced, so the next issue skips them; issue 12)."""
    refusals = [
        (row.email, row.last_error or "", row.message_id)
        for row in report.failures
        if row.updated_at >= since
        and row.last_error
        and not row.last_error.startswith("gave up after")
        and ("refused the recipient" in row.last_error or f"refused {row.email}" in row.last_error)
    ]
    if refusals:
        limit = settings.inbox.soft_bounce_limit if settings.inbox is not None else 3
        apply_refusals(store, refusals, issue=report.issue, soft_bounce_limit=limit)


def rehearse(
    settings: Settings, request: SendRequest, *, checker: Checker = check_issue
) -> Rehearsal:
    """The dry run: check the content (errors stop unless forced), then personalise every
    message without sending or recording anything. Needs no transport (nor its password)."""
    folder = resolve_issue_folder(settings.root, request.issue)
    issue = _Issue.load(settings, folder, signing_secret(settings))
    template = issue.template(None)
    findings = _gate(checker, issue, request)
    with SubscriberStore(settings.database()) as store:
        report = dry_run(template, StoreAudience(store))
    return Rehearsal(findings, report)


def send_test_copies(
    settings: Settings,
    issue: str,
    *,
    to: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
    transport_factory: TransportFactory = make_transport,
) -> list[TestSendResult]:
    """Send a `[TEST]` copy, personalised for the sample subscriber, to `to` (else the project's
    reviewers). Nothing is recorded, no content check runs. Raises `ProjectError` when there is
    no reviewer or one is not an address; a copy that is not accepted is a result with `error`."""
    reviewers = list(to or settings.reviewers)
    if not reviewers:
        raise ProjectError(
            "no reviewers to send the test to",
            hint='Add reviewers = ["…"] to [newsletter] in newsletter.toml, or use --to.',
        )
    for reviewer in reviewers:
        if parse_address(reviewer) is None:
            raise ProjectError(f"--to {reviewer!r} is not an email address")
    folder = resolve_issue_folder(settings.root, issue)
    secret = signing_secret(settings)
    transport = transport_factory(settings, environ)  # checked by send_test before any copy
    template = _Issue.load(settings, folder, secret).template(transport)
    return send_test(template, Subscriber.sample(settings.locale), reviewers, transport)


# --- the steps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Issue:
    """An issue loaded and rendered, with the project's unsubscribe secret."""

    settings: Settings
    loaded: Issue
    rendered: RenderedIssue
    secret: bytes

    @classmethod
    def load(cls, settings: Settings, folder: Path, secret: bytes) -> _Issue:
        loaded = load_issue(folder)
        return cls(settings, loaded, render_issue(loaded, settings), secret)

    def template(self, transport: Transport | None) -> MessageTemplate:
        """The message template; DKIM-signed when `[dkim]` is set and `transport` delivers our
        MIME bytes as they are (SMTP, the outbox). Providers sign with their own keys."""
        settings = self.settings
        sign = None
        if settings.dkim is not None and transport is not None and transport.delivers_mime_as_is:
            sign = signer_from_settings(settings.dkim, settings.root).sign
        return MessageTemplate.prepare(
            self.rendered,
            settings,
            secret=self.secret,
            token_for=opaque_token_maker(list_identifier(settings)),
            sign=sign,
        )


def _checked_transport(
    settings: Settings, environ: Mapping[str, str], factory: TransportFactory
) -> Transport:
    """The configured transport, proven reachable; its connections released until delivery."""
    transport = factory(settings, environ)
    try:
        transport.check()
    finally:
        transport.close()
    return transport


def _gate(checker: Checker, issue: _Issue, request: SendRequest) -> CheckReport:
    """The same quality gate as `newsletter check`: errors stop the send unless forced."""
    findings = checker(issue.loaded, issue.rendered, issue.settings, offline=not request.link_check)
    if findings.errors and not request.force:
        raise CheckFailedError(findings)
    return findings
