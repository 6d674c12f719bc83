"""Image checks: alt texts that describe, sizes set for Outlook, the weight of each image and of
the whole message, and (online) remote images that answer and are images."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..render.images import embedded_images_advice
from .context import CheckContext, ImageTag, Location
from .links import LinkResult
from .model import Finding, Severity

KB = 1024
IMAGE_WARN_BYTES = 200 * KB
EMAIL_WARN_BYTES = 1024 * KB

_FILE_NAME = re.compile(
    r"^[\w\-. ]*\.(?:jpe?g|png|gif|webp|svg|bmp|tiff?|heic|avif)$", re.IGNORECASE
)
_CAMERA_NAME = re.compile(
    r"^(?:img|dsc|dscn|dscf|pxl|mvimg|gopr|screenshot|screen shot|image|photo|foto|afbeelding)"
    r"[\s_\-]*\d+",
    re.IGNORECASE,
)
# Alt texts that say nothing about the picture, in the languages the theme ships.
_EMPTY_WORDS = {
    "image",
    "img",
    "picture",
    "photo",
    "graphic",
    "icon",
    "banner",
    "logo",
    "untitled",
    "alt",
    "afbeelding",
    "plaatje",
    "foto",
    "beeld",
    "figuur",
}
# The hash the renderer adds to image file names: garden-9d99655fb064.jpg.
_HASHED_NAME = re.compile(r"^(?P<stem>.+)-[0-9a-f]{12}\.[a-z]+$")


@dataclass(frozen=True)
class _Source:
    """Where an image of the HTML comes from, and its bytes when it is a local one."""

    where: Location
    data: bytes | None
    local: bool


def check_images(context: CheckContext) -> list[Finding]:
    """Alt text, dimensions and weight: everything that needs no network."""
    findings: list[Finding] = []
    seen: set[tuple[str, str | None]] = set()
    for image in context.scan.images:
        if (image.src, image.alt) in seen:
            continue
        seen.add((image.src, image.alt))
        source = _source_of(context, image)
        findings += _alt(context, image, _alt_location(context, image, source.where))
        if image.width is None:
            findings.append(
                Finding(
                    "warning",
                    "image-dimensions",
                    f"image {_name(image.src)} has no width attribute: Outlook shows it at its "
                    "full pixel size",
                    source.where.file,
                    source.where.line,
                )
            )
        if source.data is not None:
            findings += _local_weight(image, source)
    findings += _total_weight(context)
    findings += _embedded_weight(context)
    return findings


def remote_image_urls(context: CheckContext) -> list[str]:
    return list(
        dict.fromkeys(
            image.src.strip()
            for image in context.scan.images
            if image.src.strip().lower().startswith(("https://", "http://"))
            and not _is_published(context, image.src)
        )
    )


def remote_image_findings(
    context: CheckContext, results: dict[str, LinkResult], urls: list[str]
) -> list[Finding]:
    """Remote images that fail to load, are not images, or are heavy (from their headers)."""
    findings: list[Finding] = []
    for url in urls:
        result = results.get(url)
        if result is None:
            continue
        where = context.locator.url(url)
        if not result.ok:
            why = (
                f"{result.status} {result.reason}".strip()
                if result.status is not None
                else result.detail or result.error or "no answer"
            )
            severity: Severity = "warning" if result.error == "unchecked" else "error"
            findings.append(
                Finding(
                    severity,
                    "image-unreachable",
                    f"remote image does not load ({why}): {url}",
                    where.file,
                    where.line,
                    url,
                )
            )
            continue
        kind = (result.content_type or "").split(";")[0].strip().lower()
        if kind and not kind.startswith("image/"):
            findings.append(
                Finding(
                    "error",
                    "image-not-image",
                    f"remote image is served as {kind}, not as an image: {url}",
                    where.file,
                    where.line,
                    url,
                )
            )
        if result.content_length is not None and result.content_length > IMAGE_WARN_BYTES:
            findings.append(
                Finding(
                    "warning",
                    "image-heavy",
                    f"remote image weighs {result.content_length / KB:.0f} KB (over "
                    f"{IMAGE_WARN_BYTES // KB} KB): slow on mobile data: {url}",
                    where.file,
                    where.line,
                    url,
                )
            )
    return findings


def _alt(context: CheckContext, image: ImageTag, where: Location) -> list[Finding]:
    name = _name(image.src)
    if image.alt is None:
        return [
            Finding(
                "warning",
                "image-alt-missing",
                f"image {name} has no alt text: screen readers read out its address instead",
                where.file,
                where.line,
            )
        ]
    alt = " ".join(image.alt.split())
    if not alt:
        # Empty alt marks decoration (the theme's social icons sit beside their names). In an
        # item's own text it is more likely forgotten.
        if where.file is not None and any(item.path == where.file for item in context.all_items):
            return [
                Finding(
                    "warning",
                    "image-alt-empty",
                    f"image {name} has an empty alt text: describe it, unless it is only "
                    "decoration",
                    where.file,
                    where.line,
                )
            ]
        return []
    if _FILE_NAME.match(alt) or _CAMERA_NAME.match(alt) or alt.lower().strip(".") in _EMPTY_WORDS:
        return [
            Finding(
                "warning",
                "image-alt-meaningless",
                f"image alt text '{alt}' does not describe the picture: say what it shows",
                where.file,
                where.line,
            )
        ]
    return []


def _alt_location(context: CheckContext, image: ImageTag, where: Location) -> Location:
    """An item image's alt text is written on its `image_alt:` line."""
    for item in context.all_items:
        if item.path == where.file and item.image_alt and image.alt == item.image_alt:
            line = context.locator.key_line(item.path, "image_alt")
            return Location(item.path, line or where.line)
    return where


def _local_weight(image: ImageTag, source: _Source) -> list[Finding]:
    assert source.data is not None
    findings: list[Finding] = []
    name = _name(image.src)
    weight = len(source.data)
    if weight > IMAGE_WARN_BYTES:
        findings.append(
            Finding(
                "warning",
                "image-heavy",
                f"image {name} weighs {weight / KB:.0f} KB (over {IMAGE_WARN_BYTES // KB} KB): "
                "slow on mobile data; crop it or save it with more compression",
                source.where.file,
                source.where.line,
            )
        )
    return findings


def _total_weight(context: CheckContext) -> list[Finding]:
    html = len(context.sample_html.encode("utf-8"))
    text = len(context.sample_text.encode("utf-8"))
    images = sum(_base64_size(len(image.data)) for image in context.rendered.embedded_images)
    total = html + text + images
    if total <= EMAIL_WARN_BYTES:
        return []
    return [
        Finding(
            "warning",
            "email-heavy",
            f"the message weighs {total / KB / KB:.1f} MB (HTML {html / KB:.0f} KB, embedded "
            f"images {images / KB:.0f} KB): over 1 MB is slow to download and some providers "
            "file it as bulk; use fewer or smaller images, or set base_url to publish them",
            context.issue.path,
        )
    ]


def _base64_size(size: int) -> int:
    """len(base64.encodebytes(data)) for `size` bytes, without encoding them: four characters
    for every three bytes, and a newline after every 76 characters and after the last."""
    return 4 * -(-size // 3) + -(-size // 57)


def _embedded_weight(context: CheckContext) -> list[Finding]:
    advice = embedded_images_advice(context.rendered.embedded_images)
    if advice is None:
        return []
    config = context.settings.config_path
    return [Finding("warning", "images-embedded", advice, config)]


def _source_of(context: CheckContext, image: ImageTag) -> _Source:
    """The file that put `image` into the email (item, newsletter.toml, theme) and its bytes."""
    src = image.src.strip()
    data: bytes | None = None
    filename: str | None = None
    if src.startswith("cid:"):
        cid = src[4:]
        for embedded in context.rendered.embedded_images:
            if embedded.cid == cid:
                data, filename = embedded.data, embedded.filename
    elif _is_published(context, src):
        filename = src.rsplit("/", 1)[-1]
        for published in context.rendered.published_images:
            if published.filename == filename:
                data = published.data
    if filename is None:
        return _Source(context.locator.url(src), None, False)
    match = _HASHED_NAME.match(filename)
    stem = match.group("stem") if match else Path(filename).stem
    return _Source(_local_origin(context, stem), data, True)


def _local_origin(context: CheckContext, stem: str) -> Location:
    """An item's `image:` line, a config key (logo, partner logo), or the theme's icon."""

    def slug(reference: str) -> str:
        return re.sub(r"[^A-Za-z0-9_-]+", "-", Path(reference).stem).strip("-") or "image"

    locator = context.locator
    for item in context.all_items:
        if item.image and not item.image_is_remote and slug(item.image) == stem:
            return Location(item.path, locator.key_line(item.path, "image"))
    settings = context.settings
    config = settings.config_path
    if settings.logo and slug(settings.logo) == stem:
        return Location(config, locator.key_line(config, "logo", table="newsletter"))
    for partner in settings.footer.partners:
        if slug(partner.logo) == stem:
            found = locator.find(partner.logo, within=config)
            return Location(config, found.line)
    return Location(context.email_template)


def _is_published(context: CheckContext, src: str) -> bool:
    base = context.settings.base_url
    return bool(base) and src.startswith(f"{base}{context.rendered.name}/")


def _name(src: str) -> str:
    """A short name for an image in messages: its file name."""
    if src.startswith("cid:"):
        name = src[4:].split("@", 1)[0]
        return re.sub(r"-[0-9a-f]{12}$", "", name)
    path = urlsplit(src).path if "://" in src else src
    return path.rsplit("/", 1)[-1] or src
