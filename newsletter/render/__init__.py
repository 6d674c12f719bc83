"""Rendering an issue: Markdown → Jinja2 → MJML → HTML → inlined CSS, and the text part.

The renderer is `issue.render_issue`; its names are imported from here (`from newsletter.render
import render_issue`) and loaded on first use, so that what only reads a rendered issue (the
model, a cached render: `cache.py`) does not load Jinja, markdown-it and MJML.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .colours import DARK_CARD, contrast_ratio, dark_palette, link_colour, readable_on

if TYPE_CHECKING:
    from .issue import CONTENT_WIDTH, IMAGE_WIDTHS, RenderedIssue, render_issue

__all__ = [
    "CONTENT_WIDTH",
    "DARK_CARD",
    "IMAGE_WIDTHS",
    "RenderedIssue",
    "contrast_ratio",
    "dark_palette",
    "link_colour",
    "readable_on",
    "render_issue",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import issue  # noqa: PLC0415 (the renderer, loaded on first use: see above)

    return getattr(issue, name)
