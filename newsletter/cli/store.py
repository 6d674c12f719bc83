"""`newsletter store`: migrate, describe and copy the project's store (thin over
`newsletter.store.admin`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..config import store_location
from ..errors import ConfigError, Problem
from ..store import Store
from ..store.admin import copy_store, describe
from ..store_url import StoreUrlError, parse_store_url
from ._output import plain_console as console
from ._project import project_root

app = typer.Typer(
    name="store",
    help="The project's database: migrate it, describe it, copy it to PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)


@app.command()
def migrate() -> None:
    """Create the store's tables, or bring them to this version of newsletter.

    Every command does this when it opens the store; run it on its own to upgrade a shared
    database once, before the workers and the server start.

    Examples:

        newsletter store migrate
        NEWSLETTER_DATABASE_URL=postgresql://editor@db.example.org/news newsletter store migrate
    """
    with Store.open(store_location(project_root())) as store:
        console.print(
            f"{store.where}: {store.dialect.name} store at version {store.version}", highlight=False
        )


@app.command()
def info() -> None:
    """Show the engine, where the store is (any password hidden), its version and its rows.

    Examples:

        newsletter store info
    """
    with Store.open(store_location(project_root())) as store:
        found = describe(store)
    # Plain lines, not a table: a long URL or path must not be cut to the terminal's width.
    console.print(f"{found.engine} store at version {found.version}", highlight=False)
    console.print(f"where: {found.where}", highlight=False, soft_wrap=True)
    width = max(map(len, found.counts), default=0)
    for name, count in found.counts.items():
        console.print(f"{name:<{width}}  {count:>9}", highlight=False)


@app.command()
def copy(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="The target, e.g. postgresql://editor@db.example.org/news (password from "
            "PGPASSWORD or ~/.pgpass, never on the command line).",
        ),
    ],
    replace: Annotated[
        bool, typer.Option("--replace", help="Delete the rows the target already holds first.")
    ] = False,
) -> None:
    """Copy the project's store (subscribers, history, ledgers, bounces) into another one.

    Every table is checked afterwards by row count and checksum; nothing is deleted from the
    source. Then point the project at the target with [store] url or NEWSLETTER_DATABASE_URL.

    Examples:

        newsletter store copy --to postgresql://editor@db.example.org/news
    """
    root = project_root()
    try:
        # A password in an argument shows in `ps` and the shell's history: refused like the TOML's.
        target_url = parse_store_url(to, root=root, origin="--to", from_environment=False)
    except StoreUrlError as err:
        raise ConfigError([Problem(str(err))]) from None
    with Store.open(store_location(root)) as source, Store.open(target_url) as target:
        if source.location == target.location:
            raise ConfigError([Problem(f"--to: {target.where} is the project's own store")])
        report = copy_store(source, target, replace=replace)
    console.print(f"Copied {report.source} to {report.target}", highlight=False, soft_wrap=True)
    table = Table()
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("checksum (sha256)")
    for entry in report.tables:
        table.add_row(entry.table, str(entry.rows), entry.checksum[:16])
    console.print(table)
    if report.replaced:
        console.print(f"{report.replaced} rows the target held were replaced.", highlight=False)
    console.print("Every table matches; the source was left as it was.", highlight=False)
