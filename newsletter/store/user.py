"""The plumbing every object working on the store shares (subscribers, archive, approvals).

Given where the store is, such an object opens it and closes it on `close()`; given an open
`Store` (shared with the ledger, say), it uses it and leaves it open. Engine errors inside
`_read`/`_transaction` become the object's own error type, naming what it was doing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import ClassVar, Self

from ..errors import NewsletterError
from .base import Connection, StoreError
from .core import Store, StoreSource

__all__ = ["StoreUser"]


class StoreUser:
    """Base of the stores' users: `error` is raised for engine errors, `purpose` names the
    store when it cannot be opened."""

    error: ClassVar[type[NewsletterError]] = StoreError
    purpose: ClassVar[str] = "the database"

    database: Store
    _owned: bool

    def _attach(self, source: StoreSource | Store) -> None:
        if isinstance(source, Store):
            self.database, self._owned = source, False
            return
        try:
            self.database = Store.open(source, purpose=self.purpose)
        except StoreError as err:
            raise self.error(err.message, hint=err.hint) from err
        self._owned = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the store if this object opened it (safe to call twice)."""
        if self._owned:
            self.database.close()

    @contextlib.contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        """The connection under the store's lock, for reading."""
        try:
            with self.database.read() as db:
                yield db
        except self.database.errors as err:
            raise self.error(f"{self.database.where}: cannot {action}: {err}") from err

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[Connection]:
        """One write transaction, committed when the block ends."""
        try:
            with self.database.transaction() as db:
                yield db
        except self.database.errors as err:
            raise self.error(f"{self.database.where}: cannot {action}: {err}") from err
