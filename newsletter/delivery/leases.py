"""Leases: several workers send one issue from a shared PostgreSQL store (issue 10).

On SQLite one run sends an issue at a time (`delivery.runlock`, a file lock). On PostgreSQL any
number of workers, on any machines, may send the same issue at once; each holds a *lease*, a row
of `ledger_leases`:

- liveness has two signs, both needed: the worker's connection holds a session advisory lock
  named by the lease's `lock_key` (the server drops it the moment the process dies, even by
  SIGKILL, as the kernel drops a file lock), and a heartbeat written every `HEARTBEAT` seconds
  (a worker cut off from the database, whose connection the server still thinks open, is
  declared dead once the heartbeat is `EXPIRY` seconds old);
- a dead worker's lease is expired by whichever worker looks next (on taking its own lease, and
  at each heartbeat), in one transaction: the rows it left `sending` become `uncertain`, exactly
  like a crash on SQLite, and are never resent unless asked;
- work is claimed in batches: `claim` locks due rows with `SELECT … FOR UPDATE SKIP LOCKED` in a
  transaction the worker holds open until its handover, where it marks them `sending` under its
  lease and commits; no two workers get a row, and a worker that dies before its handover
  leaves its batch pending for the others (D16: only what may have reached the server can be
  left uncertain);
- a claim walks the issue's rows in id order from after the last row its thread claimed or
  the worker's latest claim ended (`ClaimCursor`), and once more from the start before it
  reports nothing due, so rows that became due behind it (released, deferred, left by a dead
  worker) are still found; no index reads the rows' state (store migrations 14 and 15: the
  two updates a recipient's row gets in a send stay on its page and touch no index);
- the audience is frozen once, by the first worker (`first_freeze`: a session advisory lock per
  issue serialises the check, and later workers join the frozen issue).

A worker whose lease was expired while it still lived (a long network partition) can claim
nothing more: `claim` requires the lease to be active, and its late marks are refused.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..store import Connection, Store
from .ledgerrow import LedgerRow, State
from .runlock import LockInfo, RunLock

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = [
    "EXPIRY",
    "HEARTBEAT",
    "ClaimCursor",
    "Lease",
    "claim",
    "first_freeze",
    "hold",
    "leases",
    "live_leases",
]

HEARTBEAT = 5.0  # seconds between a worker's heartbeats
EXPIRY = 30.0  # a heartbeat this old means a dead (or cut-off) worker
_LOCK_CLASS = 0x6E6C  # the advisory-lock class of leases ("nl")

_LIVE = (
    "EXISTS (SELECT 1 FROM pg_locks p WHERE p.locktype = 'advisory' AND p.granted"
    " AND p.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND p.classid::bigint = :lock_class AND p.objid::bigint = ledger_leases.lock_key"
    " AND p.objsubid = 2)"
)
_LEASES = (
    "SELECT id, issue, pid, host, lock_key, state, started_at, heartbeat_at, ended_at, recovered,"
    f" {_LIVE} FROM ledger_leases WHERE issue = :issue ORDER BY id"
)
# Rows in flight per lease: one walk of the issue's rows (no index reads `state`), so only
# `newsletter status` counts them, never a heartbeat.
_IN_FLIGHT = (
    "SELECT lease_id, COUNT(*) FROM ledger_rows WHERE issue = :issue AND state = 'sending'"
    " GROUP BY lease_id"
)
_EXPIRE = (
    "UPDATE ledger_leases SET state = 'expired', ended_at = :now, recovered = :recovered"
    " WHERE id = :id AND state = 'active'"
)
_RECOVER = (
    "UPDATE ledger_rows SET state = 'uncertain', last_error = :error, updated_at = :now"
    " WHERE issue = :issue AND state = 'sending' AND lease_id = :lease"
)
_RECOVER_UNLEASED = (
    "UPDATE ledger_rows SET state = 'uncertain', last_error = :error, updated_at = :now"
    " WHERE issue = :issue AND state = 'sending' AND (lease_id IS NULL OR lease_id NOT IN"
    " (SELECT id FROM ledger_leases WHERE state = 'active'))"
)
_INSERT = (
    "INSERT INTO ledger_leases (issue, pid, host, lock_key, state, started_at, heartbeat_at)"
    " VALUES (:issue, :pid, :host, :lock_key, 'active', :now, :now) RETURNING id"
)
_TRY_ISSUE_LOCK = "SELECT pg_try_advisory_xact_lock(:key)"
_BEAT = "UPDATE ledger_leases SET heartbeat_at = :now WHERE id = :id AND state = 'active'"
_RELEASE = (
    "UPDATE ledger_leases SET state = 'released', ended_at = :now WHERE id = :id"
    " AND state = 'active'"
)
_COLUMNS = (
    "issue, key, email, state, attempts, last_error, reply, message_id, next_attempt_at, updated_at"
)
# Due rows after `:after`, oldest first, skipping rows another worker holds right now; locked
# (not marked) in a transaction the worker keeps open until its handover marks them `sending`
# (D16): a worker that dies before the handover leaves them pending (the server drops its
# locks), not uncertain.
_CLAIM = (
    f"SELECT id, {_COLUMNS} FROM ledger_rows WHERE issue = :issue AND id > :after"
    " AND (state = 'pending' OR (state = 'deferred' AND COALESCE(next_attempt_at, 0) <= :due)"
    " {extra}) AND EXISTS (SELECT 1 FROM ledger_leases WHERE id = :lease AND state = 'active')"
    " ORDER BY id LIMIT :limit{claim}"
)


@dataclass(frozen=True)
class Lease:
    """One worker's lease on an issue, as `newsletter status` shows it."""

    id: int
    issue: str
    info: LockInfo
    state: str  # active, released, expired
    heartbeat_at: float
    ended_at: float | None
    recovered: int  # rows turned uncertain when this lease expired
    alive: bool  # its worker's connection still holds the lease's lock
    in_flight: int  # rows `sending` under this lease now

    def describe(self, now: float) -> str:
        """One line for `newsletter status`."""
        who = self.info.describe()
        if self.state == "active" and self.alive:
            beat = now - self.heartbeat_at
            stale = " (late: it will expire)" if beat > EXPIRY else ""
            return f"{who}: sending, {self.in_flight} in flight, heartbeat {beat:.0f} s ago{stale}"
        if self.state == "active":
            return f"{who}: ended without releasing its lease (expires when a worker looks next)"
        if self.state == "expired":
            return f"{who}: expired, {self.recovered} message(s) left uncertain"
        return f"{who}: finished"


def _issue_key(issue: str) -> int:
    """The advisory-lock key of an issue (a 63-bit space apart from leases' two-part keys)."""
    return 0x6E6C_0000_0000 + zlib.crc32(issue.encode())


def _lease(row: Sequence[Any], in_flight: int = 0) -> Lease:
    return Lease(
        id=int(row[0]),
        issue=str(row[1]),
        info=LockInfo(int(row[2]), str(row[3]), float(row[6])),
        state=str(row[5]),
        heartbeat_at=float(row[7]),
        ended_at=None if row[8] is None else float(row[8]),
        recovered=int(row[9]),
        alive=bool(row[10]) and row[5] == "active",
        in_flight=in_flight,
    )


def leases(store: Store, issue: str, *, counted: bool = True) -> list[Lease]:
    """Every lease ever taken on `issue`, oldest first; with the rows each has in flight when
    `counted` (else 0: counting reads every row of the issue)."""
    with store.read() as db:
        rows = db.execute(_LEASES, {"issue": issue, "lock_class": _LOCK_CLASS}).fetchall()
        counts: dict[int, int] = (
            {int(lease): int(n) for lease, n in db.execute(_IN_FLIGHT, {"issue": issue}) if lease}
            if counted
            else {}
        )
    return [_lease(row, counts.get(int(row[0]), 0)) for row in rows]


def live_leases(store: Store, issue: str, *, now: float, counted: bool = True) -> list[Lease]:
    """The leases whose workers live: lock held and heartbeat fresh."""
    return [
        lease
        for lease in leases(store, issue, counted=counted)
        if lease.alive and now - lease.heartbeat_at <= EXPIRY
    ]


def _expire_dead(db: Connection, issue: str, now: float) -> tuple[int, LockInfo | None]:
    """Expire the dead workers' leases (rows they left `sending` become `uncertain`); call in a
    transaction holding the issue's lock. The rows recovered, and the last dead worker."""
    recovered = 0
    previous = None
    found = db.execute(_LEASES, {"issue": issue, "lock_class": _LOCK_CLASS}).fetchall()
    for lease in map(_lease, found):
        if lease.state != "active" or (lease.alive and now - lease.heartbeat_at <= EXPIRY):
            continue
        why = (
            "ended"
            if not lease.alive
            else f"sent no heartbeat for {now - lease.heartbeat_at:.0f} s"
        )
        error = f"the worker {why} while this message was being sent ({lease.info.describe()})"
        params = {"error": error, "now": now, "issue": issue, "lease": lease.id}
        count = db.execute(_RECOVER, params).rowcount
        db.execute(_EXPIRE, {"now": now, "recovered": count, "id": lease.id})
        recovered += count
        previous = lease.info
    return recovered, previous


@contextlib.contextmanager
def _session_lock(store: Store, sql: str, params: dict[str, int]) -> Iterator[None]:
    """Hold a session advisory lock, waiting as long as its holder keeps it.

    Polled with `pg_try_advisory_lock`, not a blocking `pg_advisory_lock`: the connection's
    `lock_timeout` (meant for row locks) would end the wait while another worker freezes a big
    audience, and the store's connection stays free for other threads meanwhile. A holder that
    dies drops the lock with its session, so the wait cannot outlive it.
    """
    pause = 0.01
    while True:
        with store.lock:
            taken = store.connection.execute(
                f"SELECT pg_try_advisory_lock({sql})", params
            ).fetchone()[0]
        if taken:
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.25)
    try:
        yield
    finally:
        with store.lock:
            store.connection.execute(f"SELECT pg_advisory_unlock({sql})", params)


@contextlib.contextmanager
def hold(
    ledger: Ledger, issue: str, *, clock: Callable[[], float], beat: float = HEARTBEAT
) -> Iterator[RunLock]:
    """Take a lease on `issue` for this worker (PostgreSQL), with a heartbeat thread.

    On taking it, dead workers' leases are expired and their `sending` rows become `uncertain`
    (reported in the RunLock, with the last dead worker as `previous`); so are `sending` rows
    under no live lease at all (a run before leases, or a store copied from SQLite).
    """
    store = ledger.database
    info = LockInfo(pid=os.getpid(), host=socket.gethostname(), started_at=clock())
    key = secrets.randbits(31)
    lock_params = {"lock_class": _LOCK_CLASS, "lock_key": key}
    two_part = "CAST(:lock_class AS INTEGER), CAST(:lock_key AS INTEGER)"
    with _session_lock(store, two_part, lock_params):
        now = clock()
        with ledger._transaction() as db:
            exclusive = store.dialect.exclusive_lock(_issue_key(issue))
            if exclusive is not None:
                # Another worker may be freezing a big audience under this lock for minutes:
                # wait for it (the connection's lock_timeout is meant for row locks).
                db.execute("SET LOCAL lock_timeout = 0")
                db.execute(exclusive)
            recovered, previous = _expire_dead(db, issue, now)
            error = "the run ended while this message was being sent"
            recovered += db.execute(
                _RECOVER_UNLEASED, {"error": error, "now": now, "issue": issue}
            ).rowcount
            lease_id = int(
                db.execute(
                    _INSERT,
                    {
                        "issue": issue,
                        "pid": info.pid,
                        "host": info.host,
                        "lock_key": key,
                        "now": now,
                    },
                ).fetchone()[0]
            )
        ledger._leases[issue] = lease_id
        # The heartbeat has a connection of its own: a long statement of the worker (freezing a
        # million recipients) must not hold it back until the lease looks dead.
        beat_store = Store.open(store.location)
        stop = threading.Event()
        beater = threading.Thread(
            target=_heartbeat,
            args=(beat_store, issue, lease_id, clock, stop, beat),
            name=f"lease-{lease_id}",
            daemon=True,
        )
        beater.start()
        try:
            yield RunLock(issue, info, recovered, previous)
        finally:
            stop.set()
            beater.join()
            beat_store.close()
            ledger._leases.pop(issue, None)
            with store.lock:
                store.connection.execute(_RELEASE, {"now": clock(), "id": lease_id})


def _heartbeat(
    store: Store,
    issue: str,
    lease_id: int,
    clock: Callable[[], float],
    stop: threading.Event,
    beat: float,
) -> None:
    """Renew the lease every `beat` seconds until stopped, and expire dead workers' leases
    when no other worker is doing the same (or freezing) right now."""
    while not stop.wait(beat):
        try:
            now = clock()
            with store.transaction() as db:
                db.execute(_BEAT, {"now": now, "id": lease_id})
            with store.transaction() as db:
                free = db.execute(_TRY_ISSUE_LOCK, {"key": _issue_key(issue)}).fetchone()[0]
                if free:
                    _expire_dead(db, issue, now)
        except store.errors:  # a missed beat is retried; the lease tolerates EXPIRY
            continue


@contextlib.contextmanager
def first_freeze(ledger: Ledger, issue: str, *, now: float) -> Iterator[bool]:
    """Whether this worker should freeze the audience: on SQLite always (one run at a time);
    on PostgreSQL unless the issue is frozen and another worker is sending it. Held until the
    block ends, so a second worker waits for the first one's freeze, then joins it."""
    store = ledger.database
    if store.is_sqlite:
        yield True
        return
    with _session_lock(store, ":key", {"key": _issue_key(issue)}):
        own = ledger._leases.get(issue)
        others = [
            lease for lease in live_leases(store, issue, now=now, counted=False) if lease.id != own
        ]
        frozen = ledger.issue(issue).fingerprint() is not None
        yield not (frozen and others)


@dataclass
class ClaimCursor:
    """Where one sending thread's next claim starts: after the last row it claimed, or after
    the last row of the latest claim by any thread of this worker (a connection of the same
    `Ledger`, sharing its lease), whichever is further.

    Without it every claim would walk the issue from its first row, over every row already
    sent (no index reads the rows' state: store migration 14); with only its own, a thread's
    claim would walk over the batches its sibling threads claimed since (locked or no longer
    due), as many rows again as it takes with two threads. The latest claim, not the
    furthest: once a thread has started over from the first row (rows due again behind),
    the next claims go on from there instead of each walking from the first row again."""

    after: int = 0


_CLAIMED_LOCK = threading.Lock()  # guards every Ledger's `_claimed` (the latest claim's end)


def claim(
    ledger: Ledger,
    issue: str,
    limit: int,
    *,
    now: float,
    states: Sequence[State] = (),
    cursor: ClaimCursor | None = None,
) -> list[LedgerRow]:
    """Up to `limit` due rows, locked for this worker in a transaction left open on `ledger`'s
    connection (`Store.hold`; give the worker a connection of its own: `Ledger.own_connection`).

    Pending rows and due deferred rows, plus rows in `states` (failed, uncertain: a resend).
    The worker marks them `sending` at its handover (`IssueLedger.mark_sending`, which joins the
    transaction) and ends it with `ledger.database.release(commit=True)`; until then no other
    worker gets them, and if this one dies they are pending again. Empty (and no transaction
    left open) when nothing is due, or when this worker's lease was expired.

    With a `cursor`, the walk starts after the cursor's row or the end of the latest claim
    through any of `ledger`'s connections under the same lease, whichever is further, and
    starts over from the first row before answering empty; the cursor moves to the last row
    claimed.
    """
    lease = ledger._leases.get(issue)
    if lease is None:
        raise RuntimeError(f"claim without a lease on issue {issue!r}")
    store = ledger.database
    extra = "".join(f" OR state = '{State(s).value}'" for s in states)
    sql = _CLAIM.format(extra=extra, claim=store.dialect.claim)
    start = 0
    if cursor is not None:
        with _CLAIMED_LOCK:
            start = max(cursor.after, ledger._claimed.get((issue, lease), 0))
    params = {"due": now, "lease": lease, "issue": issue, "limit": limit, "after": start}
    store.hold()
    try:
        with store.lock:
            rows = store.connection.execute(sql, params).fetchall()
            if not rows and start > 0:  # rows may have become due behind the cursor
                params["after"] = 0
                rows = store.connection.execute(sql, params).fetchall()
    except BaseException:
        store.release(commit=False)
        raise
    # The marks of this batch find its rows by id (`ledger._by_id`); a previous batch's are
    # named by key again (a held `sent`, written with this batch's `sending`).
    ledger._batch_ids[issue] = {row[2]: int(row[0]) for row in rows}
    if not rows:
        store.release(commit=False)
    elif cursor is not None:
        cursor.after = int(rows[-1][0])
        with _CLAIMED_LOCK:
            ledger._claimed[issue, lease] = cursor.after
    return [
        LedgerRow(
            issue=row[1],
            key=row[2],
            email=row[3],
            state=State(row[4]),
            attempts=int(row[5]),
            last_error=row[6],
            reply=row[7],
            message_id=row[8],
            next_attempt_at=row[9],
            updated_at=row[10],
        )
        for row in rows
    ]
