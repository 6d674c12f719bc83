"""The send ledger on both engines (`store_url`: a SQLite file, a PostgreSQL database): states,
freezing, streaming, locks (SQLite's run file; PostgreSQL's leases), crashes."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypedDict, Unpack

import pytest

from newsletter.audience.store import SubscriberStore
from newsletter.delivery.ledger import (
    IllegalTransitionError,
    IssueLedger,
    Ledger,
    LedgerRow,
    State,
)
from newsletter.errors import LedgerError
from newsletter.store import STORE_VERSION, Store
from newsletter.store.dialect import POSTGRESQL

REPO = Path(__file__).resolve().parent.parent
ISSUE = "2026-11"
FP = "f" * 64


class TodoOptions(TypedDict, total=False):
    """The keyword arguments of IssueLedger.todo."""

    now: float | None
    retry_failed: bool
    resend_uncertain: bool


def row_of(issue: IssueLedger, key: str) -> LedgerRow:
    """The ledger row of `key`; fails the test when there is none."""
    row = issue.row(key)
    assert row is not None, f"no ledger row for {key}"
    return row


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "newsletter.db"


@pytest.fixture
def ledger(store_url: str, clock: Clock) -> Iterator[Ledger]:
    with Ledger(store_url, clock=clock) as led:
        yield led


@pytest.fixture
def real_time_ledger(store_url: str) -> Iterator[Ledger]:
    """On the real clock: leases compare heartbeats of several processes."""
    with Ledger(store_url) as led:
        yield led


@pytest.fixture
def sqlite_ledger(db: Path, clock: Clock) -> Iterator[Ledger]:
    """For what only SQLite has: the single-run lock file."""
    with Ledger(db, clock=clock) as led:
        yield led


@pytest.fixture
def issue(ledger: Ledger) -> IssueLedger:
    return ledger.issue(ISSUE)


def people(n: int, start: int = 0) -> list[tuple[str, str]]:
    return [(f"p{i}@example.org", f"P{i}@example.org") for i in range(start, start + n)]


def states(issue: IssueLedger) -> dict[str, State]:
    return {row.key: row.state for row in issue.rows()}


# --- schema -------------------------------------------------------------------------------------


def test_schema_lives_beside_the_subscriber_store(db: Path) -> None:
    Ledger(db).close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"ledger_issues", "ledger_rows", "subscribers", "store_migrations"} <= tables
    assert "ledger_meta" not in tables  # release 0.1's own version table is gone
    con.close()
    with Store.open(db) as store, Ledger(store) as ledger, SubscriberStore(store) as subscribers:
        subscribers.add("ann@example.org")
        ledger.issue(ISSUE).freeze([("ann@example.org", "ann@example.org")], FP)
        assert store.version == STORE_VERSION
    with Ledger(db) as again:  # a ledger on a shared store leaves it open; this one reopens
        assert again.issue(ISSUE).counts()[State.PENDING] == 1


def test_newer_schema_is_refused(db: Path) -> None:
    Ledger(db).close()
    con = sqlite3.connect(db)
    con.execute("INSERT INTO store_migrations VALUES (99, 'from the future', 0)")
    con.commit()
    con.close()
    with pytest.raises(LedgerError) as caught:
        Ledger(db)
    assert str(caught.value) == (
        f"{db}: the send ledger was written by a newer version of newsletter "
        f"(store version 99; this version knows up to store version {STORE_VERSION})"
    )


def test_reopening_keeps_rows(store_url: str) -> None:
    with Ledger(store_url) as led:
        led.issue(ISSUE).freeze(people(3), FP)
    with Ledger(store_url) as led:
        assert led.issues() == [ISSUE]
        assert led.issue(ISSUE).counts()[State.PENDING] == 3


def test_batch_marks_keep_every_value_as_given(ledger: Ledger) -> None:
    """A batch's values go to PostgreSQL as binary arrays: quotes, braces, backslashes, commas,
    non-ASCII text and NULLs (which an array's text form must escape) arrive unchanged."""
    odd = ['a"b', "{c,d}", "e\\f", "g'h", "NULL", " i ", "é€ 😀"]
    keys = [f"k{n}" for n in range(len(odd))]
    last = "k-null"
    issue = ledger.issue(ISSUE)
    issue.freeze(((key, f"{key}@example.org") for key in [*keys, last]), FP)
    issue.record(
        sending=[(key, f"<{value}@x>") for key, value in zip(keys, odd, strict=True)]
        + [(last, None)]
    )
    issue.record(sent=[(key, value, None) for key, value in zip(keys, odd, strict=True)])
    issue.record(deferred=[(last, "late, {again}", 1_900_000_000.5)])
    for key, value in zip(keys, odd, strict=True):
        row = row_of(issue, key)
        assert (row.state, row.reply, row.message_id) == (State.SENT, value, f"<{value}@x>")
    deferred = row_of(issue, last)
    assert (deferred.state, deferred.message_id) == (State.DEFERRED, None)
    assert (deferred.last_error, deferred.next_attempt_at) == ("late, {again}", 1_900_000_000.5)


def test_batch_arrays_are_binary_parameters_on_postgresql() -> None:
    """Dumped in text form, psycopg quotes each element in Python (5x the CPU)."""
    statement = POSTGRESQL.batch_statement(
        "UPDATE t SET a = v.a FROM {rows} WHERE t.k = v.k", (("k", "text"), ("a", "real"))
    )
    assert "unnest(CAST(%(k)b AS text[]), CAST(%(a)b AS double precision[]))" in statement
    assert "%(k)b" in POSTGRESQL.query(statement)


@pytest.mark.parametrize(("durable", "level"), [(False, 1), (True, 2)])
def test_durability_setting(db: Path, durable: bool, level: int) -> None:
    with Ledger(db, durable=durable) as led:
        assert led.database.connection.execute("PRAGMA synchronous").fetchone() == (level,)


def test_a_busy_database_is_a_ledger_error(db: Path) -> None:
    """After the busy timeout and `busy_retry` seconds of retries (issue 15, D1)."""
    with Ledger(db, busy_timeout=0.05, busy_retry=0.3) as led:
        issue = led.issue(ISSUE)
        issue.freeze(people(2), FP)
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the subscriber store, mid-import
        try:
            with pytest.raises(LedgerError, match=r"newsletter\.db: cannot write to the send"):
                issue.set_fingerprint("new")
            with pytest.raises(LedgerError, match=r"cannot record sending for 'p0@example\.org'"):
                issue.mark_sending(["p0@example.org"])
            assert issue.counts()[State.PENDING] == 2  # reads still work in WAL
        finally:
            other.execute("ROLLBACK")
            other.close()
        issue.mark_sending(["p0@example.org"])
        assert issue.fingerprint() == FP


# --- freezing -----------------------------------------------------------------------------------


def test_first_freeze(issue: IssueLedger) -> None:
    report = issue.freeze(people(5), FP)
    assert (report.first, report.received, report.added, report.removed, report.total) == (
        True,
        5,
        5,
        0,
        5,
    )
    assert issue.fingerprint() == FP
    assert issue.counts() == {s: (5 if s is State.PENDING else 0) for s in State}
    assert [r.key for r in issue.todo()] == [k for k, _ in people(5)]
    assert all(r.attempts == 0 and r.email.startswith("P") for r in issue.todo())


def test_freeze_again_adds_only_newcomers(issue: IssueLedger) -> None:
    issue.freeze(people(5), FP)
    issue.mark_sending(["p0@example.org", "p1@example.org"])
    issue.mark_sent("p0@example.org", "250 ok")
    report = issue.freeze(people(8), FP)
    assert (report.first, report.received, report.added, report.removed, report.total) == (
        False,
        8,
        3,
        0,
        8,
    )
    assert states(issue)["p0@example.org"] is State.SENT
    assert states(issue)["p1@example.org"] is State.SENDING
    # Newcomers come after everyone frozen before: the order is stable across resumes.
    assert [r.key for r in issue.rows()] == [k for k, _ in people(8)]


def test_freeze_ignores_duplicates_in_the_audience(issue: IssueLedger) -> None:
    report = issue.freeze(people(3) + people(3), FP)
    assert (report.received, report.added, report.total) == (6, 3, 3)


def test_freeze_drops_unsent_rows_of_people_who_left(issue: IssueLedger) -> None:
    issue.freeze(people(6), FP)
    issue.mark_sending([f"p{i}@example.org" for i in range(4)])
    issue.mark_sent("p0@example.org", "250 ok")
    issue.mark_failed("p1@example.org", "550 no such user")
    issue.mark_deferred("p2@example.org", "451 later", 0)
    # p3 stays sending; everybody but p5 unsubscribed meanwhile.
    report = issue.freeze(people(1, start=5), FP)
    assert (report.added, report.removed, report.total) == (0, 2, 4)
    assert states(issue) == {
        "p0@example.org": State.SENT,
        "p1@example.org": State.FAILED,
        "p3@example.org": State.SENDING,
        "p5@example.org": State.PENDING,
    }


def test_freeze_updates_the_address_of_untried_rows_only(issue: IssueLedger) -> None:
    issue.freeze([("a", "old-a@example.org"), ("b", "old-b@example.org")], FP)
    issue.mark_sending(["a"])
    issue.freeze([("a", "new-a@example.org"), ("b", "new-b@example.org")], FP)
    assert row_of(issue, "a").email == "old-a@example.org"
    assert row_of(issue, "b").email == "new-b@example.org"


def test_changed_content_is_refused_until_accepted(issue: IssueLedger) -> None:
    issue.freeze(people(2), FP)
    issue.mark_sending(["p0@example.org"])
    issue.mark_sent("p0@example.org", "250 ok")
    with pytest.raises(LedgerError) as caught:
        issue.freeze(people(4), "0123456789abcdef")
    assert str(caught.value) == (
        "issue '2026-11' changed since its sending began: its content fingerprint is "
        "0123456789ab, the ledger holds ffffffffffff; 1 recipients already have the earlier version"
    )
    assert issue.counts()[State.PENDING] == 1  # nothing was added
    issue.set_fingerprint("0123456789abcdef")
    assert issue.fingerprint() == "0123456789abcdef"
    assert issue.freeze(people(4), "0123456789abcdef").added == 2


def test_set_fingerprint_needs_a_frozen_issue(issue: IssueLedger) -> None:
    with pytest.raises(LedgerError, match="'2026-11' has no audience frozen"):
        issue.set_fingerprint(FP)


def test_freeze_is_one_transaction(issue: IssueLedger) -> None:
    def broken() -> Iterator[tuple[str, str]]:
        yield from people(50)
        raise OSError("subscriber store went away")

    with pytest.raises(OSError, match="went away"):
        issue.freeze(broken(), FP)
    assert issue.fingerprint() is None
    assert sum(issue.counts().values()) == 0


@pytest.mark.parametrize("bad", [("k", "a@example.org\r\nBcc: x@y.org"), ("", "a@example.org")])
def test_freeze_refuses_bad_recipients(issue: IssueLedger, bad: tuple[str, str]) -> None:
    with pytest.raises(LedgerError, match="cannot be frozen"):
        issue.freeze([*people(2), bad], FP)
    assert sum(issue.counts().values()) == 0


def test_issues_are_independent(ledger: Ledger) -> None:
    one, two = ledger.issue("one"), ledger.issue("two")
    one.freeze(people(3), FP)
    two.freeze(people(2), "other")
    one.mark_sending(["p0@example.org"])
    assert two.counts()[State.SENDING] == 0
    assert ledger.issues() == ["one", "two"]


# --- transitions --------------------------------------------------------------------------------


def test_a_full_journey(issue: IssueLedger, clock: Clock) -> None:
    issue.freeze(people(1), FP)
    key = "p0@example.org"
    issue.mark_sending([key], message_ids={key: "<m1@example.org>"})
    clock.now += 1
    issue.mark_deferred(key, "421 try later", clock.now + 60)
    row = issue.row(key)
    assert row is not None
    assert (row.state, row.attempts, row.last_error, row.next_attempt_at, row.message_id) == (
        State.DEFERRED,
        1,
        "421 try later",
        clock.now + 60,
        "<m1@example.org>",
    )
    issue.mark_sending([key])
    issue.mark_sent(key, "250 2.0.0 queued as ABC")
    row = issue.row(key)
    assert row is not None
    assert (row.state, row.attempts, row.reply, row.updated_at, row.next_attempt_at) == (
        State.SENT,
        2,
        "250 2.0.0 queued as ABC",
        clock.now,
        None,
    )


def _bring(issue: IssueLedger, key: str, state: State) -> None:
    """Walk one pending row to `state` by legal moves."""
    if state is State.PENDING:
        return
    issue.mark_sending([key])
    if state is State.SENT:
        issue.mark_sent(key, "250 ok")
    elif state is State.FAILED:
        issue.mark_failed(key, "550 no")
    elif state is State.DEFERRED:
        issue.mark_deferred(key, "451 later", 0)
    elif state is State.UNCERTAIN:
        issue.mark_uncertain(key, "connection lost after DATA")


ILLEGAL = [
    (State.SENT, "sending"),
    (State.SENT, "sent"),
    (State.SENT, "failed"),
    (State.SENT, "deferred"),
    (State.SENT, "uncertain"),
    (State.PENDING, "sent"),
    # pending -> deferred is legal: a 4xx at MAIL or RCPT, before the row is marked sending.
    (State.PENDING, "uncertain"),
    (State.DEFERRED, "sent"),
    (State.FAILED, "sending"),
    (State.FAILED, "sent"),
    (State.FAILED, "failed"),
    (State.UNCERTAIN, "sending"),
    (State.UNCERTAIN, "sent"),
    (State.UNCERTAIN, "failed"),
    (State.SENDING, "sending"),
]


def _move(issue: IssueLedger, key: str, target: str) -> None:
    if target == "sending":
        issue.mark_sending([key])
    elif target == "sent":
        issue.mark_sent(key, "250 ok")
    elif target == "failed":
        issue.mark_failed(key, "550 no")
    elif target == "deferred":
        issue.mark_deferred(key, "451 later", 0)
    else:
        issue.mark_uncertain(key, "lost")


@pytest.mark.parametrize(("start", "target"), ILLEGAL)
def test_illegal_transitions_raise_and_change_nothing(
    issue: IssueLedger, start: State, target: str
) -> None:
    issue.freeze([("k", "k@example.org")], FP)
    _bring(issue, "k", start)
    before = issue.row("k")
    with pytest.raises(IllegalTransitionError) as caught:
        _move(issue, "k", target)
    assert str(caught.value).startswith(f"issue '2026-11': recipient 'k' is {start.value};")
    assert issue.row("k") == before


@pytest.mark.parametrize("start", [State.FAILED, State.UNCERTAIN])
def test_failed_and_uncertain_are_resent_only_when_asked(issue: IssueLedger, start: State) -> None:
    issue.freeze([("k", "k@example.org")], FP)
    _bring(issue, "k", start)
    with pytest.raises(IllegalTransitionError) as caught:
        issue.mark_sending(["k"])
    assert caught.value.hint == "ask explicitly to resend failed or uncertain recipients"
    issue.mark_sending(["k"], resend=True)
    assert row_of(issue, "k").attempts == 2


@pytest.mark.parametrize("start", [State.PENDING, State.DEFERRED])
def test_refused_before_sending_may_fail_directly(issue: IssueLedger, start: State) -> None:
    issue.freeze([("k", "k@example.org")], FP)
    _bring(issue, "k", start)
    issue.mark_failed("k", "address refused by the transport")
    assert issue.failures()[0].last_error == "address refused by the transport"


def test_unknown_recipient(issue: IssueLedger) -> None:
    issue.freeze(people(1), FP)
    with pytest.raises(IllegalTransitionError, match="'nobody' is not in the ledger"):
        issue.mark_sent("nobody", "250")


def test_a_refused_batch_changes_nothing(issue: IssueLedger) -> None:
    issue.freeze(people(4), FP)
    _bring(issue, "p2@example.org", State.SENT)
    with pytest.raises(IllegalTransitionError, match=r"'p2@example\.org' is sent"):
        issue.mark_sending([k for k, _ in people(4)])
    assert issue.counts()[State.PENDING] == 3
    with pytest.raises(IllegalTransitionError, match=r"'p0@example\.org' is sending.*listed twice"):
        issue.mark_sending(["p0@example.org", "p1@example.org", "p0@example.org"])
    assert issue.counts()[State.SENDING] == 0


def test_batch_variants(issue: IssueLedger, clock: Clock) -> None:
    issue.freeze(people(6), FP)
    keys = [k for k, _ in people(6)]
    issue.mark_sending(keys, message_ids={k: f"<{i}@m>" for i, k in enumerate(keys)})
    issue.mark_sent_many([(keys[0], "250 a"), (keys[1], "250 b")])
    issue.mark_failed_many([(keys[2], "550 c")])
    issue.mark_deferred_many([(keys[3], "451 d", clock.now + 5), (keys[4], "451 e", clock.now)])
    assert issue.counts() == {
        State.PENDING: 0,
        State.SENDING: 1,
        State.SENT: 2,
        State.FAILED: 1,
        State.DEFERRED: 2,
        State.UNCERTAIN: 0,
    }
    assert row_of(issue, keys[1]).reply == "250 b"
    assert row_of(issue, keys[1]).message_id == "<1@m>"
    issue.mark_sent_many([])  # nothing to do is fine


# --- reading ------------------------------------------------------------------------------------


def test_todo_offers_what_may_be_sent_now(issue: IssueLedger, clock: Clock) -> None:
    issue.freeze(people(7), FP)
    k = [key for key, _ in people(7)]
    _bring(issue, k[0], State.SENT)
    _bring(issue, k[1], State.FAILED)
    _bring(issue, k[2], State.UNCERTAIN)
    issue.mark_sending([k[3], k[4], k[5]])
    issue.mark_deferred(k[3], "451", clock.now + 10)
    issue.mark_deferred(k[4], "451", clock.now - 1)
    # k[5] stays sending, k[6] pending.

    def todo(**kwargs: Unpack[TodoOptions]) -> list[str]:
        return [r.key for r in issue.todo(**kwargs)]

    assert todo() == [k[4], k[6]]
    assert todo(now=clock.now + 10) == [k[3], k[4], k[6]]
    assert todo(retry_failed=True) == [k[1], k[4], k[6]]
    assert todo(resend_uncertain=True) == [k[2], k[4], k[6]]
    assert todo(retry_failed=True, resend_uncertain=True) == [k[1], k[2], k[4], k[6]]
    assert [r.key for r in issue.failures()] == [k[1]]
    assert issue.failures()[0].last_error == "550 no"


def test_following_gives_each_pending_row_once_while_a_round_adds_rows(
    issue: IssueLedger,
) -> None:
    issue.freeze(people(3), FP)
    k = [key for key, _ in people(3)]
    issue.mark_sending([k[0]])  # being sent already: not pending, not given
    steps: Iterator[Callable[[], object]] = iter(
        [
            lambda: issue.freeze([*people(3), *people(2, start=3)], FP),  # two rows added
            lambda: None,  # nothing new this time
            lambda: issue.freeze([*people(3), *people(4, start=3)], FP),  # two more
        ]
    )
    finished: list[bool] = []

    def wait() -> None:
        step = next(steps, None)
        if step is None:
            finished.append(True)  # the round is done: one more read, then the end
        else:
            step()

    given = [row.key for row in issue.following(lambda: bool(finished), wait)]
    assert given == [k[1], k[2], *[key for key, _ in people(4, start=3)]]


@pytest.mark.slow
def test_todo_streams_100k_rows(issue: IssueLedger) -> None:
    sqlite = issue.ledger.database.is_sqlite
    # PostgreSQL: each lone mark is a round trip to the server; 20k rows span 20 pages as well.
    n = 100_000 if sqlite else 20_000
    assert issue.freeze(((f"r{i:06d}", f"r{i:06d}@x.org") for i in range(n)), FP).added == n
    # Mark rows while iterating (every 10th sent, every 10th deferred until later): each row
    # must still come exactly once, in order, and the marked ones never again.
    seen: list[str] = []
    for row in issue.todo():
        seen.append(row.key)
        if len(seen) % 10 == 0:
            issue.mark_sending([row.key])
            issue.mark_sent(row.key, "250")
        elif len(seen) % 10 == 5:
            issue.mark_sending([row.key])
            issue.mark_deferred(row.key, "451", 0)  # due at once: offered by the next todo only
    assert seen == [f"r{i:06d}" for i in range(n)]
    assert issue.counts()[State.SENT] == n // 10
    assert sum(1 for _ in issue.todo()) == n - n // 10


def _peak_while_freezing_and_reading(db: Path, n: int) -> int:
    with Ledger(db) as led:
        issue = led.issue(f"n{n}")
        tracemalloc.start()
        try:
            issue.freeze(((f"r{i:06d}", f"r{i:06d}@example.org") for i in range(n)), FP)
            for _ in issue.todo():
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


def test_memory_does_not_grow_with_the_audience(db: Path) -> None:
    small = _peak_while_freezing_and_reading(db, 5_000)
    large = _peak_while_freezing_and_reading(db, 25_000)
    # Holding 20,000 more (key, email) pairs or rows would add several megabytes.
    assert large - small < 300_000, (small, large)


def test_marking_from_threads_is_safe(issue: IssueLedger) -> None:
    n = 3000
    issue.freeze(people(n), FP)
    keys = [k for k, _ in people(n)]
    errors: list[BaseException] = []

    def worker(share: list[str]) -> None:
        try:
            for key in share:
                issue.mark_sending([key])
                issue.mark_sent(key, "250 ok")
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(keys[i::3],)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert issue.counts()[State.SENT] == n
    assert all(r.attempts == 1 and r.reply == "250 ok" for r in issue.rows())


# --- the lock -----------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from newsletter.delivery.ledger import Ledger
    led = Ledger(sys.argv[1])
    issue = led.issue(sys.argv[2])
    issue.freeze([("a", "a@example.org"), ("b", "b@example.org")], "fp")
    with led.lock(sys.argv[2]):
        issue.mark_sending(["a"])
        print("locked", flush=True)
        time.sleep(60)
    """
)


def wait_unlocked(ledger: Ledger, issue: str) -> None:
    """Until no live run holds `issue`: at once on SQLite; on PostgreSQL once the server has
    noticed the killed worker's connection is gone (its lease lock is then free)."""
    deadline = time.monotonic() + 20
    while ledger.is_locked(issue):
        assert time.monotonic() < deadline, "the killed worker still holds its lease"
        time.sleep(0.05)


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_lock_refuses_a_second_run_in_this_process(sqlite_ledger: Ledger) -> None:
    ledger = sqlite_ledger
    with ledger.lock(ISSUE) as run:
        assert run.info.pid == os.getpid()
        assert ledger.is_locked(ISSUE)
        with pytest.raises(LedgerError) as caught, ledger.issue(ISSUE).lock():
            pass
        assert str(caught.value) == (
            f"issue '2026-11' is already being sent by this process ({os.getpid()}, "
            f"started at {run.info.started})"
        )
    assert not ledger.is_locked(ISSUE)
    with ledger.lock(ISSUE) as again:
        assert again.previous is None  # released cleanly: nothing to report


def test_lock_of_a_live_process_then_of_a_killed_one(
    store_url: str, real_time_ledger: Ledger
) -> None:
    ledger = real_time_ledger
    child = _spawn(HOLDER, store_url, ISSUE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "locked\n"
        assert ledger.is_locked(ISSUE)
        if ledger.database.is_sqlite:
            with pytest.raises(LedgerError) as caught, ledger.lock(ISSUE):
                pass
            message = str(caught.value)
            assert message.startswith(
                f"issue '2026-11' is already being sent by process {child.pid} on "
            )
            assert "(started at " in message
            assert caught.value.hint is not None and "releases the lock" in caught.value.hint
        else:
            # PostgreSQL: a second worker joins; the live worker's row is left alone.
            with ledger.lock(ISSUE) as joined:
                assert joined.recovered_uncertain == 0 and joined.previous is None
        # While the child lives, its `sending` row is in flight, not uncertain.
        assert ledger.issue(ISSUE).uncertain() == []
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    wait_unlocked(ledger, ISSUE)
    issue = ledger.issue(ISSUE)
    assert [r.key for r in issue.uncertain()] == ["a"]  # dead run, lock not yet taken over
    with ledger.lock(ISSUE) as run:
        assert run.previous is not None and run.previous.pid == child.pid
        assert run.recovered_uncertain == 1
        row = issue.row("a")
        assert row is not None and row.state is State.UNCERTAIN
        assert row.last_error is not None and f"process {child.pid}" in row.last_error
        assert [r.key for r in issue.uncertain()] == ["a"]
        assert [r.key for r in issue.todo()] == ["b"]


@pytest.mark.parametrize("name", ["2026-11", "../escape", "a b/c", ".."])
def test_lock_file_sits_beside_the_database(sqlite_ledger: Ledger, db: Path, name: str) -> None:
    ledger = sqlite_ledger
    path = ledger.lock_path(name)
    assert path.parent == db.parent
    assert path.name.startswith("newsletter.db.") and path.name.endswith(".lock")
    with ledger.lock(name):
        assert path.exists()
    assert ledger.lock_path("a b") != ledger.lock_path("a_b")


# --- crash safety -------------------------------------------------------------------------------

SENDER = textwrap.dedent(
    """
    import os, random, sys, time
    from pathlib import Path
    from newsletter.delivery.ledger import Ledger
    db, journal, seed, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    out = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def note(*words):
        os.write(out, (" ".join(words) + "\\n").encode())

    led = Ledger(db)
    issue = led.issue("crash")
    with led.lock("crash"):
        print("freezing", flush=True)
        issue.freeze(((f"k{i}", f"k{i}@example.org") for i in range(n)), "fp")
        print("frozen", flush=True)
        while True:
            rows = list(issue.todo(now=time.time()))
            if not rows:
                break
            for start in range(0, len(rows), 4):
                keys = [r.key for r in rows[start:start + 4]]
                issue.mark_sending(keys)
                note("sending", *keys)
                for key in keys:
                    outcome = rng.random()
                    if outcome < 0.7:
                        issue.mark_sent(key, "250 ok")
                        note("sent", key)
                    elif outcome < 0.8:
                        issue.mark_failed(key, "550 no")
                        note("failed", key)
                    elif outcome < 0.9:
                        issue.mark_deferred(key, "451 later", 0)
                        note("deferred", key)
                    # else: left sending, as if the process were still waiting on the server
        print("done", flush=True)
        time.sleep(60)
    """
)

NEXT = {
    None: {State.PENDING, State.SENDING},
    State.SENDING: {State.SENDING, State.SENT, State.FAILED, State.DEFERRED},
    State.SENT: {State.SENT},
    State.FAILED: {State.FAILED},
    State.DEFERRED: {State.DEFERRED, State.SENDING},
}


@pytest.mark.parametrize(
    ("seed", "when", "n"),
    [(1, "frozen", 3000), (2, "frozen", 3000), (3, "frozen", 3000), (4, "freezing", 200_000)],
)
def test_sigkill_at_a_random_point_loses_nothing(
    tmp_path: Path, store_url: str, seed: int, when: str, n: int
) -> None:
    db, journal = store_url, tmp_path / "journal"
    child = _spawn(SENDER, db, str(journal), str(seed), str(n))
    try:
        assert child.stdout is not None
        while (line := child.stdout.readline()) and line.strip() != when:
            pass
        assert line.strip() == when
        time.sleep(random.Random(seed).uniform(0.0, 0.15))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    # What the child knew was committed: each mark returned before its journal line was written.
    last: dict[str, State] = {}
    tries: dict[str, int] = {}
    if journal.exists():
        for entry in journal.read_text().splitlines():
            word, *keys = entry.split()
            for key in keys:
                last[key] = State(word)
                tries[key] = tries.get(key, 0) + (word == "sending")

    with Ledger(db) as led:
        wait_unlocked(led, "crash")
        issue = led.issue("crash")
        rows = {r.key: r for r in issue.rows()}
        if when == "freezing" and not rows:
            assert issue.fingerprint() is None  # killed before the freeze committed: all or none
            assert last == {}
        else:
            assert sorted(rows) == sorted(f"k{i}" for i in range(n))  # no row lost
            for key, row in rows.items():
                # The ledger holds what was journaled, or at most one legal step beyond it.
                assert row.state in NEXT[last.get(key)], (key, last.get(key), row)
                assert row.attempts - tries.get(key, 0) in (0, 1)
                assert (row.state is State.SENT) == (row.reply == "250 ok")
        sending = {k for k, r in rows.items() if r.state is State.SENDING}
        assert {r.key for r in issue.uncertain()} == sending
        with led.lock("crash") as run:
            assert run.previous is not None and run.previous.pid == child.pid
            assert run.recovered_uncertain == len(sending)
            assert {r.key for r in issue.rows(State.UNCERTAIN)} == sending
            assert issue.counts()[State.SENDING] == 0
            # The resume sends exactly the pending and deferred rows; uncertain ones wait.
            expected = [k for k, r in rows.items() if r.state in (State.PENDING, State.DEFERRED)]
            got = [r.key for r in issue.todo(now=time.time() + 1)]
            assert sorted(got) == sorted(expected)
            if rows:
                assert (
                    issue.freeze(((f"k{i}", f"k{i}@example.org") for i in range(n)), "fp").added
                    == 0
                )


def test_rows_are_plain_values(issue: IssueLedger) -> None:
    issue.freeze(people(1), FP)
    row = issue.row("p0@example.org")
    assert isinstance(row, LedgerRow)
    with pytest.raises(AttributeError):
        row.state = State.SENT  # type: ignore[misc]  # the point: rows are frozen
    assert issue.row("nobody") is None
