"""The SQLite engine: a file, WAL, one connection in autocommit mode.

Durability: WAL with `synchronous=NORMAL`. Every commit is written to the WAL file before the
statement returns; the fsync is deferred to checkpoints. A process crash (even SIGKILL) loses
nothing because the written pages sit in the operating system's cache and the next open replays
the WAL; only a power cut or kernel crash can lose the last few commits (the database stays
consistent). `durable=True` asks for `synchronous=FULL` (an fsync per commit).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ERRORS", "connect", "load_rows"]

ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)


def connect(path: Path, *, durable: bool = False, busy_timeout: float = 10.0) -> sqlite3.Connection:
    """A connection to the file at `path` with the store's settings; sqlite3.Error if it fails.

    Autocommit (`isolation_level=None`): a lone statement is its own transaction, the cheapest
    write there is; multi-statement work uses `Store.transaction`. One connection may be shared
    by threads (under the store's lock), so the thread check is off.
    """
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
    )
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        connection.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        connection.close()
        raise
    return connection


def load_rows(
    connection: sqlite3.Connection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    """Append `rows` to `table` in one transaction, bound by position (no dict per row).

    A deferred `BEGIN`: writing only a TEMP table takes no lock on the store's file, so a
    staging load never makes another process wait.
    """
    marks = ", ".join("?" * len(columns))
    connection.execute("BEGIN")
    try:
        connection.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
