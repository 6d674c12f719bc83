"""What every engine hands out: a connection, its cursors, and the store's own error.

The protocols are what SQLite's `sqlite3.Connection` already is, so the default engine is used
as it comes (no wrapper, no cost per call). Another engine (PostgreSQL, issue 10) wraps its
driver in a small adapter with these methods, rewriting each query's parameters with
`Dialect.query`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from ..errors import NewsletterError

__all__ = ["Connection", "Cursor", "Params", "StoreError"]

Params = Mapping[str, Any]
"""Query parameters, by the names the query uses (`:name`)."""


class StoreError(NewsletterError):
    """The database cannot be opened, or was written by a newer version of newsletter."""


class Cursor(Protocol):
    """The result of one statement."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """One connection; outside `Store.transaction` every statement commits on its own."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Params = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Params], /) -> Cursor: ...

    def close(self) -> None: ...
