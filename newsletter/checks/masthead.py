"""The masthead logo against what is behind it: a logo drawn in the brand colour vanishes on
the brand-coloured masthead, a white logo on the plain one, a dark logo in dark mode."""

from __future__ import annotations

import functools
from pathlib import Path

from ..render.colours import DARK_CARD, contrast_ratio
from ..render.model import FileSignature, file_signature
from .context import CheckContext
from .model import Finding

__all__ = ["MIN_VISIBLE_SHARE", "check_logo_contrast", "visible_share"]

# WCAG 1.4.11 asks 3:1 for graphics; a logo is readable when at least this share of its drawn
# (opaque) pixels reaches it against the background.
MIN_CONTRAST = 3.0
MIN_VISIBLE_SHARE = 0.2


def visible_share(path: Path, background: str) -> float | None:
    """The share of the image's opaque pixels with 3:1 contrast against `background`; None when
    the image cannot be read or has no transparency (it brings its own background). Kept for
    the process while the file is unchanged: a preview rebuild asks at every save."""
    try:
        signature = file_signature(path)
    except OSError:
        return None
    return _visible_share(path, signature, background)


@functools.lru_cache(maxsize=32)
def _visible_share(path: Path, signature: FileSignature, background: str) -> float | None:
    try:
        from PIL import Image  # noqa: PLC0415 (heavy: only a logo to measure needs Pillow)

        with Image.open(path) as opened:
            image = opened.convert("RGBA")
    except OSError:  # Pillow's UnidentifiedImageError is an OSError
        return None
    image.thumbnail((96, 96))
    pixels = image.width * image.height
    # Each distinct colour once (a logo has few): this runs on every send's check.
    colours = image.getcolors(maxcolors=pixels) or []
    opaque = [
        (count, colour)
        for count, colour in colours
        if isinstance(colour, tuple) and colour[3] >= 128  # RGBA: always a tuple
    ]
    drawn = sum(count for count, _ in opaque)
    if not drawn or drawn > 0.99 * pixels:
        return None
    visible = sum(
        count
        for count, (red, green, blue, _) in opaque
        if contrast_ratio(f"#{red:02x}{green:02x}{blue:02x}", background) >= MIN_CONTRAST
    )
    return visible / drawn


def check_logo_contrast(context: CheckContext) -> list[Finding]:
    """A warning for each logo (light, and dark-mode) too faint against its masthead."""
    settings = context.settings
    config = settings.config_path
    on_brand = settings.masthead == "brand"
    light_background = settings.brand_color if on_brand else "#ffffff"
    dark_background = settings.brand_color if on_brand else DARK_CARD
    checks: list[tuple[str, str, str, str]] = []
    if settings.logo and not settings.logo.startswith("https://"):
        checks.append(("logo", settings.logo, light_background, "the masthead"))
        if settings.color_scheme == "light dark" and not settings.logo_dark and not on_brand:
            checks.append(("logo", settings.logo, dark_background, "the masthead in dark mode"))
    if settings.logo_dark and not settings.logo_dark.startswith("https://"):
        checks.append(("logo_dark", settings.logo_dark, dark_background, "the dark-mode masthead"))
    findings: list[Finding] = []
    for key, reference, background, where in checks:
        share = visible_share(settings.root / reference, background)
        if share is None or share >= MIN_VISIBLE_SHARE:
            continue
        hint = (
            'set masthead = "plain" or use a logo in white'
            if on_brand
            else "add logo_dark (a light version for dark mode)"
            if "dark" in where
            else 'use a darker logo or masthead = "brand"'
        )
        findings.append(
            Finding(
                "warning",
                "logo-contrast",
                f"the {key.replace('_', ' ')} {reference} barely shows on {where} ({background}):"
                f" only {share:.0%} of it reaches {MIN_CONTRAST:g}:1 contrast; {hint}",
                file=config,
                line=context.locator.key_line(config, key, table="newsletter"),
            )
        )
    return findings
