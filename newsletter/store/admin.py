"""What `newsletter store` does: describe a store, and copy one into another (SQLite to
PostgreSQL, typically), verified.

`copy_store` copies every data table (subscribers and their history, the send ledgers and
leases, soft bounces, and any table a later migration adds) in one transaction of the target,
then reads both sides back: the row count and a checksum of every table must match, or the copy
is rolled back. The source is only read. A target holding rows is refused unless `replace` is
given, when its rows are deleted in that same transaction first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .base import Connection, StoreError
from .core import Store
from .dialect import Dialect

__all__ = ["CopyReport", "StoreInfo", "TableCopy", "copy_store", "describe"]

# Parents before children (foreign keys); tables a later migration adds follow, by name.
_ORDER = (
    "subscribers",
    "subscriber_events",
    "ledger_issues",
    "ledger_rows",
    "ledger_leases",
    "inbox_soft_bounces",
)
_NOT_DATA = {"store_migrations", "import_keys"}
_BATCH = 5000


@dataclass(frozen=True)
class StoreInfo:
    """What `newsletter store info` shows."""

    engine: str
    where: str  # the file, or the URL with any password redacted
    version: int
    counts: dict[str, int]


@dataclass(frozen=True)
class TableCopy:
    table: str
    rows: int
    checksum: str  # sha256 of the rows in key order, the same on both engines


@dataclass(frozen=True)
class CopyReport:
    source: str
    target: str
    tables: tuple[TableCopy, ...]
    replaced: int  # rows deleted from the target first (`replace`)


def _tables(store: Store, db: Connection) -> list[str]:
    found = {str(row[0]) for row in db.execute(store.dialect.tables)} - _NOT_DATA
    return [t for t in _ORDER if t in found] + sorted(found - set(_ORDER))


def _count(db: Connection, table: str) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def describe(store: Store) -> StoreInfo:
    """The engine, where the store is, its schema version and the rows of each table."""
    with store.read() as db:
        counts = {table: _count(db, table) for table in _tables(store, db)}
    return StoreInfo(store.dialect.name, store.where, store.version, counts)


def _columns(dialect: Dialect, db: Connection, table: str) -> list[str]:
    return [str(row[0]) for row in db.execute(dialect.columns, {"table": table})]


def _value(value: Any) -> str:
    """One value as the checksum sees it: numbers as floats (SQLite's REAL and PostgreSQL's
    DOUBLE PRECISION agree on them; an INTEGER column reads back as the same number)."""
    if value is None:
        return "\x00"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return repr(float(value))
    return str(value)


def _checksum(rows: Iterable[Sequence[Any]]) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    for row in rows:
        digest.update("\x1f".join(_value(v) for v in row).encode("utf-8", "surrogatepass"))
        digest.update(b"\x1e")
        count += 1
    return count, digest.hexdigest()


def _rows(db: Connection, table: str, columns: Sequence[str]) -> Iterator[Sequence[Any]]:
    # Ordered by every column: the same order on both engines whatever the key.
    names = ", ".join(columns)
    yield from db.execute(f"SELECT {names} FROM {table} ORDER BY {names}")


def copy_store(source: Store, target: Store, *, replace: bool = False) -> CopyReport:
    """Copy every data table of `source` into `target` (both migrated to this version) and
    verify each by count and checksum; StoreError, with nothing written, if anything differs.
    """
    if source.version != target.version:
        raise StoreError(
            f"{source.where} is at store version {source.version}, {target.where} at "
            f"{target.version}; run 'newsletter store migrate' on both first"
        )
    with source.read() as src:
        tables = _tables(source, src)
        columns = {t: _columns(source.dialect, src, t) for t in tables}
    replaced = 0
    copies = []
    try:
        with target.transaction() as dst:
            present = set(_tables(target, dst))
            missing = [t for t in tables if t not in present]
            if missing:
                raise StoreError(f"{target.where} has no table {missing[0]!r}")
            held = {t: _count(dst, t) for t in present}
            if any(held.values()) and not replace:
                full = ", ".join(f"{t} ({n})" for t, n in held.items() if n)
                raise StoreError(
                    f"{target.where} already holds rows: {full}; nothing was copied",
                    hint="Copy into an empty database, or pass --replace to delete them first.",
                )
            for table in reversed(
                [t for t in _ORDER if t in present] + sorted(present - set(_ORDER))
            ):
                replaced += dst.execute(f"DELETE FROM {table}").rowcount if held[table] else 0
            for table in tables:
                names = columns[table]
                insert = (
                    f"INSERT INTO {table} ({', '.join(names)}) VALUES "
                    f"({', '.join(':' + n for n in names)})"
                )
                with source.read() as src:
                    batch: list[dict[str, Any]] = []
                    for row in src.execute(f"SELECT {', '.join(names)} FROM {table}"):
                        batch.append(dict(zip(names, row, strict=True)))
                        if len(batch) >= _BATCH:
                            dst.executemany(insert, batch)
                            batch = []
                    if batch:
                        dst.executemany(insert, batch)
                reset = target.dialect.reset_ids(table) if "id" in names else None
                if reset is not None:
                    dst.execute(reset)
                with source.read() as src:
                    want = _checksum(_rows(src, table, names))
                got = _checksum(_rows(dst, table, names))
                if got != want:
                    raise StoreError(
                        f"{target.where}: table {table} differs after the copy ({got[0]} rows, "
                        f"{want[0]} in the source; checksums {got[1][:12]} and {want[1][:12]});"
                        " nothing was copied"
                    )
                copies.append(TableCopy(table, want[0], want[1]))
    except target.errors as err:
        raise StoreError(f"{target.where}: the copy failed, nothing was copied: {err}") from err
    return CopyReport(source.where, target.where, tuple(copies), replaced)
