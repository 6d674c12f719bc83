"""Composing an issue: `init`, `new`, `build`, `preview`, `check`.

The renderer (Jinja2, MJML, premailer, Pillow), the checks (httpx) and the preview server
(Starlette, uvicorn) are imported inside the commands that use them, so the other commands of
`newsletter` do not pay for them at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..config import Settings
from ..content import load_issue, resolve_issue_folder
from ..listening import PREVIEW_PORT
from ..project import init_project, new_issue
from ._output import console, err_console
from ._project import message_template, project_root, project_settings

if TYPE_CHECKING:
    from ..preview import PreviewEvent
    from ..render.model import RenderedIssue


def _size(size: int) -> str:
    return f"{size / 1024:.1f} KB" if size >= 1024 else f"{size} B"


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


def new(
    name: Annotated[
        str | None, typer.Argument(help="Issue name; defaults to the current year and month.")
    ] = None,
) -> None:
    """Create the next issue folder with `issue.md` and one item stub.

    The stubs are in the project's language; the issue is dated from its name (2026-12).

    Examples:

        newsletter new

        newsletter new 2026-12
    """
    settings = project_settings()
    folder = new_issue(settings.root, name, language=settings.locale)
    console.print(f"Created [bold]{folder.relative_to(settings.root)}[/]")


def build(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
) -> None:
    """Build an issue into `dist/<issue>/`: email.html, email.txt, web.html, message.eml, images.

    Draft items are left out. Nothing is written unless the whole issue is valid.

    Examples:

        newsletter build 2026-11
        newsletter build issues/2026-11
    """
    from ..build import build_issue  # noqa: PLC0415 (heavy, only this command needs it)

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
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def _sample_message(settings: Settings) -> Callable[[RenderedIssue], bytes]:
    """The sample message.eml of a build, signed with a throwaway key when none is set."""

    from ..audience import Subscriber  # noqa: PLC0415 (heavy, only a build needs it)

    def build(rendered: RenderedIssue) -> bytes:
        secret = settings.secret() or b"sample-only-not-a-real-secret"
        sample = Subscriber.sample(settings.locale)
        return message_template(settings, rendered, secret).personalise(sample).data

    return build


def preview(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
    port: Annotated[
        int, typer.Option("--port", "-p", help="Port on 127.0.0.1 to serve the preview on.")
    ] = PREVIEW_PORT,
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
    from ..preview import serve_preview  # noqa: PLC0415 (heavy, only this command needs it)
    from .preview_project import (  # noqa: PLC0415 (heavy, only this command needs it)
        make_rebuild,
        watch_paths_for,
    )

    # Only the project root here: a broken newsletter.toml is shown on the page, not fatal.
    root = project_root()
    folder = resolve_issue_folder(root, issue)
    server = serve_preview(
        make_rebuild(root, folder),
        watch_paths_for(root, folder),
        port=port,
        display_root=root,
        on_event=_preview_event,
    )
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


def check(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Do not check links and remote images over the network."),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the findings as JSON (for scripts).")
    ] = False,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Ask for every link and run SpamAssassin again instead of reusing results.",
        ),
    ] = False,
) -> None:
    """Check an issue before sending: links, images, size, spam score, accessibility.

    Every finding names the file and line it concerns. Exits with status 1 when there are
    errors; warnings alone do not fail. Good link answers are cached for ten minutes and spam
    scores per content in `.newsletter-cache/`, so checking again after a fix is quick; a
    `send` of the same content in the next ten minutes reuses the report when it found no
    error (it checks only the audience again); `--no-cache` checks everything afresh.

    Examples:

        newsletter check 2026-11
        newsletter check 2026-11 --offline
        newsletter check 2026-11 --no-cache
        newsletter check 2026-11 --json > check.json
    """
    from ..checks import check_issue  # noqa: PLC0415 (heavy, only this command needs it)
    from ..checks.report import print_report  # noqa: PLC0415 (heavy, see check_issue)
    from ..checks.reuse import record_report  # noqa: PLC0415 (beside check_issue)
    from ..render.cache import cached_render  # noqa: PLC0415 (heavy, only this command needs it)

    settings = project_settings()
    loaded = load_issue(resolve_issue_folder(settings.root, issue))
    rendered = cached_render(loaded, settings)
    report = check_issue(loaded, rendered, settings, offline=offline, use_cache=not no_cache)
    # A send of this content in the next ten minutes reuses the report (checks/reuse.py).
    record_report(loaded, rendered, settings, report, offline=offline)
    if as_json:
        typer.echo(report.to_json())
    else:
        print_report(report, console, root=settings.root)
    if report.errors:
        raise typer.Exit(1)
