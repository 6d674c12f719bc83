"""`newsletter subscribers ...`: thin commands over the subscriber store.

Errors are raised as `NewsletterError`s; `newsletter.cli.main` catches and prints them once.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..config import load_settings, store_location
from ..errors import AudienceError
from ._output import plain_console as console
from ._output import plain_err_console as err_console
from ._output import visible
from ._project import project_root

if TYPE_CHECKING:
    from ..audience import Subscriber, SubscriberStatus, SubscriberStore

app = typer.Typer(
    name="subscribers",
    help="Manage the subscriber list: import, add, remove, unsubscribe, tag, list, export, count.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)


@contextlib.contextmanager
def open_store(start: Path | None = None) -> Iterator[SubscriberStore]:
    """The subscriber store of the project around `start` (the current folder)."""
    # The audience package (CSV, addresses, the store) only for these commands, not for every
    # start of `newsletter`. Only [store] of newsletter.toml is read: nothing else is needed.
    from ..audience import SubscriberStore  # noqa: PLC0415 (heavy, only these commands need it)

    with SubscriberStore(store_location(project_root(start))) as store:
        yield store


def _count(number: int, what: str = "subscriber") -> str:
    return f"{number} {what}{'' if number == 1 else 's'}"


def _who(subscriber: Subscriber) -> str:
    who = f"{subscriber.name} <{subscriber.email}>" if subscriber.name else subscriber.email
    return visible(who)


def _status_or_all(text: str | None) -> SubscriberStatus | None:
    from ..audience import parse_status  # noqa: PLC0415 (see open_store)

    if text is None or text.strip().lower() == "all":
        return None
    return parse_status(text)


def _delimiter(text: str | None) -> str | None:
    if text is None:
        return None
    return {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";"}.get(text.lower(), text)


def _attributes(items: list[str]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            # A NewsletterError, not a click usage error: the main CLI reports those once.
            raise AudienceError(
                f"--attr {item!r} is not key=value", hint="For example: --attr city=Gent"
            )
        attributes[key.strip()] = value
    return attributes


def _tags(tags: list[str] | None) -> list[str]:
    """--tag values, checked before anything is read or written (the error names the tag)."""
    from ..segment import Segment, SegmentSyntaxError  # noqa: PLC0415 (see open_store)

    try:
        Segment.of(tags=tags or ())
    except SegmentSyntaxError as err:
        raise AudienceError(f"--tag: {err.message}", hint=err.hint) from err
    return tags or []


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="The CSV file (UTF-8; , ; or tab separated).")],
    email_column: Annotated[
        str | None, typer.Option("--email-column", help="The column with the addresses.")
    ] = None,
    name_column: Annotated[
        str | None, typer.Option("--name-column", help="The column with full names.")
    ] = None,
    first_name_column: Annotated[
        str | None, typer.Option("--first-name-column", help="The column with first names.")
    ] = None,
    last_name_column: Annotated[
        str | None, typer.Option("--last-name-column", help="The column with last names.")
    ] = None,
    particle_column: Annotated[
        str | None,
        typer.Option(
            "--particle-column",
            help="The column with name particles: Dutch tussenvoegsels (van der), von, de.",
        ),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(
            "--encoding",
            help="The file's encoding, e.g. cp1252 or latin-1 (default: UTF-8 or UTF-16, else "
            "a Windows-1252 guess with a warning).",
        ),
    ] = None,
    delimiter: Annotated[
        str | None,
        typer.Option("--delimiter", help="The field separator (default: detected): , ; or tab."),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Import nothing if any row has a problem.")
    ] = False,
    resubscribe: Annotated[
        bool,
        typer.Option(
            "--resubscribe",
            help="Subscribe again people who unsubscribed, bounced or complained. Only when "
            "they asked for it.",
        ),
    ] = False,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="Give every imported row this tag; repeat for more."),
    ] = None,
) -> None:
    """Import subscribers from a CSV file, in one go: all valid rows or (with --strict) none.

    Mailchimp, Substack and listmonk exports and plain `email,name` files are recognised; other
    columns become attributes templates can use (`subscriber.city`). Tag columns (Mailchimp's
    TAGS, listmonk's lists, `tags`) and --tag give tags; an import never takes tags away. Rows
    with a problem are reported as FILE:LINE: reason and skipped. People who unsubscribed stay
    unsubscribed.

    Examples:

        newsletter subscribers import members.csv

        newsletter subscribers import export.csv --email-column "E-mail" --strict

        newsletter subscribers import leden.csv --encoding cp1252

        newsletter subscribers import board.csv --tag board
    """
    from ..audience import ColumnMapping  # noqa: PLC0415 (see open_store)

    mapping = ColumnMapping(
        email=email_column,
        name=name_column,
        first_name=first_name_column,
        last_name=last_name_column,
        particle=particle_column,
    )
    from ..audience.consent import ConsentStore  # noqa: PLC0415 (see open_store)

    with open_store() as store:
        since = time.time()
        report = store.import_csv(
            file,
            mapping=mapping,
            strict=strict,
            resubscribe=resubscribe,
            delimiter=_delimiter(delimiter),
            encoding=encoding,
            tags=_tags(tag),
        )
        # Proof of consent says who put them on the list: this import.
        ConsentStore(store).record_import(f"import {Path(file).name}", since=since)
    for warning in report.warnings:
        err_console.print(f"warning: {warning}", markup=False)
    for problem in report.problems:
        err_console.print(f"{file}:{problem.line}: {problem.reason}", markup=False)
    console.print(f"Imported {file}: {report.describe()}", markup=False)
    if report.kept_unsubscribed:
        console.print(
            f"{report.kept_unsubscribed} had unsubscribed, bounced or complained and were left "
            "so (--resubscribe subscribes them again, only if they asked).",
            markup=False,
        )


@app.command()
def add(
    email: Annotated[str, typer.Argument(help="The address.")],
    name: Annotated[str, typer.Option("--name", help="The full name.")] = "",
    attr: Annotated[
        list[str] | None,
        typer.Option("--attr", help="An attribute as key=value; repeat for more."),
    ] = None,
    resubscribe: Annotated[
        bool,
        typer.Option("--resubscribe", help="Subscribe again someone who unsubscribed."),
    ] = False,
) -> None:
    """Add one subscriber, or update the name and attributes of an existing one.

    Examples:

        newsletter subscribers add ann@example.org --name "Ann Smith"

        newsletter subscribers add ann@example.org --attr city=Gent --attr plan=paid
    """
    from ..audience import SubscriberStatus  # noqa: PLC0415 (see open_store)

    attributes = _attributes(attr or [])
    with open_store() as store:
        existing = store.get(email)
        unsubscribed = existing is not None and existing.status != SubscriberStatus.SUBSCRIBED
        if existing is not None and unsubscribed and not resubscribe:
            raise AudienceError(
                f"{existing.email} is {existing.status}; not subscribed again",
                hint="Pass --resubscribe only if they asked to be subscribed again.",
            )
        subscriber = store.add(email, name, attributes, resubscribe=resubscribe, source="cli add")
        if existing is None or unsubscribed:
            from ..audience.consent import ConsentStore  # noqa: PLC0415 (see open_store)

            # The record says who put them on the list: the editor, by hand.
            ConsentStore(store).record(
                subscriber.email, source="cli add", consent_version="", now=time.time()
            )
    if existing is None:
        verb = "Added"
    elif unsubscribed:
        verb = "Subscribed again"
    else:
        verb = "Updated"
    console.print(f"{verb} {_who(subscriber)}", markup=False)


@app.command()
def remove(email: Annotated[str, typer.Argument(help="The address.")]) -> None:
    """Delete a subscriber and their history (to forget them; `unsubscribe` remembers them).

    Example:

        newsletter subscribers remove ann@example.org
    """
    with open_store() as store:
        if not store.remove(email):
            raise AudienceError(f"no subscriber {email.strip()}")
    console.print(f"Removed {email.strip()}", markup=False)


@app.command()
def unsubscribe(email: Annotated[str, typer.Argument(help="The address.")]) -> None:
    """Unsubscribe someone: they stay on the list, marked, and get no more issues.

    Example:

        newsletter subscribers unsubscribe ann@example.org
    """
    from ..audience import SubscriberStatus  # noqa: PLC0415 (see open_store)

    with open_store() as store:
        existing = store.get(email)
        if existing is None:
            raise AudienceError(f"no subscriber {email.strip()}")
        if existing.status == SubscriberStatus.UNSUBSCRIBED:
            console.print(f"{existing.email} was already unsubscribed", markup=False)
            return
        store.set_status(email, SubscriberStatus.UNSUBSCRIBED, source="cli unsubscribe")
    console.print(f"Unsubscribed {existing.email}", markup=False)


@app.command("list")
def list_(
    status: Annotated[
        str,
        typer.Option("--status", help="subscribed, unsubscribed, bounced, complained, or all."),
    ] = "subscribed",
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Show at most this many (0: all).")
    ] = 50,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="Only subscribers with this tag (repeat: any of them)."),
    ] = None,
    audience: Annotated[
        str | None,
        typer.Option(
            "--audience",
            help="Only this audience, as `send --audience` takes it: "
            "'tag:members,-tag:press,city=Utrecht'.",
        ),
    ] = None,
) -> None:
    """Show subscribers in a table, in address order, with their tags.

    Examples:

        newsletter subscribers list

        newsletter subscribers list --status unsubscribed --limit 0

        newsletter subscribers list --tag board

        newsletter subscribers list --audience 'tag:members,-tag:press,city=Utrecht'
    """
    from .tags import audience_option  # noqa: PLC0415 (it imports this module)

    wanted = _status_or_all(status)
    segment = audience_option(audience, tag)
    rows: list[tuple[Text, Text, Text, Text, Text]] = []
    with open_store() as store:
        chosen = store.iter_segment(segment, wanted, with_tags=True)
        for subscriber, tags in itertools.islice(chosen, limit or None):
            attributes = ", ".join(f"{k}={v}" for k, v in sorted(subscriber.attributes.items()))
            # Text(): names are data, never rich markup; visible(): nor terminal controls.
            rows.append(
                (
                    Text(visible(subscriber.email)),
                    Text(visible(subscriber.name)),
                    Text(subscriber.status),
                    Text(", ".join(tags)),
                    Text(visible(attributes)),
                )
            )
        total = store.count_segment(segment, wanted)
    shown = len(rows)
    # An address is never cut (a cut one reads as another address): its column is as wide as
    # the longest; names and attributes wrap instead, and the table may outgrow the terminal.
    table = Table()
    widest = max((len(row[0].plain) for row in rows), default=5)
    table.add_column("Email", no_wrap=True, min_width=widest)
    table.add_column("Name", overflow="fold")
    table.add_column("Status", no_wrap=True)
    table.add_column("Tags", overflow="fold")
    table.add_column("Attributes", overflow="fold")
    for row in rows:
        table.add_row(*row)
    what = "subscribers" if wanted is None else f"{wanted} subscribers"
    if not segment.everyone:
        what += f" in {visible(segment.expression)}"
    if not shown:
        console.print(f"No {what}.", markup=False)
        return
    # Console.print's width can only narrow: a console of the needed width prints the table.
    wide = Console(width=max(console.width, widest + 50), highlight=False, soft_wrap=True)
    wide.print(table)
    if total > shown:
        console.print(f"{shown} of {total} {what} shown (--limit 0 shows all)", markup=False)


@app.command()
def export(
    file: Annotated[
        str, typer.Argument(help="Where to write the CSV; - for standard output.")
    ] = "-",
    status: Annotated[
        str,
        typer.Option("--status", help="Only this status: subscribed, unsubscribed, ... or all."),
    ] = "all",
    consent: Annotated[
        bool,
        typer.Option("--consent", help="Add the columns of each person's latest consent."),
    ] = False,
) -> None:
    """Write subscribers as CSV (email, name, status, attributes); it imports back as it was.

    `--consent` adds consent_source, consent_version, consent_requested_at and
    consent_confirmed_at (proof of consent, e.g. for an audit).

    Examples:

        newsletter subscribers export backup.csv

        newsletter subscribers export - --status subscribed > subscribed.csv
    """
    from ..audience.access import export_consent_csv  # noqa: PLC0415 (see open_store)

    wanted = _status_or_all(status)
    with open_store() as store:

        def write(out: TextIO) -> int:
            return (
                export_consent_csv(store, out, wanted) if consent else store.export_csv(out, wanted)
            )

        if file == "-":
            written = write(sys.stdout)
            sys.stdout.flush()
            err_console.print(f"Exported {_count(written)}", markup=False)
            return
        path = Path(file)
        partial = path.with_name(path.name + ".partial")
        try:
            with partial.open("w", encoding="utf-8", newline="") as out:
                written = write(out)
            os.replace(partial, path)  # never leave a half-written export under the real name
        except OSError as err:
            partial.unlink(missing_ok=True)
            raise AudienceError(f"{path}: cannot write the export ({err.strerror})") from err
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    console.print(f"Exported {_count(written)} to {path}", markup=False)


@app.command()
def count(
    audience: Annotated[
        str | None,
        typer.Option(
            "--audience",
            help="Count this audience instead (subscribed people only, as a send would): "
            "'tag:members,-tag:press,city=Utrecht'.",
        ),
    ] = None,
) -> None:
    """Count subscribers per status, and per tag (subscribed, and in all).

    With --audience: how many subscribed people an issue for that audience would go to.

    Examples:

        newsletter subscribers count

        newsletter subscribers count --audience 'tag:members,-tag:press'
    """
    from .tags import audience_option  # noqa: PLC0415 (it imports this module)

    if audience is not None:
        segment = audience_option(audience)
        with open_store() as store:
            size = store.count_segment(segment)
        console.print(
            f"{_count(size, 'subscribed subscriber')} in "
            + visible(f"{segment.expression} ({segment.describe()})"),
            markup=False,
        )
        return
    with open_store() as store:
        counts = store.count()
        tag_counts = store.tag_counts()
    table = Table(show_header=False, box=None, padding=(0, 2))
    for name, number in counts.items():
        table.add_row(name, str(number))
    table.add_row("total", str(sum(counts.values())))
    console.print(table)
    if tag_counts:
        tags = Table(box=None, padding=(0, 2))
        tags.add_column("tag")
        tags.add_column("subscribed", justify="right")
        tags.add_column("total", justify="right")
        for found in tag_counts:
            tags.add_row(Text(found.tag), str(found.subscribed), str(found.total))
        console.print()
        console.print(tags)


@app.command()
def sync(
    provider: Annotated[
        str | None,
        typer.Argument(help="postmark, sendgrid, ... (default: the [transport] kind)."),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option("--days", min=1, help="Only suppressions of the last N days (default: all)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
    ] = False,
) -> None:
    """Pull the provider's bounces, complaints and unsubscribes into the list.

    Listed subscribers become bounced, complained or unsubscribed and are never mailed again;
    nobody is re-subscribed. The provider's API key comes from its environment variable.

    Examples:

        newsletter subscribers sync --dry-run
        newsletter subscribers sync sendgrid --days 30
    """
    # heavy (the provider transports), only this command needs them
    from ..delivery.suppressions import (  # noqa: PLC0415
        suppression_source,
        sync_suppressions,
    )

    root = project_root()
    source = suppression_source(load_settings(root), provider=provider)
    since = datetime.now(UTC) - timedelta(days=days) if days else None
    with open_store(root) as store:
        report = sync_suppressions(source, store, since=since, dry_run=dry_run)
    for address, old, new in report.changes:
        console.print(f"{address}: {old} → {new}", markup=False)
    changed = ", ".join(f"{n} {status}" for status, n in sorted(report.changed.items()))
    verb = "Would change" if dry_run else "Changed"
    console.print(
        f"{report.provider}: {report.seen} suppressions read; "
        f"{verb} {_count(report.total_changed)}{f' ({changed})' if changed else ''}; "
        f"{report.unchanged} already not subscribed; {report.unknown} not on the list",
        markup=False,
    )
