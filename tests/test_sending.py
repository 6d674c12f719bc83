"""The send use case (newsletter/sending.py) called as a library, as the CLI, a scheduler or a
worker would: against a real SMTP server on loopback and the outbox, with the real content check
(offline, without SpamAssassin: these tests are about the order of decisions, not the score)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import dkim as dkimpy
import pytest

from newsletter.audience import SubscriberStore
from newsletter.checks import check_issue
from newsletter.checks.model import CheckReport, Finding
from newsletter.config import Settings, TransportSettings
from newsletter.config_tables import DkimSettings
from newsletter.content import Issue
from newsletter.delivery.ledger import Ledger, State
from newsletter.delivery.sender import SendProgress
from newsletter.delivery.transports import make_transport
from newsletter.delivery.transports.base import (
    BatchItem,
    BatchResult,
    DeliveryReceipt,
    Transport,
)
from newsletter.dkim import generate_key, write_private_key
from newsletter.errors import ConfigError, LedgerError, ProjectError, TransportUnavailableError
from newsletter.render.model import RenderedIssue
from newsletter.sending import (
    CheckFailedError,
    SendRequest,
    deliver,
    plan_send,
    rehearse,
    send_test_copies,
)
from tests.smtpserver import SmtpTestServer

ISSUE = "2026-11"
READERS = ("ann@example.org", "bob@example.org", "carol@example.net")
PASSWORD = "pw-for-the-test"
DOMAIN = "riverside-garden.example.org"
SELECTOR = "sending"


@dataclass
class RecordingChecker:
    """The real content check (offline, no spam score) that remembers it ran; optionally adds
    an error, as a broken link would."""

    error: bool = False
    calls: list[str] = field(default_factory=list)

    def __call__(
        self, issue: Issue, rendered: RenderedIssue, settings: Settings, *, offline: bool
    ) -> CheckReport:
        self.calls.append(rendered.name)
        found = check_issue(issue, rendered, settings, offline=True, spamassassin=None)
        if not self.error:
            return found
        broken = Finding("error", "link-broken", "https://example.org/gone answered 404")
        return CheckReport.of(found.issue, [*found.findings, broken])


class ProviderLike:
    """A transport that, like a provider API, takes MIME but signs with its own key: records
    the bytes it was handed."""

    name = "provider-like"
    max_batch = 10
    needs_mime = True
    delivers_mime_as_is = False
    signals_handover = False
    hands_over_each = False

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def check(self) -> None:
        return

    def send_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        self.data += [item.message.data for item in items]
        return [
            BatchResult(item.key, DeliveryReceipt(item.message.recipient, f"id-{n}"))
            for n, item in enumerate(items)
        ]

    def close(self) -> None:
        return


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as running:
        yield running


@pytest.fixture
def base(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The example project with a signing secret and three subscribers."""
    monkeypatch.delenv(settings.unsubscribe.secret_env, raising=False)
    (settings.root / ".newsletter-secret").write_text("a-test-signing-secret\n", encoding="utf-8")
    with SubscriberStore(settings.database_path) as store:
        for address in READERS:
            store.add(address, address.split("@")[0].title())
    return settings


def smtp(settings: Settings, port: int, username: str | None = None) -> Settings:
    transport = TransportSettings(
        kind="smtp",
        host="127.0.0.1",
        port=port,
        security="none",
        username=username,
        connections=2,
    )
    return replace(settings, transport=transport)


def with_dkim(settings: Settings) -> tuple[Settings, bytes]:
    """`settings` with a `[dkim]` table and a fresh key; also the DNS record to verify with."""
    key = generate_key(1024)
    write_private_key(settings.root / "dkim.pem", key)
    return (
        replace(settings, dkim=DkimSettings(DOMAIN, SELECTOR, "dkim.pem")),
        key.record().encode(),
    )


def verifies(data: bytes, record: bytes) -> bool:
    return bool(dkimpy.verify(data, dnsfunc=lambda name, timeout=5: record))


def sent_rows(settings: Settings) -> dict[str, State]:
    with Ledger(settings.database_path) as ledger:
        return {row.email: row.state for row in ledger.issue(ISSUE).rows()}


def test_missing_smtp_password_is_reported_before_the_check_runs(base: Settings) -> None:
    checker = RecordingChecker()
    settings = smtp(base, 1, username="editor")
    with pytest.raises(ConfigError, match="SMTP password"):
        plan_send(settings, SendRequest(ISSUE), environ={}, checker=checker)
    assert checker.calls == []


def test_unreachable_server_is_reported_before_the_check_runs(base: Settings) -> None:
    with SmtpTestServer() as stopped:
        port = stopped.port
    checker = RecordingChecker()
    with pytest.raises(TransportUnavailableError):
        plan_send(smtp(base, port), SendRequest(ISSUE), checker=checker)
    assert checker.calls == []


def test_check_errors_stop_the_send_unless_forced(base: Settings, server: SmtpTestServer) -> None:
    settings = smtp(base, server.port)
    checker = RecordingChecker(error=True)
    with pytest.raises(CheckFailedError) as stopped:
        plan_send(settings, SendRequest(ISSUE), checker=checker)
    assert [f.code for f in stopped.value.findings.errors] == ["link-broken"]
    assert "nothing was sent" in stopped.value.message
    plan = plan_send(settings, SendRequest(ISSUE, force=True), checker=checker)
    assert [f.code for f in plan.findings.errors] == ["link-broken"]
    assert checker.calls == [ISSUE, ISSUE]
    assert server.messages == [] and sent_rows(settings) == {}


def test_plan_then_deliver_through_smtp_and_resume(base: Settings, server: SmtpTestServer) -> None:
    settings = smtp(base, server.port)
    plan = plan_send(settings, SendRequest(ISSUE), checker=RecordingChecker())
    assert (plan.issue, plan.subscribed, plan.already_sent, plan.content_changed) == (
        ISSUE,
        3,
        0,
        False,
    )
    assert plan.subject.startswith("Harvest festival")
    assert plan.sender == str(settings.sender)
    assert plan.transport_description == f"smtp 127.0.0.1:{server.port} (none)"
    assert plan.concurrency == 2
    assert server.messages == []  # planning sends nothing

    seen: list[SendProgress] = []
    report = deliver(plan, progress=seen.append)
    assert report.sent_now == 3 and report.complete
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(READERS)
    assert seen[-1].sent == 3
    assert set(sent_rows(settings).values()) == {State.SENT}

    again = plan_send(settings, SendRequest(ISSUE), checker=RecordingChecker())
    assert again.already_sent == 3
    assert deliver(again).sent_now == 0
    assert len(server.messages) == 3


def test_changed_content_needs_consent(base: Settings, server: SmtpTestServer) -> None:
    settings = smtp(base, server.port)
    deliver(plan_send(settings, SendRequest(ISSUE), checker=RecordingChecker()))
    with SubscriberStore(settings.database_path) as store:
        store.add("dan@example.org", "Dan")
    item = sorted((settings.issues_dir / ISSUE).glob("*.md"))[-1]
    item.write_text(item.read_text(encoding="utf-8") + "\nOne more line.\n", encoding="utf-8")

    plan = plan_send(settings, SendRequest(ISSUE), checker=RecordingChecker())
    assert plan.content_changed and plan.already_sent == 3
    with pytest.raises(LedgerError, match="changed since its send started"):
        deliver(plan)
    report = deliver(plan, accept_changed=True)
    assert report.sent_now == 1
    assert [m.rcpt_tos for m in server.messages][-1] == ("dan@example.org",)


def test_a_stop_event_set_before_delivery_sends_nothing_and_resumes(
    base: Settings, server: SmtpTestServer
) -> None:
    settings = smtp(base, server.port)
    plan = plan_send(settings, SendRequest(ISSUE), checker=RecordingChecker())
    stop = threading.Event()
    stop.set()
    stopped = deliver(plan, stop=stop)
    assert stopped.interrupted and stopped.sent_now == 0 and server.messages == []
    assert deliver(plan).sent_now == 3


def test_dkim_signs_outbox_and_smtp_messages_not_provider_ones(
    base: Settings, server: SmtpTestServer
) -> None:
    settings, record = with_dkim(base)
    assert settings.transport.kind == "outbox"

    report = deliver(plan_send(settings, SendRequest(ISSUE), checker=RecordingChecker()))
    assert report.sent_now == 3
    written = sorted((settings.root / settings.transport.path).glob("*.eml"))
    assert len(written) == 3
    for path in written:
        data = path.read_bytes()
        assert data.startswith(b"DKIM-Signature: ") and verifies(data, record)

    (copy,) = send_test_copies(smtp(settings, server.port), ISSUE, to=["rev@example.org"])
    assert copy.error is None
    (received,) = server.messages
    assert verifies(received.data, record)

    provider = ProviderLike()

    def factory(settings: Settings, environ: object) -> Transport:
        return provider

    (result,) = send_test_copies(settings, ISSUE, to=["rev@example.org"], transport_factory=factory)
    assert result.error is None
    (data,) = provider.data
    assert b"DKIM-Signature" not in data and b"Subject: [TEST] " in data


def test_test_copies_need_valid_reviewers_and_record_nothing(
    base: Settings, server: SmtpTestServer
) -> None:
    settings = smtp(replace(base, reviewers=()), server.port)
    with pytest.raises(ProjectError, match="no reviewers"):
        send_test_copies(settings, ISSUE)
    with pytest.raises(ProjectError, match="not an email address"):
        send_test_copies(settings, ISSUE, to=["rev@example.org", "not an address"])
    assert server.messages == []

    results = send_test_copies(settings, ISSUE, to=["rev@example.org", "Ed <ed@example.org>"])
    assert [(r.recipient, r.error) for r in results] == [
        ("rev@example.org", None),
        ("Ed <ed@example.org>", None),
    ]
    assert [m.rcpt_tos for m in server.messages] == [("rev@example.org",), ("ed@example.org",)]
    assert all(b"Subject: [TEST] " in m.data for m in server.messages)
    assert sent_rows(settings) == {}


def test_dry_run_needs_no_transport_and_records_nothing(base: Settings) -> None:
    settings = smtp(base, 1, username="editor")  # no password, nothing listening
    checker = RecordingChecker()
    rehearsal = rehearse(settings, SendRequest(ISSUE), checker=checker)
    assert rehearsal.report.messages == 3 and rehearsal.report.largest_bytes > 0
    assert checker.calls == [ISSUE]
    assert sent_rows(settings) == {}
    with pytest.raises(CheckFailedError):
        rehearse(settings, SendRequest(ISSUE), checker=RecordingChecker(error=True))


def test_the_transport_factory_gets_the_environment(base: Settings) -> None:
    seen: list[object] = []

    def factory(settings: Settings, environ: object) -> Transport:
        seen.append(environ)
        return make_transport(settings, {})

    environ = {"SOMETHING": "1"}
    plan = plan_send(base, SendRequest(ISSUE), environ=environ, transport_factory=factory)
    assert seen == [environ] and plan.transport.name == "outbox" and plan.concurrency == 1
