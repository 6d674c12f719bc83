"""`Store`: an open database, its migrations run, handing out transactions.

One connection per store, shared by threads under `lock`: SQLite serialises writers anyway, and
one connection keeps a lone write to one prepared statement and one WAL append. Outside a
transaction every statement commits on its own; `transaction()` groups statements and takes the
write lock at once (SQLite: `BEGIN IMMEDIATE`), so it never fails half-way on a lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from ..store_url import StoreUrl, StoreUrlError, parse_store_url
from . import postgresql, sqlite
from .base import Connection, StoreError
from .dialect import POSTGRESQL, SQLITE, Dialect
from .migrations import applied_versions, migrate

__all__ = ["Store", "StoreSource", "locate"]

StoreSource = Path | str | StoreUrl
"""A SQLite file, a store URL (`sqlite:///…`, `postgresql://…`), or a checked `StoreUrl`."""


def locate(source: StoreSource) -> StoreUrl:
    """The checked location of `source`; a string with `://` is a URL (relative SQLite paths
    from the working directory), anything else a SQLite file. StoreError if it cannot be used."""
    if isinstance(source, StoreUrl):
        return source
    if isinstance(source, str) and "://" in source:
        try:
            return parse_store_url(source, root=Path.cwd(), origin="store", from_environment=True)
        except StoreUrlError as err:
            raise StoreError(str(err)) from None
    path = Path(source)
    return StoreUrl("sqlite", shown=str(path), path=path)


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
        location: StoreUrl,
    ) -> None:
        self.connection = connection
        self.dialect = dialect
        self.errors = errors
        self.location = location
        # The SQLite file (its run-lock files sit beside it); a placeholder on PostgreSQL, where
        # nothing is kept beside the store. `where` names the store in messages either way.
        self.path = location.path or Path(location.engine)
        self.where = location.shown
        self.lock = threading.RLock()

    @classmethod
    def open(
        cls,
        source: StoreSource,
        *,
        durable: bool = False,
        busy_timeout: float = 10.0,
        purpose: str = "the database",
    ) -> Store:
        """Open (creating it if missing) and migrate the store at `source` (see `locate`).

        `purpose` names the store in errors (`the subscriber database`, `the send ledger`).
        StoreError when it cannot be opened or a newer newsletter wrote it.
        """
        location = locate(source)
        if location.path is None:
            return cls._open_postgresql(location, busy_timeout=busy_timeout, purpose=purpose)
        path = location.path
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
        return cls(connection, dialect=SQLITE, errors=sqlite.ERRORS, location=location)

    @classmethod
    def _open_postgresql(cls, location: StoreUrl, *, busy_timeout: float, purpose: str) -> Store:
        # Durability needs no setting: every PostgreSQL commit is flushed to its WAL.
        errors = postgresql.errors()
        where = location.shown
        try:
            connection = postgresql.connect(location, busy_timeout=busy_timeout)
        except errors as err:
            raise StoreError(f"{where}: cannot open {purpose}: {_first_line(err)}") from None
        try:
            migrate(connection, POSTGRESQL, f"{where}: {purpose}")
        except errors as err:
            connection.close()
            raise StoreError(f"{where}: cannot open {purpose}: {_first_line(err)}") from None
        except BaseException:
            connection.close()
            raise
        return cls(connection, dialect=POSTGRESQL, errors=errors, location=location)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect is SQLITE

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
            if connection.in_transaction:
                # Inside a transaction its owner holds open (a claimed batch, `hold`): the
                # statements join it, and the owner commits or rolls back.
                yield connection
                return
            connection.execute(self.dialect.begin_write)
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    def load_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Append `rows` (values in `columns` order) to `table` as fast as the engine can: one
        `executemany` in a transaction on SQLite, COPY on PostgreSQL. For staging tables (an
        import's TEMP table); errors are the engine's, as for `transaction`."""
        with self.lock:
            if self.is_sqlite:
                sqlite.load_rows(self.connection, table, columns, rows)  # type: ignore[arg-type]
            else:
                postgresql.load_rows(self.connection, table, columns, rows)  # type: ignore[arg-type]

    def hold(self) -> None:
        """Begin a write transaction that stays open across calls (the lock is not held): every
        `transaction()` joins it until `release(commit=...)`. For one thread's own store."""
        with self.lock:
            self.connection.execute(self.dialect.begin_write)

    def release(self, *, commit: bool) -> None:
        """End the transaction `hold` began (nothing when none is open)."""
        with self.lock:
            if self.connection.in_transaction:
                self.connection.execute("COMMIT" if commit else "ROLLBACK")

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


def _first_line(error: Exception) -> str:
    """libpq's messages run over several lines (with hints); the first says what failed."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
