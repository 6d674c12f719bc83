"""Who approved which content of an issue, and who received its test copies (issue 14).

An approval is tied to the content fingerprint of the issue's message (`MessageTemplate.
fingerprint`: everything a recipient receives except the Date header), so a change after the
approval is seen as unapproved content. The tables (`schedule_approvals`, `schedule_test_sends`)
are created by the store's migrations; the queries are here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import SendingSettings
from .errors import ProjectError
from .store import Store, StoreSource
from .store.user import StoreUser

__all__ = [
    "Approval",
    "ApprovalError",
    "Approvals",
    "TestCopy",
    "approval_problem",
]

_APPROVE = (
    "INSERT INTO schedule_approvals (issue, fingerprint, approved_by, approved_at)"
    " VALUES (:issue, :fingerprint, :by, :at)"
)
_APPROVALS = (
    "SELECT issue, fingerprint, approved_by, approved_at FROM schedule_approvals"
    " WHERE issue = :issue ORDER BY approved_at, id"
)
_TEST = (
    "INSERT INTO schedule_test_sends (issue, fingerprint, recipient, sent_at, error)"
    " VALUES (:issue, :fingerprint, :recipient, :at, :error)"
)
_TESTS = (
    "SELECT issue, fingerprint, recipient, sent_at, error FROM schedule_test_sends"
    " WHERE issue = :issue ORDER BY sent_at, id"
)


class ApprovalError(ProjectError):
    """The content to send is not approved (or changed after its approval); nothing was sent."""


@dataclass(frozen=True)
class Approval:
    """One `newsletter approve`: who approved which content of an issue, and when."""

    issue: str
    fingerprint: str
    by: str
    at: float


@dataclass(frozen=True)
class TestCopy:
    """One test copy of an issue: to whom, of which content, when, and the error if refused."""

    issue: str
    fingerprint: str
    recipient: str
    at: float
    error: str | None


class Approvals(StoreUser):
    """The approval and test-send records of the project's store. `Approvals(source)` opens the
    store (closed by `close()`); `Approvals(store)` uses an open `Store` and leaves it open."""

    purpose = "the approvals"

    def __init__(self, source: StoreSource | Store) -> None:
        self._attach(source)

    def approve(self, issue: str, fingerprint: str, by: str, at: float) -> Approval:
        """Record that `by` approved `fingerprint` of `issue` at `at`."""
        self._write(_APPROVE, {"issue": issue, "fingerprint": fingerprint, "by": by, "at": at})
        return Approval(issue, fingerprint, by, at)

    def approvals(self, issue: str) -> list[Approval]:
        """Every approval of `issue`, oldest first."""
        rows = self._rows(_APPROVALS, issue)
        return [Approval(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

    def record_test(
        self, issue: str, fingerprint: str, recipient: str, at: float, error: str | None
    ) -> None:
        """Record a test copy sent (or refused, with `error`) to `recipient`."""
        self._write(
            _TEST,
            {
                "issue": issue,
                "fingerprint": fingerprint,
                "recipient": recipient,
                "at": at,
                "error": error,
            },
        )

    def tests(self, issue: str) -> list[TestCopy]:
        """Every test copy of `issue`, oldest first."""
        rows = self._rows(_TESTS, issue)
        return [
            TestCopy(
                str(r[0]), str(r[1]), str(r[2]), float(r[3]), None if r[4] is None else str(r[4])
            )
            for r in rows
        ]

    def _write(self, sql: str, params: dict[str, object]) -> None:
        with self._transaction("record") as db:
            db.execute(sql, params)

    def _rows(self, sql: str, issue: str) -> list[tuple[Any, ...]]:
        with self._read("read the approvals") as db:
            return [tuple(row) for row in db.execute(sql, {"issue": issue})]


def approval_problem(
    sending: SendingSettings, approvals: list[Approval], fingerprint: str
) -> str | None:
    """Why content `fingerprint` may not be sent under `sending`'s approval rule; None when it
    may (no approval required, or an allowed approver approved exactly this content)."""
    if not sending.require_approval:
        return None
    allowed = {name.casefold() for name in sending.approvers}
    valid = [a for a in approvals if not allowed or a.by.casefold() in allowed]
    if any(a.fingerprint == fingerprint for a in valid):
        return None
    who = _who(sending.approvers)
    if valid:
        last = valid[-1]
        return f"the content changed after {last.by} approved it; it needs a new approval by {who}"
    return f"it is not approved; it needs an approval by {who}"


def _who(approvers: tuple[str, ...]) -> str:
    if not approvers:
        return "anyone ('newsletter approve ISSUE --by NAME')"
    if len(approvers) == 1:
        return approvers[0]
    return ", ".join(approvers[:-1]) + " or " + approvers[-1]
