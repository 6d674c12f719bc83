"""Scheduled sends and approval: `send --at`, `schedule list|cancel`, `run-due`, `approve`, and
the approval and test history `status` shows (thin over `newsletter.scheduling` and
`newsletter.sending`, imported inside each command: they pull in the renderer)."""

from __future__ import annotations

import getpass
import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..config import Settings
from ..errors import ExitCode
from ._output import console, err_console, plain_console
from ._project import project_settings

if TYPE_CHECKING:
    from ..scheduling import Schedule
    from ..sending import SendRequest

app = typer.Typer(
    name="schedule",
    help="Scheduled sends: list them, cancel one (schedule with `newsletter send ISSUE --at`).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

_STATE_STYLE = {
    "scheduled": "cyan",
    "running": "bold cyan",
    "sent": "green",
    "failed": "red",
    "refused": "red",
    "missed": "yellow",
    "cancelled": "dim",
}


def schedule_issue(settings: Settings, request: SendRequest, at: str) -> None:
    """`send ISSUE --at TIME`: check everything now, record the schedule, say what it means."""
    from ..checks.report import print_report  # noqa: PLC0415 (heavy: the checks)
    from ..scheduling import schedule_send  # noqa: PLC0415 (heavy: the renderer and checks)
    from ..sending import CheckFailedError  # noqa: PLC0415 (heavy, see above)

    try:
        made = schedule_send(settings, request, at, now=time.time(), by=_user())
    except CheckFailedError as err:
        print_report(err.findings, console, root=settings.root, show_info=False)
        raise
    if made.findings.warnings:
        print_report(made.findings, console, root=settings.root, show_info=False)
    schedule = made.schedule
    console.print(
        f"[green]Scheduled[/] '{escape(schedule.issue)}' for "
        f"[bold]{_local(schedule)}[/] ({escape(schedule.timezone)}): "
        f"{made.subscribed} subscribed now; subject: {escape(made.subject)}",
        highlight=False,
    )
    for warning in made.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    console.print(
        "It goes out only if the content is unchanged and the check still passes then. "
        "Something must run it: `newsletter run-due` from cron or a systemd timer, or "
        "`newsletter serve` with [schedule] in_serve = true (README: Scheduled sends).",
        highlight=False,
    )
    if not settings.schedule.in_serve:
        console.print(
            "[dim]([schedule] in_serve is off: make sure cron or a timer runs "
            "`newsletter run-due`.)[/]"
        )


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def _local(schedule: Schedule) -> str:
    return schedule.due_local().strftime("%Y-%m-%d %H:%M %Z")


def _when(at: float | None, schedule: Schedule) -> str:
    if at is None:
        return ""
    zone = schedule.due_local().tzinfo
    return datetime.fromtimestamp(at, zone).strftime("%Y-%m-%d %H:%M")


@app.command("list")
def list_command(
    all_rows: Annotated[
        bool, typer.Option("--all", help="Also list finished, refused and cancelled ones.")
    ] = False,
) -> None:
    """List the scheduled sends: issue, time (in the project's zone), state, and why one did
    not go out (content changed, check failed, not approved, missed).

    Examples:

        newsletter schedule list

        newsletter schedule list --all
    """
    from ..scheduling import list_schedules  # noqa: PLC0415 (heavy, see the module docstring)

    settings = project_settings()
    schedules = list_schedules(settings, include_done=True)
    if not all_rows:
        # Pending ones, and what went wrong in the last week (so a refusal is not missed).
        week = time.time() - 7 * 24 * 3600
        schedules = [
            s
            for s in schedules
            if s.state in ("scheduled", "running")
            or (s.state not in ("sent", "cancelled") and (s.finished_at or 0) >= week)
        ]
    if not schedules:
        console.print("Nothing is scheduled." + ("" if all_rows else " (--all lists past ones)"))
        return
    table = Table(show_header=True, box=None, padding=(0, 2))
    for column in ("issue", "due", "state", "reason"):
        table.add_column(column)
    for schedule in schedules:
        style = _STATE_STYLE.get(schedule.state.value, "")
        reason = schedule.reason or ""
        if schedule.state == "running":
            reason = f"since {_when(schedule.claimed_at, schedule)} by {schedule.claimed_by}"
        if schedule.notified:
            reason += f" [{schedule.notified}]"
        table.add_row(
            escape(schedule.issue),
            f"{_local(schedule)}",
            f"[{style}]{schedule.state.value}[/]",
            escape(reason),
        )
    console.print(table)


@app.command("cancel")
def cancel_command(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
    stale: Annotated[
        bool,
        typer.Option(
            "--stale", help="Mark a schedule whose runner died as failed (resume with send)."
        ),
    ] = False,
) -> None:
    """Cancel an issue's scheduled send (nothing is sent; schedule it again with `send --at`).

    Examples:

        newsletter schedule cancel 2026-12
    """
    from ..scheduling import cancel_schedule  # noqa: PLC0415 (heavy, see the module docstring)

    settings = project_settings()
    schedule = cancel_schedule(settings, issue, now=time.time(), stale=stale)
    console.print(
        f"{escape(schedule.issue)} ({_local(schedule)}): {schedule.state.value}", highlight=False
    )


def run_due() -> None:
    """Send the scheduled issues that are due now; for cron or a systemd timer.

    Each due schedule is claimed in the store, so several runners (two cron jobs, `serve`)
    never send one twice. It goes out only if its content is unchanged since it was scheduled,
    the check still passes, and (with [sending] require_approval) it is approved; otherwise it
    is refused, the reason recorded (`schedule list`) and mailed to the reviewers. A schedule
    found later than [schedule] grace_minutes is reported as missed, not sent. Exits 0 when
    every due send went out (or none was due), 1 otherwise.

    Examples:

        newsletter run-due

        */5 * * * * cd /srv/newsletter && newsletter run-due   (crontab)
    """
    from ..scheduling import run_due as run  # noqa: PLC0415 (heavy, see the module docstring)

    settings = project_settings()
    runs = run(settings, now=time.time())
    if not runs:
        plain_console.print("Nothing is due.")
        return
    code = ExitCode.OK
    for done in runs:
        schedule = done.schedule
        style = _STATE_STYLE.get(schedule.state.value, "")
        console.print(
            f"[{style}]{schedule.state.value}[/] {escape(schedule.issue)} "
            f"(due {_local(schedule)}): {escape(schedule.reason or '')}",
            highlight=False,
        )
        if schedule.notified:
            console.print(f"  reviewers: {escape(schedule.notified)}", highlight=False)
        if schedule.state != "sent":
            code = ExitCode.ERROR
    if code:
        raise typer.Exit(code)


def approve(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
    by: Annotated[
        str | None,
        typer.Option("--by", help="Who approves (one of [sending] approvers; default: you)."),
    ] = None,
) -> None:
    """Record that you approve the issue exactly as it is now (its content fingerprint).

    With [sending] require_approval = true, `send` and scheduled sends refuse content nobody
    in [sending] approvers approved, or content changed after its approval.

    Examples:

        newsletter approve 2026-12 --by Anna
    """
    from ..sending import approve as record  # noqa: PLC0415 (heavy: the renderer)

    settings = project_settings()
    approval = record(settings, issue, by or _user() or "", clock=time.time)
    when = datetime.fromtimestamp(approval.at).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    console.print(
        f"[green]Approved[/] '{escape(approval.issue)}' by {escape(approval.by)} at {when} "
        f"(content {approval.fingerprint[:12]})",
        highlight=False,
    )


def note_schedule(settings: Settings, name: str) -> None:
    """`send` (now) of an issue that is scheduled: say so before asking."""
    from ..scheduling import list_schedules  # noqa: PLC0415 (only send needs it)

    for schedule in list_schedules(settings, include_done=False):
        if schedule.issue == name:
            console.print(
                f"[yellow]'{escape(name)}' is also scheduled for {_local(schedule)}[/]; "
                "sent now, that run will find everyone has it "
                f"(newsletter schedule cancel {escape(name)} to drop it).",
                highlight=False,
            )


def print_history(settings: Settings, name: str) -> None:
    """`status`: the issue's schedule, approvals and test copies (oldest first), if any."""
    from ..approvals import Approvals, approval_problem  # noqa: PLC0415 (only status needs it)
    from ..scheduling import list_schedules  # noqa: PLC0415 (only status needs it)

    schedules = [s for s in list_schedules(settings) if s.issue == name]
    with Approvals(settings.database()) as records:
        approvals = records.approvals(name)
        tests = records.tests(name)
    for schedule in schedules[-3:]:
        line = f"schedule: {_local(schedule)}: {schedule.state.value}"
        if schedule.reason:
            line += f": {schedule.reason}"
        plain_console.print(line)
    for approval in approvals:
        when = datetime.fromtimestamp(approval.at).astimezone().strftime("%Y-%m-%d %H:%M")
        plain_console.print(
            f"approved: {when} by {approval.by} (content {approval.fingerprint[:12]})"
        )
    for test in tests:
        when = datetime.fromtimestamp(test.at).astimezone().strftime("%Y-%m-%d %H:%M")
        result = f"refused: {test.error}" if test.error else "sent"
        plain_console.print(
            f"test copy: {when} to {test.recipient}, {result} (content {test.fingerprint[:12]})"
        )
    if settings.sending.require_approval:
        latest = schedules[-1].fingerprint if schedules else None
        if latest is not None:
            problem = approval_problem(settings.sending, approvals, latest)
            said = f"needed: {problem}" if problem else "the scheduled content is approved"
            plain_console.print(f"approval: {said}")
        elif not approvals:
            plain_console.print("approval: required, none given yet (newsletter approve ISSUE)")
