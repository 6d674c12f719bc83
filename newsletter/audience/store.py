"""`SubscriberStore`: the subscribers and their status history, on the project's store.

The tables (`subscribers`, `subscriber_events`) are created by the store's migrations
(`newsletter.store.migrations`); the queries live here, written once with named parameters.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO, overload

from ..errors import AudienceError
from ..segment import EVERYONE, Segment, normalise_tag
from ..store import Connection, Params, Store, StoreSource
from ..store.user import StoreUser
from . import importer
from .addresses import address_key, check_name, clean_attributes, lookup_key, normalise_address
from .csvfile import ColumnMapping, ImportReport, write_csv
from .importer import visible
from .model import NO_ATTRIBUTES, StatusEvent, Subscriber, SubscriberStatus, parse_status
from .tags import (
    TAG_DELETE,
    TAG_INSERT,
    TagChange,
    TagCount,
    any_in_segment,
    count_segment,
    page_segment,
    tag_counts,
    tag_params,
    tags_of,
)
from .visibility import counted

__all__ = ["SubscriberStore"]

_PAGE = 1000  # rows per query while streaming: bounded memory, the lock held only briefly

_COLUMNS = "id, email, name, attributes, status"
# Writers find a row whatever its import's state (its key is taken); readers see only rows
# that are not part of an import still being written (`importer.visible`).
_BY_KEY = f"SELECT {_COLUMNS} FROM subscribers WHERE key = :key"
_VISIBLE_BY_KEY = f"{_BY_KEY} AND {visible()}"
_INSERT = (
    "INSERT INTO subscribers (key, email, name, attributes, status, created_at, updated_at)"
    " VALUES (:key, :email, :name, :attributes, :status, :now, :now)"
)
# An `add` of someone an unfinished import holds makes them a subscriber of their own now.
# One new address: two processes adding it at once (two `serve` workers, one sign-up each) both
# succeed; the second finds the first one's row (rowcount 0) and updates it instead.
_INSERT_NEW = _INSERT + " ON CONFLICT (key) DO NOTHING"
_UPDATE = (
    "UPDATE subscribers SET email = :email, name = :name, attributes = :attributes,"
    " status = :status, updated_at = :now, import_id = NULL WHERE key = :key"
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
_PAGE_ALL = (
    f"SELECT {_COLUMNS}, key FROM subscribers WHERE key > :after AND {visible()}"
    " ORDER BY key LIMIT :limit"
)
_PAGE_STATUS = (
    f"SELECT {_COLUMNS}, key FROM subscribers WHERE status = :status AND key > :after"
    f" AND {visible()} ORDER BY key LIMIT :limit"
)
_COUNT_STATUS = counted("subscribers", "status = :status")
_COUNT_ALL = f"SELECT status, COUNT(*) FROM subscribers WHERE {visible()} GROUP BY status"
# The keys of every subscriber's attributes; `{each}` is the dialect's JSON-object walk.
_ATTRIBUTE_KEYS = (
    "SELECT DISTINCT j.key FROM subscribers, {each} j"
    f" WHERE {visible('subscribers')}{{where}} ORDER BY j.key"
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


class SubscriberStore(StoreUser):
    """Subscribers in the project's store. Safe to share between threads (the store's lock).

    `SubscriberStore(path)` opens the store at `path` and closes it on `close()`;
    `SubscriberStore(store)` uses an open `Store` (shared with the ledger, say) and leaves it
    open. Use it as a context manager, or call `close()`.
    """

    error = AudienceError
    purpose = "the subscriber database"

    def __init__(
        self, source: StoreSource | Store, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._attach(source)
        self.path = self.database.path
        self._clock = clock

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
        with self._read(f"look up {email.strip()}") as db:
            found = db.execute(_VISIBLE_BY_KEY, {"key": key}).fetchone()
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
        with self._read(f"read the history of {email.strip()}") as db:
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
            with self._read("list the subscribers") as db:
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
        with self._read("count the subscribers") as db:
            if wanted is not None:
                return int(db.execute(_COUNT_STATUS, {"status": wanted}).fetchone()[0])
            found = dict(db.execute(_COUNT_ALL).fetchall())
        return {s.value: int(found.get(s.value, 0)) for s in SubscriberStatus}

    def export_csv(self, out: TextIO, status: str | None = None) -> int:
        """Write subscribers (None: everyone) as CSV: email, name, status, tags (when any
        subscriber has one), then one column per attribute. Returns the number of rows. Open
        files with `newline=""`."""
        wanted = None if status is None else parse_status(status)
        query = _ATTRIBUTE_KEYS.format(
            each=self.database.dialect.json_each.format(column="subscribers.attributes"),
            where="" if wanted is None else " AND subscribers.status = :status",
        )
        with self._read("export the subscribers") as db:
            keys = [str(row[0]) for row in db.execute(query, {"status": wanted})]
            tagged = db.execute("SELECT 1 FROM subscriber_tags LIMIT 1").fetchone() is not None
        if not tagged:
            return write_csv(out, keys, self.iter_subscribers(wanted))
        rows = self.iter_segment(EVERYONE, wanted, with_tags=True)
        return write_csv(out, keys, rows, with_tags=True)

    def import_csv(
        self,
        path: Path,
        *,
        mapping: ColumnMapping | None = None,
        strict: bool = False,
        resubscribe: bool = False,
        delimiter: str | None = None,
        encoding: str | None = None,
        tags: Iterable[str] = (),
    ) -> ImportReport:
        """Import a CSV file, all or nothing (`audience.csvfile` lists the layouts recognised).

        Streamed and written in short transactions, yet seen by others only once complete
        (`audience.importer` says how). Invalid rows are reported by physical line and skipped;
        with `strict`, any problem means nothing is imported (ImportProblemsError). Existing
        subscribers get the file's name and attributes (empty cells leave stored values alone).
        People who unsubscribed, bounced or complained stay so unless `resubscribe`; a `status`
        column (or Mailchimp's UNSUB_TIME / CLEAN_TIME) may unsubscribe people, never subscribe
        them again on its own.

        Every imported row gets `tags` and the tags of its own tag columns (Mailchimp's TAGS,
        listmonk's lists, `tags`); an import adds tags, it never takes any away.
        """
        return importer.import_csv(
            self.database,
            Path(path),
            dump=_dump,
            load=_load,
            mapping=mapping,
            strict=strict,
            resubscribe=resubscribe,
            delimiter=delimiter,
            encoding=encoding,
            clock=self._clock,
            tags=_checked_tags(tags, allow_none=True),
        )

    # --- tags and audiences (the queries are in `audience.tags`) ---------------------------------

    def tag(self, email: str, tags: Iterable[str]) -> TagChange:
        """Give the subscriber these tags (checked: SegmentSyntaxError naming a bad one)."""
        return self._change_tags(email, _checked_tags(tags), add=True)

    def untag(self, email: str, tags: Iterable[str]) -> TagChange:
        """Take these tags from the subscriber (tags they do not have are `unchanged`)."""
        return self._change_tags(email, _checked_tags(tags), add=False)

    def _change_tags(self, email: str, wanted: tuple[str, ...], *, add: bool) -> TagChange:
        key = lookup_key(email)
        with self._transaction(f"{'tag' if add else 'untag'} {email.strip()}") as db:
            found = self._row_by_key(db, key, to_change=True)
            if found is None:
                raise AudienceError(f"no subscriber {email.strip()}")
            before = set(tags_of(db, key))
            changed = tuple(t for t in wanted if (t not in before) == add)
            db.executemany(TAG_INSERT if add else TAG_DELETE, tag_params(key, changed))
            now = tags_of(db, key)
        unchanged = tuple(t for t in wanted if t not in changed)
        return TagChange(found[1], changed, unchanged, now)

    def tags(self, email: str) -> tuple[str, ...]:
        """The subscriber's tags, sorted (empty for an unknown address)."""
        key = lookup_key(email)
        with self._read(f"read the tags of {email.strip()}") as db:
            return tags_of(db, key)

    def tag_counts(self) -> list[TagCount]:
        """Every tag in use, by name, with how many subscribers (subscribed, and all) have it."""
        with self._read("count the tags") as db:
            return tag_counts(db)

    def iter_segment(
        self,
        segment: Segment = EVERYONE,
        status: str | None = SubscriberStatus.SUBSCRIBED,
        *,
        with_tags: bool = False,
    ) -> Iterator[tuple[Subscriber, tuple[str, ...]]]:
        """The segment's subscribers with `status` (None: any), in address order, a page at a
        time, each with their tags (left empty unless `with_tags`)."""
        wanted = None if status is None else parse_status(status).value
        after = ""
        while True:
            with self._read("select the audience") as db:
                page = page_segment(
                    db,
                    self.database.dialect,
                    segment,
                    status=wanted,
                    after=after,
                    with_tags=with_tags,
                )
            for _key, subscriber, tags in page:
                yield subscriber, tags
            if len(page) < _PAGE:
                return
            after = page[-1][0]

    def count_segment(
        self, segment: Segment = EVERYONE, status: str | None = SubscriberStatus.SUBSCRIBED
    ) -> int:
        """How many subscribers with `status` (None: any) the segment holds."""
        wanted = None if status is None else parse_status(status).value
        with self._read("count the audience") as db:
            return count_segment(db, self.database.dialect, segment, status=wanted)

    def any_in_segment(
        self, segment: Segment = EVERYONE, status: str | None = SubscriberStatus.SUBSCRIBED
    ) -> bool:
        """Whether the segment holds anybody with `status` (None: any): no count of a big list
        where one row answers."""
        wanted = None if status is None else parse_status(status).value
        with self._read("look at the audience") as db:
            return any_in_segment(db, self.database.dialect, segment, status=wanted)


def _checked_tags(tags: Iterable[str], *, allow_none: bool = False) -> tuple[str, ...]:
    """Tags as given on the command line, each checked (`segment.normalise_tag`), in order."""
    if isinstance(tags, str):
        tags = (tags,)
    checked = tuple(dict.fromkeys(normalise_tag(tag) for tag in tags))
    if not checked and not allow_none:
        raise AudienceError("no tag given")
    return checked
