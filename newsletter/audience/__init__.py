"""The audience: who gets the newsletter.

- `addresses`: checking and normalising addresses, names and attribute keys;
- `model`: `Subscriber`, `SubscriberStatus`, `StatusEvent`;
- `csvfile`: reading other tools' CSV exports, writing our own;
- `store`: `SubscriberStore`, the subscribers and their history on the project's store.

The names below are re-exported for existing importers; new code imports from the module named
after the concern. Unsubscribe tokens live in `newsletter.tokens` (re-exported here too).
"""

from __future__ import annotations

from ..tokens import make_token, verify_token
from .addresses import attribute_key, has_line_break, normalise_address
from .csvfile import ColumnMapping, ImportProblemsError, ImportReport, RowProblem
from .model import StatusEvent, Subscriber, SubscriberStatus, parse_status
from .store import SubscriberStore

__all__ = [
    "ColumnMapping",
    "ImportProblemsError",
    "ImportReport",
    "RowProblem",
    "StatusEvent",
    "Subscriber",
    "SubscriberStatus",
    "SubscriberStore",
    "attribute_key",
    "has_line_break",
    "make_token",
    "normalise_address",
    "parse_status",
    "verify_token",
]
