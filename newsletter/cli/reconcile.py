"""`newsletter reconcile`: ask the provider about uncertain recipients and settle them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ..content import resolve_issue_folder
from ..errors import LedgerError
from ._output import console, plain_console, visible
from ._project import project_settings

if TYPE_CHECKING:
    from ..delivery.transports.base import Finding


def reconcile(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Ask and show; change nothing in the ledger.")
    ] = False,
) -> None:
    """Ask the provider which uncertain messages it accepted, and settle them.

    An uncertain recipient (the run stopped after handing the message over, before the answer)
    becomes `sent` when the provider has the message, or `pending` when it certainly never had
    it (the next `send` sends it, once); otherwise it stays uncertain, with the reason. Works
    with Postmark, Mailgun and the outbox; an SMTP server cannot be asked (see its log).
    Exits 4 while uncertain recipients remain.

    Examples:

        newsletter reconcile 2026-11 --dry-run

        newsletter reconcile 2026-11
    """
    from ..delivery.ledger import Ledger  # noqa: PLC0415 (heavy, only this command needs it)
    from ..delivery.reconcile import reconcile_issue, sent_lookup_for  # noqa: PLC0415 (same)
    from ..delivery.transports.base import Verdict  # noqa: PLC0415 (same)

    settings = project_settings()
    name = resolve_issue_folder(settings.root, issue).name
    lookup = sent_lookup_for(settings)
    with Ledger(settings.database()) as ledger:
        if name not in ledger.issues():
            raise LedgerError(f"'{name}' has not been sent yet: nothing to reconcile")
        report = reconcile_issue(
            ledger,
            name,
            lookup,
            sender=settings.sender.addr_spec,
            dry_run=dry_run,
            progress=_finding,
        )
    if not report.findings:
        console.print(f"'{name}' has no uncertain recipients: nothing to reconcile.")
        return
    changed = "would become" if dry_run else "now"
    console.print(
        f"Asked {report.provider} about {len(report.findings)} uncertain recipient(s): "
        f"{report.count(Verdict.SENT)} {changed} sent, "
        f"{report.count(Verdict.NOT_SENT)} {changed} pending (never received; the next send "
        f"sends them), {report.count(Verdict.UNKNOWN)} still uncertain.",
        highlight=False,
    )
    if report.count(Verdict.UNKNOWN):
        raise typer.Exit(4)


def _finding(finding: Finding) -> None:
    plain_console.print(
        visible(f"  {finding.verdict.value}: {finding.key}: {finding.evidence}"), markup=False
    )
