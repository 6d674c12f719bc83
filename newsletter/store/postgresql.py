"""The PostgreSQL engine: psycopg 3, one connection in autocommit mode, like SQLite's.

The connection is wrapped in a small adapter with the `Connection` protocol: each query, written
once with `:name` parameters, is rewritten to psycopg's `%(name)s` form by the dialect (cached per
query text). Outside `Store.transaction` each statement commits on its own; the transaction
sends `BEGIN` ... `COMMIT` itself, exactly as on SQLite.

psycopg is an optional dependency (`pip install 'newsletter[postgresql]'`), imported only when a
`postgresql://` store is opened, so the default SQLite path needs nothing but Python.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any

from ..store_url import StoreUrl
from .base import Cursor, Params, StoreError
from .dialect import POSTGRESQL

__all__ = ["PostgresConnection", "connect", "driver", "errors", "load_rows"]

_INSTALL_HINT = "Install the PostgreSQL driver: pip install 'newsletter[postgresql]'"


def driver() -> ModuleType:
    """The psycopg module; StoreError saying how to install it when missing."""
    try:
        return importlib.import_module("psycopg")
    except ImportError as err:
        raise StoreError(
            f"a postgresql:// store needs psycopg 3, which is not installed ({err})",
            hint=_INSTALL_HINT,
        ) from None


def errors() -> tuple[type[Exception], ...]:
    """The driver's exception types (every psycopg error derives from psycopg.Error)."""
    error: type[Exception] = driver().Error
    return (error,)


class _Cursor:
    """A psycopg cursor seen through the `Cursor` protocol (rows as tuples)."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description is not None else None

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall()) if self._cursor.description is not None else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PostgresConnection:
    """A psycopg connection with the `Connection` protocol (autocommit, `:name` queries)."""

    def __init__(self, connection: Any) -> None:
        self.raw = connection
        self._idle = driver().pq.TransactionStatus.IDLE

    @property
    def in_transaction(self) -> bool:
        return bool(self.raw.info.transaction_status != self._idle)

    def execute(self, sql: str, parameters: Params | None = None, /) -> Cursor:
        text = POSTGRESQL.query(sql)
        cursor = self.raw.cursor()
        # No parameters: the text goes as it is (a `%` in it is not a placeholder then).
        cursor.execute(text if parameters is not None else sql, parameters)
        return _Cursor(cursor)

    def executemany(self, sql: str, parameters: Iterable[Params], /) -> Cursor:
        cursor = self.raw.cursor()
        # psycopg sums the rows every statement touched into rowcount, as sqlite3 does.
        cursor.executemany(POSTGRESQL.query(sql), list(parameters))
        return _Cursor(cursor)

    def close(self) -> None:
        self.raw.close()


def connect(location: StoreUrl, *, busy_timeout: float = 10.0) -> PostgresConnection:
    """A connection to `location` in autocommit mode; the driver's error if it fails.

    `busy_timeout` becomes the server's `lock_timeout`, so a statement waiting for a row lock
    fails as SQLite's busy timeout does instead of hanging.
    """
    psycopg = driver()
    connection = psycopg.connect(location.conninfo, autocommit=True, application_name="newsletter")
    try:
        # SET, not the `options` parameter: that would replace any `options` the URL gives.
        connection.execute(f"SET lock_timeout = {int(busy_timeout * 1000)}")
    except BaseException:
        connection.close()
        raise
    return PostgresConnection(connection)


def load_rows(
    connection: PostgresConnection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    """Append `rows` to `table` with COPY: one stream, no round trip per row."""
    with (
        connection.raw.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
