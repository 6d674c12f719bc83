"""The send use case: everything `newsletter send` decides, for the CLI, a scheduler or workers.

A send is decided in the order a user needs it, cheap and certain things first, so that a missing
SMTP password is reported before a 20-second content check:

1. settings, the issue's folder, the unsubscribe signing secret, the transport (its password or
   API key, via `make_transport`) and whether it is reachable (`transport.check()`), the DKIM key
   when `[dkim]` is set and the transport delivers our MIME bytes as they are;
2. the content check (`checks.check_issue`; the report of a `check` of the same content in the
   last ten minutes is reused, `checks.reuse`): errors stop the send unless forced
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

from .approvals import Approval, ApprovalError, Approvals, approval_problem
from .archive import ArchivedIssue, ArchiveImage, ArchiveStore, Snapshot
from .audience import Subscriber, SubscriberStatus, SubscriberStore
from .audience.tokenbook import opaque_token_maker
from .checks.model import CheckReport
from .checks.reuse import check_reusing
from .clicks import record_links, recorded_numbers
from .config import Settings, parse_address
from .content import Issue, load_issue, resolve_issue_folder
from .delivery.ledger import Ledger, State
from .delivery.ledgeraudience import AudienceChangedError, recorded_audience
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
from .errors import AudienceError, ConfigError, NewsletterError, Problem, ProjectError
from .render.cache import cached_render
from .render.model import RenderedIssue
from .segment import EVERYONE, Segment, SegmentSyntaxError, parse_audience
from .store import Store

__all__ = [
    "AudienceCount",
    "CheckFailedError",
    "Checker",
    "Rehearsal",
    "SendPlan",
    "SendRequest",
    "TransportFactory",
    "approve",
    "archive_snapshot",
    "audience_of",
    "check_approved",
    "content_fingerprint",
    "deliver",
    "empty_audience",
    "plan_send",
    "rehearse",
    "send_test_copies",
    "signing_secret",
    "update_archive",
]

TransportFactory = Callable[[Settings, Mapping[str, str]], Transport]


class Checker(Protocol):
    """Checks an issue before it is sent (`checks.check_issue` fits; the default,
    `checks.reuse.check_reusing`, reuses the report of a `check` just run on the same content)."""

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
    # `--audience`: overrides issue.md's `audience:` for this run (`segment.parse_audience`).
    audience: str | None = None


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
    already_sent: int
    uncertain: int
    failed_before: int
    content_changed: bool
    concurrency: int
    rendered: RenderedIssue
    archive: Snapshot | None = None  # frozen into the archive when the first message leaves
    # Who gets it (never nobody: refused before), and how many subscribed people that is.
    audience: Segment = EVERYONE
    counted: AudienceCount | None = None

    @property
    def subscribed(self) -> int:
        """Subscribed people in the store (waits for the count, see `AudienceCount`)."""
        return self.counted.result()[0] if self.counted is not None else 0

    @property
    def audience_size(self) -> int:
        """Subscribed people in the audience."""
        return self.counted.result()[1] if self.counted is not None else 0


class AudienceCount:
    """How many are subscribed and in the audience, counted in a thread on its own connection
    beside the rest of `plan_send` and the send's start (issue 16): nothing before the first
    message waits for a count of a million rows, unless it shows the count (the plan printed
    before it is confirmed). SQLite and PostgreSQL count without holding the GIL."""

    def __init__(self, settings: Settings, segment: Segment) -> None:
        self._found: tuple[int, int] | None = None
        self._error: NewsletterError | None = None
        self._thread = threading.Thread(
            target=self._count, args=(settings, segment), name="count", daemon=True
        )
        self._thread.start()

    def _count(self, settings: Settings, segment: Segment) -> None:
        try:
            with SubscriberStore(settings.database()) as store:
                subscribed = store.count(SubscriberStatus.SUBSCRIBED)
                size = subscribed if segment.everyone else store.count_segment(segment)
            self._found = (subscribed, size)
        except NewsletterError as err:
            self._error = err

    def result(self) -> tuple[int, int]:
        """(subscribed, in the audience); the store's error if it could not count."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._found is not None
        return self._found


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
    checker: Checker = check_reusing,
    require_approval: bool = True,
) -> SendPlan:
    """Steps 1-3: fail fast on settings, secrets and the transport, check the content, plan.

    Raises `ConfigError` (no secret, no password or API key, a bad DKIM key),
    `TransportUnavailableError` (server unreachable, login refused), `ApprovalError` (with
    `[sending] require_approval`, content nobody allowed approved; not when `require_approval`
    is False, as when a send is scheduled before its approval), `CheckFailedError`, or what
    loading and rendering the issue raise.
    """
    folder = resolve_issue_folder(settings.root, request.issue)
    audience_of(request, None)  # a mistyped --audience is reported before any network call
    secret = signing_secret(settings)
    transport = _checked_transport(settings, environ, transport_factory)
    issue = _Issue.load(settings, folder, secret)
    segment = audience_of(request, issue.loaded)
    template = issue.template(transport)
    if require_approval:
        check_approved(settings, template.issue, template.fingerprint)
    findings = _gate(checker, issue, request)
    with (
        SubscriberStore(settings.database()) as store,
        Ledger(settings.database()) as ledger,
    ):
        _same_audience(ledger, template.issue, segment, request)
        issue_ledger = ledger.issue(template.issue)
        counts = issue_ledger.counts()
        if not ledger.is_locked(template.issue):
            # Rows a killed run left `sending` are uncertain too (the next run marks them so).
            counts[State.UNCERTAIN] += counts.get(State.SENDING, 0)
        stored = issue_ledger.fingerprint()
        # One row answers whether anybody is in it; the counts come beside (`AudienceCount`).
        if not store.any_in_segment(segment):
            raise empty_audience(segment, template.issue)
    counted = AudienceCount(settings, segment)
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
        already_sent=counts.get(State.SENT, 0),
        uncertain=counts.get(State.UNCERTAIN, 0),
        failed_before=counts.get(State.FAILED, 0),
        content_changed=stored is not None and stored != template.fingerprint,
        # The outbox writes files one by one; SMTP and providers use parallel connections.
        concurrency=settings.transport.connections if settings.transport.kind != "outbox" else 1,
        # The outbox only writes files for review: nobody received the issue, so it is not
        # published (`archive update` adds it if those files were delivered after all).
        archive=archive_snapshot(rendered) if settings.transport.kind != "outbox" else None,
        audience=segment,
        counted=counted,
        rendered=rendered,
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
        retry_for=sending.retry_for,
        max_wait=sending.wait_for_retries,
        pause_after_failures=sending.pause_after_failures,
        retry_failed=plan.request.retry_failed,
        resend_uncertain=plan.request.resend_uncertain,
        accept_changed_content=accept_changed,
        wait_for_deferred=plan.request.wait_for_deferred,
    )
    started = clock()
    _record_click_links(settings, plan.rendered)
    with (
        SubscriberStore(settings.database()) as store,
        Ledger(settings.database(), durable=sending.durable) as ledger,
    ):
        snapshot = plan.archive

        def freeze_archive() -> None:
            # Before the first message: its web version link and hosted images must work
            # when it arrives. Kept from the first run on; a resumed run writes nothing.
            if snapshot is not None:
                ArchiveStore(ledger.database).freeze(snapshot, at=clock())

        report = send_issue(
            plan.template,
            StoreAudience(store, plan.audience),
            transport=plan.transport,
            ledger=ledger,
            limiter=RateLimiter(sending.rate_per_second, sending.rate_per_hour),
            options=options,
            clock=clock,
            stop=stop,
            progress=progress,
            before_first_handover=freeze_archive,
            audience_expression=plan.audience.expression,
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
        from .inbox.process import apply_refusals  # noqa: PLC0415 (only refusals need the inbox)

        limit = settings.inbox.soft_bounce_limit if settings.inbox is not None else 3
        apply_refusals(store, refusals, issue=report.issue, soft_bounce_limit=limit)


def check_approved(settings: Settings, issue: str, fingerprint: str) -> None:
    """ApprovalError, naming who must approve, unless content `fingerprint` of `issue` may be
    sent under `[sending] require_approval` (see `approvals.approval_problem`)."""
    if not settings.sending.require_approval:
        return
    with Approvals(settings.database()) as approvals:
        problem = approval_problem(settings.sending, approvals.approvals(issue), fingerprint)
    if problem is not None:
        who = settings.sending.approvers[0] if settings.sending.approvers else "NAME"
        raise ApprovalError(
            f"'{issue}' was not sent: {problem}",
            hint=f"Review the issue (newsletter send {issue} --test), then: "
            f"newsletter approve {issue} --by {who!r}",
        )


def content_fingerprint(settings: Settings, issue: str) -> tuple[str, str]:
    """The issue's name and the fingerprint of the message its recipients would receive now
    (what an approval or a schedule freezes). Needs the signing secret, no transport."""
    folder = resolve_issue_folder(settings.root, issue)
    template = _Issue.load(settings, folder, signing_secret(settings)).template(None)
    return template.issue, template.fingerprint


def approve(
    settings: Settings, issue: str, by: str, *, clock: Callable[[], float] = time.time
) -> Approval:
    """Record that `by` approved the issue's content as it is now. ProjectError when `by` is
    not one of `[sending] approvers` (when that list is set) or is not a one-line name."""
    name = " ".join(by.split())
    if not name or len(name) > 200 or not name.isprintable():
        raise ProjectError(f"--by {by!r} is not a name")
    approvers = settings.sending.approvers
    if approvers and name.casefold() not in {a.casefold() for a in approvers}:
        raise ProjectError(
            f"{name} may not approve: [sending] approvers lists {', '.join(approvers)}",
            hint="Ask one of them, or add the name to [sending] approvers in newsletter.toml.",
        )
    issue_name, fingerprint = content_fingerprint(settings, issue)
    with Approvals(settings.database()) as approvals:
        return approvals.approve(issue_name, fingerprint, name, clock())


def rehearse(
    settings: Settings, request: SendRequest, *, checker: Checker = check_reusing
) -> Rehearsal:
    """The dry run: check the content (errors stop unless forced), then personalise every
    message without sending or recording anything. Needs no transport (nor its password)."""
    folder = resolve_issue_folder(settings.root, request.issue)
    issue = _Issue.load(settings, folder, signing_secret(settings))
    template = issue.template(None)
    segment = audience_of(request, issue.loaded)
    findings = _gate(checker, issue, request)
    with SubscriberStore(settings.database()) as store:
        report = dry_run(template, StoreAudience(store, segment))
    return Rehearsal(findings, report)


def send_test_copies(
    settings: Settings,
    issue: str,
    *,
    to: Sequence[str] = (),
    environ: Mapping[str, str] = os.environ,
    transport_factory: TransportFactory = make_transport,
    clock: Callable[[], float] = time.time,
) -> list[TestSendResult]:
    """Send a `[TEST]` copy, personalised for the sample subscriber, to `to` (else the project's
    reviewers). No content check runs; the send ledger is untouched, and who received which
    content is recorded for `status` (the approval history); with `count_clicks` the link table
    is recorded, so the copy's links work. Raises `ProjectError` when there
    is no reviewer or one is not an address; a copy that is not accepted is a result with
    `error`."""
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
    loaded = _Issue.load(settings, folder, secret)
    template = loaded.template(transport)
    hosted = loaded.rendered.published_images
    if hosted:
        # The copy links its images under base_url: `serve` must have them before it arrives
        # (the page itself stays unpublished until the issue is sent).
        with ArchiveStore(settings.database()) as archive:
            archive.publish_images(loaded.rendered.name, _published(loaded.rendered))
    _record_click_links(settings, loaded.rendered)  # so that the reviewers' links lead somewhere
    results = send_test(template, Subscriber.sample(settings.locale), reviewers, transport)
    at = clock()
    with Approvals(settings.database()) as approvals:
        for result in results:
            approvals.record_test(
                template.issue, template.fingerprint, result.recipient, at, result.error
            )
    return results


def archive_snapshot(rendered: RenderedIssue) -> Snapshot:
    """What the archive keeps of `rendered`: the web version exactly as `build` writes it
    (embedded images referenced by their file names), the subject with each per-recipient value
    at its default, and every image the messages or the page use."""
    subject = " ".join(rendered.subject.fill(lambda slot: slot.default or "").split())
    images = [
        ArchiveImage(image.filename, image.content_type, image.data)
        for image in rendered.embedded_images
    ]
    images += _published(rendered)
    return Snapshot(
        rendered.name,
        subject or rendered.name,
        _local_image_html(rendered, rendered.web_html),
        tuple(images),
    )


def _local_image_html(rendered: RenderedIssue, html: str) -> str:
    """`build.local_image_html`, without importing `build` (the renderer's samples, Jinja) on a
    send's way to its first message: `cid:` references pointed at the images' file names."""
    for image in rendered.embedded_images:
        html = html.replace(f"cid:{image.cid}", image.filename)
    return html


def update_archive(settings: Settings, issue: str) -> tuple[ArchivedIssue, bool]:
    """Replace the archived web version of a sent issue with the issue as it is now (the
    deliberate `newsletter archive update`); the bool is true when the issue was added instead:
    sent (says the send ledger) before this version kept an archive, it is archived with the
    time its first message was recorded sent. ArchiveError if it was never sent."""
    folder = resolve_issue_folder(settings.root, issue)
    snapshot = archive_snapshot(cached_render(load_issue(folder), settings))
    with Store.open(settings.database(), purpose="the archive") as store:
        archive = ArchiveStore(store)
        if archive.page(snapshot.issue) is None:
            sent = [row.updated_at for row in Ledger(store).issue(snapshot.issue).rows(State.SENT)]
            if sent:
                archive.freeze(snapshot, at=min(sent))
                page = archive.page(snapshot.issue)
                assert page is not None
                return page.entry, True
        return archive.update(snapshot), False


_IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif"}


def _published(rendered: RenderedIssue) -> list[ArchiveImage]:
    return [
        ArchiveImage(
            image.filename,
            _IMAGE_TYPES.get(image.filename.rsplit(".", 1)[-1].lower(), "application/octet-stream"),
            image.data,
        )
        for image in rendered.published_images
    ]


def _record_click_links(settings: Settings, rendered: RenderedIssue) -> None:
    """The issue's counted links, recorded before a message carrying them leaves (clicks.py)."""
    if rendered.click_links:
        with Store.open(settings.database()) as store:
            record_links(store, rendered.name, rendered.click_links, now=time.time())


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
        numbers = None
        if settings.count_clicks:  # numbers recorded by an earlier send stay those links'
            with Store.open(settings.database()) as store:
                numbers = recorded_numbers(store, loaded.name)
        rendered = cached_render(loaded, settings, click_numbers=numbers)
        return cls(settings, loaded, rendered, secret)

    def template(self, transport: Transport | None) -> MessageTemplate:
        """The message template; DKIM-signed when `[dkim]` is set and `transport` delivers our
        MIME bytes as they are (SMTP, the outbox). Providers sign with their own keys."""
        settings = self.settings
        sign = None
        if settings.dkim is not None and transport is not None and transport.delivers_mime_as_is:
            from .dkim import signer_from_settings  # noqa: PLC0415 (cryptography: only with [dkim])

            sign = signer_from_settings(settings.dkim, settings.root).sign
        return MessageTemplate.prepare(
            self.rendered,
            settings,
            secret=self.secret,
            token_for=opaque_token_maker(list_identifier(settings)),
            sign=sign,
        )


def audience_of(request: SendRequest, issue: Issue | None) -> Segment:
    """Who the send is for: `--audience` if given, else issue.md's `audience:`, else everyone.
    AudienceError naming --audience when it cannot be read."""
    if request.audience is None:
        return (issue.audience if issue is not None else None) or EVERYONE
    try:
        return parse_audience(request.audience)
    except SegmentSyntaxError as err:
        raise AudienceError(
            f"--audience {request.audience!r}: {err.message}", hint=err.hint
        ) from err


def empty_audience(segment: Segment, issue: str) -> AudienceError:
    """The refusal of a send to nobody."""
    return AudienceError(
        f"the audience of '{issue}' ({segment.expression}: {segment.describe()}) has no "
        "subscribed subscriber; nothing was sent",
        hint="Check it with: newsletter subscribers count --audience "
        f"'{segment.expression}' (tags: newsletter subscribers count).",
    )


def _same_audience(ledger: Ledger, issue: str, segment: Segment, request: SendRequest) -> None:
    """A resumed send keeps the audience it froze: refuse another one before asking anything."""
    recorded = recorded_audience(ledger.database, issue)
    if recorded is None or recorded == segment.expression:
        return
    if request.audience is not None:
        hint = (
            f"Run it again without --audience, or with --audience '{recorded}', to finish it; "
            "send to other people as a new issue."
        )
    else:
        hint = (
            f"issue.md's audience changed since the send started: restore it, or finish the send "
            f"with --audience '{recorded}'."
        )
    raise AudienceChangedError(issue, recorded, segment.expression, hint=hint)


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
