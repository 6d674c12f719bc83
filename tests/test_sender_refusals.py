"""Sender-level refusals pause the run before the list is burned (issue 15, D4), the ledger marks
`sending` only once the server could take the message (D16), and people who leave during a
send are neither mailed nor counted as failed (D6, D21), also when an SMTP batch had grown.
Against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from newsletter.delivery.ledger import Ledger, State
from newsletter.delivery.message import MessageTemplate
from newsletter.delivery.ratelimit import Backoff, RateLimiter
from newsletter.delivery.sender import RunOutcome, SendOptions, send_issue
from newsletter.delivery.transports.base import BatchItem, BatchResult
from newsletter.delivery.transports.smtp import SmtpTransport
from tests.sendkit import ListAudience, example_template, people, smtp_transport
from tests.smtpserver import Fault, SmtpTestServer

FAST = Backoff(base=0.01, cap=0.02)


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as running:
        yield running


@pytest.fixture
def template(project: Path) -> MessageTemplate:
    return example_template(project)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "newsletter.db") as opened:
        yield opened


def received(server: SmtpTestServer) -> Counter[str]:
    return Counter(rcpt for message in server.messages for rcpt in message.rcpt_tos)


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("mail", "553 5.7.1 <news@example.org>: Sender address rejected: not owned by user"),
        ("mail", "530 5.7.0 Authentication required"),
        ("rcpt", "535 5.7.8 Authentication credentials invalid"),
        ("data_end", "554 5.7.1 Message rejected: policy violation"),
        ("data_end", "550 5.7.26 Unauthenticated mail from example.org is not accepted"),
    ],
)
def test_a_sender_level_refusal_pauses_and_fails_nobody(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger, stage: str, reply: str
) -> None:
    audience = ListAudience(people(30))
    server.add_fault(Fault(stage, reply=reply, times=None))  # type: ignore[arg-type]
    report = send_issue(
        template,
        audience,
        transport=smtp_transport(server.port, connections=1),
        ledger=ledger,
        backoff=FAST,
    )
    assert report.paused_reason is not None and reply.split()[0] in report.paused_reason
    assert report.outcome is RunOutcome.PAUSED
    assert report.counts[State.FAILED] == 0, "a sender problem fails no recipient"
    assert report.counts[State.PENDING] == 30, "every row is back to pending"
    assert server.transactions <= 2, "the run stops at the first refusal, not after the list"
    server.clear_faults()
    resumed = send_issue(
        template, audience, transport=smtp_transport(server.port), ledger=ledger, backoff=FAST
    )
    assert resumed.complete and resumed.counts[State.SENT] == 30
    assert set(received(server).values()) == {1} and len(received(server)) == 30
    row = ledger.issue(template.issue).row("reader00000@example.org")
    assert row is not None and row.attempts == 1, "a refused sender costs nobody an attempt"


def test_the_same_permanent_reply_for_n_recipients_in_a_row_pauses(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    audience = ListAudience(people(40))
    # A relay that refuses every recipient: no sender-level code, but the same reply each time.
    server.add_fault(Fault("rcpt", reply="550 5.7.1 Relaying denied", times=None))
    report = send_issue(
        template,
        audience,
        transport=smtp_transport(server.port, connections=1),
        ledger=ledger,
        options=SendOptions(pause_after_failures=5),
    )
    assert report.paused_reason is not None and "Relaying denied" in report.paused_reason
    assert "5 recipients in a row" in report.paused_reason
    assert report.counts[State.FAILED] == 0 and report.counts[State.PENDING] == 40
    assert server.transactions == 5


def test_unknown_users_in_a_row_are_recipient_failures_not_a_pause(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    audience = ListAudience(people(12))
    for n in range(6):
        server.reject_recipient(f"reader{n:05d}@example.org")
    report = send_issue(
        template,
        audience,
        transport=smtp_transport(server.port, connections=1),
        ledger=ledger,
        options=SendOptions(pause_after_failures=5),
    )
    assert report.paused_reason is None
    assert report.counts[State.FAILED] == 6 and report.counts[State.SENT] == 6
    assert report.outcome is RunOutcome.FAILED


def test_a_row_is_marked_sending_only_once_the_server_could_take_it(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    """D16: a run that dies while connecting or at MAIL/RCPT leaves the row pending."""
    seen: dict[str, State] = {}
    issue = ledger.issue(template.issue)

    # Slow MAIL: while the server holds MAIL, the row must still be pending.
    server.delay("mail", 0.5, transaction=1)
    audience = ListAudience(people(1))

    def watch() -> None:
        server_deadline = threading.Event()
        server_deadline.wait(0.25)
        row = issue.row("reader00000@example.org")
        seen["during MAIL"] = row.state if row is not None else State.PENDING

    watcher = threading.Thread(target=watch)
    watcher.start()
    report = send_issue(
        template, audience, transport=smtp_transport(server.port), ledger=ledger, backoff=FAST
    )
    watcher.join()
    assert seen["during MAIL"] is State.PENDING
    assert report.complete


def test_who_leaves_during_the_rate_limit_wait_is_not_mailed_nor_failed(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    """D6 + D21: the subscription is checked after the wait, and leaving is not a failure."""
    audience = ListAudience(people(6))
    leaver = "reader00004@example.org"
    limiter = RateLimiter(per_second=2)
    left = threading.Event()

    def leave_early() -> None:
        # Unsubscribe while the run waits 0.5 s on the rate limit for the leaver's message.
        while len(server.messages) < 4:
            threading.Event().wait(0.005)
        threading.Event().wait(0.15)
        audience.leave(leaver)
        left.set()

    helper = threading.Thread(target=leave_early)
    helper.start()
    report = send_issue(
        template,
        audience,
        transport=smtp_transport(server.port, connections=1),
        ledger=ledger,
        limiter=limiter,
    )
    helper.join()
    assert left.is_set()
    assert leaver not in received(server)
    assert report.counts[State.FAILED] == 0, "leaving is not a failure"
    assert report.counts[State.SENT] == 5 and report.outcome is RunOutcome.SENT
    assert ledger.issue(template.issue).row(leaver) is None
    assert report.removed_from_audience == 1


def test_a_long_writer_beside_the_send_does_not_kill_it(
    server: SmtpTestServer, template: MessageTemplate, tmp_path: Path
) -> None:
    """Issue 15, D1: another process holds the write lock longer than the busy timeout (an
    import of a million rows); every ledger write waits and retries, the send completes, and
    nothing is misclassified."""
    database = tmp_path / "busy.db"
    audience = ListAudience(people(40))
    server.delay("data_end", 0.02, times=None)
    holding = threading.Event()
    release = threading.Event()

    def long_writer() -> None:
        import sqlite3  # a second connection, as another process has

        while len(server.messages) < 5:
            threading.Event().wait(0.005)
        other = sqlite3.connect(database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        holding.set()
        release.wait(10)
        other.execute("ROLLBACK")
        other.close()

    writer = threading.Thread(target=long_writer)
    writer.start()
    with Ledger(database, busy_timeout=0.2) as ledger:
        timer = threading.Timer(1.5, release.set)  # 7 x the busy timeout
        timer.start()
        report = send_issue(
            template,
            audience,
            transport=smtp_transport(server.port, connections=2),
            ledger=ledger,
            backoff=FAST,
        )
        writer.join()
    assert holding.is_set()
    assert report.complete and report.counts[State.SENT] == 40
    assert report.outcome is RunOutcome.SENT
    assert set(received(server).values()) == {1} and len(received(server)) == 40


class CountingSmtp(SmtpTransport):
    """The SMTP transport, counting its batches and the items each one carried."""

    def __init__(self, port: int, connections: int) -> None:
        super().__init__(smtp_transport(port, connections)._settings, password=None)
        self.batches: list[int] = []

    def send_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        results = super().send_batch(items)
        self.batches.append(len(results))
        return results


def test_an_smtp_batch_takes_in_the_next_rows_while_it_runs(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    audience = ListAudience(people(90))
    transport = CountingSmtp(server.port, connections=3)
    report = send_issue(template, audience, transport=transport, ledger=ledger)
    assert report.complete and report.counts[State.SENT] == 90
    assert set(received(server).values()) == {1} and len(received(server)) == 90
    # Batches of ten (pause_after_failures) that each took in the rows after them, instead of
    # nine batches whose connections went idle at each one's end.
    assert sum(transport.batches) == 90 and len(transport.batches) < 9, transport.batches


def test_a_relay_refusing_everyone_in_the_middle_of_a_grown_batch_pauses(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    audience = ListAudience(people(80))
    for transaction in range(26, 81):
        server.add_fault(Fault("rcpt", reply="550 5.7.1 Relaying denied", transaction=transaction))
    report = send_issue(
        template,
        audience,
        transport=smtp_transport(server.port, connections=3),
        ledger=ledger,
        options=SendOptions(pause_after_failures=5),
    )
    assert report.paused_reason is not None and "Relaying denied" in report.paused_reason
    assert report.counts[State.SENT] == 25 and report.counts[State.FAILED] == 0
    assert report.counts[State.PENDING] == 55
    # The batch stopped growing at the first refusal: what it had then, and no more.
    assert server.transactions <= 25 + 2 * 5 + 3, server.transactions
