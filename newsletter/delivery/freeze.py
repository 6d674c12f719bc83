"""Freezing an issue's audience into its ledger: one pass, short transactions, all or nothing.

A freeze is a numbered round (`ledger_issues.freeze_round`). Its rows are written a chunk of
`CHUNK` at a time, each chunk its own short write transaction, so a send of another issue or an
unsubscribe in `serve` never waits long behind it (issue 15, D1). The round counts only when its
last transaction sets `frozen_round` to it: until then nothing is sent from it (sending starts
after the freeze returns; `IssueLedger.fingerprint` and `Ledger.issues` ignore an issue whose
first freeze never completed, so a second PostgreSQL worker waits for it rather than joining).
A freeze that crashes or is refused half-way is simply done again by the next run: every chunk
is an upsert that marks the rows it saw with the new round, and only the completing transaction
removes pending rows no round saw (people who left).

From the subscriber store (`freeze_subscribers`), each chunk is an `INSERT … SELECT` over a key
range of the subscribed people, inside the engine; the per-recipient check of the issue's values
reads the same chunk in the same transaction, so the list is read once. `where` and `params` add
an audience filter (a segment) as SQL over the subscribers table, aliased `s`.

A send need not wait for a big freeze (issue 16): with `head`, a first round of only the first
people in key order completes at once (the issue is frozen, its fingerprint stored, like any
completed round), and a second round over the whole audience, in smaller chunks, adds the
rest while the first rows are sent. That second round is an ordinary later round: upserts that
leave rows already being sent alone, then the removal of pending rows nobody saw. A crash
during it leaves the first round complete and the second unfinished, which the next run
settles like any interrupted later round: it adds those not frozen yet.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from ..audience.importer import visible
from ..audience.model import NO_ATTRIBUTES, Subscriber, SubscriberStatus
from ..errors import LedgerError
from ..store import Connection, Params

if TYPE_CHECKING:
    from .ledger import FreezeReport, IssueLedger

__all__ = ["CHUNK", "FreezeHalted", "freeze_recipients", "freeze_subscribers"]

CHUNK = 10_000  # rows per write transaction: tens of milliseconds of lock on SQLite

_T = TypeVar("_T")

_ROUND = "SELECT fingerprint, freeze_round, frozen_round FROM ledger_issues WHERE issue = :issue"
_FIRST = (
    "INSERT INTO ledger_issues (issue, fingerprint, frozen_at, freeze_round, frozen_round,"
    " updated_at) VALUES (:issue, :fingerprint, :now, 1, 0, :now)"
)
_NEXT = (
    "UPDATE ledger_issues SET freeze_round = :round, fingerprint = :fingerprint,"
    " updated_at = :now WHERE issue = :issue"
)
_TOTAL = "SELECT COUNT(*) FROM ledger_rows WHERE issue = :issue"
# Upsert: a newcomer becomes pending; someone already there is marked seen by this round, and
# their address follows the list only while they were never tried.
_UPSERT_TAIL = (
    " ON CONFLICT (issue, key) DO UPDATE SET seen_round = excluded.seen_round,"
    " email = CASE WHEN ledger_rows.state = 'pending' AND ledger_rows.attempts = 0"
    " THEN excluded.email ELSE ledger_rows.email END"
)
_ROW = (
    "INSERT INTO ledger_rows (issue, key, email, state, updated_at, seen_round)"
    " VALUES (:issue, :key, :email, 'pending', :now, :round)" + _UPSERT_TAIL
)
_AUDIENCE = f"s.status = 'subscribed' AND {visible('s')} AND s.key > :after"
_BOUND = (
    "SELECT s.key FROM subscribers s WHERE {audience}{where} ORDER BY s.key LIMIT 1 OFFSET :skip"
)
_CHUNK_ROWS = (
    "INSERT INTO ledger_rows (issue, key, email, state, updated_at, seen_round)"
    " SELECT :issue, s.key, s.email, 'pending', :now, :round FROM subscribers s"
    " WHERE {audience}{upper}{where} ORDER BY s.key" + _UPSERT_TAIL
)
_CHUNK_PEOPLE = (
    "SELECT s.id, s.email, s.name, s.attributes FROM subscribers s"
    " WHERE {audience}{upper}{where} ORDER BY s.key"
)
# People who left since the last round (pending or deferred rows this round did not see).
_LEFT_CHUNK = (
    "DELETE FROM ledger_rows WHERE id IN (SELECT id FROM ledger_rows WHERE issue = :issue"
    " AND seen_round < :round AND state IN ('pending', 'deferred') LIMIT :limit)"
)
_COMPLETE = (
    "UPDATE ledger_issues SET frozen_round = :round, updated_at = :now"
    " WHERE issue = :issue AND freeze_round = :round"
)
_ALL_ROWS_CHUNK = (
    "DELETE FROM ledger_rows WHERE id IN"
    " (SELECT id FROM ledger_rows WHERE issue = :issue LIMIT :limit)"
)
_NEVER_FROZEN = "DELETE FROM ledger_issues WHERE issue = :issue AND frozen_round = 0"


class FreezeHalted(LedgerError):
    """A freeze round stopped between chunks because the send was stopped (not an error of the
    ledger: the next run freezes again)."""

    def __init__(self, issue: str) -> None:
        super().__init__(f"issue '{issue}': the audience freeze was stopped")


class _Round:
    """One freeze round of one issue: its number, and what the ledger held when it began."""

    def __init__(self, ledger: IssueLedger, fingerprint: str) -> None:
        self.ledger = ledger
        self.issue = ledger.name
        self.now = ledger._now()
        self.first, self.number, self.before = self._write(lambda db: self._begin(db, fingerprint))
        self.received = 0

    def _write(
        self, work: Callable[[Connection], _T], retryable: Callable[[], bool] = lambda: True
    ) -> _T:
        """`work` in one write transaction, retried while another process holds the database."""
        from .ledger import _retry_busy  # noqa: PLC0415 (ledger imports this module)

        owner = self.ledger.ledger

        def once() -> _T:
            try:
                with owner._transaction() as db:
                    return work(db)
            except owner._errors as err:
                raise LedgerError(
                    f"issue '{self.issue}': cannot freeze the audience: {err}"
                ) from err

        return _retry_busy(once, owner.busy_retry, retryable)

    def _begin(self, db: Connection, fingerprint: str) -> tuple[bool, int, int]:
        params = {"issue": self.issue, "fingerprint": fingerprint, "now": self.now}
        found = db.execute(_ROUND, {"issue": self.issue}).fetchone()
        if found is None:
            db.execute(_FIRST, params)
            number, first = 1, True
        else:
            stored, last, completed = found
            # A first freeze that never completed sent nothing: new content simply replaces it.
            if stored != fingerprint and completed:
                raise self.ledger._changed(stored, fingerprint)
            number, first = int(last) + 1, not completed
            db.execute(_NEXT, {**params, "round": number})
        return first, number, int(db.execute(_TOTAL, {"issue": self.issue}).fetchone()[0])

    def params(self) -> dict[str, Any]:
        return {"issue": self.issue, "now": self.now, "round": self.number}

    def complete(self) -> FreezeReport:
        """Remove who left, then mark the round complete; the report."""
        from .ledger import FreezeReport  # noqa: PLC0415 (ledger imports this module)

        added = self._write(lambda db: int(db.execute(_TOTAL, {"issue": self.issue}).fetchone()[0]))
        added -= self.before
        removed = 0
        while True:
            gone = self._write(
                lambda db: (
                    db.execute(
                        _LEFT_CHUNK, {"issue": self.issue, "round": self.number, "limit": CHUNK}
                    ).rowcount
                )
            )
            removed += gone
            if gone < CHUNK:
                break
        self._write(lambda db: db.execute(_COMPLETE, self.params()))
        refresh = self.ledger.ledger.database.dialect.statistics_refresh("ledger_rows")
        if refresh is not None and (added or removed):
            self._write(lambda db: db.execute(refresh))
        total = self.before + added - removed
        return FreezeReport(self.issue, self.first, self.received, added, removed, total)

    def abandon(self) -> None:
        """A refused first freeze leaves nothing (a later round of a frozen issue needs no
        undoing: the next completed round settles its rows)."""
        if not self.first:
            return
        while True:
            gone = self._write(
                lambda db: (
                    db.execute(_ALL_ROWS_CHUNK, {"issue": self.issue, "limit": CHUNK}).rowcount
                )
            )
            if gone < CHUNK:
                break
        self._write(lambda db: db.execute(_NEVER_FROZEN, {"issue": self.issue}))


def freeze_recipients(
    ledger: IssueLedger, recipients: Iterable[tuple[str, str]], fingerprint: str
) -> FreezeReport:
    """Freeze `(key, email)` pairs (any audience), `CHUNK` rows per transaction."""
    round_ = _Round(ledger, fingerprint)
    stream = iter(recipients)
    try:
        while True:
            taken = [0]

            def rows(taken: list[int] = taken) -> Iterator[Params]:
                # Streamed into executemany: no chunk is ever held as a list.
                for key, email in itertools.islice(stream, CHUNK):
                    taken[0] += 1
                    yield _checked(ledger.name, key, email, round_.params())

            def untouched(taken: list[int] = taken) -> bool:
                return not taken[0]

            # Retried on a busy database only while nothing was taken from the stream yet.
            round_._write(lambda db: db.executemany(_ROW, rows()), retryable=untouched)
            round_.received += taken[0]
            if taken[0] < CHUNK:
                break
    except BaseException:
        round_.abandon()
        raise
    return round_.complete()


def _checked(issue: str, key: str, email: str, params: Mapping[str, Any]) -> Params:
    if not key or not email or any(c in email for c in "\r\n"):
        raise LedgerError(
            f"issue '{issue}': recipient {key!r} <{email!r}> cannot be frozen "
            "(empty key or address, or a line break in the address)"
        )
    return {**params, "key": key, "email": email}


def freeze_subscribers(
    ledger: IssueLedger,
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
    """Freeze the subscribed people of the store the ledger lives in, a key range at a time.

    `check(subscriber)` is false for someone the issue cannot be sent to (a missing value):
    then nothing more is written, the rest is still checked (so every such person is seen),
    and `refuse()` is raised after the freeze is abandoned. `where` (SQL over `s`, the
    subscribers table) with `params` narrows the audience.

    `head`: only the first `head` people in key order, in one transaction, as a complete
    round; a next round (the whole audience) adds the rest, as a resumed send adds newcomers
    (the send starts from such a round while the rest freezes, `delivery.sender`).
    `chunk`: people per transaction (default `CHUNK`). `chunk_written` is called after each
    chunk's commit; `halted()` true between chunks stops the round (`FreezeHalted`; a later
    round is left to the next run, a first one abandoned).
    """
    extra = f" AND ({where})" if where.strip() else ""
    given = dict(params or {})
    round_ = _Round(ledger, fingerprint)
    refused = False
    audience = _AUDIENCE
    size = max(1, head or chunk or CHUNK)

    def write(db: Connection, after: str) -> tuple[str | None, int]:
        """One chunk in one transaction: its upper key, checked people, their rows."""
        nonlocal refused
        bound = db.execute(
            _BOUND.format(audience=audience, where=extra),
            {**given, "after": after, "skip": size - 1},
        ).fetchone()
        hi = None if bound is None else str(bound[0])
        upper = "" if hi is None else " AND s.key <= :hi"
        chunk = {**given, **round_.params(), "after": after, "hi": hi}
        if check is not None:
            people = db.execute(
                _CHUNK_PEOPLE.format(audience=audience, upper=upper, where=extra), chunk
            )
            for values in people:
                if not check(_subscriber(values)):
                    refused = True
        if refused:
            return hi, 0
        written = db.execute(
            _CHUNK_ROWS.format(audience=audience, upper=upper, where=extra), chunk
        ).rowcount
        return hi, written

    try:
        after: str | None = ""
        while after is not None:
            if halted is not None and halted():
                raise FreezeHalted(ledger.name)
            start = after
            after, written = round_._write(lambda db, start=start: write(db, start))  # type: ignore[misc]
            round_.received += written
            if chunk_written is not None:
                chunk_written()
            if head is not None:
                break
        if refused:
            raise refuse() if refuse is not None else LedgerError("the audience was refused")
    except BaseException:
        round_.abandon()
        raise
    return round_.complete()


def _subscriber(values: tuple[Any, ...]) -> Subscriber:
    text = values[3]
    return Subscriber(
        email=values[1],
        name=values[2],
        attributes=NO_ATTRIBUTES if text == "{}" else MappingProxyType(json.loads(text)),
        status=SubscriberStatus.SUBSCRIBED,
        id=values[0],
    )
