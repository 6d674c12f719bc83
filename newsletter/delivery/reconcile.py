"""Settle uncertain rows by asking the provider what it accepted (`newsletter reconcile`).

A row is `uncertain` when the message was handed over and no answer came back (a crash, a
lost connection). Resending risks a duplicate, not resending risks a miss. Where the provider's
API can search what it accepted, each uncertain row is looked up: found, it becomes `sent`
(with the provider's evidence as its reply); certainly not found, it goes back to `pending`, and
the next `send` sends it; otherwise it stays uncertain, with the reason.

"Not found" is believed only when the search can know: after the provider's indexing delay
(`settle_after`) and within how long it keeps its record (`keeps_for`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from ..config import Settings
from ..errors import ConfigError, Problem
from ..providers import PROVIDERS
from .ledger import Ledger
from .transports import provider_class
from .transports.base import Finding, SentLookup, SentQuery, Verdict
from .transports.outbox import OutboxSentLookup

__all__ = ["ReconcileReport", "reconcile_issue", "sent_lookup_for"]


@dataclass(frozen=True)
class ReconcileReport:
    """What the provider said about each uncertain row, and what was changed."""

    issue: str
    provider: str
    findings: tuple[Finding, ...]
    dry_run: bool = False

    def count(self, verdict: Verdict) -> int:
        return sum(1 for finding in self.findings if finding.verdict is verdict)


def sent_lookup_for(settings: Settings, environ: Mapping[str, str] = os.environ) -> SentLookup:
    """The configured transport's record of what it accepted; `ConfigError` when it has none
    this program can search (an SMTP server, or a provider without a search API)."""
    transport = settings.transport
    if transport.kind == "outbox":
        folder = settings.root / transport.path
        return OutboxSentLookup(folder)
    if transport.kind in PROVIDERS:
        # The real key even in sandbox mode: a test token cannot search.
        made = provider_class(transport.kind).from_settings(
            replace(transport, sandbox=False), environ, config_path=settings.config_path
        )
        lookup = made.sent_lookup()
        if lookup is not None:
            return lookup
        reason = f"{transport.kind}'s API cannot be searched for the messages it accepted"
    else:
        reason = "an SMTP server cannot be asked what it accepted"
    raise ConfigError(
        [Problem(reason, file=settings.config_path, key="transport.kind")],
        hint="Look for the uncertain Message-IDs in the server's or provider's log; then "
        "`newsletter send ISSUE --resend-uncertain` sends them again (they may get it twice). "
        "Postmark, Mailgun and the outbox can be reconciled.",
    )


def reconcile_issue(
    ledger: Ledger,
    issue: str,
    lookup: SentLookup,
    *,
    sender: str,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
    progress: Callable[[Finding], None] | None = None,
) -> ReconcileReport:
    """Ask `lookup` about every uncertain row of `issue` and settle those it can answer.

    Holds the issue's send lock meanwhile (a dead run's `sending` rows become uncertain first;
    a running send on SQLite makes this raise `LedgerError`). Each settled row is committed at
    once, so an interrupted reconcile keeps what it learnt.
    """
    issue_ledger = ledger.issue(issue)
    findings: list[Finding] = []
    with ledger.lock(issue):
        for row in issue_ledger.uncertain():
            query = SentQuery(row.key, row.email, row.message_id, sender, row.updated_at)
            finding = _believable(lookup.look_up(issue, query), clock() - row.updated_at, lookup)
            if not dry_run:
                if finding.verdict is Verdict.SENT:
                    issue_ledger.settle_sent(row.key, f"reconciled: {finding.evidence}")
                elif finding.verdict is Verdict.NOT_SENT:
                    issue_ledger.settle_unsent(row.key, f"reconciled: {finding.evidence}")
            findings.append(finding)
            if progress is not None:
                progress(finding)
    return ReconcileReport(issue, lookup.name, tuple(findings), dry_run)


def _believable(finding: Finding, age: float, lookup: SentLookup) -> Finding:
    """NOT_SENT only where the provider's search can know; UNKNOWN, with why, otherwise."""
    if finding.verdict is not Verdict.NOT_SENT:
        return finding
    if age < lookup.settle_after:
        wait = max(1, round((lookup.settle_after - age) / 60))
        why = f"{finding.evidence}, but {lookup.name} may not show it yet: ask again in {wait} min"
        return Finding(finding.key, Verdict.UNKNOWN, why)
    if age > lookup.keeps_for:
        why = f"{finding.evidence}, but this is older than {lookup.name} keeps its record"
        return Finding(finding.key, Verdict.UNKNOWN, why)
    return finding
