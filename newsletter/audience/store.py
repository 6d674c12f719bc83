"""`SubscriberStore`: the subscribers and their status history, on the project's store.

The tables (`subscribers`, `subscriber_events`) are created by the store's migrations
(`newsletter.store.migrations`); the queries live here, written once with named parameters.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, TextIO, overload

from ..errors import AudienceError
from ..store import Connection, Params, Store, StoreError, StoreSource
from .addresses import address_key, check_name, clean_attributes, lookup_key, normalise_address
from .csvfile import (
    ColumnMapping,
    CsvRow,
    ImportProblemsError,
    ImportReport,
    parse_csv,
    read_csv_text,
    write_csv,
)
from .model import NO_ATTRIBUTES, StatusEvent, Subscriber, SubscriberStatus, parse_status

__all__ = ["SubscriberStore"]

_PAGE = 1000  # rows per query while streaming: bounded memory, the lock held only briefly

_COLUMNS = "id, email, name, attributes, status"
_BY_KEY = f"SELECT {_COLUMNS} FROM subscribers WHERE key = :key"
_INSERT = (
    "INSERT INTO subscribers (key, email, name, attributes, status, created_at, updated_at)"
    " VALUES (:key, :email, :name, :attributes, :status, :now, :now)"
)
# One new address: two processes adding it at once (two `serve` workers, one sign-up each) both
# succeed; the second finds the first one's row (rowcount 0) and updates it instead.
_INSERT_NEW = _INSERT + " ON CONFLICT (key) DO NOTHING"
_UPDATE = (
    "UPDATE subscribers SET email = :email, name = :name, attributes = :attributes,"
    " status = :status, updated_at = :now WHERE key = :key"
)
_SET_STATUS = "UPDATE subscribers SET status = :status, updated_at = :now WHERE key = :key"
_DELETE = "DELETE FROM subscribers WHERE key = :key"
_ERASE = (
    "DELETE FROM ledger_rows WHERE key = :key",
    "DELETE FROM inbox_soft_bounces WHERE subscriber_key = :key",
)
_EVENT = (
    "INSERT INTO subscriber_events (subscriber_key, at, old_status, new_status, source)"
    " VALUES (:key, :at, :old, :new, :source)"
)
_EVENTS = (
    "SELECT at, old_status, new_status, source FROM subscriber_events"
    " WHERE subscriber_key = :key ORDER BY at, id"
)
_PAGE_ALL = f"SELECT {_COLUMNS}, key FROM subscribers WHERE key > :after ORDER BY key LIMIT :limit"
_PAGE_STATUS = (
    f"SELECT {_COLUMNS}, key FROM subscribers WHERE status = :status AND key > :after"
    " ORDER BY key LIMIT :limit"
)
_COUNT_STATUS = "SELECT COUNT(*) FROM subscribers WHERE status = :status"
_COUNT_ALL = "SELECT status, COUNT(*) FROM subscribers GROUP BY status"
# The keys of every subscriber's attributes; `{each}` is the dialect's JSON-object walk.
_ATTRIBUTE_KEYS = "SELECT DISTINCT j.key FROM subscribers, {each} j{where} ORDER BY j.key"
# An import's keys go to a temporary table: existing subscribers are found with one join, and
# the history of the new ones is written with one INSERT ... SELECT (not a row bound per person).
_IMPORT_KEYS = "CREATE TEMP TABLE IF NOT EXISTS import_keys (key TEXT PRIMARY KEY)"
_EXISTING = (
    "SELECT s.key, s.email, s.name, s.attributes, s.status"
    " FROM subscribers s JOIN import_keys USING (key)"
)
_ONLY_NEW_KEYS = "DELETE FROM import_keys WHERE key IN (SELECT key FROM subscribers)"
_NEW_EVENTS = (
    "INSERT INTO subscriber_events (subscriber_key, at, old_status, new_status, source)"
    " SELECT s.key, :at, NULL, s.status, :source FROM subscribers s JOIN import_keys USING (key)"
)


def _dump(attributes: Mapping[str, str]) -> str:
    return json.dumps(dict(attributes), ensure_ascii=False, sort_keys=True) if attributes else "{}"


def _load(text: str) -> Mapping[str, str]:
    return NO_ATTRIBUTES if text == "{}" else MappingProxyType(json.loads(text))


def _subscriber(row: tuple[Any, ...]) -> Subscriber:
    return Subscriber(
        email=row[1],
        name=row[2],
        attributes=_load(row[3]),
        status=SubscriberStatus(row[4]),
        id=row[0],
    )


def _event(key: str, old: str | None, new: str, source: str, at: float) -> Params:
    return {"key": key, "at": at, "old": old, "new": new, "source": source}


class SubscriberStore:
    """Subscribers in the project's store. Safe to share between threads (the store's lock).

    `SubscriberStore(path)` opens the store at `path` and closes it on `close()`;
    `SubscriberStore(store)` uses an open `Store` (shared with the ledger, say) and leaves it
    open. Use it as a context manager, or call `close()`.
    """

    def __init__(
        self, source: StoreSource | Store, *, clock: Callable[[], float] = time.time
    ) -> None:
        if isinstance(source, Store):
            self.database, self._owned = source, False
        else:
            try:
                self.database = Store.open(source, purpose="the subscriber database")
            except StoreError as err:
                raise AudienceError(err.message, hint=err.hint) from err
            self._owned = True
        self.path = self.database.path
        self._clock = clock

    # --- plumbing -------------------------------------------------------------------------------

    def __enter__(self) -> SubscriberStore:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the store if this object opened it (safe to call twice)."""
        if self._owned:
            self.database.close()

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[Connection]:
        """The connection under the lock; engine errors become AudienceErrors naming `action`."""
        try:
            with self.database.read() as db:
                yield db
        except self.database.errors as err:
            raise AudienceError(f"{self.database.where}: cannot {action}: {err}") from err

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[Connection]:
        try:
            with self.database.transaction() as db:
                yield db
        except self.database.errors as err:
            raise AudienceError(f"{self.database.where}: cannot {action}: {err}") from err

    def _row_by_key(
        self, db: Connection, key: str, *, to_change: bool = False
    ) -> tuple[Any, ...] | None:
        """The row of `key`; `to_change`: locked until the transaction ends (PostgreSQL)."""
        sql = _BY_KEY + self.database.dialect.lock_row if to_change else _BY_KEY
        found: tuple[Any, ...] | None = db.execute(sql, {"key": key}).fetchone()
        return found

    # --- single subscribers ---------------------------------------------------------------------

    def add(
        self,
        email: str,
        name: str = "",
        attributes: Mapping[str, str] | None = None,
        *,
        resubscribe: bool = False,
        source: str = "add",
    ) -> Subscriber:
        """Add a subscriber, or update the name and attributes of an existing one.

        An empty name or attribute value leaves the stored one alone. Someone who unsubscribed
        (bounced, complained) keeps that status unless `resubscribe` is true; check the returned
        subscriber's status.
        """
        address = normalise_address(email)
        clean_name = check_name(name)
        clean = clean_attributes(attributes or {})
        key = address_key(address)
        now = self._clock()
        with self._transaction(f"add {address}") as db:
            found = self._row_by_key(db, key, to_change=True)
            status: str = SubscriberStatus.SUBSCRIBED
            new = {
                "key": key,
                "email": address,
                "name": clean_name,
                "attributes": _dump(clean),
                "status": status,
                "now": now,
            }
            # Nothing to lock does not keep another process from inserting the address now:
            # ON CONFLICT waits for its insert, and if that commits, its row is updated instead.
            if found is None and db.execute(_INSERT_NEW, new).rowcount == 1:
                db.execute(_EVENT, _event(key, None, status, source, now))
            else:
                found = found or self._row_by_key(db, key, to_change=True)
                assert found is not None  # the conflicting row is committed: it cannot vanish
                old = _subscriber(found)
                status = old.status
                if status != SubscriberStatus.SUBSCRIBED and resubscribe:
                    status = SubscriberStatus.SUBSCRIBED
                    db.execute(_EVENT, _event(key, old.status, status, source, now))
                db.execute(
                    _UPDATE,
                    {
                        "email": address,
                        "name": clean_name or old.name,
                        "attributes": _dump({**old.attributes, **clean}),
                        "status": status,
                        "now": now,
                        "key": key,
                    },
                )
            row = self._row_by_key(db, key)
        assert row is not None
        return _subscriber(row)

    def get(self, email: str) -> Subscriber | None:
        """The subscriber with this address (case-insensitive), or None."""
        key = lookup_key(email)
        with self._guard(f"look up {email.strip()}") as db:
            found = self._row_by_key(db, key)
        return None if found is None else _subscriber(found)

    def remove(self, email: str) -> bool:
        """Delete the subscriber and their history; whether there was one."""
        key = lookup_key(email)
        with self._transaction(f"remove {email.strip()}") as db:
            deleted = db.execute(_DELETE, {"key": key}).rowcount
            # An erasure (GDPR): the send ledgers and the inbox's soft bounces keep nothing of
            # them either, in the same transaction (issue 15, D15).
            for sql in _ERASE:
                db.execute(sql, {"key": key})
        return deleted > 0

    def set_status(self, email: str, status: str, *, source: str) -> Subscriber:
        """Change a subscriber's status, recording who did it (`source`, e.g. `cli`, `bounce`).

        Setting the status a subscriber already has changes and records nothing.
        """
        new = parse_status(status)
        if not source.strip():
            raise AudienceError("a status change needs a source (who or what made it)")
        key = lookup_key(email)
        now = self._clock()
        with self._transaction(f"change the status of {email.strip()}") as db:
            found = self._row_by_key(db, key, to_change=True)
            if found is None:
                raise AudienceError(f"no subscriber {email.strip()}")
            if found[4] != new:
                db.execute(_SET_STATUS, {"status": new, "now": now, "key": key})
                db.execute(_EVENT, _event(key, found[4], new, source, now))
                found = (*found[:4], new)
        return _subscriber(found)

    def events(self, email: str) -> tuple[StatusEvent, ...]:
        """The subscriber's status changes, oldest first (empty for an unknown address)."""
        key = lookup_key(email)
        with self._guard(f"read the history of {email.strip()}") as db:
            rows = db.execute(_EVENTS, {"key": key}).fetchall()
        return tuple(StatusEvent(*row) for row in rows)

    # --- the whole list -------------------------------------------------------------------------

    def iter_subscribers(
        self, status: str | None = SubscriberStatus.SUBSCRIBED
    ) -> Iterator[Subscriber]:
        """Subscribers with `status` (None: everyone) in address order, fetched a page at a time.

        Not a snapshot: changes made while iterating may or may not be seen.
        """
        wanted = None if status is None else parse_status(status)
        query = _PAGE_ALL if wanted is None else _PAGE_STATUS
        arguments: dict[str, Any] = {"status": wanted, "after": "", "limit": _PAGE}
        while True:
            with self._guard("list the subscribers") as db:
                rows = db.execute(query, arguments).fetchall()
            for row in rows:
                yield _subscriber(row)
            if len(rows) < _PAGE:
                return
            arguments["after"] = rows[-1][5]

    @overload
    def count(self, status: None = None) -> dict[str, int]: ...

    @overload
    def count(self, status: str) -> int: ...

    def count(self, status: str | None = None) -> dict[str, int] | int:
        """How many subscribers have `status`; without one, a count for every status."""
        wanted = None if status is None else parse_status(status)
        with self._guard("count the subscribers") as db:
            if wanted is not None:
                return int(db.execute(_COUNT_STATUS, {"status": wanted}).fetchone()[0])
            found = dict(db.execute(_COUNT_ALL).fetchall())
        return {s.value: int(found.get(s.value, 0)) for s in SubscriberStatus}

    def export_csv(self, out: TextIO, status: str | None = None) -> int:
        """Write subscribers (None: everyone) as CSV: email, name, status, then one column per
        attribute. Returns the number of rows. Open files with `newline=""`."""
        wanted = None if status is None else parse_status(status)
        query = _ATTRIBUTE_KEYS.format(
            each=self.database.dialect.json_each.format(column="subscribers.attributes"),
            where="" if wanted is None else " WHERE subscribers.status = :status",
        )
        with self._guard("export the subscribers") as db:
            keys = [str(row[0]) for row in db.execute(query, {"status": wanted})]
        return write_csv(out, keys, self.iter_subscribers(wanted))

    def import_csv(
        self,
        path: Path,
        *,
        mapping: ColumnMapping | None = None,
        strict: bool = False,
        resubscribe: bool = False,
        delimiter: str | None = None,
        encoding: str | None = None,
    ) -> ImportReport:
        """Import a CSV file in one transaction (`audience.csvfile` lists the layouts recognised).

        Invalid rows are reported by physical line and skipped; with `strict`, any problem means
        nothing is imported (ImportProblemsError). Existing subscribers get the file's name and
        attributes (empty cells leave stored values alone). People who unsubscribed, bounced or
        complained stay so unless `resubscribe`; a `status` column (or Mailchimp's UNSUB_TIME /
        CLEAN_TIME) may unsubscribe people, never subscribe them again on its own.
        """
        path = Path(path)
        text, warnings = read_csv_text(path, encoding)
        rows, problems = parse_csv(path, text, mapping or ColumnMapping(), delimiter)
        if strict and problems:
            raise ImportProblemsError(path, problems)
        source = f"import {path.name}"
        now = self._clock()
        counts = {"added": 0, "updated": 0, "unchanged": 0, "kept": 0, "resubscribed": 0}
        inserts: list[Params] = []
        updates: list[Params] = []
        events: list[Params] = []
        with self._transaction(f"import {path}") as db, self._import_keys(db, rows) as existing:
            for row in rows:
                found = existing.get(row.key)
                if found is None:
                    status: str = row.status or SubscriberStatus.SUBSCRIBED
                    inserts.append(
                        {
                            "key": row.key,
                            "email": row.email,
                            "name": row.name,
                            "attributes": _dump(row.attributes),
                            "status": status,
                            "now": now,
                        }
                    )
                    counts["added"] += 1
                    continue
                email, name, attributes_text, old_status = found
                old_attributes = _load(attributes_text)
                new_name = row.name or name
                new_attributes = {**old_attributes, **row.attributes}
                status, outcome = _import_status(SubscriberStatus(old_status), row, resubscribe)
                changed = (row.email, new_name, new_attributes) != (email, name, old_attributes)
                if status != old_status:
                    events.append(_event(row.key, old_status, status, source, now))
                if changed or status != old_status:
                    updates.append(
                        {
                            "email": row.email,
                            "name": new_name,
                            "attributes": _dump(new_attributes),
                            "status": status,
                            "now": now,
                            "key": row.key,
                        }
                    )
                if outcome == "same":
                    outcome = "updated" if changed or status != old_status else "unchanged"
                counts[outcome] += 1
            db.execute(_ONLY_NEW_KEYS)
            db.executemany(_INSERT, inserts)
            db.execute(_NEW_EVENTS, {"at": now, "source": source})
            db.executemany(_UPDATE, updates)
            db.executemany(_EVENT, events)
        return ImportReport(
            file=path,
            added=counts["added"],
            updated=counts["updated"],
            unchanged=counts["unchanged"],
            kept_unsubscribed=counts["kept"],
            resubscribed=counts["resubscribed"],
            problems=tuple(problems),
            warnings=warnings,
        )

    @contextlib.contextmanager
    def _import_keys(
        self, db: Connection, rows: list[CsvRow]
    ) -> Iterator[dict[str, tuple[str, str, str, str]]]:
        """The rows' keys in `import_keys` while the block runs; yields the stored email, name,
        attributes and status of each row's subscriber, by key."""
        db.execute(_IMPORT_KEYS)
        try:
            db.executemany(
                "INSERT INTO import_keys (key) VALUES (:key)", ({"key": r.key} for r in rows)
            )
            yield {row[0]: (row[1], row[2], row[3], row[4]) for row in db.execute(_EXISTING)}
        finally:
            db.execute("DELETE FROM import_keys")


def _import_status(
    old: SubscriberStatus, row: CsvRow, resubscribe: bool
) -> tuple[SubscriberStatus, str]:
    """The status an imported row leaves, and which count it goes to ("same": by the data)."""
    wanted = row.status or SubscriberStatus.SUBSCRIBED
    if wanted != SubscriberStatus.SUBSCRIBED:
        # The file says this person must not be mailed: always honoured.
        return wanted, "same"
    if old == SubscriberStatus.SUBSCRIBED:
        return old, "same"
    if resubscribe:
        return SubscriberStatus.SUBSCRIBED, "resubscribed"
    return old, "kept"
