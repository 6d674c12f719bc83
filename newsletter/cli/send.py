"""Sending an issue: `send` (a test copy, a dry run, or the real resumable send) and `status`."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..checks.report import print_report
from ..config import Settings
from ..content import resolve_issue_folder
from ..delivery import leases
from ..delivery.ledger import Ledger, State
from ..delivery.sender import SendProgress, SendReport
from ..sending import (
    CheckFailedError,
    Rehearsal,
    SendPlan,
    SendRequest,
    deliver,
    plan_send,
    rehearse,
    send_test_copies,
)
from ._output import console, err_console
from ._project import project_settings


def send(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Skip every confirmation.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render every message and report; send nothing.")
    ] = False,
    test: Annotated[
        bool,
        typer.Option("--test", help="Send a [TEST] copy to the reviewers; nothing is recorded."),
    ] = False,
    to: Annotated[
        list[str] | None,
        typer.Option("--to", help="With --test: send to this address instead (repeatable)."),
    ] = None,
    resend_uncertain: Annotated[
        bool,
        typer.Option(
            "--resend-uncertain",
            help="Also send to recipients whose earlier delivery is uncertain (may duplicate).",
        ),
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Retry recipients that failed permanently before."),
    ] = False,
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help="Do not wait to retry deferred messages; resume later."),
    ] = False,
    no_link_check: Annotated[
        bool,
        typer.Option("--no-link-check", help="Skip checking links over the network first."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Send even when the pre-send check finds errors."),
    ] = False,
) -> None:
    """Send an issue to every subscriber who has not had it yet (resumable), or a test copy.

    Shows the subject, sender, transport and counts, and asks first. Each recipient is recorded
    in the send ledger before and after their message leaves: running the same command again
    resumes where it stopped, and nobody gets the issue twice. Ctrl-C finishes the messages in
    flight and stops cleanly.

    Examples:

        newsletter send 2026-11 --test
        newsletter send 2026-11 --test --to editor@example.org
        newsletter send 2026-11 --dry-run
        newsletter send 2026-11
        newsletter send 2026-11 --yes --resend-uncertain
        newsletter send 2026-11 --no-link-check
    """
    settings = project_settings()
    if test:
        _send_test(settings, issue, to or [])
        return
    request = SendRequest(
        issue,
        link_check=not no_link_check,
        force=force,
        retry_failed=retry_failed,
        resend_uncertain=resend_uncertain,
        wait_for_deferred=not no_wait,
    )
    if dry_run:
        _dry_run(settings, request)
        return
    plan = _checked(settings, lambda: plan_send(settings, request))
    _print_plan(plan)
    accept_changed = False
    if plan.content_changed:
        console.print(
            "[yellow]The issue's content changed since this send started.[/] "
            "The rest will get the new version."
        )
        if not yes and not typer.confirm("Send the changed version?", default=False):
            raise typer.Abort()
        accept_changed = True
    if not yes and not typer.confirm(f"Send '{plan.issue}' now?", default=False):
        raise typer.Abort()
    report = _run_send(plan, accept_changed)
    _print_send_report(report)
    if not report.complete or report.paused_reason or report.interrupted:
        raise typer.Exit(1)


def _send_test(settings: Settings, issue: str, to: list[str]) -> None:
    results = send_test_copies(settings, issue, to=to)
    for result in results:
        if result.error:
            err_console.print(
                f"[red]not sent[/] to {result.recipient}: {result.error}",
                highlight=False,
                markup=False,
            )
        else:
            console.print(f"[green]test sent[/] to {result.recipient}", highlight=False)
    if any(result.error for result in results):
        raise typer.Exit(1)


def _dry_run(settings: Settings, request: SendRequest) -> None:
    rehearsal = _checked(settings, lambda: rehearse(settings, request))
    report = rehearsal.report
    console.print(
        f"Dry run: {report.messages} messages rendered, "
        f"{report.total_bytes / 1024 / 1024:.1f} MB in all, largest "
        f"{report.largest_bytes / 1024:.1f} KB. Nothing was sent or recorded."
    )


_Checked = TypeVar("_Checked", SendPlan, Rehearsal)


def _checked(settings: Settings, step: Callable[[], _Checked]) -> _Checked:
    """Run `step` (which runs the content check) and print the check's errors and warnings."""
    try:
        result = step()
    except CheckFailedError as err:
        print_report(err.findings, console, root=settings.root, show_info=False)
        raise
    if result.findings.errors or result.findings.warnings:
        print_report(result.findings, console, root=settings.root, show_info=False)
    return result


def _print_plan(plan: SendPlan) -> None:
    summary = Table(show_header=False, box=None, padding=(0, 2))
    summary.add_row("Issue", plan.issue)
    summary.add_row("Subject", plan.subject)
    summary.add_row("From", plan.sender)
    summary.add_row("Transport", plan.transport_description)
    summary.add_row("Subscribed", str(plan.subscribed))
    summary.add_row("Already sent", str(plan.already_sent))
    if plan.uncertain:
        resending = ": resending, as asked" if plan.request.resend_uncertain else ""
        summary.add_row("Uncertain", f"{plan.uncertain} (not resent{resending})")
    if plan.failed_before:
        retrying = " (retrying, as asked)" if plan.request.retry_failed else ""
        summary.add_row("Failed before", f"{plan.failed_before}{retrying}")
    console.print(summary)


def _run_send(plan: SendPlan, accept_changed: bool) -> SendReport:
    """Deliver with a progress bar; Ctrl-C sets the stop event (the messages in flight finish)."""
    stop = threading.Event()

    def interrupt(signum: int, frame: object) -> None:
        err_console.print("\nStopping: finishing the messages in flight…")
        stop.set()

    previous = signal.signal(signal.SIGINT, interrupt)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.0f}/s"),
        TimeRemainingColumn(),
        TextColumn(
            "sent {task.fields[sent]} · failed {task.fields[failed]}"
            " · retrying {task.fields[deferred]}"
        ),
    )
    started = time.monotonic()
    try:
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("sending", total=None, rate=0.0, sent=0, failed=0, deferred=0)

            def progress(update: SendProgress) -> None:
                elapsed = max(time.monotonic() - started, 1e-6)
                bar.update(
                    task,
                    total=update.total,
                    completed=update.done,
                    rate=update.done / elapsed,
                    sent=update.sent,
                    failed=update.failed,
                    deferred=update.deferred,
                    description="waiting to retry" if update.waiting_until else "sending",
                )

            return deliver(plan, accept_changed=accept_changed, stop=stop, progress=progress)
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_send_report(report: SendReport) -> None:
    counts = report.counts
    console.print(
        f"[bold]{report.issue}[/]: sent {report.sent_now} now, "
        f"{counts.get(State.SENT, 0)} of {report.total} in all; "
        f"failed {counts.get(State.FAILED, 0)}, uncertain {counts.get(State.UNCERTAIN, 0)}, "
        f"waiting {counts.get(State.PENDING, 0) + counts.get(State.DEFERRED, 0)}",
        highlight=False,
    )
    if report.recovered_uncertain:
        console.print(
            f"[yellow]{report.recovered_uncertain} message(s) of an interrupted run "
            "are uncertain[/] (the run stopped while they were being sent)."
        )
    for row in report.failures[:20]:
        err_console.print(f"  failed: {row.email}: {row.last_error}", highlight=False, markup=False)
    for row in report.uncertain[:20]:
        err_console.print(
            f"  uncertain: {row.email}: {row.last_error}", highlight=False, markup=False
        )
    if report.uncertain:
        err_console.print(
            "  Check the server's log for these; --resend-uncertain sends them "
            "again (they may get it twice)."
        )
    if report.paused_reason:
        err_console.print(f"[bold red]paused:[/] {report.paused_reason}", highlight=False)
        err_console.print("Fix the cause and run the same command to resume.")
    elif report.interrupted:
        err_console.print("Stopped. Run the same command to resume.")


def status(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
) -> None:
    """Show how far the send of an issue got: counts per state, failures and their reasons.

    Examples:

        newsletter status 2026-11
    """
    settings = project_settings()
    name = resolve_issue_folder(settings.root, issue).name
    with Ledger(settings.database()) as ledger:
        if name not in ledger.issues():
            console.print(f"'{name}' has not been sent yet.")
            return
        issue_ledger = ledger.issue(name)
        counts = issue_ledger.counts()
        table = Table(title=f"Send of {name}", show_header=False)
        for state in State:
            table.add_row(state.value, str(counts.get(state, 0)))
        console.print(table)
        for row in issue_ledger.failures():
            console.print(f"  failed: {row.email}: {row.last_error}", highlight=False, markup=False)
        for row in issue_ledger.uncertain():
            console.print(
                f"  uncertain: {row.email}: {row.last_error}", highlight=False, markup=False
            )
        if not ledger.database.is_sqlite:
            # PostgreSQL: every worker that took part, live or not, with its lease.
            now = time.time()
            for lease in leases.leases(ledger.database, name):
                console.print(f"  worker {lease.describe(now)}", highlight=False, markup=False)
        if ledger.is_locked(name):
            console.print("A send of this issue is running now.")
