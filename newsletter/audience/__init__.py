"""The audience: who gets the newsletter.

- `addresses`: checking and normalising addresses, names and attribute keys;
- `model`: `Subscriber`, `SubscriberStatus`, `StatusEvent`;
- `csvfile`: reading other tools' CSV exports, writing our own;
- `store`: `SubscriberStore`, the subscribers and their history on the project's store.

The names below are re-exported for existing importers; new code imports from the module named
after the concern. Unsubscribe tokens live in `newsletter.tokens` (re-exported here too).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..tokens import make_token, verify_token
    from .addresses import attribute_key, has_line_break, normalise_address
    from .csvfile import ColumnMapping, ImportProblemsError, ImportReport, RowProblem
    from .model import StatusEvent, Subscriber, SubscriberStatus, parse_status
    from .store import SubscriberStore

# Each name is loaded with its own module on first use: a build needs `Subscriber` (model), not
# the store and the CSV reader (30-50 ms of imports on every command that only renders).
_HOMES = {
    "make_token": "..tokens",
    "verify_token": "..tokens",
    "attribute_key": ".addresses",
    "has_line_break": ".addresses",
    "normalise_address": ".addresses",
    "ColumnMapping": ".csvfile",
    "ImportProblemsError": ".csvfile",
    "ImportReport": ".csvfile",
    "RowProblem": ".csvfile",
    "StatusEvent": ".model",
    "Subscriber": ".model",
    "SubscriberStatus": ".model",
    "parse_status": ".model",
    "SubscriberStore": ".store",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # found directly next time
    return value
