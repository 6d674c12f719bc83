"""Soft-bounce counts per subscriber, in a table of their own in the project's `newsletter.db`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import InboxError

__all__ = ["SoftBounces"]

_BOUNCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox_soft_bounces (
    id INTEGER PRIMARY KEY,
    subscriber_key TEXT NOT NULL,
    report_id TEXT NOT NULL,
    message_key TEXT NOT NULL,
    status TEXT,
    at REAL NOT NULL,
    UNIQUE (subscriber_key, report_id)
);
CREATE INDEX IF NOT EXISTS inbox_soft_bounces_by_key ON inbox_soft_bounces (subscriber_key, at);
"""


class SoftBounces:
    """Soft bounces per subscriber, in a table of its own in the project's `newsletter.db`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(_BOUNCE_SCHEMA)
        except sqlite3.Error as err:
            raise InboxError(f"{path}: cannot open the bounce records: {err}") from err

    def close(self) -> None:
        self._db.close()

    def record(
        self, key: str, report_id: str, message_key: str, status: str | None, at: float
    ) -> None:
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO inbox_soft_bounces"
                " (subscriber_key, report_id, message_key, status, at) VALUES (?, ?, ?, ?, ?)",
                (key, report_id, message_key, status, at),
            )
        except sqlite3.Error as err:
            raise InboxError(f"{self.path}: cannot record a soft bounce: {err}") from err

    def count(self, key: str, since: float) -> int:
        """Soft bounces for different messages since `since`."""
        try:
            row = self._db.execute(
                "SELECT COUNT(DISTINCT message_key) FROM inbox_soft_bounces"
                " WHERE subscriber_key = ? AND at >= ?",
                (key, since),
            ).fetchone()
        except sqlite3.Error as err:
            raise InboxError(f"{self.path}: cannot count soft bounces: {err}") from err
        return int(row[0])
