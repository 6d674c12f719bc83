"""Local images: measured, scaled down when heavy, embedded (CID) or published under base_url."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import Problem
from .model import EmbeddedImage, PublishedImage

# Images are kept at twice the width they are shown at, sharp on high-density screens.
DENSITY = 2
_FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"), "GIF": ("gif", "image/gif")}


# Pillow's own limit (about 89 megapixels, a 10,000 x 8,900 photo) is a warning only; here it is
# an error. Pillow refuses twice as many by itself (DecompressionBombError).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


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
def _prepare(path: Path, mtime_ns: int, size: int, max_width: int) -> _Prepared:
    """Read, measure and (if wider than needed) scale an image. Cached for preview rebuilds."""
    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as image:
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


@dataclass
class ImageCollector:
    """Collects the local images of one render; hands out `src` values for the templates."""

    base_url: str | None
    issue_name: str
    embedded: dict[str, EmbeddedImage] = field(default_factory=dict)
    published: dict[str, PublishedImage] = field(default_factory=dict)

    def add(
        self, path: Path, display_width: int, problems: list[Problem], *, key: str | None = None
    ) -> ImageRef | None:
        """Register a local image shown `display_width` pixels wide; None (and a problem) if bad."""
        try:
            stat = path.stat()
            prepared = _prepare(path, stat.st_mtime_ns, stat.st_size, display_width * DENSITY)
        except FileNotFoundError:
            problems.append(Problem("image not found", file=path, key=key))
            return None
        except (Image.DecompressionBombError, _TooManyPixels) as err:
            problems.append(
                Problem(
                    f"has too many pixels to open safely: {err}; scale it down", file=path, key=key
                )
            )
            return None
        except (UnidentifiedImageError, OSError, ValueError) as err:
            problems.append(
                Problem(f"is not an image mail clients can show ({err})", file=path, key=key)
            )
            return None
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
