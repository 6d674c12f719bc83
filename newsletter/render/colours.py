"""Colour arithmetic of the theme and the checks: WCAG contrast, readable text, the dark palette.

Its own module so that the checks measure colours without loading the renderer.
"""

from __future__ import annotations

__all__ = ["DARK_CARD", "contrast_ratio", "dark_palette", "link_colour", "readable_on"]


def _luminance(colour: str) -> float:
    value = colour.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    channels = [int(value[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(first: str, second: str) -> float:
    """WCAG contrast ratio of two colours."""
    light, dark = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def readable_on(background: str) -> str:
    """White or near-black text, whichever reads better on `background`."""
    return "#ffffff" if contrast_ratio(background, "#ffffff") >= 4.5 else "#111111"


def _mix(colour: str, other: str, share: float) -> str:
    """`colour` moved `share` of the way towards `other` (both #rrggbb or #rgb)."""

    def channels(value: str) -> list[int]:
        value = value.lstrip("#")
        if len(value) == 3:
            value = "".join(c * 2 for c in value)
        return [int(value[i : i + 2], 16) for i in (0, 2, 4)]

    mixed = [
        round(a + (b - a) * share) for a, b in zip(channels(colour), channels(other), strict=True)
    ]
    return "#" + "".join(f"{c:02x}" for c in mixed)


DARK_CARD = "#1c2124"


def dark_palette(brand: str) -> dict[str, str]:
    """The dark-mode colours: near-black page and cards, light text (WCAG AA on the cards), and
    the brand colour lightened until links read on the card."""
    link = brand
    for step in range(11):
        link = _mix(brand, "#ffffff", step / 10)
        if contrast_ratio(link, DARK_CARD) >= 4.5:
            break
    return {
        "background": "#121517",
        "card": DARK_CARD,
        "text": "#e4e8e9",
        "muted": "#a9b4ba",
        "border": "#353d42",
        "link": link,
    }


def link_colour(brand: str, text: str) -> str:
    """The brand colour for links when it is readable on white (WCAG AA), else the text colour."""
    return brand if contrast_ratio(brand, "#ffffff") >= 4.5 else text
