"""The Typer app of the `newsletter` command, and the one place errors are reported.

One module per command group: `compose` (init, new, build, preview, check), `send` (send,
status), `reconcile`, `schedule` (send --at, schedule, run-due, approve), `serve` (serve,
inbox, dkim, dns), `subscribers`, `store`. This module builds the app from them and holds
`run`, the one place that turns a `NewsletterError` into a message and an exit status.
The command modules import the heavy parts of the library inside each command, so building the
app costs only Typer and rich (`newsletter --version` does not even get here: see `main`).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
import typer.main
from rich.markup import escape

from .. import __version__
from ..errors import ExitCode, NewsletterError
from . import compose, reconcile, schedule, send, serve, signup, tags
from ._output import console, err_console
from .archive import app as archive_app
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
subscribers_app.command()(tags.tag)
subscribers_app.command()(tags.untag)
app.add_typer(subscribers_app, name="subscribers")
subscribers_app.command("show")(signup.show)
subscribers_app.command("purge")(signup.purge)
for command in (
    compose.init,
    compose.new,
    compose.build,
    compose.preview,
    compose.check,
    send.send,
    send.status,
    reconcile.reconcile,
    schedule.approve,
    serve.serve,
    signup.form,
):
    app.command()(command)
app.command("run-due")(schedule.run_due)
app.add_typer(schedule.app, name="schedule")
app.add_typer(serve.dkim_app, name="dkim")
app.add_typer(serve.dns_app, name="dns")
app.add_typer(serve.inbox_app, name="inbox")
app.add_typer(store_app, name="store")
app.add_typer(archive_app, name="archive")

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


# What option tables show for a value instead of Python's type names (`<str>`, `<list[str]>`).
_VALUE_LABELS = {
    "str": "TEXT",
    "int": "NUMBER",
    "float": "NUMBER",
    "Path": "PATH",
    "list[str]": "TEXT",
    "list[Path]": "PATH",
}


def _plain_value_labels(command: Any) -> None:
    """Flags show nothing in the type column and values a plain word, throughout the tree."""
    for sub in getattr(command, "commands", {}).values():
        _plain_value_labels(sub)
    help_option = getattr(command, "get_help_option", None)
    if help_option is not None:

        def quiet_help(ctx: Any, original: Any = help_option) -> Any:
            option = original(ctx)
            if option is not None:
                setattr(option, "display_type_rich", lambda ctx: None)  # noqa: B010 - per instance
            return option

        setattr(command, "get_help_option", quiet_help)  # noqa: B010 - per instance
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False):
            setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010 - per instance
            continue
        display = getattr(param, "display_type", None)
        if display is None or getattr(param, "metavar", None) is not None:
            continue

        def plain(ctx: Any, display: Any = display) -> str | None:
            shown = str(display(ctx)).strip("<>").removesuffix(" range")
            return _VALUE_LABELS.get(shown, shown.upper() if shown.isidentifier() else shown)

        setattr(param, "display_type_rich", plain)  # noqa: B010 - per instance


def run() -> None:
    """Run the app, turning library errors into a message and exit status."""
    try:
        command = typer.main.get_command(app)
        _plain_value_labels(command)
        # Without standalone mode, click returns the code of typer.Exit instead of exiting.
        code = command(standalone_mode=False)
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
        # 1, like every other error that stops a command before it does anything (README).
        sys.exit(ExitCode.ERROR if getattr(err, "exit_code", 2) else 0)
