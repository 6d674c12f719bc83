"""The `newsletter` command: thin Typer commands over the library; errors are reported here once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .build import build_issue
from .config import Settings, find_project_root, load_settings
from .content import resolve_issue_folder
from .errors import NewsletterError, ProjectError
from .preview import DEFAULT_PORT, PreviewEvent, serve_preview
from .project import init_project, new_issue

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


def _sample_message(settings: Settings):  # type: ignore[no-untyped-def]
    return None


def main() -> None:
    """Entry point: run the app, turning library errors into a message and exit status."""
    try:
        app(standalone_mode=False)
    except NewsletterError as err:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {err.message}", highlight=False)
        if err.hint:
            err_console.print(f"[dim]hint:[/] {err.hint}", highlight=False)
        sys.exit(err.exit_code)
    except typer.Abort:
        err_console.print("Aborted.")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise
