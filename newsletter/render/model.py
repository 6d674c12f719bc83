"""What rendering an issue produces: everything a build or a send needs, made once per issue."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..clicks import ClickLink
from ..slots import SlotText

# Size, inode, modification and change time (ns): a file whose signature is unchanged has not
# been written to (a copy that keeps the modification time still gets a new change time).
FileSignature = tuple[int, int, int, int]


def file_signature(path: Path) -> FileSignature:
    stat = path.stat()
    return (stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns)


@dataclass(frozen=True)
class EmbeddedImage:
    """A local image sent inside the message (multipart/related), referenced as `cid:<cid>`."""

    cid: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class PublishedImage:
    """A local image copied to `dist/<issue>/` under a content-hashed name, served from base_url."""

    filename: str
    data: bytes


@dataclass(frozen=True)
class RenderedIssue:
    """An issue rendered once; per-recipient values are `Slot`s in subject, html and text."""

    name: str
    subject: SlotText
    preheader: str
    html: SlotText
    text: SlotText
    web_html: str
    language: str
    embedded_images: tuple[EmbeddedImage, ...] = ()
    published_images: tuple[PublishedImage, ...] = ()
    fingerprint: str = ""
    draft_items: tuple[str, ...] = ()
    # `[links] count_clicks`: the links the email's redirects lead to (empty when off).
    click_links: tuple[ClickLink, ...] = ()
    # The image files the render read, each with `file_signature` taken before reading it
    # (render/cache.py reuses a render only while they are unchanged).
    image_sources: tuple[tuple[Path, FileSignature], ...] = field(
        default=(), compare=False, repr=False
    )
