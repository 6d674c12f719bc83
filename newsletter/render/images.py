"""Local images: measured, scaled down when heavy, embedded (CID) or published under base_url.

Scaling and re-encoding a photo takes 50-150 ms, so the results are kept in the project's
`.newsletter-cache/images/`, keyed by the source file's content hash, the target width and the
version of this pipeline: a rebuild with unchanged images reads them back and decodes nothing.
When several images did change, `ImageCollector.prefetch` processes them in threads (Pillow
releases the GIL while it decodes, resizes and encodes). Pillow itself is imported only when an
image has to be processed.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import Problem
from .model import EmbeddedImage, FileSignature, PublishedImage, file_signature

if TYPE_CHECKING:
    from PIL import Image

# Images are kept at twice the width they are shown at, sharp on high-density screens.
DENSITY = 2
_FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"), "GIF": ("gif", "image/gif")}
# Part of every cache key: bump it when `_process` would produce other bytes (quality, formats,
# resampling), so that no stale result is reused.
PIPELINE_VERSION = "1"


# Embedded images travel inside every message; past this they cost each recipient more than a
# hosted copy would (the example issue: 185 KB per message embedded, 39 KB hosted).
EMBEDDED_WARN_BYTES = 100 * 1024


def embedded_weight(images: Sequence[EmbeddedImage]) -> int:
    """Bytes the embedded images add to every message (base64: four for every three, and a
    line break after every 76), counted without encoding them (a preview rebuild asked twice)."""
    return sum(base64_size(len(image.data)) for image in images)


def base64_size(size: int) -> int:
    """`len(base64.encodebytes(data))` for `size` bytes of data."""
    encoded = 4 * -(-size // 3)
    return encoded + -(-encoded // 76)


def embedded_images_advice(images: Sequence[EmbeddedImage]) -> str | None:
    """Why and how to host the images, when embedding them weighs over EMBEDDED_WARN_BYTES."""
    weight = embedded_weight(images)
    if weight <= EMBEDDED_WARN_BYTES:
        return None
    return (
        f"embedded images add {weight / 1024:.0f} KB to every message (over "
        f"{EMBEDDED_WARN_BYTES // 1024} KB): set base_url in newsletter.toml to the public "
        "address of 'newsletter serve' (or of any web host you copy the images to), and "
        "messages link their images there instead of carrying them"
    )


@dataclass
class ImageWork:
    """What this process did with images: `processed` by Pillow, or read back from the cache
    (`cache_hits`). Observable, so a test can tell a rebuild did no image work."""

    processed: int = 0
    cache_hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, *, hit: bool) -> None:
        with self._lock:
            if hit:
                self.cache_hits += 1
            else:
                self.processed += 1


work = ImageWork()


# Pillow's own limit (about 89 megapixels, a 10,000 x 8,900 photo) is a warning only; here it is
# an error. Pillow refuses twice as many by itself (DecompressionBombError).
MAX_PIXELS = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS (not imported here: Pillow is heavy)


class _TooManyPixels(ValueError):
    """An image claims more pixels than `MAX_PIXELS`."""


@dataclass(frozen=True)
class ImageRef:
    """What a template needs to show an image."""

    src: str
    width: int | None
    height: int | None


@dataclass(frozen=True)
class _Prepared:
    data: bytes
    extension: str
    content_type: str
    width: int
    height: int
    digest: str


@lru_cache(maxsize=64)
def _prepare(
    path: Path, signature: FileSignature, max_width: int, cache_dir: Path | None = None
) -> _Prepared:
    """Read, measure and (if wider than needed) scale an image: from `cache_dir` when it holds
    the result for these bytes and this width. Also kept in memory for preview rebuilds, by the
    file's signature (size, inode, modification and change time: other bytes copied in with the
    old modification time still get a new change time)."""
    raw = path.read_bytes()
    key = f"{hashlib.sha256(raw).hexdigest()}-w{max_width}-v{PIPELINE_VERSION}"
    if cache_dir is not None:
        cached = _read_cached(cache_dir / key)
        if cached is not None:
            work.count(hit=True)
            return cached
    prepared = _process(raw, max_width)
    work.count(hit=False)
    if cache_dir is not None:
        _write_cached(cache_dir / key, prepared)
    return prepared


def _process(raw: bytes, max_width: int) -> _Prepared:
    from PIL import Image  # noqa: PLC0415 (heavy, only processing an image needs it)

    try:
        opened = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError as err:
        raise _TooManyPixels(str(err)) from err
    with opened as image:
        image_format = image.format or ""
        width, height = image.size
        if width * height > MAX_PIXELS:
            # Checked before decoding: a small file can claim billions of pixels.
            raise _TooManyPixels(
                f"{width} x {height} = {width * height:,} pixels, more than {MAX_PIXELS:,}"
            )
        animated = bool(getattr(image, "is_animated", False))
        if image_format not in _FORMATS:
            # WebP, BMP, TIFF... are not shown by every mail client: convert to PNG or JPEG.
            target = "PNG" if image.mode in ("RGBA", "LA", "P") else "JPEG"
            image_format = target
            raw = _encode(image, target)
        if width > max_width and not animated:
            new_height = round(height * max_width / width)
            resized = image.resize((max_width, new_height), Image.Resampling.LANCZOS)
            raw = _encode(resized, image_format)
            width, height = max_width, new_height
    extension, content_type = _FORMATS[image_format]
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return _Prepared(raw, extension, content_type, width, height, digest)


def _encode(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    if image_format == "JPEG":
        image.convert("RGB").save(buffer, "JPEG", quality=82, optimize=True, progressive=True)
    elif image_format == "GIF":
        image.save(buffer, "GIF", optimize=True)
    else:
        image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _read_cached(entry: Path) -> _Prepared | None:
    """A cached result (one JSON line of metadata, then the bytes); None when absent or bad."""
    try:
        blob = entry.read_bytes()
        header, _, data = blob.partition(b"\n")
        meta = json.loads(header)
        if meta.get("size") != len(data) or hashlib.sha256(data).hexdigest()[:12] != meta["digest"]:
            return None  # a torn or tampered entry: process the image again
        extension, content_type = _FORMATS[meta["format"]]
        return _Prepared(
            data, extension, content_type, meta["width"], meta["height"], meta["digest"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cached(entry: Path, prepared: _Prepared) -> None:
    """Store a result atomically (temporary file, then rename); a cache that cannot be written
    (read-only project, full disk) only costs the next build the work again."""
    image_format = next(name for name, (ext, _) in _FORMATS.items() if ext == prepared.extension)
    header = json.dumps(
        {
            "format": image_format,
            "width": prepared.width,
            "height": prepared.height,
            "digest": prepared.digest,
            "size": len(prepared.data),
        }
    ).encode()
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(header + b"\n" + prepared.data)
            os.replace(temporary, entry)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        pass


@dataclass
class ImageCollector:
    """Collects the local images of one render; hands out `src` values for the templates."""

    base_url: str | None
    issue_name: str
    embedded: dict[str, EmbeddedImage] = field(default_factory=dict)
    published: dict[str, PublishedImage] = field(default_factory=dict)
    # Where processed images are cached across builds (None: only in memory).
    cache_dir: Path | None = None
    # Every image file read, absolute (a cached render is reused only while they are unchanged).
    sources: dict[Path, FileSignature] = field(default_factory=dict)

    def prefetch(self, wanted: Iterable[tuple[Path, int]]) -> None:
        """Prepare these (path, display width) images ahead of `add`, several at a time.

        Only a head start: errors are left for `add` to report, and what is cached already
        costs a read.
        """
        jobs: list[tuple[Path, FileSignature, int]] = []
        for path, display_width in dict.fromkeys(wanted):
            try:
                signature = file_signature(path)
            except OSError:
                continue
            jobs.append((path, signature, display_width * DENSITY))
        if len(jobs) < 2:
            return
        workers = min(len(jobs), os.cpu_count() or 1)
        if workers < 2:
            return
        with concurrent.futures.ThreadPoolExecutor(workers, "newsletter-image") as pool:
            futures = [pool.submit(_prepare, *job, self.cache_dir) for job in jobs]
            concurrent.futures.wait(futures)

    def add(
        self, path: Path, display_width: int, problems: list[Problem], *, key: str | None = None
    ) -> ImageRef | None:
        """Register a local image shown `display_width` pixels wide; None (and a problem) if bad."""
        try:
            signature = file_signature(path)
            prepared = _prepare(path, signature, display_width * DENSITY, self.cache_dir)
        except FileNotFoundError:
            problems.append(Problem("image not found", file=path, key=key))
            return None
        except _TooManyPixels as err:
            problems.append(
                Problem(
                    f"has too many pixels to open safely: {err}; scale it down", file=path, key=key
                )
            )
            return None
        except (OSError, ValueError) as err:  # Pillow's UnidentifiedImageError is an OSError
            problems.append(
                Problem(f"is not an image mail clients can show ({err})", file=path, key=key)
            )
            return None
        self.sources[path.resolve()] = signature
        shown_width = min(display_width, prepared.width)
        shown_height = round(prepared.height * shown_width / prepared.width)
        stem = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-") or "image"
        filename = f"{stem}-{prepared.digest}.{prepared.extension}"
        if self.base_url:
            self.published[filename] = PublishedImage(filename, prepared.data)
            src = f"{self.base_url}{self.issue_name}/{filename}"
        else:
            cid = f"{stem}-{prepared.digest}@newsletter"
            self.embedded[cid] = EmbeddedImage(cid, filename, prepared.content_type, prepared.data)
            src = f"cid:{cid}"
        return ImageRef(src, shown_width, shown_height)
