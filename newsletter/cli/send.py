"""Sending an issue: `send` (a test copy, a dry run, or the real resumable send) and `status`.

`status` reads only the ledger; the send use case (renderer, checks, transports) is imported
inside `send`, so `status` starts without it.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..config import Settings
from ..content import resolve_issue_folder
from ..delivery.ledger import Ledger, LedgerRow, State
from ..delivery.ledgeraudience import recorded_audience
from ..delivery.sender import RunOutcome, SendProgress, SendReport, run_outcome
from ..errors import ExitCode, ProjectError, TransportUnavailableError
from ._output import console, err_console, plain_console, plain_err_console, visible
from ._project import project_settings
from .clicks import show_click_counts

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from ..sending import Rehearsal, SendPlan, SendRequest

LISTED = 20  # failures and uncertain rows printed by `send` and `status` (all with --all)


def _first(rows: Iterable[LedgerRow], limit: int | None) -> list[LedgerRow]:
    return list(rows) if limit is None else list(itertools.islice(rows, limit))


# The exit status of `send` and `status` for what is left of the send (README: Exit codes).
EXIT_CODES = {
    RunOutcome.SENT: ExitCode.OK,
    RunOutcome.FAILED: ExitCode.FAILED,
    RunOutcome.UNCERTAIN: ExitCode.UNCERTAIN,
    RunOutcome.PAUSED: ExitCode.PAUSED,
    RunOutcome.DEFERRED: ExitCode.DEFERRED,
}


def send(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Skip every confirmation.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render every message and report; send nothing.")
    ] = False,
    test: Annotated[
        bool,
        typer.Option(
            "--test",
            help="Send a [TEST] copy to the reviewers; the send ledger is not touched.",
        ),
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
    audience: Annotated[
        str | None,
        typer.Option(
            "--audience",
            help="Who gets it, instead of issue.md's audience: 'tag:members,-tag:press,"
            "city=Utrecht' (README: Who gets it and when), or 'all'.",
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Check now, send at this time ('2026-12-08 09:00', in [schedule] timezone) "
            "if the content is unchanged then (see run-due).",
        ),
    ] = None,
) -> None:
    """Send an issue to its audience: everyone who has not had it yet (resumable), or a test copy.

    The audience is issue.md's `audience:` (or --audience; default: every subscriber). Shows the
    subject, sender, transport, the audience and its size, and asks first; a resumed send keeps
    the audience it started with. Each recipient is recorded
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

        newsletter send 2026-11 --audience 'tag:members,-tag:press'
        newsletter send 2026-11 --at "2026-12-08 09:00"
    """
    from ..sending import SendRequest, plan_send  # noqa: PLC0415 (heavy, only send needs it)

    settings = project_settings()
    if test and audience is not None:
        # A test copy goes to the reviewers (or --to), never to an audience: say so.
        raise ProjectError(
            "--audience does not apply to --test: test copies go to the reviewers",
            hint="Use --to ADDRESS to choose who gets the test copy.",
        )
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
        audience=audience,
    )
    if dry_run:
        _dry_run(settings, request)
        return
    if at is not None:
        from .schedule import schedule_issue  # noqa: PLC0415 (only --at needs it)

        schedule_issue(settings, request, at)
        return
    try:
        plan = _checked(settings, lambda: plan_send(settings, request))
    except TransportUnavailableError as err:
        # The server refused us (login, unreachable) before anything was sent: fix the sender
        # and run again, like a run paused by a refusal.
        err.exit_code = ExitCode.PAUSED
        raise

    def show_plan() -> None:
        _print_plan(plan)
        from .schedule import note_schedule  # noqa: PLC0415 (a small module, only send needs it)

        note_schedule(settings, plan.issue)
        if plan.content_changed:
            console.print(
                "[yellow]The issue's content changed since this send started.[/] "
                "The rest will get the new version."
            )

    if not yes:
        show_plan()
        if plan.content_changed and not typer.confirm("Send the changed version?", default=False):
            raise typer.Abort()
        if not typer.confirm(f"Send '{plan.issue}' now?", default=False):
            raise typer.Abort()
    # With --yes nobody reads the plan before the send starts: it is shown with the first
    # progress report (or when the run ends), so the first message does not wait for the
    # audience's count (a million rows: a tenth of a second; issue 16).
    accept_changed = plan.content_changed
    report = _run_send(plan, accept_changed, show_plan if yes else None)
    _print_send_report(report)
    code = EXIT_CODES[report.outcome]
    if code:
        raise typer.Exit(code)


def _send_test(settings: Settings, issue: str, to: list[str]) -> None:
    from ..sending import send_test_copies  # noqa: PLC0415 (heavy, only send needs it)

    results = send_test_copies(settings, issue, to=to)
    for result in results:
        if result.error:
            err_console.print(
                f"[red]not sent[/] to {escape(result.recipient)}: "
                f"{escape(_without_address(result.error, result.recipient))}",
                highlight=False,
            )
        else:
            console.print(f"[green]test sent[/] to {escape(result.recipient)}", highlight=False)
    if any(result.error for result in results):
        raise typer.Exit(1)


def _dry_run(settings: Settings, request: SendRequest) -> None:
    from ..sending import rehearse  # noqa: PLC0415 (heavy, only send needs it)

    rehearsal = _checked(settings, lambda: rehearse(settings, request))
    report = rehearsal.report
    console.print(
        f"Dry run: {report.messages} messages rendered, "
        f"{report.total_bytes / 1024 / 1024:.1f} MB in all, largest "
        f"{report.largest_bytes / 1024:.1f} KB. Nothing was sent or recorded."
    )


_Checked = TypeVar("_Checked", "SendPlan", "Rehearsal")


def _checked(settings: Settings, step: Callable[[], _Checked]) -> _Checked:
    """Run `step` (which runs the content check) and print the check's errors and warnings."""
    from ..checks.report import print_report  # noqa: PLC0415 (heavy, only send needs it)
    from ..sending import CheckFailedError  # noqa: PLC0415 (heavy, only send needs it)

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
    # Text: tags and values are data, never rich markup.
    shown = visible(f"{plan.audience.expression} ({plan.audience.describe()})")
    summary.add_row("Audience", Text(shown))
    if plan.audience.everyone:
        summary.add_row("Subscribed", str(plan.subscribed))
    else:
        summary.add_row("Recipients", f"{plan.audience_size} of {plan.subscribed} subscribed")
    summary.add_row("Already sent", str(plan.already_sent))
    if plan.uncertain:
        what = "resending, as asked" if plan.request.resend_uncertain else "not resent"
        summary.add_row("Uncertain", f"{plan.uncertain} ({what})")
    if plan.failed_before:
        retrying = " (retrying, as asked)" if plan.request.retry_failed else ""
        summary.add_row("Failed before", f"{plan.failed_before}{retrying}")
    console.print(summary)


# Stopped like Ctrl-C: systemd's stop (SIGTERM) and a dropped SSH session (SIGHUP) too.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _run_send(
    plan: SendPlan, accept_changed: bool, show_plan: Callable[[], None] | None = None
) -> SendReport:
    """Deliver with a progress bar. Ctrl-C, SIGTERM and SIGHUP set the stop event: the messages
    in flight finish and are recorded, and the run ends paused (issue 15, D8). `show_plan`
    (not shown yet) is called before the bar starts, or when the run ends without one."""
    from ..sending import deliver  # noqa: PLC0415 (heavy, only send needs it)

    stop = threading.Event()

    def interrupt(signum: int, frame: object) -> None:
        stop.set()
        with contextlib.suppress(OSError, ValueError):  # the terminal may be gone (SIGHUP)
            err_console.print(
                f"\nStopping ({signal.Signals(signum).name}): finishing the messages in flight…"
            )

    previous = {signum: signal.signal(signum, interrupt) for signum in _STOP_SIGNALS}
    started = time.monotonic()
    # The bar appears with the first progress report: not before the transport answered, and
    # not at all when there is nothing left to send (issue 15, D20; issue 12). It is made then
    # too, so its module is not imported before the first message leaves (issue 16).
    bars: list[Progress] = []
    task: list[TaskID] = []
    # The bar takes at most 5 updates a second (a report comes per message over SMTP); the
    # last one held back is shown when the run ends.
    shown: list[float] = [0.0]
    latest: list[SendProgress] = []
    unshown = [show_plan] if show_plan is not None else []

    def plan_shown() -> None:
        if unshown:
            unshown.pop()()

    def progress(update: SendProgress, *, final: bool = False) -> None:
        now = time.monotonic()
        if task and not final and now - shown[0] < 0.2:
            latest[:] = [update]
            return
        shown[0] = now
        latest.clear()
        try:
            if not task:
                plan_shown()
                bars.append(_progress_bar())
                bars[0].start()
                task.append(
                    bars[0].add_task("sending", total=None, rate=0.0, sent=0, failed=0, deferred=0)
                )
            elapsed = max(now - started, 1e-6)
            bars[0].update(
                task[0],
                total=update.total,
                completed=update.done,
                rate=update.done / elapsed,
                sent=update.sent,
                failed=update.failed,
                deferred=update.deferred,
                description="waiting to retry" if update.waiting_until else "sending",
            )
        except OSError:
            pass  # no terminal any more (SIGHUP): the send goes on, the ledger records it

    try:
        return deliver(plan, accept_changed=accept_changed, stop=stop, progress=progress)
    finally:
        with contextlib.suppress(OSError):  # no terminal any more (SIGHUP)
            plan_shown()
        if latest:
            progress(latest[0], final=True)
        if bars:
            with contextlib.suppress(OSError):
                bars[0].stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _progress_bar() -> Progress:
    """The send's progress bar (rich.progress, imported when the first report comes)."""
    from rich.progress import (  # noqa: PLC0415 (after the first message: see _run_send)
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

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
    return Progress(*columns, console=console, transient=False)


def _when(at: float) -> str:
    """A moment in the editor's local time, e.g. `2026-12-03 14:05 CET`."""
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(at))


def _without_address(reason: str | None, email: str) -> str:
    """The reason without a leading "address: " (the line names the address already; D19)."""
    text = reason or ""
    prefix = f"{email}: "
    if text.lower().startswith(prefix.lower()):
        text = text[len(prefix) :]
    return text


def _print_rows(
    out: Console, rows: Sequence[LedgerRow], label: str, limit: int | None, total: int
) -> None:
    """One line per row (at most `limit`), then how many more there are."""
    shown = rows if limit is None else rows[:limit]
    for row in shown:
        reason = _without_address(row.last_error, row.email)
        if not reason and row.state is State.SENDING:
            reason = "the run stopped while this message was being sent"
        # Replies come from servers and addresses from lists: no terminal controls get through.
        text = f"  {label}: {row.email}: {reason or 'no reason recorded'}"
        out.print(visible(text), markup=False)
    more = total - len(shown)
    if more > 0:
        out.print(f"  … and {more} more {label}", markup=False)


def _print_send_report(report: SendReport) -> None:
    counts = report.counts
    if report.sent_now == 0 and report.outcome is RunOutcome.SENT and report.total:
        console.print(
            f"Everything was sent: all {report.total} recipients already have '{report.issue}'.",
            highlight=False,
        )
        return
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
    _print_rows(plain_err_console, report.failures, "failed", LISTED, len(report.failures))
    _print_rows(plain_err_console, report.uncertain, "uncertain", LISTED, len(report.uncertain))
    if report.uncertain:
        err_console.print(
            "  `newsletter reconcile ISSUE` asks the provider about them (Postmark, Mailgun, the "
            "outbox); otherwise check the server's log; --resend-uncertain sends them again "
            "(they may get it twice)."
        )
    if report.gave_up:
        err_console.print(
            f"  {report.gave_up} deferred message(s) failed: retried for [sending] retry_for "
            "without success.",
            highlight=False,
        )
    if report.next_attempt_at is not None and not report.paused_reason and not report.interrupted:
        waiting = counts.get(State.DEFERRED, 0)
        console.print(
            f"{waiting} message(s) wait for a retry; the next at {_when(report.next_attempt_at)}. "
            "Run the same command again then to send them (cron: see the README, "
            '"Deferred mail").',
            highlight=False,
        )
    if report.paused_reason:
        err_console.print(f"[bold red]paused:[/] {report.paused_reason}", highlight=False)
        err_console.print("Fix the cause and run the same command to resume.")
    elif report.interrupted:
        err_console.print("Stopped. Run the same command to resume.")


def status(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
    all_rows: Annotated[
        bool,
        typer.Option("--all", help=f"List every failure and uncertain row (default {LISTED})."),
    ] = False,
) -> None:
    """Show how far the send of an issue got: counts per state, failures and their reasons;
    also its schedule, who approved which content, who got test copies, and, with `[links]
    count_clicks`, the clicks on each link (per link, never per person).

    Exits like `send` (0 when everyone has the issue; see the README's exit codes).

    Examples:

        newsletter status 2026-11

        newsletter status 2026-11 --all
    """
    from .schedule import print_history  # noqa: PLC0415 (a small module, only status needs it)

    settings = project_settings()
    name = resolve_issue_folder(settings.root, issue).name
    print_history(settings, name)
    with Ledger(settings.database()) as ledger:
        if name not in ledger.issues():
            console.print(f"'{name}' has not been sent yet.")
            show_click_counts(ledger.database, name)  # test copies' clicks, if any
            return
        issue_ledger = ledger.issue(name)
        counts = issue_ledger.counts()
        frozen = recorded_audience(ledger.database, name) or "all"
        plain_console.print(f"Audience: {visible(frozen)}", markup=False)
        table = Table(title=f"Send of {name}", show_header=False)
        for state in State:
            table.add_row(state.value, str(counts.get(state, 0)))
        console.print(table)
        limit = None if all_rows else LISTED
        failed = counts.get(State.FAILED, 0)
        _print_rows(
            plain_console, _first(issue_ledger.rows(State.FAILED), limit), "failed", limit, failed
        )
        deferred = issue_ledger.deferred()
        if deferred.count and deferred.next_attempt_at is not None:
            retry_for = settings.sending.retry_for
            since = deferred.oldest_since or deferred.next_attempt_at
            console.print(
                f"  {deferred.count} deferred: next attempt at {_when(deferred.next_attempt_at)}"
                f" (run `newsletter send {name}` then); the oldest is given up at "
                f"{_when(since + retry_for)} ([sending] retry_for)",
                highlight=False,
            )
        uncertain = issue_ledger.uncertain()
        _print_rows(plain_console, uncertain, "uncertain", limit, len(uncertain))
        if failed + len(uncertain) > LISTED and not all_rows:
            console.print("  (newsletter status ISSUE --all lists them all)")
        if not ledger.database.is_sqlite:
            from ..delivery import leases  # noqa: PLC0415 (only a PostgreSQL store has leases)

            # PostgreSQL: every worker that took part, live or not, with its lease.
            now = time.time()
            for lease in leases.leases(ledger.database, name):
                console.print(f"  worker {lease.describe(now)}", highlight=False, markup=False)
        show_click_counts(ledger.database, name)
        running = ledger.is_locked(name)
        if running:
            console.print("A send of this issue is running now.")
    # A run in progress is not finished: "deferred" (come back later), whatever its counts say.
    code = ExitCode.DEFERRED if running else EXIT_CODES[run_outcome(counts)]
    if code:
        raise typer.Exit(code)
