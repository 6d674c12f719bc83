"""The long-running and mailbox side: `serve`, `inbox process`, `dkim keygen`, `dns check`.

The web side (Starlette, uvicorn), the mailbox (IMAP), DKIM (cryptography) and DNS (dnspython)
are imported inside their commands, so no other command pays for them at start-up.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ..config import parse_address
from ..errors import ConfigError, Problem
from ._output import console, visible
from ._project import project_settings
from .signup import signup_event

if TYPE_CHECKING:
    from ..inbox import InboxItem
    from ..scheduling import DueRun
    from ..web import WebEvent

dkim_app = typer.Typer(help="DKIM keys for signing outgoing mail.", no_args_is_help=True)
dns_app = typer.Typer(
    help="Check the DNS records (SPF, DKIM, DMARC) your mail is judged by.", no_args_is_help=True
)
inbox_app = typer.Typer(help="Process the reply and bounce mailbox.", no_args_is_help=True)


def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", "-p", help="Port to listen on (default 8080).")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Processes serving requests; more than one needs a PostgreSQL store.",
        ),
    ] = 1,
) -> None:
    """Serve one-click unsubscribe (RFC 8058), its pages, the archive of sent issues and its
    feed, the images of messages that link them (with base_url), and (with a [signup] table)
    the sign-up form at /subscribe.

    Listens on 127.0.0.1 unless told otherwise; put it behind your web server for https
    (docs/serve.md; a container image and a systemd unit: docs/deploy.md). Every change is
    written to the subscriber store at once. GET /healthz answers "ok" while the store can be
    read. With [schedule] in_serve = true it also sends scheduled issues when they are due
    (README: Scheduled sends). Stop with Ctrl-C.

    Examples:

        newsletter serve
        newsletter serve --port 8090
        newsletter serve --host 0.0.0.0 --port 80
        NEWSLETTER_DATABASE_URL=postgresql:///news newsletter serve --workers 4
    """
    settings = project_settings()
    chosen = settings.serve
    if host is not None or port is not None:
        chosen = dataclasses.replace(
            chosen,
            host=host if host is not None else chosen.host,
            port=port if port is not None else chosen.port,
        )
    from ..sending import signing_secret  # noqa: PLC0415 (heavy, only serve needs it)
    from ..web import serve as serve_web  # noqa: PLC0415 (heavy, only serve needs it)

    if workers > 1 and settings.database().is_sqlite:
        raise ConfigError(
            [Problem("--workers: several server processes need a PostgreSQL store")],
            hint="Set [store] url (or NEWSLETTER_DATABASE_URL) to a postgresql:// database; "
            "one process serves a SQLite file.",
        )
    server = serve_web(
        settings,
        secret=signing_secret(settings),
        serve_settings=chosen,
        on_event=_web_event,
        on_schedule=_schedule_event,
        on_signup=signup_event,
    )
    console.print(
        f"Serving unsubscribe links{', the sign-up form' if settings.signup.enabled else ''}"
        f" and the archive at {server.url}"
        f"{f' with {workers} workers' if workers > 1 else ''}  (Ctrl-C to stop)"
    )
    if settings.schedule.in_serve:
        console.print(
            f"Sending scheduled issues when due (looking every "
            f"{settings.schedule.check_every:g} s; [schedule] in_serve)"
        )
    if workers > 1:
        status = server.run_workers(workers)
        console.print("Stopped.")
        if status:
            raise typer.Exit(status)
        return
    server.run()
    console.print("Stopped.")


def _schedule_event(done: DueRun) -> None:
    schedule = done.schedule
    line = f"scheduled send of {schedule.issue}: {schedule.state.value}: {schedule.reason or ''}"
    if schedule.notified:
        line += f" (reviewers: {schedule.notified})"
    console.print(line, highlight=False, markup=False)


def _web_event(event: WebEvent) -> None:
    what = "unsubscribed" if event.action == "unsubscribe" else "subscribed again"
    if event.old_status is None:
        line = f"{event.email}: not on the list ({event.source})"
    elif event.changed:
        line = f"{event.email}: {what} ({event.source})"
    else:
        line = f"{event.email}: already {event.old_status} ({event.source})"
    console.print(visible(line), highlight=False, markup=False)


@inbox_app.command("process")
def inbox_process(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be done; change and move nothing.")
    ] = False,
) -> None:
    """Read the [inbox] mailbox: bounces, complaints and unsubscribe mails update subscribers.

    Hard bounces mark the subscriber bounced, soft bounces count towards
    `soft_bounce_limit`, feedback reports mark complained, mail to the unsubscribe address
    unsubscribes the recipient it names: each only with proof that we sent that mail to that
    recipient (VERP return path or our token), else it is listed as ignored. Handled messages
    move to `processed_folder`; unreadable ones (too large, nested too deep, broken) to
    `quarantine_folder`; anything else stays (unread) and is listed. The password comes from
    the variable named by `password_env`.

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
    from ..audience import SubscriberStore  # noqa: PLC0415 (heavy, only this command needs it)
    from ..audience.tokenbook import TokenBook  # noqa: PLC0415 (only this command needs it)
    from ..delivery.mime import list_identifier  # noqa: PLC0415 (only this command needs it)
    from ..inbox import opened as open_mailbox  # noqa: PLC0415 (heavy, only this command needs it)
    from ..inbox import process_inbox  # noqa: PLC0415 (heavy, only this command needs it)

    unsubscribe = parse_address(settings.unsubscribe.mailto or "")
    secret = settings.secret()
    with (
        open_mailbox(inbox, os.environ.get(inbox.password_env), readonly=dry_run) as mailbox,
        SubscriberStore(settings.database()) as store,
    ):
        report = process_inbox(
            mailbox,
            store,
            settings=inbox,
            unsubscribe_address=unsubscribe.addr_spec if unsubscribe else None,
            secret=secret,
            dry_run=dry_run,
            progress=_inbox_item,
            # Mail is read with tokens of any age: the mailto in an old issue keeps working
            # (only web links expire, [unsubscribe] token_days).
            tokens=None
            if secret is None
            else TokenBook(
                store.database,
                secret,
                list_identifier(settings),
                accept_legacy=settings.unsubscribe.legacy_tokens,
            ).resolve,
        )
    summary = f"{len(report.processed)} handled{' (dry run)' if dry_run else ''}, "
    if report.ignored:
        summary += f"{len(report.ignored)} ignored (no proof we sent them), "
    if report.quarantined:
        summary += f"{len(report.quarantined)} quarantined in {inbox.quarantine_folder}, "
    console.print(summary + f"{len(report.left)} left in {inbox.folder}", highlight=False)


def _inbox_item(item: InboxItem) -> None:
    if item.quarantined:
        mark = "[red]quarantined[/]" if item.moved else "[red]to quarantine[/]"
    else:
        mark = "[green]ok[/]" if item.handled else "[yellow]left[/]"
        mark = "[yellow]ignored[/]" if item.ignored else mark
    # A hostile mail's subject or sender may carry terminal controls: shown, never obeyed.
    who = escape(visible(item.address or item.sender or "?"))
    console.print(
        f"{mark} {who}: {escape(visible(item.action))}  [dim]({escape(visible(item.subject))})[/]",
        highlight=False,
    )


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _ignored_by_git(path: Path, root: Path) -> bool:
    """Whether the project's .gitignore covers `path` by the patterns `init` writes (a key
    outside the project is not our concern)."""
    if not path.is_relative_to(root):
        return True
    try:
        patterns = set((root / ".gitignore").read_text(encoding="utf-8").split())
    except OSError:
        patterns = set()
    first = path.relative_to(root).parts[0]
    return f"{first}/" in patterns or f"*{path.suffix}" in patterns or first in patterns


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

    The private key is written readable by you only and never overwritten, by default to
    .secrets/dkim-SELECTOR.pem (a folder `init`'s .gitignore keeps out of git). Publish the
    record, then set [dkim] domain, selector and key_file.

    Examples:

        newsletter dkim keygen
        newsletter dkim keygen --selector news2026 --domain example.org --out dkim-news2026.pem
    """
    from ..dkim import SECRETS_DIR, make_secrets_dir  # noqa: PLC0415 (heavy: cryptography)
    from ..dkim import keygen as dkim_keygen  # noqa: PLC0415 (heavy, only this command needs it)

    settings = project_settings()
    configured = settings.dkim
    chosen_domain = domain or (configured.domain if configured else settings.sender.domain)
    chosen_selector = selector or (
        configured.selector if configured else f"news{time.strftime('%Y')}"
    )
    chosen_out = out or Path(
        configured.key_file if configured else f"{SECRETS_DIR}/dkim-{chosen_selector}.pem"
    )
    if not chosen_out.is_absolute():
        chosen_out = (settings.root if out is None else Path.cwd()) / chosen_out
    if chosen_out.parent == settings.root / SECRETS_DIR:
        # The default place is outside the tracked tree: a folder for the owner only.
        make_secrets_dir(chosen_out.parent)
    report = dkim_keygen(chosen_domain, chosen_selector, chosen_out)
    console.print(f"Wrote the private key to [bold]{report.key_file}[/] (mode 600)")
    if not _ignored_by_git(report.key_file, settings.root):
        console.print(
            f"[yellow]Warning:[/] {report.key_file.name} is in the project but .gitignore does "
            "not cover it: add '.secrets/', '*.pem' and '*.key' to .gitignore",
            highlight=False,
        )
    console.print(f"Publish this TXT record at [bold]{report.record_name}[/]:")
    console.print(report.record, highlight=False, markup=False, soft_wrap=True)
    console.print("\nAs a zone-file line:", highlight=False)
    console.print(report.zone_line, highlight=False, markup=False)
    if configured is None:
        console.print(
            f'\nThen add to newsletter.toml:\n[dkim]\ndomain = "{chosen_domain}"\n'
            f'selector = "{chosen_selector}"\nkey_file = "{_relative(chosen_out, settings.root)}"',
            highlight=False,
            markup=False,
        )


@dns_app.command("check")
def dns_check_command(
    nameserver: Annotated[
        str | None,
        typer.Option(
            "--nameserver", help="Ask this DNS server (IP[:port]) instead of the system's."
        ),
    ] = None,
) -> None:
    """Look up the DKIM key, SPF and DMARC records for the From and bounce domains (online),
    and print what to publish where one is missing or wrong. Exit status 1 on an error.

    Examples:

        newsletter dns check

        newsletter dns check --nameserver 1.1.1.1
    """
    from ..checks.dns import check_dns  # noqa: PLC0415 (heavy: dnspython, only this command)

    settings = project_settings()
    server, port = None, 53
    if nameserver:
        host, sep, number = nameserver.rpartition(":")
        if sep and number.isdigit() and "." in host:
            server, port = host, int(number)
        else:
            server = nameserver
    report = check_dns(settings, nameserver=server, port=port)
    marks = {"ok": "[green]ok[/]", "warning": "[yellow]warning[/]", "error": "[red]error[/]"}
    for finding in report.findings:
        console.print(
            f"{marks[finding.status]}  {finding.kind} {escape(finding.name)}: "
            f"{escape(finding.message)}",
            highlight=False,
        )
        for record in finding.found:
            console.print(f"    found:   {record}", highlight=False, markup=False)
        if finding.publish:
            console.print(
                f'    publish: TXT {finding.name} "{finding.publish}"',
                highlight=False,
                markup=False,
            )
    if not report.ok:
        console.print("See docs/deliverability.md for what each record does.", highlight=False)
        raise typer.Exit(1)
