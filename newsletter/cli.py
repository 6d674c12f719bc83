"""The `newsletter` command: thin Typer commands over the library; errors are reported here once."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from . import __version__
from .audience import Subscriber, SubscriberStatus, SubscriberStore, make_token
from .build import build_issue
from .checks import check_issue
from .checks.report import print_report
from .cli_subscribers import app as subscribers_app
from .config import Settings, find_project_root, load_settings, parse_address
from .content import Issue, load_issue, resolve_issue_folder
from .delivery.ledger import Ledger, State
from .delivery.message import MessageTemplate
from .delivery.ratelimit import RateLimiter
from .delivery.sender import (
    SendOptions,
    SendProgress,
    SendReport,
    StoreAudience,
    send_issue,
    send_test,
)
from .delivery.sender import dry_run as dry_run_messages
from .delivery.transports import describe_transport, make_transport
from .delivery.transports.base import BatchTransport, Transport
from .delivery.transports.outbox import OutboxTransport
from .delivery.transports.smtp import SmtpTransport
from .dkim import SigningTransport, signer_from_settings
from .dkim import keygen as dkim_keygen
from .errors import ConfigError, NewsletterError, Problem, ProjectError
from .inbox import InboxItem, process_inbox
from .inbox import opened as open_mailbox
from .preview import DEFAULT_PORT, PreviewEvent, serve_preview
from .project import init_project, new_issue
from .render import render_issue
from .render.model import RenderedIssue
from .web import WebEvent
from .web import serve as serve_web

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    name="newsletter",
    help="Compose an email newsletter from Markdown item files, preview it, and send it safely.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

app.add_typer(subscribers_app, name="subscribers")

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        console.print(f"newsletter {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback when something fails.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    _state["debug"] = debug


def project_settings() -> Settings:
    """The settings of the project around the current folder."""
    root = find_project_root()
    if root is None:
        raise ProjectError(
            "no newsletter.toml here or in any parent folder",
            hint="Run 'newsletter init' to create a project, or change to the project folder.",
        )
    settings = load_settings(root)
    for warning in settings.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    return settings


def _size(size: int) -> str:
    return f"{size / 1024:.1f} KB" if size >= 1024 else f"{size} B"


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="Folder for the new project (created if needed).")
    ] = Path("."),
    language: Annotated[
        str, typer.Option("--language", "-l", help="Language of the example: en or nl.")
    ] = "en",
) -> None:
    """Create a new newsletter project with an example issue.

    Writes `newsletter.toml`, a `templates/` folder for theme overrides, an example issue with
    images, `.gitignore` and a signing secret (`.newsletter-secret`, ignored by git). Refuses to
    overwrite existing files.

    Examples:

        newsletter init my-newsletter
        newsletter init --language nl buurtkrant
    """
    report = init_project(directory.resolve(), language=language)
    console.print(f"Created a newsletter project in [bold]{report.root}[/]")
    console.print(
        f"Next: cd {directory} && newsletter preview {report.issue_folder.name}", highlight=False
    )


@app.command()
def new(
    name: Annotated[
        str | None, typer.Argument(help="Issue name; defaults to the current year and month.")
    ] = None,
) -> None:
    """Create the next issue folder with `issue.md` and one item stub.

    Examples:

        newsletter new
        newsletter new 2026-12
    """
    settings = project_settings()
    folder = new_issue(settings.root, name)
    console.print(f"Created [bold]{folder.relative_to(settings.root)}[/]")


@app.command()
def build(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
) -> None:
    """Build an issue into `dist/<issue>/`: email.html, email.txt, web.html, message.eml, images.

    Draft items are left out. Nothing is written unless the whole issue is valid.

    Examples:

        newsletter build 2026-11
        newsletter build issues/2026-11
    """
    settings = project_settings()
    folder = resolve_issue_folder(settings.root, issue)
    report = build_issue(settings, folder, sample_message=_sample_message(settings))
    table = Table(show_header=False, box=None, padding=(0, 2))
    for built in report.files:
        table.add_row(str(built.path.relative_to(settings.root)), _size(built.size))
    console.print(f"Built [bold]{report.rendered.name}[/] into {report.folder}")
    console.print(table)
    for draft in report.rendered.draft_items:
        console.print(f"[yellow]left out (draft):[/] {draft}", highlight=False)


@app.command()
def preview(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
    port: Annotated[
        int, typer.Option("--port", "-p", help="Port on 127.0.0.1 to serve the preview on.")
    ] = DEFAULT_PORT,
) -> None:
    """Preview an issue in the browser; it rebuilds and reloads the page whenever you save.

    Shows the email at desktop and phone widths, as HTML or plain text, for sample subscribers
    (with and without a name), under the inbox line: from, subject and preheader. Draft items
    are shown, marked. Problems are listed on the page while the last good version stays.
    Stop with Ctrl-C.

    Examples:

        newsletter preview 2026-11
        newsletter preview 2026-11 --port 8026
    """
    # Only the project root here: a broken newsletter.toml is shown on the page, not fatal.
    root = find_project_root()
    if root is None:
        raise ProjectError(
            "no newsletter.toml here or in any parent folder",
            hint="Run 'newsletter init' to create a project, or change to the project folder.",
        )
    folder = resolve_issue_folder(root, issue)
    server = serve_preview(root, folder, port=port, on_event=_preview_event)
    console.print(f"Previewing [bold]{folder.name}[/] at {server.url}  (Ctrl-C to stop)")
    server.run()
    console.print("Stopped.")


def _preview_event(event: PreviewEvent) -> None:
    """One line per rebuild; every problem when it failed (the page shows them too)."""
    if event.failure is None:
        console.print(f"[green]rebuilt[/] in {event.seconds * 1000:.0f} ms", highlight=False)
        return
    err_console.print(f"[bold red]{event.failure.title}[/]", highlight=False)
    for problem in event.failure.problems:
        err_console.print(f"  {problem}", highlight=False, markup=False)


def _signing_secret(settings: Settings) -> bytes:
    secret = settings.secret()
    if secret is None:
        raise ConfigError(
            [
                Problem(
                    f"no signing secret for unsubscribe links: set the environment variable "
                    f"{settings.unsubscribe.secret_env}, or put one in .newsletter-secret",
                    file=settings.config_path,
                    key="unsubscribe.secret_env",
                )
            ],
            hint="A long random value, e.g. from: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'",
        )
    return secret


def _template(settings: Settings, rendered: RenderedIssue, secret: bytes) -> MessageTemplate:
    return MessageTemplate.prepare(rendered, settings, secret=secret, token_for=make_token)


def _transport(settings: Settings) -> Transport | BatchTransport:
    """The configured transport, signing with DKIM when `[dkim]` is set (SMTP and outbox)."""
    transport = make_transport(settings)
    if settings.dkim is not None and isinstance(transport, SmtpTransport | OutboxTransport):
        signer = signer_from_settings(settings.dkim, settings.root)
        return SigningTransport(transport, signer.sign)
    return transport


def _sample_message(settings: Settings) -> Callable[[RenderedIssue], bytes]:
    """The sample message.eml of a build, signed with a throwaway key when none is set."""

    def build(rendered: RenderedIssue) -> bytes:
        secret = settings.secret() or b"sample-only-not-a-real-secret"
        sample = Subscriber.sample(settings.locale)
        return _template(settings, rendered, secret).personalise(sample).data

    return build


def _prepare_issue(settings: Settings, issue: str) -> tuple[Issue, RenderedIssue, MessageTemplate]:
    folder = resolve_issue_folder(settings.root, issue)
    loaded = load_issue(folder)
    rendered = render_issue(loaded, settings)
    return loaded, rendered, _template(settings, rendered, _signing_secret(settings))


@app.command()
def check(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Do not check links and remote images over the network."),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the findings as JSON (for scripts).")
    ] = False,
) -> None:
    """Check an issue before sending: links, images, size, spam score, accessibility.

    Every finding names the file and line it concerns. Exits with status 1 when there are
    errors; warnings alone do not fail. Good link answers are cached for ten minutes in
    `.newsletter-cache/`, so checking again after a fix is quick.

    Examples:

        newsletter check 2026-11
        newsletter check 2026-11 --offline
        newsletter check 2026-11 --json > check.json
    """
    settings = project_settings()
    loaded = load_issue(resolve_issue_folder(settings.root, issue))
    rendered = render_issue(loaded, settings)
    report = check_issue(loaded, rendered, settings, offline=offline)
    if as_json:
        typer.echo(report.to_json())
    else:
        print_report(report, console, root=settings.root)
    if report.errors:
        raise typer.Exit(1)


@app.command()
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


@app.command()
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


dkim_app = typer.Typer(help="DKIM keys for signing outgoing mail.", no_args_is_help=True)
inbox_app = typer.Typer(help="Process the reply and bounce mailbox.", no_args_is_help=True)
app.add_typer(dkim_app, name="dkim")
app.add_typer(inbox_app, name="inbox")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", "-p", help="Port to listen on (default 8080).")
    ] = None,
) -> None:
    """Serve one-click unsubscribe (RFC 8058), its pages, and the archive of built issues.

    Listens on 127.0.0.1 unless told otherwise; put it behind your web server for https
    (docs/serve.md). Every change is written to the subscriber store at once. Stop with Ctrl-C.

    Examples:

        newsletter serve
        newsletter serve --port 8090
        newsletter serve --host 0.0.0.0 --port 80
    """
    settings = project_settings()
    chosen = settings.serve
    if host is not None or port is not None:
        chosen = dataclasses.replace(
            chosen,
            host=host if host is not None else chosen.host,
            port=port if port is not None else chosen.port,
        )
    server = serve_web(
        settings, secret=_signing_secret(settings), serve_settings=chosen, on_event=_web_event
    )
    console.print(f"Serving unsubscribe links and the archive at {server.url}  (Ctrl-C to stop)")
    server.run()
    console.print("Stopped.")


def _web_event(event: WebEvent) -> None:
    what = "unsubscribed" if event.action == "unsubscribe" else "subscribed again"
    if event.old_status is None:
        line = f"{event.email}: not on the list ({event.source})"
    elif event.changed:
        line = f"{event.email}: {what} ({event.source})"
    else:
        line = f"{event.email}: already {event.old_status} ({event.source})"
    console.print(line, highlight=False, markup=False)


@inbox_app.command("process")
def inbox_process(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be done; change and move nothing.")
    ] = False,
) -> None:
    """Read the [inbox] mailbox: bounces, complaints and unsubscribe mails update subscribers.

    Hard bounces mark the subscriber bounced, soft bounces count towards
    `soft_bounce_limit`, feedback reports mark complained, mail to the unsubscribe address
    unsubscribes its sender. Handled messages move to `processed_folder`; anything else stays
    (unread) and is listed. The password comes from the variable named by `password_env`.

    Examples:

        newsletter inbox process --dry-run
        NEWSLETTER_IMAP_PASSWORD=... newsletter inbox process
    """
    settings = project_settings()
    inbox = settings.inbox
    if inbox is None:
        raise ConfigError(
            [
                Problem(
                    "has no [inbox] table: add one with host and username",
                    file=settings.config_path,
                )
            ]
        )
    unsubscribe = parse_address(settings.unsubscribe.mailto or "")
    with (
        open_mailbox(inbox, os.environ.get(inbox.password_env), readonly=dry_run) as mailbox,
        SubscriberStore(settings.database_path) as store,
    ):
        report = process_inbox(
            mailbox,
            store,
            settings=inbox,
            unsubscribe_address=unsubscribe.addr_spec if unsubscribe else None,
            secret=settings.secret(),
            dry_run=dry_run,
            progress=_inbox_item,
        )
    console.print(
        f"{len(report.processed)} handled{' (dry run)' if dry_run else ''}, "
        f"{len(report.left)} left in {inbox.folder}",
        highlight=False,
    )


def _inbox_item(item: InboxItem) -> None:
    mark = "[green]ok[/]" if item.handled else "[yellow]left[/]"
    who = escape(item.address or item.sender or "?")
    console.print(
        f"{mark} {who}: {escape(item.action)}  [dim]({escape(item.subject)})[/]",
        highlight=False,
    )


@dkim_app.command("keygen")
def dkim_keygen_command(
    selector: Annotated[
        str | None, typer.Option("--selector", "-s", help="Selector (default [dkim].selector).")
    ] = None,
    domain: Annotated[
        str | None,
        typer.Option("--domain", "-d", help="Signing domain (default [dkim].domain, else From's)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Private key file (default [dkim].key_file)."),
    ] = None,
) -> None:
    """Make a 2048-bit RSA key for DKIM and print the DNS TXT record to publish.

    The private key is written readable by you only and never overwritten; keep it out of
    version control. Publish the record, then set [dkim] domain, selector and key_file.

    Examples:

        newsletter dkim keygen
        newsletter dkim keygen --selector news2026 --domain example.org --out dkim-news2026.pem
    """
    settings = project_settings()
    configured = settings.dkim
    chosen_domain = domain or (configured.domain if configured else settings.sender.domain)
    chosen_selector = selector or (
        configured.selector if configured else f"news{time.strftime('%Y')}"
    )
    chosen_out = out or Path(configured.key_file if configured else f"dkim-{chosen_selector}.pem")
    if not chosen_out.is_absolute():
        chosen_out = (settings.root if out is None else Path.cwd()) / chosen_out
    report = dkim_keygen(chosen_domain, chosen_selector, chosen_out)
    console.print(f"Wrote the private key to [bold]{report.key_file}[/] (mode 600)")
    console.print(f"Publish this TXT record at [bold]{report.record_name}[/]:")
    console.print(report.record, highlight=False, markup=False, soft_wrap=True)
    console.print("\nAs a zone-file line:", highlight=False)
    console.print(report.zone_line, highlight=False, markup=False)
    if configured is None:
        console.print(
            f'\nThen add to newsletter.toml:\n[dkim]\ndomain = "{chosen_domain}"\n'
            f'selector = "{chosen_selector}"\nkey_file = "{chosen_out.name}"',
            highlight=False,
            markup=False,
        )


def main() -> None:
    """Entry point: run the app, turning library errors into a message and exit status."""
    try:
        # Without standalone mode, click returns the code of typer.Exit instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except NewsletterError as err:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {escape(err.message)}", highlight=False)
        if err.hint:
            err_console.print(f"[dim]hint:[/] {escape(err.hint)}", highlight=False)
        sys.exit(err.exit_code)
    except typer.Abort:
        err_console.print("Aborted.")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        sys.exit(130)
    except typer.TyperException as err:  # usage errors: typer bundles its own click
        show = getattr(err, "show", None)
        if callable(show):
            show()
        else:
            err_console.print(f"error: {err}", highlight=False, markup=False)
        sys.exit(getattr(err, "exit_code", 2))
