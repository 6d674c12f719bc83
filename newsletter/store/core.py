"""`Store`: an open database, its migrations run, handing out transactions.

One connection per store, shared by threads under `lock`: SQLite serialises writers anyway, and
one connection keeps a lone write to one prepared statement and one WAL append. Outside a
transaction every statement commits on its own; `transaction()` groups statements and takes the
write lock at once (SQLite: `BEGIN IMMEDIATE`), so it never fails half-way on a lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from . import sqlite
from .base import Connection, StoreError
from .dialect import SQLITE, Dialect
from .migrations import applied_versions, migrate

__all__ = ["Store"]


class Store:
    """An open, migrated database. Use it as a context manager, or call `close()`.

    `connection` and `lock` are public for the hot paths (the ledger's one-statement marks):
    hold `lock` around any use of `connection`. `errors` are the engine's exception types, for
    callers to turn into their own errors.
    """

    def __init__(
        self,
        connection: Connection,
        *,
        dialect: Dialect,
        errors: tuple[type[Exception], ...],
        path: Path,
    ) -> None:
        self.connection = connection
        self.dialect = dialect
        self.errors = errors
        self.path = path
        self.lock = threading.RLock()

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        durable: bool = False,
        busy_timeout: float = 10.0,
        purpose: str = "the database",
    ) -> Store:
        """Open (creating it if missing) and migrate the SQLite store at `path`.

        `purpose` names the store in errors (`the subscriber database`, `the send ledger`).
        StoreError when the file cannot be opened or a newer newsletter wrote it.
        """
        path = Path(path)
        try:
            connection = sqlite.connect(path, durable=durable, busy_timeout=busy_timeout)
        except sqlite.ERRORS as err:
            raise StoreError(f"{path}: cannot open {purpose}: {err}") from err
        try:
            migrate(connection, SQLITE, f"{path}: {purpose}")
        except sqlite.ERRORS as err:
            connection.close()
            raise StoreError(f"{path}: cannot open {purpose}: {err}") from err
        except BaseException:
            connection.close()
            raise
        return cls(connection, dialect=SQLITE, errors=sqlite.ERRORS, path=path)

    # --- use ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """The connection, under the lock; each statement is its own transaction."""
        with self.lock:
            yield self.connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises.

        The engine's error (in `errors`) comes out as it is when the write lock cannot be had
        within the busy timeout; the caller says what it was trying to do.
        """
        with self.lock:
            connection = self.connection
            connection.execute(self.dialect.begin_write)
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    @property
    def version(self) -> int:
        """The highest migration applied."""
        with self.lock:
            return max(applied_versions(self.connection, self.dialect), default=0)

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        with self.lock:
            self.connection.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
