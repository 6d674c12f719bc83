"""The public archive of `newsletter serve`: what was sent, from the store, and nothing else.

Routes (registered last by `app.create_app`: `/{issue}` would take any one-segment path):

- `/`: the archived issues, most recently sent first, with date and subject;
- `/feed.xml`: an Atom feed of them;
- `/<issue>/web.html`: the web version as it was when the issue's first message left (or as
  `newsletter archive update` last replaced it); `/<issue>` and `/<issue>/` lead there;
- `/<issue>/<image>`: an image the issue's messages or web version use, by its content-hashed
  name. These stay served with `[serve] archive = false`: mail already sent links them when
  `base_url` points here.

Everything is read from the archive tables (`newsletter.archive`); nothing from `dist/` is
served, so a draft or an issue built but not sent cannot be reached, whatever its name.
Names are looked up as keys, never joined into a path.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from babel.dates import format_date
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..archive import ArchivedIssue, ArchiveStore
from ..build import write_folder_atomically
from ..config import Settings
from ..errors import ProjectError
from .pages import (
    FALLBACK_LANGUAGE,
    ArchiveEntry,
    available_languages,
    render_archive,
    texts_for_settings,
)

__all__ = ["FEED_ENTRIES", "ExportReport", "archive_routes", "atom_feed", "export_archive"]

FEED_ENTRIES = 50  # the newest issues in the feed; the index lists them all
_ISSUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.IGNORECASE | re.DOTALL)
_ATOM = "http://www.w3.org/2005/Atom"

# The web version is the editors' own HTML: no script runs, no form posts, no framing.
ISSUE_CSP = (
    "default-src 'none'; img-src 'self' https: data:; style-src 'unsafe-inline' https:; "
    "font-src 'self' https: data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": ISSUE_CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "public, max-age=300",
}
# Image names carry a hash of their content: a name never shows other bytes.
_IMAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "public, max-age=31536000, immutable",
}
_FEED_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=300"}


def _when(at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, tz=dt.UTC)


def _rfc3339(at: float) -> str:
    return _when(at).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Archive:
    """The handlers, bound to the project's settings and a way to reach the archive."""

    def __init__(
        self, settings: Settings, archive: Callable[[], ArchiveStore], *, pages: bool
    ) -> None:
        self.settings = settings
        self.archive = archive
        self.pages = pages
        own = settings.locale.replace("-", "_").split("_")[0].lower()
        self.language = own if own in available_languages() else FALLBACK_LANGUAGE
        # Babel knows `nl` and `nl_BE`; a register suffix (`nl-formal`) is not a locale.
        self.locale = re.sub(r"[-_](in)?formal$", "", settings.locale).replace("-", "_")

    def _pages_on(self) -> None:
        if not self.pages:
            raise HTTPException(404)

    def date(self, at: float) -> str:
        try:
            return format_date(_when(at).date(), format="long", locale=self.locale)
        except ValueError:  # a locale Babel does not know: the ISO date says it as well
            return _when(at).date().isoformat()

    def index_html(self, entries: list[ArchivedIssue], *, feed: bool = True) -> str:
        return render_archive(
            texts_for_settings(self.settings),
            name=self.settings.name,
            entries=[
                ArchiveEntry(
                    e.issue,
                    e.subject,
                    f"{e.issue}/web.html",
                    date=self.date(e.sent_at),
                    datetime=_when(e.sent_at).date().isoformat(),
                )
                for e in entries
            ],
            feed_href="feed.xml" if feed else "",
        )

    async def index(self, request: Request) -> Response:
        self._pages_on()
        entries = await run_in_threadpool(self.archive().entries)
        body = self.index_html(entries)
        # The index is one of our own pages: the app's security headers (its CSP allows the
        # inline stylesheet by its hash, and the brand's stylesheet and logo) apply.
        headers = {k: v for k, v in _PAGE_HEADERS.items() if k != "Content-Security-Policy"}
        return HTMLResponse(body, headers=headers)

    async def issue(self, request: Request) -> Response:
        self._pages_on()
        name = request.path_params["issue"]
        if not _ISSUE_NAME.match(name):
            raise HTTPException(404)
        page = await run_in_threadpool(self.archive().page, name)
        if page is None:
            raise HTTPException(404)
        target = "web.html" if request.url.path.endswith("/") else f"{name}/web.html"
        return RedirectResponse(target, status_code=308)

    async def file(self, request: Request) -> Response:
        name = request.path_params["issue"]
        filename = request.path_params["file"]
        if not _ISSUE_NAME.match(name) or not _FILE_NAME.match(filename):
            raise HTTPException(404)
        if filename == "web.html":
            self._pages_on()
            page = await run_in_threadpool(self.archive().page, name)
            if page is None:
                raise HTTPException(404)
            return HTMLResponse(page.html, headers=_PAGE_HEADERS)
        image = await run_in_threadpool(self.archive().image, name, filename)
        if image is None or image.content_type not in _IMAGE_TYPES:
            raise HTTPException(404)
        return Response(image.data, media_type=image.content_type, headers=_IMAGE_HEADERS)

    async def feed(self, request: Request) -> Response:
        self._pages_on()
        entries = await run_in_threadpool(self.archive().entries)
        base = self.settings.base_url or str(request.base_url)
        base = base if base.endswith("/") else base + "/"
        pages = {}
        for entry in entries[:FEED_ENTRIES]:
            page = await run_in_threadpool(self.archive().page, entry.issue)
            if page is not None:
                pages[entry.issue] = page.html
        body = atom_feed(
            self.settings.name,
            self.language,
            base,
            entries[:FEED_ENTRIES],
            pages,
        )
        return Response(
            body, media_type="application/atom+xml; charset=utf-8", headers=_FEED_HEADERS
        )


def atom_feed(
    title: str, language: str, base: str, entries: list[ArchivedIssue], pages: dict[str, str]
) -> bytes:
    """An Atom 1.0 document (RFC 4287) of `entries`, each linking its web version under `base`
    and carrying the body of its HTML as content."""
    ET.register_namespace("", _ATOM)

    def add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{_ATOM}}}{tag}", attrs)
        element.text = text
        return element

    feed = ET.Element(f"{{{_ATOM}}}feed", {"xml:lang": language})
    add(feed, "title", title or "Newsletter")
    add(feed, "id", base + "feed.xml")
    add(feed, "link", rel="self", type="application/atom+xml", href=base + "feed.xml")
    add(feed, "link", rel="alternate", type="text/html", href=base)
    updated = max((e.updated_at for e in entries), default=0.0)
    add(feed, "updated", _rfc3339(updated))
    author = add(feed, "author")
    add(author, "name", title or "Newsletter")
    for entry in entries:
        url = f"{base}{entry.issue}/web.html"
        item = add(feed, "entry")
        add(item, "title", entry.subject)
        add(item, "id", url)
        add(item, "link", rel="alternate", type="text/html", href=url)
        add(item, "published", _rfc3339(entry.sent_at))
        add(item, "updated", _rfc3339(entry.updated_at))
        html = pages.get(entry.issue)
        if html is not None:
            found = _BODY.search(html)
            add(item, "content", (found.group(1) if found else html).strip(), type="html")
    return bytes(ET.tostring(feed, encoding="utf-8", xml_declaration=True))


def archive_routes(
    settings: Settings, archive: Callable[[], ArchiveStore], *, pages: bool = True
) -> list[Route]:
    """The archive's routes; with `pages` false only the hosted images are served."""
    handlers = _Archive(settings, archive, pages=pages)
    return [
        Route("/", handlers.index, methods=["GET"]),
        Route("/feed.xml", handlers.feed, methods=["GET"]),
        Route("/{issue}", handlers.issue, methods=["GET"]),
        Route("/{issue}/", handlers.issue, methods=["GET"]),
        Route("/{issue}/{file}", handlers.file, methods=["GET"]),
    ]


# --- a static copy --------------------------------------------------------------------------------

_EXPORT_MARK = ".newsletter-archive"  # marks a folder `export_archive` wrote (and may replace)


@dataclass(frozen=True)
class ExportReport:
    folder: Path
    issues: int
    images: int
    feed: bool  # written only with base_url (a feed's links must be absolute)


def export_archive(settings: Settings, archive: ArchiveStore, target: Path) -> ExportReport:
    """Write the archive as static files into `target`, for any web host: `index.html`,
    `feed.xml` (with `base_url`), and `<issue>/web.html` with the images of every archived
    issue; nothing else. The folder is replaced as a whole, so it must be empty, missing or an
    earlier export (ProjectError otherwise: nothing of yours is deleted)."""
    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / _EXPORT_MARK).is_file())
    ):
        raise ProjectError(
            f"{target} is not empty and was not written by 'newsletter archive export'; "
            "nothing was written",
            hint="Export into a new folder: it is replaced as a whole on every export.",
        )
    handlers = _Archive(settings, lambda: archive, pages=True)
    entries = archive.entries()
    base = settings.base_url
    outputs: dict[str, bytes] = {_EXPORT_MARK: b"written by newsletter archive export\n"}
    outputs["index.html"] = handlers.index_html(entries, feed=base is not None).encode("utf-8")
    pages: dict[str, str] = {}
    images = 0
    for entry in entries:
        page = archive.page(entry.issue)
        if page is None or not _ISSUE_NAME.match(entry.issue):
            continue
        pages[entry.issue] = page.html
        outputs[f"{entry.issue}/web.html"] = page.html.encode("utf-8")
        for filename in archive.filenames(entry.issue):
            image = archive.image(entry.issue, filename)
            if image is not None and _FILE_NAME.match(filename) and filename != "web.html":
                outputs[f"{entry.issue}/{filename}"] = image.data
                images += 1
    if base is not None:
        latest = entries[:FEED_ENTRIES]
        outputs["feed.xml"] = atom_feed(settings.name, handlers.language, base, latest, pages)
    write_folder_atomically(target, outputs)
    return ExportReport(target, len(pages), images, base is not None)
