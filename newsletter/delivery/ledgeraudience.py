"""The audience a send froze, recorded beside the ledger (`ledger_audiences`), so that a resumed
send selects the same people: a different audience is refused until the send is complete.

Issues frozen before audiences existed have no row: their audience was every subscriber (`all`).
"""

from __future__ import annotations

from ..errors import LedgerError
from ..store import Store

__all__ = ["AudienceChangedError", "record_audience", "recorded_audience"]

EVERYONE = "all"  # `segment.EVERYONE.expression`

_READ = "SELECT expression FROM ledger_audiences WHERE issue = :issue"
_FROZEN = "SELECT 1 FROM ledger_issues WHERE issue = :issue"
_UPSERT = (
    "INSERT INTO ledger_audiences (issue, expression, recorded_at) VALUES (:issue, :expression,"
    " :now) ON CONFLICT (issue) DO UPDATE SET expression = excluded.expression,"
    " recorded_at = excluded.recorded_at"
)


class AudienceChangedError(LedgerError):
    """A send resumed with another audience than the one it froze; nothing was sent."""

    def __init__(self, issue: str, recorded: str, asked: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"the send of '{issue}' started with the audience '{recorded}'; this run asks for "
            f"'{asked}'. A send keeps its audience until everyone in it has the issue",
            hint=hint
            or f"Run it again with --audience '{recorded}' (or restore issue.md's audience) to "
            "finish it; send to other people as a new issue.",
        )
        self.recorded = recorded
        self.asked = asked


def recorded_audience(database: Store, issue: str) -> str | None:
    """The audience expression the issue's send froze; `all` for a send frozen before audiences
    were recorded; None when it has not been frozen."""
    with database.read() as db:
        found = db.execute(_READ, {"issue": issue}).fetchone()
        if found is not None:
            return str(found[0])
        frozen = db.execute(_FROZEN, {"issue": issue}).fetchone() is not None
    return EVERYONE if frozen else None


def record_audience(database: Store, issue: str, expression: str, *, now: float) -> None:
    """Record `expression` as the issue's audience, before its freeze (under its run lock).

    The same expression again is a no-op; another one replaces it only while the issue has
    not been frozen (an earlier run failed before freezing), else AudienceChangedError.
    """
    params = {"issue": issue, "expression": expression, "now": now}
    try:
        with database.transaction() as db:
            found = db.execute(_READ, {"issue": issue}).fetchone()
            frozen = db.execute(_FROZEN, {"issue": issue}).fetchone() is not None
            stored = str(found[0]) if found is not None else EVERYONE if frozen else None
            if stored == expression or not frozen:
                db.execute(_UPSERT, params)
                return
    except database.errors as err:
        raise LedgerError(f"issue '{issue}': cannot record its audience: {err}") from err
    raise AudienceChangedError(issue, stored or EVERYONE, expression)
