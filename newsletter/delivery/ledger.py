"""The send ledger: one row per issue × recipient, moved forward only after a confirmed send.

The ledger lives in the project's SQLite file (shared with the subscriber store) in tables
prefixed `ledger_`; its schema version is kept in `ledger_meta` because `PRAGMA user_version`
belongs to the subscriber store.

States and the only legal moves::

    pending ─┐
    deferred ┼─► sending ─► sent | failed | deferred | uncertain
    failed ──┤   (failed and uncertain rows go back to sending only when resending is asked for)
    uncertain┘
    pending | deferred ─► failed   (refused before any network call)

`sending` is written before the network call and `sent` after it, each committed before the
method returns. A row still `sending` when a later run takes the issue's lock was interrupted
mid-send (the lock guarantees its run is dead), so taking the lock moves it to the explicit
`uncertain` state: it is reported, and not sent again unless the editor asks.

Durability: WAL with `synchronous=NORMAL`. Every commit is written to the WAL file before the
method returns; the fsync is deferred to checkpoints. A process crash (even SIGKILL) loses nothing
because the written pages sit in the operating system's cache and the next open replays the WAL;
only a power cut or kernel crash can lose the last few commits (the database stays consistent).
Pass `durable=True` for `synchronous=FULL` (an fsync per commit) when that matters more than speed.

Times are seconds since the epoch (`time.time()`), because rows outlive the process.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import heapq
import json
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import LedgerError

SCHEMA_VERSION = 1
_PAGE = 1000  # rows fetched per query while streaming: bounded memory, short lock holds


class State(enum.StrEnum):
    """Where one recipient of one issue stands."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DEFERRED = "deferred"
    UNCERTAIN = "uncertain"


class IllegalTransitionError(LedgerError):
    """A state change the ledger refuses (e.g. anything out of `sent`)."""


class _Refused(Exception):
    """A batch touched fewer rows than it named: roll back, then explain."""


@dataclass(frozen=True)
class LedgerRow:
    """One recipient of one issue, as the ledger knows it."""

    issue: str
    key: str
    email: str
    state: State
    attempts: int
    last_error: str | None
    reply: str | None
    message_id: str | None
    next_attempt_at: float | None
    updated_at: float


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


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or last held) an issue's send lock."""

    pid: int
    host: str
    started_at: float

    @property
    def started(self) -> str:
        """The start time, local, to the second."""
        return datetime.fromtimestamp(self.started_at).astimezone().isoformat(timespec="seconds")

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} (started at {self.started})"


@dataclass(frozen=True)
class RunLock:
    """Held while a run sends an issue; tells what the previous, interrupted run left."""

    issue: str
    info: LockInfo
    recovered_uncertain: int
    previous: LockInfo | None


_COLUMNS = (
    "issue, key, email, state, attempts, last_error, reply, message_id, next_attempt_at, updated_at"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_issues (
    issue TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    frozen_at REAL NOT NULL,
    freeze_round INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_rows (
    id INTEGER PRIMARY KEY,
    issue TEXT NOT NULL,
    key TEXT NOT NULL,
    email TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN
        ('pending', 'sending', 'sent', 'failed', 'deferred', 'uncertain')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    reply TEXT,
    message_id TEXT,
    next_attempt_at REAL,
    updated_at REAL NOT NULL,
    seen_round INTEGER NOT NULL,
    UNIQUE (issue, key)
);
CREATE INDEX IF NOT EXISTS ledger_rows_state ON ledger_rows (issue, state);
"""


def _in(states: Sequence[State]) -> str:
    return ", ".join(f"'{s.value}'" for s in states)


# Which states each transition may leave from.
_FROM_SENDABLE = (State.PENDING, State.DEFERRED)
_FROM_RESENDABLE = (State.PENDING, State.DEFERRED, State.FAILED, State.UNCERTAIN)
_FROM_FAILABLE = (State.SENDING, State.PENDING, State.DEFERRED)

_SQL_SENDING = (
    "UPDATE ledger_rows SET state = 'sending', attempts = attempts + 1,"
    " message_id = COALESCE(?, message_id), next_attempt_at = NULL, updated_at = ?"
    " WHERE issue = ? AND key = ? AND state IN ({states})"
)
_SQL_SEND = _SQL_SENDING.format(states=_in(_FROM_SENDABLE))
_SQL_RESEND = _SQL_SENDING.format(states=_in(_FROM_RESENDABLE))
_SQL_SENT = (
    "UPDATE ledger_rows SET state = 'sent', reply = ?, message_id = COALESCE(?, message_id),"
    " next_attempt_at = NULL, updated_at = ?"
    " WHERE issue = ? AND key = ? AND state = 'sending'"
)
_SQL_FAILED = (
    "UPDATE ledger_rows SET state = 'failed', last_error = ?, next_attempt_at = NULL,"
    " updated_at = ? WHERE issue = ? AND key = ? AND state IN ('sending', 'pending', 'deferred')"
)
_SQL_DEFERRED = (
    "UPDATE ledger_rows SET state = 'deferred', last_error = ?, next_attempt_at = ?,"
    " updated_at = ? WHERE issue = ? AND key = ? AND state = 'sending'"
)
_SQL_UNCERTAIN = (
    "UPDATE ledger_rows SET state = 'uncertain', last_error = ?, next_attempt_at = NULL,"
    " updated_at = ? WHERE issue = ? AND key = ? AND state = 'sending'"
)


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


def _lock_name(issue: str) -> str:
    """A file-name-safe form of the issue name; a hash keeps distinct names distinct."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", issue)
    if safe != issue or not safe.strip("."):
        safe = f"{safe}-{hashlib.sha256(issue.encode()).hexdigest()[:10]}"
    return safe


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class Ledger:
    """The send ledger in one SQLite file; safe to share between threads.

    One connection guarded by a lock: SQLite serialises writers anyway, and a single connection
    keeps each `mark_*` to one prepared UPDATE and one WAL append (thousands per second).
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        durable: bool = False,
        busy_timeout: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self.path,
                isolation_level=None,  # autocommit; multi-statement work uses explicit BEGIN
                check_same_thread=False,
                timeout=busy_timeout,
            )
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._migrate()
        except sqlite3.Error as err:
            raise LedgerError(f"{self.path}: cannot open the send ledger: {err}") from err

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        with self._transaction():
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            found = self._db.execute(
                "SELECT value FROM ledger_meta WHERE key = 'schema_version'"
            ).fetchone()
            version = int(found[0]) if found else 0
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.path}: the send ledger has schema version {version}, newer than "
                    f"this program understands ({SCHEMA_VERSION})",
                    hint="upgrade newsletter",
                )
            if version < 1:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            # Later versions add their steps here, each guarded by `if version < N`.
            self._db.execute(
                "INSERT OR REPLACE INTO ledger_meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, taken at once (IMMEDIATE) so it never fails half-way on a lock."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise LedgerError(
                    f"{self.path}: cannot write to the send ledger: {err}",
                    hint="another program may be holding the database; try again",
                ) from err
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    # --- issues ---------------------------------------------------------------------------------

    def issue(self, name: str) -> IssueLedger:
        """The ledger of one issue (it need not be frozen yet)."""
        if not name:
            raise LedgerError("an issue name is required for the send ledger")
        return IssueLedger(self, name)

    def issues(self) -> list[str]:
        """Every issue the ledger has frozen an audience for, by name."""
        with self._lock:
            rows = self._db.execute("SELECT issue FROM ledger_issues ORDER BY issue").fetchall()
        return [r[0] for r in rows]

    def lock_path(self, issue: str) -> Path:
        return self.path.with_name(f"{self.path.name}.{_lock_name(issue)}.lock")

    @contextlib.contextmanager
    def lock(self, issue: str) -> Iterator[RunLock]:
        """Hold the issue's send lock for a run, across processes.

        An `fcntl.flock` on `<db>.<issue>.lock`: the kernel drops it when its holder dies, even
        by SIGKILL, so a dead run's lock is simply taken over. The file records who holds it (pid,
        host, start) for the refusal message. On taking it, rows the dead run left `sending` become
        `uncertain`. The file is emptied, never deleted, on release: deleting would let two
        processes lock two different files of the same name.
        """
        path = self.lock_path(issue)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise LedgerError(f"{path}: cannot open the send lock: {err}") from err
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._refusal(issue, _read_lock_info(fd)) from None
            previous = _read_lock_info(fd)
            info = LockInfo(pid=os.getpid(), host=socket.gethostname(), started_at=self._clock())
            data = json.dumps({"pid": info.pid, "host": info.host, "started_at": info.started_at})
            os.ftruncate(fd, 0)
            os.pwrite(fd, data.encode(), 0)
            try:
                recovered = self.issue(issue)._recover(previous)
                yield RunLock(issue, info, recovered, previous)
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _refusal(self, issue: str, holder: LockInfo | None) -> LedgerError:
        hint = "wait for that run to finish or stop it; a run that dies releases the lock itself"
        if holder is None:
            who = "another process"
        elif holder.pid == os.getpid() and holder.host == socket.gethostname():
            who = f"this process ({holder.pid}, started at {holder.started})"
        elif holder.host == socket.gethostname() and not _pid_alive(holder.pid):
            who = f"a child of {holder.describe()}, which has ended"
        else:
            who = holder.describe()
        return LedgerError(f"issue '{issue}' is already being sent by {who}", hint=hint)

    def is_locked(self, issue: str) -> bool:
        """Whether a live run holds the issue's lock (this process's own run counts)."""
        path = self.lock_path(issue)
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases a probe lock we got
        return False


def _read_lock_info(fd: int) -> LockInfo | None:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw) if raw.strip() else None
        if not isinstance(data, dict):
            return None
        return LockInfo(int(data["pid"]), str(data["host"]), float(data["started_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # being written right now, or not ours: the caller says "another process"


class IssueLedger:
    """The rows of one issue. Every method commits before it returns, and is thread-safe."""

    def __init__(self, ledger: Ledger, name: str) -> None:
        self.ledger = ledger
        self.name = name
        self._db = ledger._db
        self._lock = ledger._lock

    def _now(self) -> float:
        return self.ledger._clock()

    def lock(self) -> contextlib.AbstractContextManager[RunLock]:
        """`Ledger.lock` for this issue."""
        return self.ledger.lock(self.name)

    # --- freezing -------------------------------------------------------------------------------

    def freeze(self, recipients: Iterable[tuple[str, str]], fingerprint: str) -> FreezeReport:
        """Record the audience, streaming, in one transaction.

        `recipients` yields `(key, email)`. The first call stores `fingerprint`; a later call (a
        resume) with a different one is refused until `set_fingerprint` accepts the change. A
        resume adds newcomers, updates the address of rows not yet tried, and removes pending or
        deferred rows whose key is gone from the audience (they unsubscribed); rows that were
        sent, failed, or are sending or uncertain always stay.
        """
        now = self._now()
        received = 0

        def rows(round_: int) -> Iterator[tuple[str, str, str, float, int]]:
            nonlocal received
            for key, email in recipients:
                if not key or not email or any(c in email for c in "\r\n"):
                    raise LedgerError(
                        f"issue '{self.name}': recipient {key!r} <{email!r}> cannot be frozen "
                        "(empty key or address, or a line break in the address)"
                    )
                received += 1
                yield (self.name, key, email, now, round_)

        try:
            with self.ledger._transaction():
                found = self._db.execute(
                    "SELECT fingerprint, freeze_round FROM ledger_issues WHERE issue = ?",
                    (self.name,),
                ).fetchone()
                first = found is None
                if found is None:
                    round_ = 1
                    self._db.execute(
                        "INSERT INTO ledger_issues (issue, fingerprint, frozen_at, freeze_round,"
                        " updated_at) VALUES (?, ?, ?, 1, ?)",
                        (self.name, fingerprint, now, now),
                    )
                else:
                    if found[0] != fingerprint:
                        raise self._changed(found[0], fingerprint)
                    round_ = found[1] + 1
                    self._db.execute(
                        "UPDATE ledger_issues SET freeze_round = ?, updated_at = ? WHERE issue = ?",
                        (round_, now, self.name),
                    )
                before = self._total()
                self._db.executemany(
                    "INSERT INTO ledger_rows (issue, key, email, state, updated_at, seen_round)"
                    " VALUES (?, ?, ?, 'pending', ?, ?)"
                    " ON CONFLICT (issue, key) DO UPDATE SET seen_round = excluded.seen_round,"
                    " email = CASE WHEN state = 'pending' AND attempts = 0"
                    " THEN excluded.email ELSE email END",
                    rows(round_),
                )
                added = self._total() - before
                removed = self._db.execute(
                    "DELETE FROM ledger_rows WHERE issue = ? AND seen_round < ?"
                    " AND state IN ('pending', 'deferred')",
                    (self.name, round_),
                ).rowcount
                total = before + added - removed
        except sqlite3.Error as err:
            raise LedgerError(f"issue '{self.name}': cannot freeze the audience: {err}") from err
        return FreezeReport(self.name, first, received, added, removed, total)

    def _total(self) -> int:
        found = self._db.execute(
            "SELECT COUNT(*) FROM ledger_rows WHERE issue = ?", (self.name,)
        ).fetchone()
        return int(found[0])

    def _changed(self, stored: str, new: str) -> LedgerError:
        sent = self._db.execute(
            "SELECT COUNT(*) FROM ledger_rows WHERE issue = ? AND state = 'sent'", (self.name,)
        ).fetchone()[0]
        return LedgerError(
            f"issue '{self.name}' changed since its sending began: its content fingerprint is "
            f"{new[:12]}, the ledger holds {stored[:12]}; {sent} recipients already have the "
            "earlier version",
            hint="review the change, then accept it to send the new version to the rest",
        )

    def fingerprint(self) -> str | None:
        """The content fingerprint stored at the first freeze (None before it)."""
        with self._lock:
            found = self._db.execute(
                "SELECT fingerprint FROM ledger_issues WHERE issue = ?", (self.name,)
            ).fetchone()
        return None if found is None else str(found[0])

    def set_fingerprint(self, fingerprint: str) -> None:
        """Accept changed content: later freezes compare against this fingerprint."""
        with self.ledger._transaction():
            changed = self._db.execute(
                "UPDATE ledger_issues SET fingerprint = ?, updated_at = ? WHERE issue = ?",
                (fingerprint, self._now(), self.name),
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
        keys = list(keys)
        ids = message_ids or {}
        states = _FROM_RESENDABLE if resend else _FROM_SENDABLE
        now = self._now()
        self._apply(
            _SQL_RESEND if resend else _SQL_SEND,
            [(ids.get(k), now, self.name, k) for k in keys],
            keys,
            State.SENDING,
            states,
        )

    def mark_sent(self, key: str, reply: str, *, message_id: str | None = None) -> None:
        """After the transport accepted the message: `reply` is the server reply or provider id."""
        self.mark_sent_many([(key, reply)], message_ids={key: message_id} if message_id else None)

    def mark_sent_many(
        self, items: Iterable[tuple[str, str]], *, message_ids: Mapping[str, str] | None = None
    ) -> None:
        items = list(items)
        ids = message_ids or {}
        now = self._now()
        self._apply(
            _SQL_SENT,
            [(reply, ids.get(key), now, self.name, key) for key, reply in items],
            [key for key, _ in items],
            State.SENT,
            (State.SENDING,),
        )

    def mark_failed(self, key: str, error: str) -> None:
        """Permanently failed (never retried unless asked); also for refusals before sending."""
        self.mark_failed_many([(key, error)])

    def mark_failed_many(self, items: Iterable[tuple[str, str]]) -> None:
        items = list(items)
        now = self._now()
        self._apply(
            _SQL_FAILED,
            [(error, now, self.name, key) for key, error in items],
            [key for key, _ in items],
            State.FAILED,
            _FROM_FAILABLE,
        )

    def mark_deferred(self, key: str, error: str, next_attempt_at: float) -> None:
        """Failed for now (a transient error): `todo` offers it again from `next_attempt_at`."""
        self.mark_deferred_many([(key, error, next_attempt_at)])

    def mark_deferred_many(self, items: Iterable[tuple[str, str, float]]) -> None:
        items = list(items)
        now = self._now()
        self._apply(
            _SQL_DEFERRED,
            [(error, at, now, self.name, key) for key, error, at in items],
            [key for key, _, _ in items],
            State.DEFERRED,
            (State.SENDING,),
        )

    def mark_uncertain(self, key: str, error: str) -> None:
        """The message may or may not have gone (e.g. connection lost after the data)."""
        now = self._now()
        self._apply(
            _SQL_UNCERTAIN, [(error, now, self.name, key)], [key], State.UNCERTAIN, (State.SENDING,)
        )

    def _apply(
        self,
        sql: str,
        params: list[tuple[Any, ...]],
        keys: list[str],
        target: State,
        allowed: Sequence[State],
    ) -> None:
        if not params:
            return
        with self._lock:
            try:
                if len(params) == 1:
                    # One statement in autocommit mode is its own transaction: the cheap path.
                    if self._db.execute(sql, params[0]).rowcount != 1:
                        raise self._illegal(keys, target, allowed)
                    return
                try:
                    with self.ledger._transaction():
                        if self._db.executemany(sql, params).rowcount != len(params):
                            raise _Refused
                except _Refused:
                    # Explained after the rollback, so the states read are the stored ones.
                    raise self._illegal(keys, target, allowed) from None
            except sqlite3.Error as err:
                raise LedgerError(
                    f"issue '{self.name}': cannot record {target.value} for {keys[0]!r}"
                    f"{f' and {len(keys) - 1} more' if len(keys) > 1 else ''}: {err}"
                ) from err

    def _illegal(self, keys: list[str], target: State, allowed: Sequence[State]) -> LedgerError:
        """Explain the first key of a refused batch (nothing of the batch was written)."""
        seen: set[str] = set()
        for key in keys:
            found = self._db.execute(
                "SELECT state FROM ledger_rows WHERE issue = ? AND key = ?", (self.name, key)
            ).fetchone()
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
                "UPDATE ledger_rows SET state = 'uncertain', last_error = ?, updated_at = ?"
                " WHERE issue = ? AND state = 'sending'",
                (reason, self._now(), self.name),
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

    def _stream(self, state: State, due: float | None) -> Iterator[tuple[int, LedgerRow]]:
        sql = (
            f"SELECT id, {_COLUMNS} FROM ledger_rows WHERE issue = ? AND state = ? AND id > ?"
            + ("" if due is None else " AND COALESCE(next_attempt_at, 0) <= ?")
            + " ORDER BY id LIMIT ?"
        )
        last = 0
        while True:
            params: tuple[Any, ...] = (self.name, state.value, last)
            params += (_PAGE,) if due is None else (due, _PAGE)
            with self._lock:
                page = self._db.execute(sql, params).fetchall()
            for values in page:
                yield values[0], _row(values[1:])
            if len(page) < _PAGE:
                return
            last = page[-1][0]

    def row(self, key: str) -> LedgerRow | None:
        with self._lock:
            found = self._db.execute(
                f"SELECT {_COLUMNS} FROM ledger_rows WHERE issue = ? AND key = ?",
                (self.name, key),
            ).fetchone()
        return None if found is None else _row(found)

    def rows(self, *states: State) -> Iterator[LedgerRow]:
        """Every row (or those in `states`), in freeze order, streamed."""
        return self._merged(states or tuple(State))

    def counts(self) -> dict[State, int]:
        """Rows per state; every state is present, zero when empty."""
        with self._lock:
            found = self._db.execute(
                "SELECT state, COUNT(*) FROM ledger_rows WHERE issue = ? GROUP BY state",
                (self.name,),
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
