"""Soft-bounce counts per subscriber, in a table of their own in the project's store.

The table (`inbox_soft_bounces`) is created by the store's migrations; the queries are here.
"""

from __future__ import annotations

from ..errors import InboxError
from ..store import Store, StoreError, StoreSource

__all__ = ["SoftBounces"]

# A report already recorded (the same message read twice) is not counted again.
_RECORD = (
    "INSERT INTO inbox_soft_bounces (subscriber_key, report_id, message_key, status, at)"
    " VALUES (:key, :report_id, :message_key, :status, :at)"
    " ON CONFLICT (subscriber_key, report_id) DO NOTHING"
)
_COUNT = (
    "SELECT COUNT(DISTINCT message_key) FROM inbox_soft_bounces"
    " WHERE subscriber_key = :key AND at >= :since"
)


class SoftBounces:
    """Soft bounces per subscriber. `SoftBounces(path)` opens the store at `path` (and closes it
    on `close()`); `SoftBounces(store)` uses an open `Store` and leaves it open."""

    def __init__(self, source: StoreSource | Store) -> None:
        if isinstance(source, Store):
            self.database, self._owned = source, False
        else:
            try:
                self.database = Store.open(source, purpose="the bounce records")
            except StoreError as err:
                raise InboxError(err.message, hint=err.hint) from err
            self._owned = True
        self.path = self.database.path

    def close(self) -> None:
        """Close the store if this object opened it."""
        if self._owned:
            self.database.close()

    def record(
        self, key: str, report_id: str, message_key: str, status: str | None, at: float
    ) -> None:
        """Count a soft bounce of `key` reported by `report_id` about the message `message_key`."""
        params = {
            "key": key,
            "report_id": report_id,
            "message_key": message_key,
            "status": status,
            "at": at,
        }
        try:
            with self.database.read() as db:
                db.execute(_RECORD, params)
        except self.database.errors as err:
            raise InboxError(f"{self.database.where}: cannot record a soft bounce: {err}") from err

    def count(self, key: str, since: float) -> int:
        """Soft bounces for different messages since `since`."""
        try:
            with self.database.read() as db:
                row = db.execute(_COUNT, {"key": key, "since": since}).fetchone()
        except self.database.errors as err:
            raise InboxError(f"{self.database.where}: cannot count soft bounces: {err}") from err
        return int(row[0])
