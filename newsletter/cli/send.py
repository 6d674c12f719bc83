"""Sending an issue: `send` (a test copy, a dry run, or the real resumable send) and `status`."""

from __future__ import annotations

import signal
import threading
import time
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..audience import Subscriber, SubscriberStatus, SubscriberStore
from ..checks import check_issue
from ..checks.report import print_report
from ..config import Settings, parse_address
from ..content import Issue, load_issue, resolve_issue_folder
from ..delivery.ledger import Ledger, State
from ..delivery.message import MessageTemplate
from ..delivery.ratelimit import RateLimiter
from ..delivery.sender import (
    SendOptions,
    SendProgress,
    SendReport,
    StoreAudience,
    send_issue,
    send_test,
)
from ..delivery.sender import dry_run as dry_run_messages
from ..delivery.transports import describe_transport, make_transport
from ..delivery.transports.base import BatchTransport, Transport
from ..delivery.transports.outbox import OutboxTransport
from ..delivery.transports.smtp import SmtpTransport
from ..dkim import SigningTransport, signer_from_settings
from ..errors import ProjectError
from ..render import render_issue
from ..render.model import RenderedIssue
from ._output import console, err_console
from ._project import message_template, project_settings, signing_secret


def _transport(settings: Settings) -> Transport | BatchTransport:
    """The configured transport, signing with DKIM when `[dkim]` is set (SMTP and outbox)."""
    transport = make_transport(settings)
    if settings.dkim is not None and isinstance(transport, SmtpTransport | OutboxTransport):
        signer = signer_from_settings(settings.dkim, settings.root)
        return SigningTransport(transport, signer.sign)
    return transport


def _prepare_issue(settings: Settings, issue: str) -> tuple[Issue, RenderedIssue, MessageTemplate]:
    folder = resolve_issue_folder(settings.root, issue)
    loaded = load_issue(folder)
    rendered = render_issue(loaded, settings)
    return loaded, rendered, message_template(settings, rendered, signing_secret(settings))


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
    loaded, rendered, template = _prepare_issue(settings, issue)
    if not test:
        # The same quality gate as `newsletter check`: offline checks always, links unless
        # skipped; errors stop the send unless forced.
        findings = check_issue(loaded, rendered, settings, offline=no_link_check)
        if findings.errors or findings.warnings:
            print_report(findings, console, root=settings.root, show_info=False)
        if findings.errors and not force:
            raise ProjectError(
                f"the check found {len(findings.errors)} error(s); nothing was sent",
                hint="Fix them (see 'newsletter check'), or send anyway with --force.",
            )
    subject = rendered.subject.fill(lambda slot: slot.default or f"{{{slot.path}}}")
    if test:
        reviewers = list(to or settings.reviewers)
        if not reviewers:
            raise ProjectError(
                "no reviewers to send the test to",
                hint='Add reviewers = ["…"] to [newsletter] in newsletter.toml, or use --to.',
            )
        for reviewer in reviewers:
            if parse_address(reviewer) is None:
                raise ProjectError(f"--to {reviewer!r} is not an email address")
        results = send_test(
            template, Subscriber.sample(settings.locale), reviewers, _transport(settings)
        )
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
        return

    with SubscriberStore(settings.database_path) as store, Ledger(settings.database_path) as ledger:
        audience = StoreAudience(store)
        if dry_run:
            rehearsal = dry_run_messages(template, audience)
            console.print(
                f"Dry run: {rehearsal.messages} messages rendered, "
                f"{rehearsal.total_bytes / 1024 / 1024:.1f} MB in all, largest "
                f"{rehearsal.largest_bytes / 1024:.1f} KB. Nothing was sent or recorded."
            )
            return
        issue_ledger = ledger.issue(rendered.name)
        counts = issue_ledger.counts()
        subscribed = store.count(SubscriberStatus.SUBSCRIBED)
        summary = Table(show_header=False, box=None, padding=(0, 2))
        summary.add_row("Issue", rendered.name)
        summary.add_row("Subject", subject)
        summary.add_row("From", str(settings.sender))
        summary.add_row("Transport", describe_transport(settings))
        summary.add_row("Subscribed", str(subscribed))
        summary.add_row("Already sent", str(counts.get(State.SENT, 0)))
        if counts.get(State.UNCERTAIN, 0):
            summary.add_row(
                "Uncertain",
                f"{counts[State.UNCERTAIN]} (not resent"
                f"{'' if not resend_uncertain else ': resending, as asked'})",
            )
        if counts.get(State.FAILED, 0):
            summary.add_row(
                "Failed before",
                f"{counts[State.FAILED]}{' (retrying, as asked)' if retry_failed else ''}",
            )
        console.print(summary)
        accept_changed = False
        stored = issue_ledger.fingerprint()
        if stored is not None and stored != template.fingerprint:
            console.print(
                "[yellow]The issue's content changed since this send started.[/] "
                "The rest will get the new version."
            )
            if not yes and not typer.confirm("Send the changed version?", default=False):
                raise typer.Abort()
            accept_changed = True
        if not yes and not typer.confirm(f"Send '{rendered.name}' now?", default=False):
            raise typer.Abort()
        report = _run_send(
            settings,
            template,
            audience,
            ledger,
            SendOptions(
                # Outbox writes files one by one; SMTP and providers use parallel connections.
                concurrency=settings.transport.connections
                if settings.transport.kind != "outbox"
                else 1,
                max_attempts=settings.sending.max_attempts,
                pause_after_failures=settings.sending.pause_after_failures,
                retry_failed=retry_failed,
                resend_uncertain=resend_uncertain,
                accept_changed_content=accept_changed,
                wait_for_deferred=not no_wait,
            ),
        )
    _print_send_report(report)
    if not report.complete or report.paused_reason or report.interrupted:
        raise typer.Exit(1)


def _run_send(
    settings: Settings,
    template: MessageTemplate,
    audience: StoreAudience,
    ledger: Ledger,
    options: SendOptions,
) -> SendReport:
    stop = threading.Event()

    def interrupt(signum: int, frame: object) -> None:
        err_console.print("\nStopping: finishing the messages in flight…")
        stop.set()

    previous = signal.signal(signal.SIGINT, interrupt)
    limiter = RateLimiter(settings.sending.rate_per_second, settings.sending.rate_per_hour)
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

            return send_issue(
                template,
                audience,
                transport=_transport(settings),
                ledger=ledger,
                limiter=limiter,
                options=options,
                stop=stop,
                progress=progress,
            )
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
    with Ledger(settings.database_path) as ledger:
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
        if ledger.is_locked(name):
            console.print("A send of this issue is running now.")
