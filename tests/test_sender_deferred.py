"""Deferred mail retried across runs for `retry_for`, like an MTA's queue, against a real SMTP
server on loopback and a ledger on a controllable clock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.delivery.ledger import Ledger, State
from newsletter.delivery.message import MessageTemplate
from newsletter.delivery.ratelimit import Backoff
from newsletter.delivery.sender import RunOutcome, SendOptions, SendReport, send_issue
from newsletter.errors import ConfigError
from tests.sendkit import ListAudience, example_template, people, smtp_transport
from tests.smtpserver import SmtpTestServer

LATE = "reader00001@example.org"
STEADY = Backoff(base=60.0, factor=2.0, cap=600.0, jitter=0.0)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as running:
        yield running


@pytest.fixture
def template(project: Path) -> MessageTemplate:
    return example_template(project)


def test_deferred_mail_is_retried_across_runs_and_given_up_after_retry_for(
    server: SmtpTestServer, template: MessageTemplate, tmp_path: Path
) -> None:
    refusal = server.defer("rcpt", recipient=LATE, times=None)
    clock = Clock(1_000.0)
    options = SendOptions(max_attempts=None, retry_for=3600.0, max_wait=0.0)
    audience = ListAudience(people(3))
    with Ledger(tmp_path / "newsletter.db", clock=clock) as ledger:

        def run() -> SendReport:
            return send_issue(
                template,
                audience,
                transport=smtp_transport(server.port),
                ledger=ledger,
                backoff=STEADY,
                options=options,
                clock=clock,
            )

        first = run()
        assert first.outcome is RunOutcome.DEFERRED and first.sent_now == 2
        assert first.next_attempt_at == pytest.approx(1_060.0)
        assert refusal.fired == 1

        clock.now = 1_030.0  # not due yet: the run leaves it alone
        assert run().outcome is RunOutcome.DEFERRED
        assert refusal.fired == 1

        clock.now = 1_100.0  # due: tried again, deferred again, counted from the first deferral
        again = run()
        assert again.outcome is RunOutcome.DEFERRED
        assert refusal.fired == 2
        summary = ledger.issue(template.issue).deferred()
        assert summary.count == 1 and summary.oldest_since == pytest.approx(1_000.0)
        assert summary.next_attempt_at == pytest.approx(1_100.0 + 120.0)

        clock.now = 1_000.0 + 3_601.0  # past retry_for: given up without another try
        last = run()
        assert last.outcome is RunOutcome.FAILED and last.gave_up == 1
        assert refusal.fired == 2
        row = ledger.issue(template.issue).row(LATE)
        assert row is not None and row.state is State.FAILED
        assert (row.last_error or "").startswith("gave up after retrying for 1 h: ")
        assert "451" in (row.last_error or "")
        assert ledger.issue(template.issue).deferred().count == 0
    assert [rcpt for m in server.messages for rcpt in m.rcpt_tos].count(LATE) == 0


def test_a_retry_that_succeeds_in_a_later_run_sends_once(
    server: SmtpTestServer, template: MessageTemplate, tmp_path: Path
) -> None:
    server.defer("rcpt", recipient=LATE, times=1)
    clock = Clock(5_000.0)
    options = SendOptions(max_attempts=None, retry_for=86_400.0, max_wait=0.0)
    with Ledger(tmp_path / "newsletter.db", clock=clock) as ledger:
        for now in (5_000.0, 5_061.0, 5_200.0):
            clock.now = now
            send_issue(
                template,
                ListAudience(people(3)),
                transport=smtp_transport(server.port),
                ledger=ledger,
                backoff=STEADY,
                options=options,
                clock=clock,
            )
        row = ledger.issue(template.issue).row(LATE)
        assert row is not None and row.state is State.SENT and row.attempts == 2
    received = [rcpt for m in server.messages for rcpt in m.rcpt_tos]
    assert received.count(LATE) == 1 and len(received) == 3


def test_a_run_does_not_wait_longer_than_max_wait(
    server: SmtpTestServer, template: MessageTemplate, tmp_path: Path
) -> None:
    """The next try is ten minutes away and the run may wait 1 s: it returns, the row deferred."""
    server.defer("rcpt", recipient=LATE, times=None)
    started = time.monotonic()
    with Ledger(tmp_path / "newsletter.db") as ledger:
        report = send_issue(
            template,
            ListAudience(people(3)),
            transport=smtp_transport(server.port),
            ledger=ledger,
            backoff=Backoff(base=600.0, cap=600.0, jitter=0.0),
            options=SendOptions(max_attempts=None, retry_for=3600.0, max_wait=1.0),
        )
    assert report.outcome is RunOutcome.DEFERRED and report.next_attempt_at is not None
    assert time.monotonic() - started < 300, "it waited for the retry ten minutes away"


@pytest.mark.parametrize(
    ("lines", "retry_for", "wait"),
    [
        ("", 86_400.0, 900.0),
        ('retry_for = "36h"\nwait_for_retries = "2m"', 129_600.0, 120.0),
        ("retry_for = 7200\nwait_for_retries = 0", 7_200.0, 0.0),
        ('retry_for = "2d"', 172_800.0, 900.0),
    ],
)
def test_retry_settings(project: Path, lines: str, retry_for: float, wait: float) -> None:
    config = project / "newsletter.toml"
    config.write_text(config.read_text(encoding="utf-8") + f"\n[sending]\n{lines}\n", "utf-8")
    sending = load_settings(project).sending
    assert (sending.retry_for, sending.wait_for_retries, sending.max_attempts) == (
        retry_for,
        wait,
        None,
    )


def test_retry_for_is_bounded(project: Path) -> None:
    config = project / "newsletter.toml"
    config.write_text(
        config.read_text(encoding="utf-8") + '\n[sending]\nretry_for = "31d"\n', "utf-8"
    )
    with pytest.raises(ConfigError, match=r"sending\.retry_for: must be at most"):
        load_settings(project)
