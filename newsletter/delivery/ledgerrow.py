"""The ledger's vocabulary: the states of a recipient's row, the row itself, a refused move.

Its own module so that `ledger` and `leases` (which claims rows for several workers and is
used by `ledger`) both import it, and neither imports the other at run time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import LedgerError

__all__ = ["IllegalTransitionError", "LedgerRow", "State"]


class State(enum.StrEnum):
    """Where one recipient of one issue stands."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DEFERRED = "deferred"
    UNCERTAIN = "uncertain"


class IllegalTransitionError(LedgerError):
    """A state change the ledger refuses (e.g. anything out of `sent`)."""


@dataclass(frozen=True)
class LedgerRow:
    """One recipient of one issue, as the ledger knows it."""

    issue: str
    key: str
    email: str
    state: State
    attempts: int
    last_error: str | None
    reply: str | None
    message_id: str | None
    next_attempt_at: float | None
    updated_at: float
