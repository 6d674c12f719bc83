"""`subscribers import` at any size: streamed, in short transactions, all or nothing.

1. **Stage.** The file is read a row at a time (`csvfile.parse_rows`) and every checked row
   goes to a TEMP table of this connection in loads of `CHUNK` (SQLite: `executemany` in a
   transaction that locks nothing of the store's file; PostgreSQL: COPY). Memory stays flat.
2. **Check.** Repeated addresses are found in SQL on the staged rows. With `strict`, any
   problem ends the import here: nothing was written.
3. **Write.** A `subscriber_imports` row (`writing`) names the import. Chunk by chunk, each its
   own short write transaction, new subscribers are inserted tagged with the import's id, with
   their history. Readers skip rows of an import still `writing` (`visible`), so senders,
   `serve` and `list` see none of them yet, and nobody waits behind the import for long.
4. **Flip.** One short transaction applies the file to people who were already subscribers
   (their count bounds its length: none for a list of newcomers) and marks the import `done`:
   the whole file appears at once.

An import that fails is undone (its rows deleted, a chunk at a time); one that was killed is
undone by the next import (`clean_abandoned`), once its process is gone (same host) or its
heartbeat is older than `STALE` seconds. Until then its rows are invisible.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AudienceError
from ..store import Connection, Params, Store
from .csvfile import (
    ColumnMapping,
    CsvRow,
    ImportProblemsError,
    ImportReport,
    RowProblem,
    open_csv,
    parse_rows,
)
from .model import SubscriberStatus
from .tags import TAG_INSERT, tag_params
from .visibility import visible

__all__ = ["CHUNK", "STALE", "clean_abandoned", "import_csv", "import_status", "visible"]

CHUNK = 10_000  # rows per load and per write transaction: tens of milliseconds of lock
STALE = 600.0  # seconds without a heartbeat after which an import on another host is dead


_STAGE = "subscriber_import_rows"
_STAGE_COLUMNS = ("line", "key", "email", "name", "attributes", "status", "tags")
_CREATE_STAGE = (
    f"""CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
        line INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        email TEXT NOT NULL,
        name TEXT NOT NULL,
        attributes TEXT NOT NULL,
        status TEXT,
        tags TEXT NOT NULL DEFAULT '',
        kind TEXT
    )""",
    f"CREATE INDEX IF NOT EXISTS {_STAGE}_by_key ON {_STAGE} (key, line)",
)
# A row whose address appeared on an earlier line of the file.
_MARK_DUPLICATES = (
    f"UPDATE {_STAGE} SET kind = 'duplicate' WHERE EXISTS (SELECT 1 FROM {_STAGE} t"
    f" WHERE t.key = {_STAGE}.key AND t.line < {_STAGE}.line)"
)
_DUPLICATES = (
    f"SELECT d.line, d.email, (SELECT MIN(t.line) FROM {_STAGE} t WHERE t.key = d.key)"
    f" FROM {_STAGE} d WHERE d.kind = 'duplicate' ORDER BY d.line"
)
_START = (
    "INSERT INTO subscriber_imports (file, host, pid, state, started_at, heartbeat_at)"
    " VALUES (:file, :host, :pid, 'writing', :now, :now) RETURNING id"
)
_INSERT_NEW = (
    "INSERT INTO subscribers"
    " (key, email, name, attributes, status, created_at, updated_at, import_id)"
    " SELECT key, email, name, attributes, COALESCE(status, 'subscribed'), :now, :now, :import"
    f" FROM {_STAGE} WHERE line > :lo AND line <= :hi AND kind IS NULL ORDER BY line"
    " ON CONFLICT (key) DO NOTHING"
)
_CLASSIFY = (
    f"UPDATE {_STAGE} SET kind = CASE WHEN EXISTS (SELECT 1 FROM subscribers s"
    f" WHERE s.key = {_STAGE}.key AND s.import_id = :import) THEN 'new' ELSE 'existing' END"
    " WHERE line > :lo AND line <= :hi AND kind IS NULL"
)
_NEW_EVENTS = (
    "INSERT INTO subscriber_events (subscriber_key, at, old_status, new_status, source)"
    " SELECT key, :now, NULL, COALESCE(status, 'subscribed'), :source"
    f" FROM {_STAGE} WHERE line > :lo AND line <= :hi AND kind = 'new'"
)
_COUNT_EXISTING = (
    f"SELECT COUNT(*) FROM {_STAGE} WHERE line > :lo AND line <= :hi AND kind = 'existing'"
)
# The tags of a chunk's rows of one kind ("new": written with the chunk, erased with the
# subscriber if the import is undone; "existing": added in the final flip), one per line.
_TAGGED = (
    f"SELECT key, tags FROM {_STAGE} WHERE line > :lo AND line <= :hi AND kind = :kind"
    " AND tags <> ''"
)
_BEAT = "UPDATE subscriber_imports SET heartbeat_at = :now WHERE id = :import"
# The staged rows of people who were subscribers already, with what is stored for them now.
_EXISTING_PAGE = (
    "SELECT st.line, st.key, st.email, st.name, st.attributes, st.status,"
    " s.email, s.name, s.attributes, s.status"
    f" FROM {_STAGE} st JOIN subscribers s ON s.key = st.key"
    " WHERE st.kind = 'existing' AND st.line > :after ORDER BY st.line LIMIT :limit"
)
_UPDATE = (
    "UPDATE subscribers SET email = :email, name = :name, attributes = :attributes,"
    " status = :status, updated_at = :now WHERE key = :key"
)
_EVENT = (
    "INSERT INTO subscriber_events (subscriber_key, at, old_status, new_status, source)"
    " VALUES (:key, :at, :old, :new, :source)"
)
_DONE = (
    "UPDATE subscriber_imports SET state = 'done', finished_at = :now, heartbeat_at = :now"
    " WHERE id = :import AND state = 'writing'"
)
_ADDED = "SELECT COUNT(*) FROM subscribers WHERE import_id = :import"
_WRITING = "SELECT id, host, pid, heartbeat_at FROM subscriber_imports WHERE state = 'writing'"
# A chunk of an abandoned import's rows (their history goes with them: ON DELETE CASCADE).
_UNDO_CHUNK = (
    "DELETE FROM subscribers WHERE id IN"
    " (SELECT id FROM subscribers WHERE import_id = :import LIMIT :limit)"
)
_FORGET = "DELETE FROM subscriber_imports WHERE id = :import AND state = 'writing'"


@dataclass
class _Counts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept: int = 0
    resubscribed: int = 0


def import_csv(
    store: Store,
    path: Path,
    *,
    dump: Callable[[Mapping[str, str]], str],
    load: Callable[[str], Mapping[str, str]],
    mapping: ColumnMapping | None = None,
    strict: bool = False,
    resubscribe: bool = False,
    delimiter: str | None = None,
    encoding: str | None = None,
    clock: Callable[[], float] = time.time,
    tags: tuple[str, ...] = (),
) -> ImportReport:
    """Import a CSV file into `store` (see the module's docstring); `SubscriberStore.import_csv`
    documents the rules. `dump`/`load` turn attributes into the stored JSON text and back;
    every row gets `tags` besides its own tag columns'."""
    path = Path(path)
    clean_abandoned(store)
    lines, warnings = open_csv(path, encoding)
    with lines:
        problems, last_line, renamed = _stage(
            store, path, lines, mapping or ColumnMapping(), delimiter, dump, tags
        )
    warnings = (*warnings, *renamed)
    try:
        problems = _with_duplicates(store, problems)
        if strict and problems:
            raise ImportProblemsError(path, problems)
        counts = _write(store, path, last_line, resubscribe, dump, load, clock)
    finally:
        _drop_stage(store)
    return ImportReport(
        file=path,
        added=counts.added,
        updated=counts.updated,
        unchanged=counts.unchanged,
        kept_unsubscribed=counts.kept,
        resubscribed=counts.resubscribed,
        problems=tuple(problems),
        warnings=warnings,
    )


def _fail(store: Store, path: Path, err: Exception) -> AudienceError:
    return AudienceError(f"{store.where}: cannot import {path}: {err}")


def _stage(
    store: Store,
    path: Path,
    lines: Any,
    mapping: ColumnMapping,
    delimiter: str | None,
    dump: Callable[[Mapping[str, str]], str],
    tags: tuple[str, ...],
) -> tuple[list[RowProblem], int, tuple[str, ...]]:
    """Every checked row of the file into the TEMP table; the problems, the last line, and a
    warning per tag that had to be renamed (at the first line it is on)."""
    problems: list[RowProblem] = []
    renamed: dict[tuple[str, str], int] = {}
    last = 0
    try:
        with store.read() as db:
            for statement in _CREATE_STAGE:
                db.execute(statement)
            db.execute(f"DELETE FROM {_STAGE}")
        batch: list[tuple[Any, ...]] = []
        for found in parse_rows(path, lines, mapping, delimiter):
            if isinstance(found, RowProblem):
                problems.append(found)
                continue
            batch.append(_staged(found, dump, tags))
            for original, tag in found.renamed_tags:
                renamed.setdefault((original, tag), found.line)
            last = found.line
            if len(batch) >= CHUNK:
                store.load_rows(_STAGE, _STAGE_COLUMNS, batch)
                batch = []
        if batch:
            store.load_rows(_STAGE, _STAGE_COLUMNS, batch)
    except store.errors as err:
        _drop_stage(store)
        raise _fail(store, path, err) from err
    except BaseException:
        _drop_stage(store)
        raise
    warnings = tuple(
        f"{path}:{line}: tag {original!r} imported as {tag!r} (tags are letters, digits, - _ .)"
        for (original, tag), line in renamed.items()
    )
    return problems, last, warnings


def _staged(
    row: CsvRow, dump: Callable[[Mapping[str, str]], str], tags: tuple[str, ...]
) -> tuple[Any, ...]:
    every = "\n".join(dict.fromkeys((*row.tags, *tags)))
    return (row.line, row.key, row.email, row.name, dump(row.attributes), row.status, every)


def _add_tags(db: Connection, chunk: Params, kind: str) -> None:
    """The staged tags of the chunk's rows of `kind` onto their subscribers."""
    rows = db.execute(_TAGGED, {**chunk, "kind": kind}).fetchall()
    params = [p for key, tags in rows for p in tag_params(str(key), str(tags).split("\n"))]
    if params:
        db.executemany(TAG_INSERT, params)


def _with_duplicates(store: Store, problems: list[RowProblem]) -> list[RowProblem]:
    """`problems` and every repeated address (naming the line it first appeared on), by line."""
    with store.read() as db:
        db.execute(_MARK_DUPLICATES)
        repeated = [
            RowProblem(int(line), f"duplicate of line {first} ({email})")
            for line, email, first in db.execute(_DUPLICATES)
        ]
    if not repeated:
        return problems
    return sorted([*problems, *repeated], key=lambda problem: problem.line)


def _drop_stage(store: Store) -> None:
    try:
        with store.read() as db:
            db.execute(f"DROP TABLE IF EXISTS {_STAGE}")
    except store.errors:
        pass  # the table goes with the connection anyway


def _write(
    store: Store,
    path: Path,
    last_line: int,
    resubscribe: bool,
    dump: Callable[[Mapping[str, str]], str],
    load: Callable[[str], Mapping[str, str]],
    clock: Callable[[], float],
) -> _Counts:
    """Steps 3 and 4: the chunks, then the flip; undone if anything fails before the flip."""
    source = f"import {path.name}"
    now = clock()
    try:
        with store.transaction() as db:
            found = db.execute(
                _START,
                {"file": str(path), "host": socket.gethostname(), "pid": os.getpid(), "now": now},
            ).fetchone()
    except store.errors as err:
        raise _fail(store, path, err) from err
    import_id = int(found[0])
    done = False
    try:
        existing = 0
        for lo in range(0, last_line, CHUNK):
            chunk = {"lo": lo, "hi": lo + CHUNK, "import": import_id, "now": now}
            with store.transaction() as db:
                db.execute(_INSERT_NEW, chunk)
                db.execute(_CLASSIFY, chunk)
                db.execute(_NEW_EVENTS, {**chunk, "source": source})
                _add_tags(db, chunk, "new")
                existing += int(db.execute(_COUNT_EXISTING, chunk).fetchone()[0])
                db.execute(_BEAT, {"now": clock(), "import": import_id})
        counts = _Counts()
        with store.transaction() as db:
            if existing:
                _apply_to_existing(db, counts, resubscribe, source, now, dump, load)
                for lo in range(0, last_line, CHUNK):
                    _add_tags(db, {"lo": lo, "hi": lo + CHUNK}, "existing")
            counts.added = int(db.execute(_ADDED, {"import": import_id}).fetchone()[0])
            db.execute(_DONE, {"now": clock(), "import": import_id})
        done = True
        return counts
    except store.errors as err:
        raise _fail(store, path, err) from err
    finally:
        if not done:
            _undo(store, import_id)


def _apply_to_existing(
    db: Connection,
    counts: _Counts,
    resubscribe: bool,
    source: str,
    now: float,
    dump: Callable[[Mapping[str, str]], str],
    load: Callable[[str], Mapping[str, str]],
) -> None:
    """Inside the flip: the file's values for people already on the list, against what is
    stored now (so an unsubscribe that arrived during the import is honoured)."""
    after = 0
    while True:
        page = db.execute(_EXISTING_PAGE, {"after": after, "limit": CHUNK}).fetchall()
        if not page:
            return
        updates: list[Params] = []
        events: list[Params] = []
        for line, key, email, name, attributes, status, old_email, old_name, old_text, old in page:
            old_attributes = load(old_text)
            new_name = name or old_name
            new_attributes = {**old_attributes, **load(attributes)}
            wanted = SubscriberStatus(status) if status else None
            new_status, outcome = import_status(SubscriberStatus(old), wanted, resubscribe)
            changed = (email, new_name, new_attributes) != (old_email, old_name, old_attributes)
            if new_status != old:
                events.append(
                    {"key": key, "at": now, "old": old, "new": new_status, "source": source}
                )
            if changed or new_status != old:
                updates.append(
                    {
                        "email": email,
                        "name": new_name,
                        "attributes": dump(new_attributes),
                        "status": new_status,
                        "now": now,
                        "key": key,
                    }
                )
            if outcome == "same":
                outcome = "updated" if changed or new_status != old else "unchanged"
            setattr(counts, outcome, getattr(counts, outcome) + 1)
            after = line
        if updates:
            db.executemany(_UPDATE, updates)
        if events:
            db.executemany(_EVENT, events)


def import_status(
    old: SubscriberStatus, wanted: SubscriberStatus | None, resubscribe: bool
) -> tuple[SubscriberStatus, str]:
    """The status an imported row leaves, and which count it goes to ("same": by the data)."""
    wanted = wanted or SubscriberStatus.SUBSCRIBED
    if wanted != SubscriberStatus.SUBSCRIBED:
        # The file says this person must not be mailed: always honoured.
        return wanted, "same"
    if old == SubscriberStatus.SUBSCRIBED:
        return old, "same"
    if resubscribe:
        return SubscriberStatus.SUBSCRIBED, "resubscribed"
    return old, "kept"


def _undo(store: Store, import_id: int) -> None:
    """Delete an unfinished import's rows, a chunk per transaction, then its record."""
    while True:
        with store.transaction() as db:
            gone = db.execute(_UNDO_CHUNK, {"import": import_id, "limit": CHUNK}).rowcount
            if gone < CHUNK:
                db.execute(_FORGET, {"import": import_id})
                return


def clean_abandoned(store: Store, *, now: float | None = None) -> list[int]:
    """Undo imports whose process is gone (this host) or silent for `STALE` seconds; their ids.

    Their rows were never visible; this frees their addresses and the space.
    """
    when = time.time() if now is None else now
    host = socket.gethostname()
    with store.read() as db:
        writing = db.execute(_WRITING).fetchall()
    dead = [
        int(import_id)
        for import_id, their_host, pid, heartbeat in writing
        if (their_host == host and not _alive(int(pid))) or when - float(heartbeat) > STALE
    ]
    for import_id in dead:
        _undo(store, import_id)
    return dead


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
