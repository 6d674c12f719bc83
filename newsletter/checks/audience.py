"""The audience check: an issue whose audience (`audience:` in issue.md) has nobody in it.

A warning, not an error: the list may be filled before the send, and `send` refuses an empty
audience anyway. Conditions on an attribute no subscriber has are named (a typo in `where:`
is the usual cause), with the closest attribute name.
"""

from __future__ import annotations

import difflib

from ..audience import SubscriberStore
from ..config import Settings
from ..content import Issue
from ..errors import NewsletterError
from ..segment import EVERYONE
from .model import Finding

__all__ = ["check_audience"]


def check_audience(issue: Issue, settings: Settings) -> list[Finding]:
    """Warnings about the issue's audience; none while the project has no store and the issue
    names no audience (a new project)."""
    segment = issue.audience or EVERYONE
    try:
        location = settings.database()
    except NewsletterError:
        return []  # `send` reports the store setting; the content check is not the place
    if location.path is not None and not location.path.exists():
        if issue.audience is None:
            return []
        return [_empty(issue, f"no subscriber list yet: nobody is in {segment.expression}")]
    try:
        with SubscriberStore(location) as store:
            if store.any_in_segment(segment):  # not a count: one row answers (1M: seconds)
                return []
            keys = _attribute_keys(store) if segment.where else set()
    except NewsletterError as err:  # the store's errors arrive as AudienceErrors
        return [Finding("warning", "audience", f"the audience cannot be counted: {err.message}")]
    findings = [
        _empty(
            issue,
            f"the audience {segment.expression} ({segment.describe()}) has no subscribed "
            "subscriber: a send would be refused",
        )
    ]
    for condition in segment.where:
        if condition.key not in keys:
            close = difflib.get_close_matches(condition.key, sorted(keys), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            findings.append(
                Finding(
                    "warning",
                    "audience",
                    f"no subscriber has the attribute '{condition.key}'{hint}",
                    issue.path,
                    _line(issue),
                )
            )
    return findings


def _empty(issue: Issue, message: str) -> Finding:
    return Finding("warning", "audience-empty", message, issue.path, _line(issue))


def _line(issue: Issue) -> int | None:
    """The line of `audience:` in issue.md (None when the issue does not name one)."""
    if issue.audience is None:
        return None
    try:
        lines = issue.path.read_text(encoding="utf-8-sig").splitlines()
    except OSError:
        return None
    for number, text in enumerate(lines, start=1):
        if text.startswith("audience:"):
            return number
    return None


def _attribute_keys(store: SubscriberStore) -> set[str]:
    """Every attribute name some subscriber has (one pass over the list: only on an empty
    audience with conditions, to name a misspelt key)."""
    keys: set[str] = set()
    for subscriber in store.iter_subscribers(None):
        keys.update(subscriber.attributes)
    return keys
