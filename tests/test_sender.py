"""send_issue against a real SMTP server on loopback, with faults and crashes."""

from __future__ import annotations

import email
import email.policy
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from newsletter.audience import SubscriberStore
from newsletter.delivery import freeze, sender
from newsletter.delivery.ledger import FreezeReport, IssueLedger, Ledger, State
from newsletter.delivery.message import MessageTemplate
from newsletter.delivery.ratelimit import Backoff
from newsletter.delivery.sender import (
    SendOptions,
    SendProgress,
    StoreAudience,
    _run_workers,
    dry_run,
    send_issue,
    send_test,
)
from newsletter.errors import AudienceError, LedgerError, TransportUnavailableError
from tests.sendkit import (
    SECRET,
    ListAudience,
    Person,
    example_template,
    people,
    smtp_transport,
    store_people,
    token_for,
)
from tests.smtpserver import SmtpTestServer

REPO = Path(__file__).resolve().parent.parent
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


def body_of(message: EmailMessage, subtype: str) -> str:
    """The decoded text of the message's text/`subtype` body."""
    part = message.get_body((subtype,))
    assert part is not None, f"no text/{subtype} body"
    return str(part.get_content())


def received_by_address(server: SmtpTestServer) -> Counter[str]:
    return Counter(rcpt for message in server.messages for rcpt in message.rcpt_tos)


def test_sends_each_recipient_one_personalised_message(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    audience = ListAudience(people(120))
    report = send_issue(
        template,
        audience,
        transport=smtp_transport(server.port),
        ledger=ledger,
        options=SendOptions(concurrency=3),
    )
    assert report.sent_now == 120 and report.complete
    assert report.counts[State.SENT] == 120
    counts = received_by_address(server)
    assert set(counts) == set(audience.people) and set(counts.values()) == {1}
    for received in server.messages:
        parsed = email.message_from_bytes(received.data, policy=email.policy.default)
        rcpt = received.rcpt_tos[0]
        person = audience.people[rcpt]
        assert parsed["To"].addresses[0].addr_spec == rcpt
        assert parsed["To"].addresses[0].display_name == person.name
        html = body_of(parsed, "html")
        text = body_of(parsed, "plain")
        first = person.name.split()[0] if person.name else ""
        assert f"Dear {first}," in html and f"Dear {first}," in text
        token = token_for(SECRET, rcpt)
        assert token in parsed["List-Unsubscribe"]
        assert token in html and token in text
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # A second run is a resume with nothing left to do.
    again = send_issue(template, audience, transport=smtp_transport(server.port), ledger=ledger)
    assert again.sent_now == 0 and again.already_sent == 120
    assert len(server.messages) == 120


def test_rejected_and_deferred_recipients(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    audience = ListAudience(people(20))
    server.reject_recipient("reader00003@example.org")
    server.defer("rcpt", recipient="reader00005@example.org", times=2)
    report = send_issue(
        template,
        audience,
        transport=smtp_transport(server.port),
        ledger=ledger,
        backoff=FAST,
        options=SendOptions(concurrency=1),
    )
    assert report.counts[State.SENT] == 19
    assert report.counts[State.FAILED] == 1
    (failure,) = report.failures
    assert failure.email == "reader00003@example.org"
    assert "550" in (failure.last_error or "")
    row = ledger.issue(template.issue).row("reader00005@example.org")
    assert row is not None and row.state == State.SENT and row.attempts == 3
    assert received_by_address(server)["reader00005@example.org"] == 1


def test_gives_up_after_max_attempts(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    server.defer("rcpt", recipient="reader00001@example.org", times=None)
    report = send_issue(
        template,
        ListAudience(people(3)),
        transport=smtp_transport(server.port),
        ledger=ledger,
        backoff=FAST,
        options=SendOptions(max_attempts=3),
    )
    (failure,) = report.failures
    assert failure.attempts == 3
    assert (failure.last_error or "").startswith("gave up after 3 attempts")


def test_server_down_pauses_and_resume_completes(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    audience = ListAudience(people(30))
    server.stop()
    with pytest.raises(TransportUnavailableError) as caught:
        send_issue(template, audience, transport=smtp_transport(server.port), ledger=ledger)
    assert "127.0.0.1" in str(caught.value)
    server.start()
    report = send_issue(template, audience, transport=smtp_transport(server.port), ledger=ledger)
    assert report.complete and report.counts[State.SENT] == 30


def test_repeated_transient_failures_pause_the_run(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    audience = ListAudience(people(40))
    server.defer("mail", times=None)
    report = send_issue(
        template,
        audience,
        transport=smtp_transport(server.port),
        ledger=ledger,
        backoff=FAST,
        options=SendOptions(pause_after_failures=5),
    )
    assert report.paused_reason is not None and "451" in report.paused_reason
    assert report.counts.get(State.SENT, 0) == 0
    assert not server.messages
    server.clear_faults()
    resumed = send_issue(
        template, audience, transport=smtp_transport(server.port), ledger=ledger, backoff=FAST
    )
    assert resumed.complete and resumed.counts[State.SENT] == 40
    assert set(received_by_address(server).values()) == {1}


def test_uncertain_delivery_is_not_resent_unless_asked(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    audience = ListAudience(people(5))
    server.drop_after_data(transaction=2)
    report = send_issue(
        template,
        audience,
        transport=smtp_transport(server.port, connections=1),
        ledger=ledger,
    )
    assert report.counts[State.UNCERTAIN] == 1
    (uncertain,) = report.uncertain
    assert report.counts[State.SENT] == 4
    again = send_issue(template, audience, transport=smtp_transport(server.port), ledger=ledger)
    assert again.sent_now == 0 and again.counts[State.UNCERTAIN] == 1
    forced = send_issue(
        template,
        audience,
        transport=smtp_transport(server.port),
        ledger=ledger,
        options=SendOptions(resend_uncertain=True),
    )
    assert forced.sent_now == 1 and forced.complete
    assert received_by_address(server)[uncertain.email] == 2  # the editor asked for it


def test_subscriber_who_left_is_not_sent(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    audience = ListAudience(people(10))
    server.stop()
    with pytest.raises(TransportUnavailableError):
        send_issue(template, audience, transport=smtp_transport(server.port), ledger=ledger)
    server.start()
    audience.leave("reader00004@example.org")
    report = send_issue(template, audience, transport=smtp_transport(server.port), ledger=ledger)
    assert "reader00004@example.org" not in received_by_address(server)
    assert report.counts[State.SENT] == 9


def test_missing_values_stop_the_send_before_anything_leaves(
    server: SmtpTestServer, project: Path, ledger: Ledger
) -> None:
    item = project / "issues" / "2026-11" / "03-winter-roster.md"
    item.write_text(item.read_text() + "\nYour plot: {{ subscriber.plot }}\n", encoding="utf-8")
    template = example_template(project)
    audience = ListAudience([Person("a@example.org", "A", {"plot": "7"}), Person("b@example.org")])
    with pytest.raises(AudienceError) as caught:
        send_issue(template, audience, transport=smtp_transport(server.port), ledger=ledger)
    assert "b@example.org: no value for subscriber.plot" in str(caught.value)
    assert "a@example.org" not in str(caught.value)
    assert not server.messages
    assert ledger.issue(template.issue).counts() == {} or not any(
        ledger.issue(template.issue).counts().values()
    )


def test_changed_content_needs_confirmation(
    server: SmtpTestServer, project: Path, ledger: Ledger
) -> None:
    audience = ListAudience(people(3))
    send_issue(
        example_template(project), audience, transport=smtp_transport(server.port), ledger=ledger
    )
    item = project / "issues" / "2026-11" / "01-harvest-festival.md"
    item.write_text(item.read_text().replace("pumpkin soup", "leek soup"), encoding="utf-8")
    changed = example_template(project)
    with pytest.raises(LedgerError) as caught:
        send_issue(changed, audience, transport=smtp_transport(server.port), ledger=ledger)
    assert "changed since its send started (3 already sent)" in str(caught.value)
    report = send_issue(
        changed,
        audience,
        transport=smtp_transport(server.port),
        ledger=ledger,
        options=SendOptions(accept_changed_content=True),
    )
    assert report.sent_now == 0


def test_stop_event_finishes_in_flight_and_resumes(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    audience = ListAudience(people(200))
    stop = threading.Event()
    seen: list[SendProgress] = []

    def progress(update: SendProgress) -> None:
        seen.append(update)
        if update.sent >= 50:
            stop.set()

    report = send_issue(
        template,
        audience,
        transport=smtp_transport(server.port),
        ledger=ledger,
        stop=stop,
        progress=progress,
        options=SendOptions(concurrency=2),
    )
    assert report.interrupted and not report.complete
    assert 50 <= report.counts[State.SENT] < 200
    assert report.counts.get(State.SENDING, 0) == 0
    resumed = send_issue(template, audience, transport=smtp_transport(server.port), ledger=ledger)
    assert resumed.complete
    assert set(received_by_address(server).values()) == {1}
    assert len(received_by_address(server)) == 200


def test_dry_run_and_test_send_record_nothing(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    audience = ListAudience(people(7))
    report = dry_run(template, audience)
    assert report.messages == 7 and report.total_bytes > 7 * 10_000
    results = send_test(
        template,
        Person("alex@example.org", "Alex Example"),
        ["rev1@example.org", "rev2@example.org"],
        smtp_transport(server.port),
    )
    assert [r.error for r in results] == [None, None]
    subjects = {
        email.message_from_bytes(m.data, policy=email.policy.default)["Subject"]
        for m in server.messages
    }
    assert all(s.startswith("[TEST] ") for s in subjects)
    assert sorted(received_by_address(server)) == ["rev1@example.org", "rev2@example.org"]
    assert ledger.issues() == []


def test_a_second_run_at_the_same_time_is_refused(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger, tmp_path: Path
) -> None:
    with (
        Ledger(tmp_path / "newsletter.db") as other,
        other.lock(template.issue),
        pytest.raises(LedgerError) as caught,
    ):
        send_issue(
            template,
            ListAudience(people(2)),
            transport=smtp_transport(server.port),
            ledger=ledger,
        )
    assert "already being sent" in str(caught.value)
    assert not server.messages


@pytest.mark.slow
@pytest.mark.parametrize("source", ["list", "store"])
def test_sigkill_at_random_points_then_resume_sends_everyone_exactly_once(
    server: SmtpTestServer, project: Path, tmp_path: Path, source: str
) -> None:
    count = 2000
    database = tmp_path / "crash.db"
    command = [
        sys.executable,
        "-m",
        "tests.sendkit",
        str(project),
        str(database),
        str(server.port),
        str(count),
        source,
    ]
    rng = random.Random(20261126)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if source == "store":
        # From the store, the first run starts after 100 people and freezes the rest in chunks
        # of 100 while it sends: the kills land in that overlap.
        store_people(database, count)
        env |= {"SENDKIT_EARLY_HEAD": "100", "SENDKIT_CHUNK": "100"}
    kills = 0
    for _ in range(3):
        before = len(server.messages)
        child = subprocess.Popen(command, cwd=REPO, env=env)
        # Kill it once it is well into sending: after a random number of further messages.
        target = before + rng.randint(50, 400)
        deadline = time.monotonic() + 60
        while len(server.messages) < target and child.poll() is None:
            assert time.monotonic() < deadline, "the child made no progress"
            time.sleep(0.005)
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            kills += 1
        child.wait()
    assert kills == 3
    final = subprocess.run(command, cwd=REPO, env=env, check=True)
    assert final.returncode == 0

    with Ledger(database) as ledger:
        issue = ledger.issue("2026-11")
        counts = issue.counts()
        uncertain = {row.email for row in issue.uncertain()}
        sent_rows = {row.email for row in issue.rows(State.SENT)}
    received = received_by_address(server)
    everyone = {person.email for person in people(count)}
    assert counts.get(State.PENDING, 0) == 0 and counts.get(State.DEFERRED, 0) == 0
    assert sent_rows | uncertain == everyone, "nobody is lost"
    # Every subscriber got exactly one message, except the reported uncertain ones, which got
    # at most one (the kill came between the server's acceptance and the ledger's record, or
    # before the data was complete).
    for address in everyone - uncertain:
        assert received[address] == 1, address
    for address in uncertain:
        assert received[address] <= 1, address
    assert len(uncertain) <= kills * 2  # at most the in-flight messages of each killed run
    assert set(received) <= everyone


def test_retry_failed_sends_to_recipients_that_failed_before(
    server: SmtpTestServer, template: MessageTemplate, ledger: Ledger
) -> None:
    audience = ListAudience(people(6))
    server.reject_recipient("reader00002@example.org")
    first = send_issue(template, audience, transport=smtp_transport(server.port), ledger=ledger)
    assert first.counts[State.FAILED] == 1
    server.clear_faults()
    plain_resume = send_issue(
        template, audience, transport=smtp_transport(server.port), ledger=ledger
    )
    assert plain_resume.sent_now == 0, "failures are not retried unless asked"
    retried = send_issue(
        template,
        audience,
        transport=smtp_transport(server.port),
        ledger=ledger,
        options=SendOptions(retry_failed=True),
    )
    assert retried.sent_now == 1 and retried.complete
    assert received_by_address(server)["reader00002@example.org"] == 1
    assert set(received_by_address(server).values()) == {1}


def test_workers_take_every_unit_once_and_stop_on_a_failing_source() -> None:
    handled: list[int] = []
    lock = threading.Lock()

    def handle(unit: int) -> None:
        with lock:
            handled.append(unit)

    _run_workers(range(500), handle, 3, lambda: False)
    assert sorted(handled) == list(range(500))

    def broken() -> Iterator[int]:
        yield from range(10)
        raise LedgerError("the ledger cannot be read")

    handled.clear()
    with pytest.raises(LedgerError, match="cannot be read"):
        _run_workers(broken(), handle, 3, lambda: False)
    assert sorted(handled) == list(range(10))

    handled.clear()
    _run_workers(range(500), handle, 3, lambda: len(handled) >= 20)
    assert 20 <= len(handled) <= 23  # a thread already past its check may finish its unit


# --- a first send starts before its whole audience is frozen (issue 16) ----------------------


def _hold_the_second_round(
    monkeypatch: pytest.MonkeyPatch, until: Callable[[], bool]
) -> list[bool]:
    """Keep an early start's background round (the freeze with `chunk_written`) from starting
    before `until()`; the list says, per round, whether `until()` came true (not timed out)."""
    original = IssueLedger.freeze_subscribers
    began: list[bool] = []

    def held(self: IssueLedger, fingerprint: str, **kwargs: Any) -> FreezeReport:
        if kwargs.get("chunk_written") is not None:
            deadline = time.monotonic() + 30
            while not until() and time.monotonic() < deadline:
                time.sleep(0.01)
            began.append(until())
        return original(self, fingerprint, **kwargs)

    monkeypatch.setattr(IssueLedger, "freeze_subscribers", held)
    return began


def test_a_big_first_send_starts_before_its_audience_is_all_frozen(
    server: SmtpTestServer,
    template: MessageTemplate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sender, "EARLY_HEAD", 50)
    monkeypatch.setattr(freeze, "CHUNK", 120)
    database = tmp_path / "newsletter.db"
    store_people(database, 500)
    # The rest of the audience is frozen only once the server has a message: a send that
    # waited for the whole freeze would time out here.
    began = _hold_the_second_round(monkeypatch, lambda: bool(server.messages))
    with Ledger(database) as ledger, SubscriberStore(database) as store:
        report = send_issue(
            template,
            StoreAudience(store),
            transport=smtp_transport(server.port),
            ledger=ledger,
            options=SendOptions(concurrency=2),
        )
    assert began == [True]
    assert report.complete and report.sent_now == 500 and report.total == 500
    assert report.added_to_audience == 0 and report.removed_from_audience == 0
    received = received_by_address(server)
    assert set(received) == {person.email for person in people(500)}
    assert set(received.values()) == {1}


def test_a_send_stopped_while_its_audience_freezes_resumes_for_everyone_once(
    server: SmtpTestServer,
    template: MessageTemplate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sender, "EARLY_HEAD", 50)
    monkeypatch.setattr(freeze, "CHUNK", 120)
    database = tmp_path / "newsletter.db"
    store_people(database, 500)
    stop = threading.Event()
    began = _hold_the_second_round(monkeypatch, stop.is_set)
    with Ledger(database) as ledger, SubscriberStore(database) as store:
        report = send_issue(
            template,
            StoreAudience(store),
            transport=smtp_transport(server.port),
            ledger=ledger,
            stop=stop,
            progress=lambda update: stop.set(),
        )
        assert began == [True] and report.interrupted and not report.complete
        issue = ledger.issue(template.issue)
        # The first round is a complete freeze of 50; the second stopped before its first chunk.
        assert issue.fingerprint() == template.fingerprint and template.issue in ledger.issues()
        assert sum(issue.counts().values()) == 50
        assert issue.counts()[State.SENDING] == 0
        resumed = send_issue(
            template, StoreAudience(store), transport=smtp_transport(server.port), ledger=ledger
        )
    assert resumed.complete and resumed.total == 500
    received = received_by_address(server)
    assert set(received) == {person.email for person in people(500)}
    assert set(received.values()) == {1}
