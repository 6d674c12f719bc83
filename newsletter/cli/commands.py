"""The Typer app of the `newsletter` command, and the one place errors are reported.

One module per command group: `compose` (init, new, build, preview, check), `send` (send,
status), `reconcile`, `schedule` (send --at, schedule, run-due, approve), `serve` (serve,
inbox, dkim, dns), `subscribers`, `store`. This module builds the app from them and holds
`run`, the one place that turns a `NewsletterError` into a message and an exit status.

A command imports only its own module: `run` reads the command's name from the arguments and
builds the app with that one command (the same Typer command, so its options, help and errors
are the ones of the whole app), and the whole app only for `newsletter --help`, no command or
one it does not know. Importing every command module would cost `newsletter build` the send
path's imports and `status` the renderer's. `app` (the whole app) is built on first use.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main
from rich.markup import escape

from .. import __version__
from ..errors import ExitCode, NewsletterError
from ._output import console, err_console
from ._typer import skip_pydantic

if TYPE_CHECKING:
    from typer._click.core import Command  # Typer's own click

_HELP = "Compose an email newsletter from Markdown item files, preview it, and send it safely."

# Every command and group, in the order of `newsletter --help`: the name, and where it lives
# (module in this package, attribute: a command function or, for a group, its Typer app).
_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("subscribers", "subscribers", "app"),
    ("init", "compose", "init"),
    ("new", "compose", "new"),
    ("build", "compose", "build"),
    ("preview", "compose", "preview"),
    ("check", "compose", "check"),
    ("send", "send", "send"),
    ("status", "send", "status"),
    ("reconcile", "reconcile", "reconcile"),
    ("approve", "schedule", "approve"),
    ("serve", "serve", "serve"),
    ("form", "signup", "form"),
    ("run-due", "schedule", "run_due"),
    ("schedule", "schedule", "app"),
    ("dkim", "serve", "dkim_app"),
    ("dns", "serve", "dns_app"),
    ("inbox", "serve", "inbox_app"),
    ("store", "store", "app"),
    ("archive", "archive", "app"),
)
_GROUPS = frozenset(name for name, _, attribute in _COMMANDS if attribute.endswith("app"))
# Options of the app itself, before the command's name (`newsletter --debug build`).
_APP_OPTIONS = frozenset({"--debug"})


def _load(module: str, attribute: str) -> Any:
    loaded = importlib.import_module(f"{__package__}.{module}")
    if module == "subscribers" and attribute == "app":
        _complete_subscribers(loaded.app)
    return getattr(loaded, attribute)


def _complete_subscribers(subscribers_app: typer.Typer) -> None:
    """The `subscribers` group's commands that live in other modules (tags, sign-ups), once."""
    from . import signup, tags  # noqa: PLC0415 (only the subscribers group needs them)

    known = {info.callback for info in subscribers_app.registered_commands}
    for name, function in (
        ("tag", tags.tag),
        ("untag", tags.untag),
        ("show", signup.show),
        ("purge", signup.purge),
    ):
        if function not in known:
            subscribers_app.command(name)(function)


def make_app(only: str | None = None) -> typer.Typer:
    """The app with every command, or with the command or group `only` alone."""
    made = typer.Typer(
        name="newsletter",
        help=_HELP,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="markdown",
        pretty_exceptions_enable=False,
    )
    made.callback()(_main)
    for name, module, attribute in _COMMANDS:
        if only is not None and name != only:
            continue
        if name in _GROUPS:
            made.add_typer(_load(module, attribute), name=name)
        else:
            made.command(name)(_load(module, attribute))
    return made


def command_name(arguments: Sequence[str]) -> str | None:
    """The command `arguments` run, if they name one of the app's; None for `--help`, no
    command, an unknown one or an unknown option before it (the whole app answers those)."""
    for argument in arguments:
        if argument in _APP_OPTIONS:
            continue
        if argument.startswith("-"):
            return None
        return argument if any(argument == name for name, _, _ in _COMMANDS) else None
    return None


def __getattr__(name: str) -> Any:
    # `app` (the whole app, for tests and tools), built on first use: see the module's doc.
    if name == "app":
        whole = make_app()
        globals()["app"] = whole
        return whole
    raise AttributeError(name)


_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        console.print(f"newsletter {__version__}")
        raise typer.Exit()


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


def cli_command(arguments: Sequence[str]) -> Command:
    """The click command `run` calls for `arguments`: the app with just the command they name
    (or the whole app), value labels plain, parameters converted without pydantic."""
    command = typer.main.get_command(make_app(command_name(arguments)))
    _plain_value_labels(command)
    skip_pydantic(command)
    return command


def run() -> None:
    """Run the app, turning library errors into a message and exit status."""
    try:
        command = cli_command(sys.argv[1:])
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
