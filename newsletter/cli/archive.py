"""`newsletter archive`: list the archive of sent issues, and replace one deliberately (thin over
`newsletter.archive` and `newsletter.sending.update_archive`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from ._output import plain_console as console
from ._project import project_settings

app = typer.Typer(
    name="archive",
    help="The archive of what was sent, as `newsletter serve` publishes it.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)


def _local(at: float) -> str:
    return dt.datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M %Z")


@app.command("list")
def list_() -> None:
    """List the archived issues, the most recently sent first: when each was sent, its subject,
    and whether it was replaced since.

    An issue is archived when its first message is sent (not by `build`, a test, a dry run
    or the outbox).

    Examples:

        newsletter archive list
    """
    from ..archive import ArchiveStore  # noqa: PLC0415 (opens the store: only this command)

    settings = project_settings()
    with ArchiveStore(settings.database()) as archive:
        entries = archive.entries()
    if not entries:
        console.print("The archive is empty: no issue has been sent yet.")
        return
    width = max(len(e.issue) for e in entries)
    for entry in entries:
        updated = (
            f"  (updated {entry.updates}x, last {_local(entry.updated_at)})"
            if entry.updates
            else ""
        )
        console.print(
            f"{entry.issue:<{width}}  sent {_local(entry.sent_at)}  {entry.subject}{updated}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@app.command()
def update(
    issue: Annotated[str, typer.Argument(help="The issue: its folder, or just its name.")],
) -> None:
    """Replace the archived web version of a sent issue with the issue as it is now.

    The archive keeps what subscribers received; use this after fixing a mistake, when the
    public version should show the fix. Its send date stays; images of the old version stay
    available for the mail that links them. An issue sent before this version kept an archive
    (the send ledger knows) is added, dated when its first message was sent.

    Examples:

        newsletter archive update 2026-11
    """
    from ..sending import update_archive  # noqa: PLC0415 (renders the issue: only this command)

    settings = project_settings()
    entry, added = update_archive(settings, issue)
    if added:
        message = (
            f"Added {entry.issue} to the archive: it was sent {_local(entry.sent_at)}, before "
            f"this version kept an archive. It shows the issue as it is now: {entry.subject}"
        )
    else:
        message = (
            f"Replaced the archived version of {entry.issue} (sent {_local(entry.sent_at)}) "
            f"with the issue as it is now: {entry.subject}. Updated {entry.updates} time(s) "
            "so far."
        )
    console.print(message, highlight=False, markup=False, soft_wrap=True)


@app.command()
def export(
    folder: Annotated[Path, typer.Argument(help="The folder to write (replaced as a whole).")],
) -> None:
    """Write the archive as static files, for a web host other than `newsletter serve`.

    `index.html`, `feed.xml` (when base_url is set) and `<issue>/web.html` with the images of
    every sent issue; never a draft or an unsent issue. The folder must be new, empty, or an
    earlier export. Upload it to where base_url points.

    Examples:

        newsletter archive export public/
    """
    from ..archive import ArchiveStore  # noqa: PLC0415 (opens the store: only this command)
    from ..web.archive import export_archive  # noqa: PLC0415 (heavy: only this command)

    settings = project_settings()
    with ArchiveStore(settings.database()) as archive:
        report = export_archive(settings, archive, folder.resolve())
    feed = "feed.xml, " if report.feed else ""
    console.print(
        f"Wrote {report.folder}: index.html, {feed}{report.issues} issue(s) with "
        f"{report.images} image(s).",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if not report.feed:
        console.print(
            "No feed.xml: set base_url in newsletter.toml (a feed's links must be absolute).",
            highlight=False,
            markup=False,
        )
