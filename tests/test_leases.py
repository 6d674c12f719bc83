"""Leases and claims on PostgreSQL (delivery/leases.py), two workers in one process: each has its
own connection, as two machines would."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from newsletter.delivery import leases
from newsletter.delivery.ledger import _SENDING_MOVE, IllegalTransitionError, Ledger, State
from newsletter.store import Store
from tests.pgserver import PostgresServer

ISSUE = "2026-11"


@pytest.fixture
def url(postgres_server: PostgresServer) -> str:
    return postgres_server.new_store()


@pytest.fixture
def two(url: str) -> Iterator[tuple[Ledger, Ledger]]:
    with Ledger(url) as first, Ledger(url) as second:
        first.issue(ISSUE).freeze(((f"k{i:03d}", f"k{i}@example.org") for i in range(100)), "fp")
        yield first, second


def test_claims_of_two_workers_never_overlap(two: tuple[Ledger, Ledger], url: str) -> None:
    first, second = two
    with first.lock(ISSUE), second.lock(ISSUE):
        now = time.time()
        a = leases.claim(first, ISSUE, 30, now=now)
        b = leases.claim(second, ISSUE, 30, now=now)
        assert len(a) == len(b) == 30
        assert not {r.key for r in a} & {r.key for r in b}
        assert [r.key for r in a] == sorted(r.key for r in a)  # oldest first
        assert all(r.attempts == 0 for r in a + b)  # tries before this one
        # Claimed rows are locked, not marked: `sending` only from the handover (D16).
        with Ledger(url) as third:
            assert third.issue(ISSUE).counts()[State.PENDING] == 100
        first.issue(ISSUE).mark_sending([r.key for r in a])
        first.database.release(commit=True)
        second.database.release(commit=False)  # gave up before its handover: b is free again
        rest = leases.claim(first, ISSUE, 1000, now=now)
        assert len(rest) == 70 and {r.key for r in b} <= {r.key for r in rest}
        assert leases.claim(second, ISSUE, 10, now=now) == []
        first.issue(ISSUE).mark_sending([r.key for r in rest])
        first.database.release(commit=True)
        counts = first.issue(ISSUE).counts()
        assert counts[State.SENDING] == 100 and counts[State.PENDING] == 0
        live = leases.live_leases(first.database, ISSUE, now=time.time())
        assert sorted(lease.in_flight for lease in live) == [0, 100]


def test_a_claim_needs_a_lease(two: tuple[Ledger, Ledger]) -> None:
    with pytest.raises(RuntimeError, match="without a lease"):
        leases.claim(two[0], ISSUE, 10, now=time.time())


def test_a_silent_worker_is_expired_and_its_rows_become_uncertain(
    two: tuple[Ledger, Ledger],
) -> None:
    first, second = two
    with first.lock(ISSUE):
        claimed = leases.claim(first, ISSUE, 10, now=time.time())
        first.issue(ISSUE).mark_sending([r.key for r in claimed])
        first.database.release(commit=True)
        # The first worker goes quiet (a partition: its connection still looks open).
        with first.database.read() as db:
            db.execute("UPDATE ledger_leases SET heartbeat_at = heartbeat_at - :age", {"age": 3600})
        with second.lock(ISSUE) as run:
            assert run.recovered_uncertain == 10
            assert run.previous is not None and run.previous.pid == first_pid(first)
            issue = second.issue(ISSUE)
            assert {r.key for r in issue.rows(State.UNCERTAIN)} == {r.key for r in claimed}
            row = issue.row(claimed[0].key)
            assert row is not None and "no heartbeat" in (row.last_error or "")
            # The expired worker can claim nothing more, and its late results are refused.
            assert leases.claim(first, ISSUE, 10, now=time.time()) == []
            with pytest.raises(IllegalTransitionError):
                first.issue(ISSUE).mark_sent(claimed[0].key, "250 ok")
            shown = [lease.describe(time.time()) for lease in leases.leases(second.database, ISSUE)]
            assert "expired, 10 message(s) left uncertain" in shown[0]
            assert "sending, 0 in flight" in shown[1]


def test_a_released_lease_is_not_recovered_and_status_says_finished(
    two: tuple[Ledger, Ledger], url: str
) -> None:
    first, second = two
    with first.lock(ISSUE):
        batch = leases.claim(first, ISSUE, 5, now=time.time())
        first.issue(ISSUE).mark_sending([r.key for r in batch])
        first.database.release(commit=True)
        first.issue(ISSUE).mark_sent_many([(r.key, "250") for r in batch])
    assert not first.is_locked(ISSUE)
    with second.lock(ISSUE) as run:
        assert run.recovered_uncertain == 0 and run.previous is None
    with Store.open(url) as store:
        states = [lease.state for lease in leases.leases(store, ISSUE)]
    assert states == ["released", "released"]


def first_pid(ledger: Ledger) -> int:
    return leases.leases(ledger.database, ISSUE)[0].info.pid


def test_taking_a_lease_expires_a_dead_one_and_the_heartbeat_renews_it(url: str) -> None:
    with Ledger(url) as ledger:
        ledger.issue(ISSUE).freeze([("a", "a@example.org")], "fp")
        with ledger.database.read() as db:  # a worker that died without a trace but its lease
            db.execute(
                "INSERT INTO ledger_leases (issue, pid, host, lock_key, state, started_at,"
                " heartbeat_at) VALUES (:issue, 1, 'elsewhere', 12345, 'active', :now, :now)",
                {"issue": ISSUE, "now": time.time()},
            )
            db.execute("UPDATE ledger_rows SET state = 'sending', lease_id = 1")
        with leases.hold(ledger, ISSUE, clock=time.time, beat=0.05):
            # Taking the lease already expired it (its lock is not held by anyone) ...
            found = leases.leases(ledger.database, ISSUE)
            assert [lease.state for lease in found] == ["expired", "active"]
            assert found[0].recovered == 1
            started = found[1].heartbeat_at
            deadline = time.monotonic() + 10
            while leases.leases(ledger.database, ISSUE)[1].heartbeat_at == started:
                assert time.monotonic() < deadline, "no heartbeat"
                time.sleep(0.02)
        assert ledger.issue(ISSUE).counts()[State.UNCERTAIN] == 1


def test_marking_a_claimed_batch_sent_is_all_or_nothing(two: tuple[Ledger, Ledger]) -> None:
    first, _ = two
    with first.lock(ISSUE):
        batch = leases.claim(first, ISSUE, 3, now=time.time())
        keys = [r.key for r in batch]
        issue = first.issue(ISSUE)
        issue.mark_sending(keys)
        first.database.release(commit=True)
        issue.mark_sent_many([(k, "202") for k in keys[:2]], message_ids={keys[0]: "<m0@x>"})
        row = issue.row(keys[0])
        assert row is not None and row.state is State.SENT and row.message_id == "<m0@x>"
        # Again, with one row already sent: refused, and the third row is left as it was.
        with pytest.raises(IllegalTransitionError, match=f"'{keys[1]}' is sent"):
            issue.mark_sent_many([(keys[1], "202"), (keys[2], "202")])
        third = issue.row(keys[2])
        assert third is not None and third.state is State.SENDING


def test_a_worker_dying_before_its_handover_leaves_its_batch_to_the_others(
    two: tuple[Ledger, Ledger],
) -> None:
    first, second = two
    with first.lock(ISSUE), second.lock(ISSUE):
        doomed = first.own_connection()
        claimed = leases.claim(doomed, ISSUE, 10, now=time.time())
        assert leases.claim(second, ISSUE, 10, now=time.time()) != claimed  # held: skipped
        second.database.release(commit=False)
        with doomed.database.lock:
            (backend,) = doomed.database.connection.execute("SELECT pg_backend_pid()").fetchone()
        doomed.database.connection.close()  # as a SIGKILL would: the server ends its transaction
        deadline = time.monotonic() + 10
        while True:  # the server notices the closed connection a moment later
            with second.database.read() as db:
                gone = not db.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = :pid", {"pid": backend}
                ).fetchall()
            if gone:
                break
            assert time.monotonic() < deadline, "the closed connection's backend lives on"
            time.sleep(0.02)
        again = leases.claim(second, ISSUE, 10, now=time.time())
        assert [r.key for r in again] == [r.key for r in claimed]
        assert all(r.state is State.PENDING and r.attempts == 0 for r in again)
        second.database.release(commit=False)
        assert first.issue(ISSUE).counts()[State.UNCERTAIN] == 0


def test_a_worker_waits_for_a_freeze_longer_than_the_lock_timeout(url: str) -> None:
    """The first worker's freeze of a big list may take minutes: a second worker taking its
    lease and asking to freeze waits for it (its lock_timeout bounds row locks, not this wait)
    instead of failing."""
    with Ledger(url) as first, Ledger(url, busy_timeout=0.2) as second:
        with leases.first_freeze(first, ISSUE, now=time.time()) as freezing:
            assert freezing
            waited: list[bool] = []
            errors: list[BaseException] = []

            def join() -> None:
                try:
                    with (
                        leases.hold(second, ISSUE, clock=time.time),
                        leases.first_freeze(second, ISSUE, now=time.time()) as also,
                    ):
                        waited.append(also)
                except BaseException as err:  # the failure this test is about
                    errors.append(err)

            joiner = threading.Thread(target=join)
            joiner.start()
            time.sleep(1.0)  # five times the second worker's lock_timeout
            assert not waited and not errors, "the second worker did not wait"
        joiner.join(timeout=30)
        assert errors == []
        assert waited == [True]


def test_a_claim_reads_only_the_rows_still_to_send(url: str) -> None:
    """Half sent: a claim of 100 rows from its cursor must not step over the sent rows (a walk
    from the first row did, for every batch: quadratic work for the database over a whole
    send), nor sort every due row (what the planner chose on the statistics of an empty
    ledger before the freeze renewed them)."""
    with Ledger(url) as ledger:
        issue = ledger.issue(ISSUE)
        keys = [f"k{i:05d}" for i in range(20_000)]
        issue.freeze(((key, f"{key}@example.org") for key in keys), "fp")
        for start in range(0, 10_000, 1_000):
            batch = keys[start : start + 1_000]
            issue.record(sending=[(key, None) for key in batch])
            issue.record(sent=[(key, "202", None) for key in batch])
        with ledger.database.read() as db:
            (after,) = db.execute("SELECT MAX(id) FROM ledger_rows WHERE state = 'sent'").fetchone()
        with ledger.lock(ISSUE):
            sql = leases._CLAIM.format(extra="", claim=ledger.database.dialect.claim)
            params = {
                "due": time.time(),
                "lease": ledger._leases[ISSUE],
                "issue": ISSUE,
                "limit": 100,
                "after": after,
            }
            with ledger.database.read() as db:
                plan = "\n".join(
                    row[0] for row in db.execute("EXPLAIN ANALYZE " + sql, params).fetchall()
                )
            assert "Index Scan" in plan, plan  # (issue, id), or the key alone for one issue
            assert "Sort" not in plan, plan
            assert "Rows Removed by Filter" not in plan, plan
            cursor = leases.ClaimCursor(after)
            claimed = leases.claim(ledger, ISSUE, 100, now=time.time(), cursor=cursor)
            assert [row.key for row in claimed] == keys[10_000:10_100]
            ledger.database.release(commit=False)
            assert cursor.after == after + 100


def test_a_claim_goes_back_for_rows_due_behind_its_cursor(two: tuple[Ledger, Ledger]) -> None:
    """Rows before the cursor that are due again (here: a batch another worker gave up before
    its handover) are claimed before the cursor's claim answers that nothing is due."""
    first, second = two
    with first.lock(ISSUE), second.lock(ISSUE):
        now = time.time()
        given_up = leases.claim(second, ISSUE, 10, now=now)  # k000-k009, held
        cursor = leases.ClaimCursor()
        ahead = leases.claim(first, ISSUE, 1000, now=now, cursor=cursor)  # skips the held ten
        assert len(ahead) == 90
        first.issue(ISSUE).mark_sending([r.key for r in ahead])
        first.database.release(commit=True)
        second.database.release(commit=False)  # gave up: the ten are due again
        behind = leases.claim(first, ISSUE, 1000, now=now, cursor=cursor)
        assert [r.key for r in behind] == [r.key for r in given_up]
        first.issue(ISSUE).mark_sending([r.key for r in behind])
        first.database.release(commit=True)
        assert leases.claim(first, ISSUE, 1000, now=now, cursor=cursor) == []
        assert first.issue(ISSUE).counts()[State.SENDING] == 100


def entries_read(db: Ledger, *others: Ledger) -> int:
    """Index entries the claims have read so far (flushing the statistics of every connection:
    a claim runs on its thread's own)."""
    for each in (db, *others):
        with each.database.read() as read:
            read.execute("SELECT pg_stat_force_next_flush()")
    with db.database.read() as read:
        # The claim walks (issue, id) or the primary key; a claimed batch's marks find its rows
        # by id too (one primary-key entry a row), so count around the claims alone.
        return int(
            read.execute(
                "SELECT SUM(idx_tup_read) FROM pg_stat_user_indexes"
                " WHERE indexrelname IN ('ledger_rows_pkey', 'ledger_rows_by_issue')"
                " AND schemaname = current_schema()"
            ).fetchone()[0]
        )


def test_a_thread_claims_after_its_sibling_threads_batches(url: str) -> None:
    """Two sending threads of one worker (connections of one Ledger, one lease) take turns:
    each claim starts after the last row either claimed, instead of walking over the batch the
    other thread claimed since (the index entries a claim reads, from the statistics)."""

    with Ledger(url) as ledger:
        keys = [f"k{i:04d}" for i in range(2_000)]
        ledger.issue(ISSUE).freeze(((key, f"{key}@example.org") for key in keys), "fp")
        with ledger.lock(ISSUE):
            threads = [(ledger.own_connection(), leases.ClaimCursor()) for _ in range(2)]
            owns = [own for own, _ in threads]
            read = 0
            taken: list[str] = []
            for turn in range(10):
                own, cursor = threads[turn % 2]
                before = entries_read(ledger, *owns)
                batch = leases.claim(own, ISSUE, 200, now=time.time(), cursor=cursor)
                read += entries_read(ledger, *owns) - before
                own.issue(ISSUE).mark_sending([r.key for r in batch])
                own.database.release(commit=True)
                taken += [r.key for r in batch]
            assert taken == keys
            # 2,000 rows claimed; walking over the sibling's batch each time read 3,800.
            assert read <= 2_100, read
            for own, _ in threads:
                own.close()


def test_after_starting_over_the_claims_go_on_from_there(url: str) -> None:
    """Rows due again behind every thread (here: released after a first pass): the first claim
    starts over from the first row, and the next ones go on after it, not from the first row
    again each time."""
    with Ledger(url) as ledger:
        keys = [f"k{i:04d}" for i in range(2_000)]
        issue = ledger.issue(ISSUE)
        issue.freeze(((key, f"{key}@example.org") for key in keys), "fp")
        with ledger.lock(ISSUE):
            own, cursor = ledger.own_connection(), leases.ClaimCursor()
            for _ in range(10):
                batch = leases.claim(own, ISSUE, 200, now=time.time(), cursor=cursor)
                own.issue(ISSUE).mark_sending([r.key for r in batch])
                own.database.release(commit=True)
            issue.record(released=[(key, "try again") for key in keys[:1_000]])
            read = 0
            taken: list[str] = []
            for _ in range(5):
                before = entries_read(ledger, own)
                batch = leases.claim(own, ISSUE, 200, now=time.time(), cursor=cursor)
                read += entries_read(ledger, own) - before
                own.issue(ISSUE).mark_sending([r.key for r in batch])
                own.database.release(commit=True)
                taken += [r.key for r in batch]
            assert taken == keys[:1_000]
            # From the first row each time: 200 + 400 + ... + 1,000 = 3,000.
            assert read <= 1_100, read
            own.close()


def test_a_row_changes_state_without_touching_an_index(url: str) -> None:
    """Store migrations 14 and 15: no index reads `state`, and a page has room for every
    version its rows get in a send, so marking rows `sending` and then `sent` writes heap-only
    tuples (HOT), not an entry in every index.

    As a send does it: batches of 1,000, each marked `sending` in one transaction (no old
    version on its pages can be pruned before the commit), Message-IDs as long as real ones,
    and another worker's transaction open from before the `sending` commit until after the
    `sent` (so the pending versions cannot be pruned either). With half of each page free
    (migration 14 alone) 20-35 % of these updates moved their row to another page."""
    with Ledger(url) as ledger, Store.open(url) as other:
        issue = ledger.issue(ISSUE)
        keys = [f"reader{i:05d}@example.org" for i in range(4_000)]
        issue.freeze(((key, key) for key in keys), "fp")
        with ledger.database.read() as db:
            indexes = db.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'ledger_rows'"
                " AND schemaname = current_schema()"
            ).fetchall()
            assert indexes and not [d for (d,) in indexes if "state" in d], indexes
            before = db.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                " WHERE relid = 'ledger_rows'::regclass"
            ).fetchone()
        for start in range(0, len(keys), 1_000):
            batch = keys[start : start + 1_000]
            with other.transaction() as held:
                held.execute("SELECT txid_current()")  # an older transaction, still running
                issue.record(
                    sending=[
                        (key, f"<2026-11.{i:032x}@riverside-garden.example.org>")
                        for i, key in enumerate(batch, start)
                    ]
                )
                issue.record(sent=[(key, f"sg-{start:06d}", None) for key in batch])
        with ledger.database.read() as db:
            db.execute("SELECT pg_stat_force_next_flush()")
        with ledger.database.read() as db:
            updates, hot = db.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                " WHERE relid = 'ledger_rows'::regclass"
            ).fetchone()
        updates, hot = updates - before[0], hot - before[1]
        assert updates == 8_000
        assert hot == updates, (updates, hot)


def test_a_batch_mark_looks_its_keys_up_instead_of_hashing_the_ledger(url: str) -> None:
    """Marking 1,000 rows `sending` halfway through a big send: through the (issue, key) index,
    not a scan and hash of every pending row (which made the database's work per batch grow
    with the ledger)."""
    with Ledger(url) as ledger:
        issue = ledger.issue(ISSUE)
        issue.freeze(((f"k{i:06d}", f"k{i}@example.org") for i in range(100_000)), "fp")
        with ledger.database.read() as db:
            db.execute("UPDATE ledger_rows SET state = 'sent' WHERE key < 'k050000'")
            db.execute("ANALYZE ledger_rows")
        dialect = ledger.database.dialect
        move = _SENDING_MOVE[False]
        keys = [f"k{i:06d}" for i in range(50_000, 51_000)]
        rows = [{"key": key, "message_id": f"<{key}@example.org>"} for key in keys]
        params = dialect.batch_params(rows, ["key", "message_id"], {"now": 1.0, "lease": None})
        params[0]["issue"] = ISSUE
        with ledger.database.transaction() as db:
            db.execute(dialect.batch_setup)
            plan = "\n".join(
                row[0]
                for row in db.execute(
                    "EXPLAIN " + dialect.batch_statement(move.sql, move.columns), params[0]
                ).fetchall()
            )
        assert "Seq Scan on ledger_rows" not in plan, plan
        assert "ledger_rows_issue_key_key" in plan, plan


def index_scans(ledger: Ledger) -> dict[str, int]:
    with ledger.database.read() as db:
        db.execute("SELECT pg_stat_force_next_flush()")
    with ledger.database.read() as db:
        return {
            str(name): int(scans)
            for name, scans in db.execute(
                "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes"
                " WHERE relname = 'ledger_rows' AND schemaname = current_schema()"
            ).fetchall()
        }


def test_a_claimed_batch_is_marked_by_id_and_its_keys_are_checked(url: str) -> None:
    """The marks of a batch claimed through a connection find its rows by their ids (the
    primary key, not the (issue, key) index); each row's key is still compared, so a row whose
    id and key do not go together refuses the whole batch."""
    with Ledger(url) as ledger:
        keys = [f"k{i:03d}" for i in range(20)]
        ledger.issue(ISSUE).freeze(((key, f"{key}@example.org") for key in keys), "fp")
        with ledger.lock(ISSUE):
            own = ledger.own_connection()
            issue = own.issue(ISSUE)
            batch = leases.claim(own, ISSUE, 10, now=time.time())
            assert set(own._batch_ids[ISSUE]) == {r.key for r in batch}
            before = index_scans(own)
            issue.mark_sending([r.key for r in batch], message_ids={keys[0]: "<m0@x>"})
            own.database.release(commit=True)
            issue.mark_sent_many([(r.key, "sg-1") for r in batch])
            after = index_scans(own)
            assert after["ledger_rows_issue_key_key"] == before["ledger_rows_issue_key_key"]
            assert after["ledger_rows_pkey"] > before["ledger_rows_pkey"]
            row = issue.row(keys[0])
            assert row is not None and row.state is State.SENT
            assert (row.message_id, row.reply, row.attempts) == ("<m0@x>", "sg-1", 1)

            second = leases.claim(own, ISSUE, 10, now=time.time())
            ids = own._batch_ids[ISSUE]
            ids[second[0].key], ids[second[1].key] = ids[second[1].key], ids[second[0].key]
            with pytest.raises(IllegalTransitionError):
                issue.mark_sending([r.key for r in second])
            own.database.release(commit=False)
            counts = issue.counts()
            assert (counts[State.SENT], counts[State.PENDING]) == (10, 10)
            own.close()
