"""The `newsletter` command: thin Typer commands over the library; errors are reported here once.

One module per command group: `compose` (init, new, build, preview, check), `send` (send,
status), `serve` (serve, inbox, dkim), `subscribers`, `store`. This module builds the app from
them and holds `main`, the one place that turns a `NewsletterError` into a message and an exit
status.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from .. import __version__
from ..errors import NewsletterError
from . import compose, send, serve
from ._output import console, err_console
from .store import app as store_app
from .subscribers import app as subscribers_app

app = typer.Typer(
    name="newsletter",
    help="Compose an email newsletter from Markdown item files, preview it, and send it safely.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

# The order here is the order of `newsletter --help`.
app.add_typer(subscribers_app, name="subscribers")
for command in (
    compose.init,
    compose.new,
    compose.build,
    compose.preview,
    compose.check,
    send.send,
    send.status,
    serve.serve,
):
    app.command()(command)
app.add_typer(serve.dkim_app, name="dkim")
app.add_typer(serve.inbox_app, name="inbox")
app.add_typer(store_app, name="store")

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
