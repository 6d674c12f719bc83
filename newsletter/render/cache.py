"""A rendered issue kept in `.newsletter-cache/renders/`, so that a build, check or send of
content that has not changed since the last render renders nothing (no premailer, no MJML).

A stale render would be a wrong email, so an entry is used only when everything the render reads
is as it was. Its name is a digest of:

- the render's arguments (`preview`, `click_numbers`), the whole `Settings` (newsletter.toml as
  loaded; it holds no secrets, only the names of the variables that do) and the whole `Issue`
  (every item's front matter and text, as loaded from its files);
- the contents of every file in the project's `templates/` and `locales/` and in the package's
  theme;
- the code: this package's version and every file of it (size and modification time), the
  Python version, and the installed distributions (their names and versions) beside the
  libraries a render uses (Jinja2, markdown-it, MJML, premailer, cssutils, lxml, Babel, Pillow);
- the entry format.

The image files a render read (item photos, images in the text, logos, icons) are recorded in
the entry with their size, inode, modification and change times (a copy that keeps the
modification time still gets a new change time): an entry whose images differ is not used.

Entries are written atomically (a temporary file, then a rename) and checked on reading (a
digest of the body); a torn, foreign or unreadable entry is a miss, and a cache that cannot be
written only costs the next run the render again. The newest `KEEP` entries are kept.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..clicks import ClickLink
from ..config import Settings
from ..content import Issue
from ..slots import Slot, SlotText
from .model import EmbeddedImage, PublishedImage, RenderedIssue, file_signature

FORMAT = "1"
KEEP = 32
PACKAGE = Path(__file__).resolve().parent.parent
# The libraries whose versions can change a render's output.
LIBRARIES = (
    *("jinja2", "markupsafe", "markdown_it", "mjml", "premailer", "cssutils", "lxml"),
    *("babel", "PIL"),
)


@dataclass
class RenderWork:
    """What this process's cached renders did: `rendered`, or read back (`hits`)."""

    rendered: int = 0
    hits: int = 0


work = RenderWork()


def cached_render(
    issue: Issue,
    settings: Settings,
    *,
    preview: bool = False,
    click_numbers: Mapping[str, int] | None = None,
) -> RenderedIssue:
    """`render_issue(issue, settings, ...)`, read from the cache when nothing it reads changed."""
    folder = settings.cache_dir / "renders"
    key = render_key(issue, settings, preview=preview, click_numbers=click_numbers)
    found = _read(folder / key, key)
    if found is not None:
        work.hits += 1
        return found
    from .issue import render_issue  # noqa: PLC0415 (Jinja, MJML...: only a miss renders)

    rendered = render_issue(issue, settings, preview=preview, click_numbers=click_numbers)
    work.rendered += 1
    _write(folder, key, rendered)
    return rendered


def render_key(
    issue: Issue,
    settings: Settings,
    *,
    preview: bool = False,
    click_numbers: Mapping[str, int] | None = None,
) -> str:
    """The digest naming the cache entry of this render (see the module docstring)."""
    digest = KeyDigest()
    add = digest.add
    add("format", FORMAT)
    add("version", __version__)
    add("python", sys.version)
    add("arguments", (preview, sorted((click_numbers or {}).items())))
    add("settings", settings)
    add("issue", issue)
    add("code", _code_signature())
    add("distributions", _distributions())
    theme = PACKAGE / "theme"
    for label, folder in (
        ("templates", settings.templates_dir),
        ("locales", settings.root / "locales"),
        ("theme", theme),
    ):
        for path in _files(folder):
            content = hashlib.sha256(path.read_bytes()).hexdigest()
            add(label, (path.relative_to(folder).as_posix(), content))
    return digest.hexdigest()


class KeyDigest:
    """SHA-256 of labelled values for a cache key: each value's `repr`, with its label and
    length before it, so no two different sequences of values give the same bytes."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def add(self, label: str, value: object) -> None:
        text = repr(value).encode("utf-8", "surrogatepass")
        self._digest.update(f"{label}\0{len(text)}\0".encode())
        self._digest.update(text)

    def update(self, data: bytes) -> None:
        """Raw bytes (a digest of a file, say), as they are."""
        self._digest.update(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _files(folder: Path) -> Iterator[Path]:
    """Every file under `folder` (none if it is missing), in a fixed order."""
    if not folder.is_dir():
        return
    for parent, folders, names in os.walk(folder, followlinks=True):
        folders[:] = sorted(name for name in folders if name != "__pycache__")
        for name in sorted(names):
            path = Path(parent) / name
            if path.is_file():
                yield path


_signatures: dict[str, object] = {}


def _code_signature() -> list[tuple[str, int, int]]:
    """Size and modification time of every file of this package (its own edits count)."""
    if "code" not in _signatures:
        found = []
        for path in _files(PACKAGE):
            stat = path.stat()
            found.append((path.relative_to(PACKAGE).as_posix(), stat.st_size, stat.st_mtime_ns))
        _signatures["code"] = found
    return _signatures["code"]  # type: ignore[return-value]


def _distributions() -> list[str]:
    """The distributions (`premailer-3.10.0.dist-info`...) installed beside the libraries a
    render uses, found without importing them."""
    if "distributions" not in _signatures:
        places: set[str] = set()
        for name in LIBRARIES:
            spec = importlib.util.find_spec(name)
            for location in (spec.submodule_search_locations or []) if spec else []:
                places.add(str(Path(location).parent))
        names = []
        for place in sorted(places):
            try:
                entries = os.listdir(place)
            except OSError:
                continue
            names += [entry for entry in entries if entry.endswith((".dist-info", ".egg-info"))]
        _signatures["distributions"] = sorted(names)
    return _signatures["distributions"]  # type: ignore[return-value]


# --- the entry: one line of JSON, then the images' bytes ----------------------------------------


def _slot_text(text: SlotText) -> list[Any]:
    return [
        part
        if isinstance(part, str)
        else {"path": part.path, "default": part.default, "url": part.url}
        for part in text.parts
    ]


def _from_slot_text(parts: list[Any]) -> SlotText:
    return SlotText(
        tuple(
            part if isinstance(part, str) else Slot(part["path"], part["default"], part["url"])
            for part in parts
        )
    )


def _write(folder: Path, key: str, rendered: RenderedIssue) -> None:
    blobs = [image.data for image in rendered.embedded_images]
    blobs += [image.data for image in rendered.published_images]
    sources = [[str(path), list(signature)] for path, signature in rendered.image_sources]
    body_digest = hashlib.sha256()
    for blob in blobs:
        body_digest.update(blob)
    header = {
        "format": FORMAT,
        "key": key,
        "name": rendered.name,
        "subject": _slot_text(rendered.subject),
        "preheader": rendered.preheader,
        "html": _slot_text(rendered.html),
        "text": _slot_text(rendered.text),
        "web_html": rendered.web_html,
        "language": rendered.language,
        "embedded": [
            [image.cid, image.filename, image.content_type, len(image.data)]
            for image in rendered.embedded_images
        ],
        "published": [[image.filename, len(image.data)] for image in rendered.published_images],
        "fingerprint": rendered.fingerprint,
        "draft_items": list(rendered.draft_items),
        "click_links": [
            [link.number, link.target, link.item, link.label] for link in rendered.click_links
        ],
        "sources": sources,
        "body": body_digest.hexdigest(),
    }
    data = json.dumps(header, ensure_ascii=True).encode() + b"\n" + b"".join(blobs)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, folder / key)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _prune(folder)
    except OSError:
        pass


def _prune(folder: Path) -> None:
    entries = [path for path in folder.iterdir() if not path.name.startswith(".")]
    if len(entries) <= KEEP:
        return
    entries.sort(key=lambda path: path.stat().st_mtime_ns, reverse=True)
    for path in entries[KEEP:]:
        path.unlink(missing_ok=True)


def _read(entry: Path, key: str) -> RenderedIssue | None:
    """The entry's rendered issue; None when absent, torn, foreign or its images changed."""
    try:
        blob = entry.read_bytes()
    except OSError:
        return None
    try:
        line, _, body = blob.partition(b"\n")
        header = json.loads(line)
        if header.get("format") != FORMAT or header.get("key") != key:
            return None
        if hashlib.sha256(body).hexdigest() != header["body"]:
            return None
        for path, signature in header["sources"]:
            if list(file_signature(Path(path))) != signature:
                return None
        position = 0

        def take(size: int) -> bytes:
            nonlocal position
            position += size
            return body[position - size : position]

        embedded = tuple(
            EmbeddedImage(cid, filename, content_type, take(size))
            for cid, filename, content_type, size in header["embedded"]
        )
        published = tuple(
            PublishedImage(filename, take(size)) for filename, size in header["published"]
        )
        if position != len(body):
            return None
        return RenderedIssue(
            name=header["name"],
            subject=_from_slot_text(header["subject"]),
            preheader=header["preheader"],
            html=_from_slot_text(header["html"]),
            text=_from_slot_text(header["text"]),
            web_html=header["web_html"],
            language=header["language"],
            embedded_images=embedded,
            published_images=published,
            fingerprint=header["fingerprint"],
            draft_items=tuple(header["draft_items"]),
            click_links=tuple(ClickLink(*link) for link in header["click_links"]),
            image_sources=tuple(
                (Path(path), (size, inode, modified, changed))
                for path, (size, inode, modified, changed) in header["sources"]
            ),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
