"""The send ledger: one row per issue × recipient, moved forward only after a confirmed send.

The ledger lives in the project's store (shared with the subscribers) in tables prefixed
`ledger_`, created by the store's migrations; its queries are here, written once with named
parameters. The run lock that keeps two runs off one issue is `delivery.runlock`.

States and the only legal moves::

    pending ─┐
    deferred ┼─► sending ─► sent | failed | deferred | uncertain
    failed ──┤   (failed and uncertain rows go back to sending only when resending is asked for)
    uncertain┘
    pending | deferred ─► failed   (refused before any network call)
    pending | deferred ─► deferred (a 4xx before the message could be handed over)
    sending | pending | deferred | failed ─► pending   (the sender was refused, not them)
    pending | deferred ─► (removed)   (they unsubscribed during the send)

`sending` is written before the message could reach the server (for SMTP after MAIL and RCPT
were accepted, for provider APIs just before the request) and `sent` after it, each committed
before the method returns. A row still `sending` when a later run takes the issue's lock was
interrupted mid-send (the lock guarantees its run is dead), so taking the lock moves it to the
explicit `uncertain` state: it is reported, and not sent again unless the editor asks.

Durability: every method commits before it returns; on SQLite a process crash (even SIGKILL)
loses nothing, and `durable=True` adds an fsync per commit (`store.sqlite` says what each means).

Times are seconds since the epoch (`time.time()`), because rows outlive the process.

About 740 lines, kept in one module on purpose: the legal moves are written once, in the
WHERE clauses of the queries here, next to the code that explains a refused move.
"""

from __future__ import annotations

import contextlib
import heapq
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..audience.model import Subscriber
from ..errors import LedgerError
from ..store import Connection, Dialect, Params, Store, StoreError, StoreSource
from . import freeze, leases, runlock
from .ledgerrow import IllegalTransitionError, LedgerRow, State
from .runlock import LockInfo, RunLock

__all__ = [
    "DeferredSummary",
    "FreezeReport",
    "IllegalTransitionError",
    "IssueLedger",
    "Ledger",
    "LedgerRow",
    "LockInfo",
    "RunLock",
    "State",
]

_PAGE = 1000  # rows fetched per query while streaming: bounded memory, short lock holds


class _Refused(Exception):
    """A batch touched fewer rows than it named: roll back, then explain."""


@dataclass(frozen=True)
class DeferredSummary:
    """The rows of an issue waiting for a retry (times are Unix seconds; None when none wait)."""

    count: int
    next_attempt_at: float | None
    oldest_since: float | None


@dataclass(frozen=True)
class FreezeReport:
    """What freezing the audience did.

    `added` counts new rows (all of them on the first freeze, newcomers on a resume);
    `removed` counts pending or deferred rows whose recipient is no longer in the audience
    (unsubscribed since); `total` is the number of rows afterwards.
    """

    issue: str
    first: bool
    received: int
    added: int
    removed: int
    total: int


_COLUMNS = (
    "issue, key, email, state, attempts, last_error, reply, message_id, next_attempt_at, updated_at"
)


def _in(states: Sequence[State]) -> str:
    return ", ".join(f"'{s.value}'" for s in states)


# Which states each transition may leave from.
_FROM_SENDABLE = (State.PENDING, State.DEFERRED)
_FROM_RESENDABLE = (State.PENDING, State.DEFERRED, State.FAILED, State.UNCERTAIN)
_FROM_FAILABLE = (State.SENDING, State.PENDING, State.DEFERRED)

# Every move of a batch is one statement over the batch's rows as a table `v` (`{rows}`, the
# dialect's `rows_from`): on PostgreSQL one statement and one round trip for the whole batch; on
# SQLite the same statement once per row, in the caller's one transaction. `_OWN` keeps a worker
# off rows another worker is sending (PostgreSQL leases; NULL on SQLite, where one run sends).
_OWN = (
    " AND (r.state <> 'sending' OR COALESCE(r.lease_id, 0) = COALESCE(CAST(:lease AS BIGINT), 0))"
)
_SQL_SENDING = (
    "UPDATE ledger_rows AS r SET state = 'sending', attempts = r.attempts + 1,"
    " message_id = COALESCE(v.message_id, r.message_id), next_attempt_at = NULL,"
    " updated_at = :now, lease_id = :lease FROM {rows}"
    " WHERE r.issue = :issue AND r.key = v.key AND r.state IN ({states})"
)
_SQL_SEND = _SQL_SENDING.replace("{states}", _in(_FROM_SENDABLE))
_SQL_RESEND = _SQL_SENDING.replace("{states}", _in(_FROM_RESENDABLE))
_SQL_SENT = (
    "UPDATE ledger_rows AS r SET state = 'sent', reply = v.reply,"
    " message_id = COALESCE(v.message_id, r.message_id), next_attempt_at = NULL,"
    " updated_at = :now FROM {rows}"
    " WHERE r.issue = :issue AND r.key = v.key AND r.state = 'sending'" + _OWN
)
_SQL_FAILED = (
    "UPDATE ledger_rows AS r SET state = 'failed', last_error = v.error, next_attempt_at = NULL,"
    " attempts = r.attempts + CASE WHEN r.state = 'sending' THEN 0 ELSE :tried END,"
    " updated_at = :now FROM {rows} WHERE r.issue = :issue AND r.key = v.key"
    f" AND r.state IN ({_in(_FROM_FAILABLE)})" + _OWN
)
# From `sending`, or straight from pending/deferred when the server refused before the row was
# marked (a 4xx at MAIL or RCPT): that try still counts as an attempt.
_SQL_DEFERRED = (
    "UPDATE ledger_rows AS r SET state = 'deferred', last_error = v.error,"
    " next_attempt_at = v.at, deferred_since = COALESCE(r.deferred_since, :now),"
    " attempts = r.attempts + CASE WHEN r.state = 'sending' THEN 0 ELSE 1 END,"
    " updated_at = :now FROM {rows} WHERE r.issue = :issue AND r.key = v.key"
    " AND r.state IN ('sending', 'pending', 'deferred')" + _OWN
)
# Back to pending after a refusal of the sender, not the recipient: the try is not counted.
_FROM_RELEASABLE = (State.SENDING, State.PENDING, State.DEFERRED, State.FAILED)
_SQL_RELEASE = (
    "UPDATE ledger_rows AS r SET state = 'pending', last_error = v.error,"
    " next_attempt_at = NULL,"
    " attempts = CASE WHEN r.state <> 'pending' AND r.attempts > 0 THEN r.attempts - 1"
    " ELSE r.attempts END,"
    " updated_at = :now FROM {rows} WHERE r.issue = :issue AND r.key = v.key"
    f" AND r.state IN ({_in(_FROM_RELEASABLE)})" + _OWN
)
_SQL_LEFT = (
    "DELETE FROM ledger_rows WHERE issue = :issue AND key = :key"
    " AND state IN ('pending', 'deferred')"
)
_SQL_UNCERTAIN = (
    "UPDATE ledger_rows AS r SET state = 'uncertain', last_error = v.error,"
    " next_attempt_at = NULL, updated_at = :now FROM {rows}"
    " WHERE r.issue = :issue AND r.key = v.key AND r.state = 'sending'" + _OWN
)


@dataclass(frozen=True)
class _Move:
    """One legal move of a batch of rows: its statement, the columns of its rows (`v`), where
    the rows go and the states they may leave."""

    sql: str
    columns: tuple[tuple[str, str], ...]
    target: State
    allowed: tuple[State, ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]


_BY_ID: dict[_Move, _Move] = {}


def _by_id(move: _Move) -> _Move:
    """`move` over rows named by their id as well as their key: the rows of a batch this
    connection claimed (PostgreSQL, `leases.claim` keeps their ids in `Ledger._batch_ids`).
    Each row is found through the primary key (a bigint) instead of the (issue, key) index
    (text comparisons in every step down the tree): the server's CPU for a batch's claim and
    two marks fell from 0.0155 to 0.0135 s per 1,000 rows (a standalone check, medians of 6).
    The key is still compared, so a row whose id does not go with its key is not written (the
    batch is then refused whole, as for any row that may not move)."""
    found = _BY_ID.get(move)
    if found is None:
        assert move.sql.count("r.key = v.key") == 1, move.sql
        found = _Move(
            move.sql.replace("r.key = v.key", "r.id = v.id AND r.key = v.key"),
            (("id", "int"), *move.columns),
            move.target,
            move.allowed,
        )
        _BY_ID[move] = found
    return found


_STATEMENTS: dict[tuple[str, str], str] = {}  # (engine, move's SQL): strings keep their hash


def _statement(dialect: Dialect, move: _Move) -> str:
    """`move`'s statement for `dialect`, written once per process (rewriting it with regular
    expressions on every mark cost a tenth of the mark's CPU)."""
    found = _STATEMENTS.get((dialect.name, move.sql))
    if found is None:
        found = dialect.batch_statement(move.sql, move.columns)
        _STATEMENTS[dialect.name, move.sql] = found
    return found


_SENDING_MOVE = {
    False: _Move(
        _SQL_SEND, (("key", "text"), ("message_id", "text")), State.SENDING, _FROM_SENDABLE
    ),
    True: _Move(
        _SQL_RESEND, (("key", "text"), ("message_id", "text")), State.SENDING, _FROM_RESENDABLE
    ),
}
_SENT_MOVE = _Move(
    _SQL_SENT,
    (("key", "text"), ("reply", "text"), ("message_id", "text")),
    State.SENT,
    (State.SENDING,),
)
_FAILED_MOVE = _Move(
    _SQL_FAILED, (("key", "text"), ("error", "text")), State.FAILED, _FROM_FAILABLE
)
_DEFERRED_MOVE = _Move(
    _SQL_DEFERRED,
    (("key", "text"), ("error", "text"), ("at", "real")),
    State.DEFERRED,
    (State.SENDING, State.PENDING, State.DEFERRED),
)
_RELEASE_MOVE = _Move(
    _SQL_RELEASE, (("key", "text"), ("error", "text")), State.PENDING, _FROM_RELEASABLE
)
_UNCERTAIN_MOVE = _Move(
    _SQL_UNCERTAIN, (("key", "text"), ("error", "text")), State.UNCERTAIN, (State.SENDING,)
)


_SQL_RECOVER = (
    "UPDATE ledger_rows SET state = 'uncertain', last_error = :error, updated_at = :now"
    " WHERE issue = :issue AND state = 'sending'"
)
# `newsletter reconcile`: the provider settled an uncertain row either way. The try that left it
# uncertain is not counted when it never reached the provider.
_SQL_SETTLE_SENT = (
    "UPDATE ledger_rows AS r SET state = 'sent', reply = v.reply, updated_at = :now FROM {rows}"
    " WHERE r.issue = :issue AND r.key = v.key AND r.state = 'uncertain'"
)
_SQL_SETTLE_UNSENT = (
    "UPDATE ledger_rows AS r SET state = 'pending', last_error = v.error, next_attempt_at = NULL,"
    " attempts = CASE WHEN r.attempts > 0 THEN r.attempts - 1 ELSE 0 END, updated_at = :now"
    " FROM {rows} WHERE r.issue = :issue AND r.key = v.key AND r.state = 'uncertain'"
)
_SETTLE_SENT_MOVE = _Move(
    _SQL_SETTLE_SENT, (("key", "text"), ("reply", "text")), State.SENT, (State.UNCERTAIN,)
)
_SETTLE_UNSENT_MOVE = _Move(
    _SQL_SETTLE_UNSENT, (("key", "text"), ("error", "text")), State.PENDING, (State.UNCERTAIN,)
)
# Deferred too long (its first deferral before :cutoff): given up, like an MTA's bounce after
# its queue lifetime. Rows deferred before this column existed count from their last update.
_SQL_GIVE_UP = (
    "UPDATE ledger_rows SET state = 'failed', next_attempt_at = NULL, updated_at = :now,"
    " last_error = :prefix || COALESCE(last_error, 'no reason recorded')"
    " WHERE issue = :issue AND state = 'deferred'"
    " AND COALESCE(deferred_since, updated_at) < :cutoff"
)
_SQL_DEFERRED_SUMMARY = (
    "SELECT COUNT(*), MIN(next_attempt_at), MIN(COALESCE(deferred_since, updated_at))"
    " FROM ledger_rows WHERE issue = :issue AND state = 'deferred'"
)
_SQL_STATE = "SELECT state FROM ledger_rows WHERE issue = :issue AND key = :key"
# One page of one state's rows, in id order (see IssueLedger._merged).
_SQL_PAGE = (
    f"SELECT id, {_COLUMNS} FROM ledger_rows"
    " WHERE issue = :issue AND state = :state AND id > :after ORDER BY id LIMIT :limit"
)
_SQL_DUE_PAGE = (
    f"SELECT id, {_COLUMNS} FROM ledger_rows"
    " WHERE issue = :issue AND state = :state AND id > :after"
    " AND COALESCE(next_attempt_at, 0) <= :due ORDER BY id LIMIT :limit"
)


_T = TypeVar("_T")


def _is_busy(err: BaseException) -> bool:
    """Whether `err` (or what caused it) is the database being locked by another writer."""
    seen: BaseException | None = err
    while seen is not None:
        text = str(seen).lower()
        if "database is locked" in text or "database is busy" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retry_busy(
    write: Callable[[], _T], patience: float, retryable: Callable[[], bool] = lambda: True
) -> _T:
    """Run `write`, again with a growing pause while another process holds the database, for
    up to `patience` seconds; then the error stands (the caller pauses the run)."""
    deadline = time.monotonic() + patience
    pause = 0.05
    while True:
        try:
            return write()
        except LedgerError as err:
            late = time.monotonic() + pause > deadline
            if not _is_busy(err) or late or not retryable():
                raise
        time.sleep(pause)
        pause = min(pause * 2, 2.0)


def _named_by_id(
    move: _Move, rows: list[dict[str, Any]], ids: Mapping[str, int]
) -> tuple[_Move, list[dict[str, Any]]]:
    """`move` by id (`_by_id`) when every row of it was claimed through this connection, with
    each row's id added; else as it is (rows named by key alone)."""
    found = [ids.get(row["key"]) for row in rows]
    if None in found:
        return move, rows
    for row, row_id in zip(rows, found, strict=True):
        row["id"] = row_id  # the rows were built for this call alone
    return _by_id(move), rows


def _row(values: Sequence[Any]) -> LedgerRow:
    return LedgerRow(
        issue=values[0],
        key=values[1],
        email=values[2],
        state=State(values[3]),
        attempts=values[4],
        last_error=values[5],
        reply=values[6],
        message_id=values[7],
        next_attempt_at=values[8],
        updated_at=values[9],
    )


class Ledger:
    """The send ledger on the project's store; safe to share between threads.

    One connection guarded by the store's lock: SQLite serialises writers anyway, and a single
    connection keeps each `mark_*` to one prepared UPDATE and one WAL append (thousands per
    second). `Ledger(path)` opens the store at `path` and closes it on `close()`; `Ledger(store)`
    uses an open `Store` (its own durability and busy timeout) and leaves it open.
    """

    def __init__(
        self,
        source: StoreSource | Store,
        *,
        clock: Callable[[], float] = time.time,
        durable: bool = False,
        busy_timeout: float = 10.0,
        busy_retry: float = 600.0,
    ) -> None:
        # Seconds a write keeps retrying while another process holds the database (on top of
        # each attempt's busy timeout): a long import must not kill a send (issue 15, D1).
        self.busy_retry = busy_retry
        if isinstance(source, Store):
            self.database, self._owned = source, False
        else:
            try:
                self.database = Store.open(
                    source, durable=durable, busy_timeout=busy_timeout, purpose="the send ledger"
                )
            except StoreError as err:
                raise LedgerError(err.message, hint=err.hint) from err
            self._owned = True
        self.path = self.database.path
        self._clock = clock
        self._errors = self.database.errors
        # The hot path (one UPDATE per mark) uses these directly: no call through the store.
        self._db: Connection = self.database.connection
        self._lock = self.database.lock
        self._leases: dict[str, int] = {}  # issue -> this worker's lease (PostgreSQL)
        # issue -> {key: id} of the rows of the latest claim through this connection
        # (`leases.claim`): their marks find them by id (`_by_id`). Never shared between
        # connections: each sending thread has its own.
        self._batch_ids: dict[str, dict[str, int]] = {}
        # (issue, lease) -> the last row of this worker's latest claim (`leases.claim`)
        self._claimed: dict[tuple[str, int], int] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store if this object opened it."""
        if self._owned:
            self.database.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One write transaction; LedgerError if the database will not let us write."""
        begun = False
        try:
            with self.database.transaction() as db:
                begun = True
                yield db
        except self._errors as err:
            if begun:
                raise
            raise LedgerError(
                f"{self.database.where}: cannot write to the send ledger: {err}",
                hint="another program may be holding the database; try again",
            ) from err

    # --- issues ---------------------------------------------------------------------------------

    def issue(self, name: str) -> IssueLedger:
        """The ledger of one issue (it need not be frozen yet)."""
        if not name:
            raise LedgerError("an issue name is required for the send ledger")
        return IssueLedger(self, name)

    def issues(self) -> list[str]:
        """Every issue the ledger has frozen an audience for (a freeze completed), by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT issue FROM ledger_issues WHERE frozen_round > 0 ORDER BY issue"
            ).fetchall()
        return [r[0] for r in rows]

    def lock_path(self, issue: str) -> Path:
        """The issue's run-lock file, beside the database."""
        return runlock.lock_path(self.path, issue)

    def lock(self, issue: str) -> contextlib.AbstractContextManager[RunLock]:
        """Hold the issue's send lock for a run, across processes (`delivery.runlock`).

        On taking it, rows a dead run left `sending` become `uncertain`. On PostgreSQL, a lease
        instead (`delivery.leases`): several workers may send one issue.
        """
        if not self.database.is_sqlite:
            return leases.hold(self, issue, clock=self._clock)
        return runlock.hold(
            self.lock_path(issue), issue, clock=self._clock, recover=self.issue(issue)._recover
        )

    def own_connection(self) -> Ledger:
        """This ledger through a connection of its own (closed with it), sharing the leases:
        a sending thread on PostgreSQL holds its claimed batch's transaction open there."""
        copy = Ledger(
            Store.open(self.database.location, purpose="the send ledger"),
            clock=self._clock,
            busy_retry=self.busy_retry,
        )
        copy._owned = True
        copy._leases = self._leases
        copy._claimed = self._claimed
        return copy

    def is_locked(self, issue: str) -> bool:
        """Whether a live run holds the issue's lock (this process's own run counts)."""
        if not self.database.is_sqlite:
            return bool(leases.live_leases(self.database, issue, now=self._clock()))
        return runlock.is_locked(self.lock_path(issue))


class IssueLedger:
    """The rows of one issue. Every method commits before it returns, and is thread-safe."""

    def __init__(self, ledger: Ledger, name: str) -> None:
        self.ledger = ledger
        self.name = name
        self._db = ledger._db
        self._lock = ledger._lock
        self._errors = ledger._errors

    def _now(self) -> float:
        return self.ledger._clock()

    def lock(self) -> contextlib.AbstractContextManager[RunLock]:
        """`Ledger.lock` for this issue."""
        return self.ledger.lock(self.name)

    # --- freezing -------------------------------------------------------------------------------

    def freeze(self, recipients: Iterable[tuple[str, str]], fingerprint: str) -> FreezeReport:
        """Record the audience, streaming, in short transactions, complete only at the end
        (`delivery.freeze`; each transaction waits while another process holds the database,
        up to `busy_retry` seconds).

        `recipients` yields `(key, email)`. The first call stores `fingerprint`; a later call (a
        resume) with a different one is refused until `set_fingerprint` accepts the change. A
        resume adds newcomers, updates the address of rows not yet tried, and removes pending or
        deferred rows whose key is gone from the audience (they unsubscribed); rows that were
        sent, failed, or are sending or uncertain always stay.
        """
        return freeze.freeze_recipients(self, recipients, fingerprint)

    def freeze_subscribers(
        self,
        fingerprint: str,
        *,
        check: Callable[[Subscriber], bool] | None = None,
        refuse: Callable[[], Exception] | None = None,
        where: str = "",
        params: Mapping[str, Any] | None = None,
        head: int | None = None,
        chunk: int | None = None,
        chunk_written: Callable[[], None] | None = None,
        halted: Callable[[], bool] | None = None,
    ) -> FreezeReport:
        """`freeze` of the subscribed people of the store this ledger lives in, read once and
        copied inside the engine a key range at a time (`delivery.freeze.freeze_subscribers`
        explains `check`, `refuse`, the `where`/`params` audience filter, `head`, `chunk`,
        `chunk_written` and `halted`)."""
        return freeze.freeze_subscribers(
            self,
            fingerprint,
            check=check,
            refuse=refuse,
            where=where,
            params=params,
            head=head,
            chunk=chunk,
            chunk_written=chunk_written,
            halted=halted,
        )

    def _total(self) -> int:
        found = self._db.execute(
            "SELECT COUNT(*) FROM ledger_rows WHERE issue = :issue", {"issue": self.name}
        ).fetchone()
        return int(found[0])

    def _changed(self, stored: str, new: str) -> LedgerError:
        sent = self._db.execute(
            "SELECT COUNT(*) FROM ledger_rows WHERE issue = :issue AND state = 'sent'",
            {"issue": self.name},
        ).fetchone()[0]
        return LedgerError(
            f"issue '{self.name}' changed since its sending began: its content fingerprint is "
            f"{new[:12]}, the ledger holds {stored[:12]}; {sent} recipients already have the "
            "earlier version",
            hint="review the change, then accept it to send the new version to the rest",
        )

    def fingerprint(self) -> str | None:
        """The content fingerprint stored at the first freeze (None before one completed)."""
        with self._lock:
            found = self._db.execute(
                "SELECT fingerprint FROM ledger_issues WHERE issue = :issue AND frozen_round > 0",
                {"issue": self.name},
            ).fetchone()
        return None if found is None else str(found[0])

    def set_fingerprint(self, fingerprint: str) -> None:
        """Accept changed content: later freezes compare against this fingerprint."""
        with self.ledger._transaction():
            changed = self._db.execute(
                "UPDATE ledger_issues SET fingerprint = :fingerprint, updated_at = :now"
                " WHERE issue = :issue",
                {"fingerprint": fingerprint, "now": self._now(), "issue": self.name},
            ).rowcount
            if not changed:
                raise LedgerError(f"issue '{self.name}' has no audience frozen in the ledger yet")

    # --- transitions ----------------------------------------------------------------------------

    def mark_sending(
        self,
        keys: Iterable[str],
        *,
        message_ids: Mapping[str, str] | None = None,
        resend: bool = False,
    ) -> None:
        """Before the network call: these rows are being sent (one transaction; attempts + 1).

        Pending and deferred rows may be sent; failed and uncertain ones only with `resend`.
        If any key may not move, none does.
        """
        ids = message_ids or {}
        self.record(sending=[(key, ids.get(key)) for key in keys], resend=resend)

    def mark_sent(self, key: str, reply: str, *, message_id: str | None = None) -> None:
        """After the transport accepted the message: `reply` is the server reply or provider id."""
        self.record(sent=[(key, reply, message_id)])

    def mark_sent_many(
        self, items: Iterable[tuple[str, str]], *, message_ids: Mapping[str, str] | None = None
    ) -> None:
        ids = message_ids or {}
        self.record(sent=[(key, reply, ids.get(key)) for key, reply in items])

    def mark_failed(self, key: str, error: str) -> None:
        """Permanently failed (never retried unless asked); also for refusals before sending."""
        self.record(failed=[(key, error)])

    def mark_failed_many(self, items: Iterable[tuple[str, str]], *, tried: bool = False) -> None:
        """`tried`: the server refused these rows before they were marked `sending` (that try
        counts as an attempt); False for refusals before any network call."""
        self.record(failed=list(items), tried=tried)

    def mark_deferred(self, key: str, error: str, next_attempt_at: float) -> None:
        """Failed for now (a transient error): `todo` offers it again from `next_attempt_at`."""
        self.record(deferred=[(key, error, next_attempt_at)])

    def mark_deferred_many(self, items: Iterable[tuple[str, str, float]]) -> None:
        self.record(deferred=list(items))

    def release_many(self, items: Iterable[tuple[str, str]]) -> None:
        """Back to pending, with the reason: the sender was refused, not these recipients.

        For rows being sent, not yet tried, or just failed by a refusal that turned out to be
        the sender's (the same reply for many in a row). The try is not counted.
        """
        self.record(released=list(items))

    def mark_uncertain(self, key: str, error: str) -> None:
        """The message may or may not have gone (e.g. connection lost after the data)."""
        self.record(uncertain=[(key, error)])

    def record(
        self,
        *,
        sending: Sequence[tuple[str, str | None]] = (),
        sent: Sequence[tuple[str, str, str | None]] = (),
        failed: Sequence[tuple[str, str]] = (),
        deferred: Sequence[tuple[str, str, float]] = (),
        released: Sequence[tuple[str, str]] = (),
        uncertain: Sequence[tuple[str, str]] = (),
        resend: bool = False,
        tried: bool = False,
    ) -> None:
        """Several moves in ONE transaction (a group commit), each one statement for its rows:

        `sent` (key, reply, Message-ID) and `failed`, `deferred` (key, error, due), `released`,
        `uncertain` (key, error) are outcomes; `sending` (key, Message-ID) marks rows about to
        be sent (pending or deferred; failed and uncertain ones too with `resend`). `tried` as
        for `mark_failed_many`. If any row may not move, nothing is written.
        """
        # Only the moves asked for are built: a mark is on the hot path (one per message).
        todo: list[tuple[_Move, list[dict[str, Any]]]] = []
        if sending:
            todo.append((_SENDING_MOVE[resend], [{"key": k, "message_id": m} for k, m in sending]))
        if sent:
            todo.append((_SENT_MOVE, [{"key": k, "reply": r, "message_id": m} for k, r, m in sent]))
        if failed:
            todo.append((_FAILED_MOVE, [{"key": k, "error": e} for k, e in failed]))
        if deferred:
            todo.append(
                (_DEFERRED_MOVE, [{"key": k, "error": e, "at": at} for k, e, at in deferred])
            )
        if released:
            todo.append((_RELEASE_MOVE, [{"key": k, "error": e} for k, e in released]))
        if uncertain:
            todo.append((_UNCERTAIN_MOVE, [{"key": k, "error": e} for k, e in uncertain]))
        if not todo:
            return
        ids = self.ledger._batch_ids.get(self.name)
        if ids:
            todo = [_named_by_id(move, rows, ids) for move, rows in todo]
        shared = {
            "now": self._now(),
            "issue": self.name,
            "lease": self.ledger._leases.get(self.name),
            "tried": int(tried),
        }
        _retry_busy(lambda: self._record_once(todo, shared), self.ledger.busy_retry)

    def _record_once(self, todo: list[tuple[_Move, list[dict[str, Any]]]], shared: Params) -> None:
        dialect = self.ledger.database.dialect
        statements = [
            (
                move,
                rows,
                _statement(dialect, move),
                dialect.batch_params(rows, move.names, shared),
            )
            for move, rows in todo
        ]
        first = todo[0]
        with self._lock:
            try:
                if len(statements) == 1 and len(statements[0][1]) == 1 and not dialect.batch_setup:
                    # One row: one statement in autocommit mode is its own transaction, the
                    # cheap path (a batch needs the transaction: all rows move, or none).
                    _, rows, sql, params = statements[0]
                    if self._db.execute(sql, params[0]).rowcount != len(rows):
                        raise self._illegal(
                            [r["key"] for r in rows], first[0].target, first[0].allowed
                        )
                    return
                try:
                    with self.ledger._transaction() as db:
                        if dialect.batch_setup:
                            db.execute(dialect.batch_setup)
                        for move, rows, sql, params in statements:
                            done = (
                                db.execute(sql, params[0]).rowcount
                                if len(params) == 1
                                else db.executemany(sql, params).rowcount
                            )
                            if done != len(rows):
                                first = (move, rows)
                                raise _Refused
                except _Refused:
                    # Explained after the rollback, so the states read are the stored ones.
                    move, rows = first
                    raise self._illegal(
                        [r["key"] for r in rows], move.target, move.allowed
                    ) from None
            except self._errors as err:
                move, rows = first
                more = sum(len(r) for _, r in todo) - 1
                raise LedgerError(
                    f"issue '{self.name}': cannot record {move.target.value} for "
                    f"{rows[0]['key']!r}{f' and {more} more' if more else ''}: {err}"
                ) from err

    def remove_left(self, keys: Iterable[str]) -> int:
        """Drop pending or deferred rows whose recipient left during the send (unsubscribed):
        as a later freeze would. Rows in any other state stay. Returns how many went."""
        params = [{"issue": self.name, "key": key} for key in keys]
        if not params:
            return 0

        def remove() -> int:
            try:
                with self.ledger._transaction():
                    return self._db.executemany(_SQL_LEFT, params).rowcount
            except self._errors as err:
                raise LedgerError(f"issue '{self.name}': cannot drop who left: {err}") from err

        return _retry_busy(remove, self.ledger.busy_retry)

    def settle_sent(self, key: str, reply: str) -> None:
        """An uncertain row the provider proved it accepted: `sent`, with the evidence."""
        self._settle(_SETTLE_SENT_MOVE, {"key": key, "reply": reply})

    def settle_unsent(self, key: str, evidence: str) -> None:
        """An uncertain row the provider proved it never had: `pending`, sent by the next run."""
        self._settle(_SETTLE_UNSENT_MOVE, {"key": key, "error": evidence})

    def _settle(self, move: _Move, row: dict[str, Any]) -> None:
        shared = {"now": self._now(), "issue": self.name}
        _retry_busy(lambda: self._record_once([(move, [row])], shared), self.ledger.busy_retry)

    def give_up_deferred(self, cutoff: float, lifetime: str) -> int:
        """Fail deferred rows first deferred before `cutoff` (retried for `lifetime`, e.g.
        "1 d", which the recorded reason names). Returns how many."""
        params = {
            "issue": self.name,
            "now": self._now(),
            "cutoff": cutoff,
            "prefix": f"gave up after retrying for {lifetime}: ",
        }

        def give_up() -> int:
            try:
                with self.ledger._transaction():
                    return int(self._db.execute(_SQL_GIVE_UP, params).rowcount)
            except self._errors as err:
                raise LedgerError(f"issue '{self.name}': cannot give up late rows: {err}") from err

        return _retry_busy(give_up, self.ledger.busy_retry)

    def deferred(self) -> DeferredSummary:
        """How many rows wait for a retry, the earliest next try and the oldest first deferral."""
        with self._lock:
            found = self._db.execute(_SQL_DEFERRED_SUMMARY, {"issue": self.name}).fetchone()
        return DeferredSummary(int(found[0]), found[1], found[2])

    def _illegal(self, keys: list[str], target: State, allowed: Sequence[State]) -> LedgerError:
        """Explain the first key of a refused batch (nothing of the batch was written)."""
        seen: set[str] = set()
        for key in keys:
            found = self._db.execute(_SQL_STATE, {"issue": self.name, "key": key}).fetchone()
            if found is None:
                return IllegalTransitionError(
                    f"issue '{self.name}': recipient {key!r} is not in the ledger "
                    f"(cannot mark it {target.value})"
                )
            # In a batch, a key listed twice fails the second time although its stored state is
            # still allowed (the first update is rolled back).
            if found[0] not in allowed or key in seen:
                state = target.value if key in seen else found[0]
                hint = None
                if target is State.SENDING and state in (State.FAILED, State.UNCERTAIN):
                    hint = "ask explicitly to resend failed or uncertain recipients"
                return IllegalTransitionError(
                    f"issue '{self.name}': recipient {key!r} is {state}; it cannot be marked "
                    f"{target.value}" + (" (listed twice)" if key in seen else ""),
                    hint=hint,
                )
            seen.add(key)
        return IllegalTransitionError(
            f"issue '{self.name}': the rows changed while being marked {target.value}"
        )

    def _recover(self, previous: LockInfo | None) -> int:
        """Rows a dead run left `sending` become `uncertain` (called under the issue lock)."""
        reason = "the run ended while this message was being sent"
        if previous is not None:
            reason += f" ({previous.describe()})"
        with self.ledger._transaction():
            return self._db.execute(
                _SQL_RECOVER, {"error": reason, "now": self._now(), "issue": self.name}
            ).rowcount

    # --- reading --------------------------------------------------------------------------------

    def todo(
        self,
        *,
        now: float | None = None,
        retry_failed: bool = False,
        resend_uncertain: bool = False,
    ) -> Iterator[LedgerRow]:
        """Rows to send now, in freeze order, streamed page by page.

        Pending rows, deferred rows whose `next_attempt_at` has come, and failed or uncertain
        rows when asked. Rows marked while the caller iterates are neither repeated nor skipped.
        """
        when = self._now() if now is None else now
        states = [State.PENDING, State.DEFERRED]
        if retry_failed:
            states.append(State.FAILED)
        if resend_uncertain:
            states.append(State.UNCERTAIN)
        return self._merged(states, due=when)

    def _merged(self, states: Sequence[State], due: float | None = None) -> Iterator[LedgerRow]:
        """Rows in `states`, in id order: one index walk per state, merged.

        Each state is read by key set (`id > last`) along the (issue, state) index, so a page
        costs only the rows it returns and no cursor stays open across the caller's writes (an
        OR of states would make SQLite sort every remaining row for every page). A row that
        moves into a wanted state after the merge has passed its id is not offered again.
        """
        streams = [
            self._stream(state, due if state is State.DEFERRED else None) for state in states
        ]
        last = 0
        for row_id, row in heapq.merge(*streams, key=lambda pair: pair[0]):
            if row_id > last:
                last = row_id
                yield row

    def following(
        self, finished: Callable[[], bool], wait: Callable[[], object]
    ) -> Iterator[LedgerRow]:
        """Pending rows in freeze order while a freeze round in another thread is still
        adding them: when the rows run out before `finished()`, `wait()` (for its next chunk),
        then read on after the last row given. Each row is given once; ends after a read that
        began once the round had finished."""
        last = 0
        while True:
            done = finished()  # before the read: all it wrote is committed, so it is seen
            for row_id, row in self._stream(State.PENDING, None, after=last):
                last = row_id
                yield row
            if done:
                return
            wait()

    def _stream(
        self, state: State, due: float | None, *, after: int = 0
    ) -> Iterator[tuple[int, LedgerRow]]:
        sql = _SQL_PAGE if due is None else _SQL_DUE_PAGE
        params = {
            "issue": self.name,
            "state": state.value,
            "after": after,
            "due": due,
            "limit": _PAGE,
        }
        while True:
            with self._lock:
                page = self._db.execute(sql, params).fetchall()
            for values in page:
                yield values[0], _row(values[1:])
            if len(page) < _PAGE:
                return
            params["after"] = page[-1][0]

    def row(self, key: str) -> LedgerRow | None:
        with self._lock:
            found = self._db.execute(
                f"SELECT {_COLUMNS} FROM ledger_rows WHERE issue = :issue AND key = :key",
                {"issue": self.name, "key": key},
            ).fetchone()
        return None if found is None else _row(found)

    def rows(self, *states: State) -> Iterator[LedgerRow]:
        """Every row (or those in `states`), in freeze order, streamed."""
        return self._merged(states or tuple(State))

    def counts(self) -> dict[State, int]:
        """Rows per state; every state is present, zero when empty."""
        with self._lock:
            found = self._db.execute(
                "SELECT state, COUNT(*) FROM ledger_rows WHERE issue = :issue GROUP BY state",
                {"issue": self.name},
            ).fetchall()
        counts = dict.fromkeys(State, 0)
        for state, count in found:
            counts[State(state)] = count
        return counts

    def failures(self) -> list[LedgerRow]:
        """Permanently failed rows, with their reasons in `last_error`."""
        return list(self.rows(State.FAILED))

    def uncertain(self) -> list[LedgerRow]:
        """Rows that may or may not have been delivered.

        The `uncertain` rows, plus rows left `sending` when no live run holds the issue's lock
        (a crashed run that no later run has taken over yet).
        """
        if self.ledger.is_locked(self.name):
            return list(self.rows(State.UNCERTAIN))
        return list(self.rows(State.UNCERTAIN, State.SENDING))
