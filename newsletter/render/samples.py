"""Filling a rendered issue's slots for a made-up subscriber: what build, check and preview show.

The sample subscriber itself is `Subscriber.sample(settings.locale)` (named in the project's
language); callers pass it in as a mapping, so that the renderer needs nothing of the audience.
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Callable, Mapping

from ..config import Settings
from ..slots import UNSUBSCRIBE_URL, WEB_URL, Slot, safe_url
from .model import RenderedIssue

__all__ = ["sample_filler"]


def sample_filler(
    rendered: RenderedIssue,
    settings: Settings,
    sample: Mapping[str, str],
    *,
    html: bool,
    unsubscribe_url: str | None = None,
) -> Callable[[Slot], str]:
    """Fill slots for a sample subscriber (previews and builds), escaped for HTML when asked."""
    web_url = f"{settings.base_url}{rendered.name}/web.html" if settings.base_url else ""
    unsubscribe = (
        unsubscribe_url
        or settings.unsubscribe.url
        or (
            f"mailto:{settings.unsubscribe.mailto}"
            if settings.unsubscribe.mailto
            else "#unsubscribe"
        )
    )

    def value(slot: Slot) -> str:
        if slot.path == UNSUBSCRIBE_URL:
            found = unsubscribe
        elif slot.path == WEB_URL:
            found = web_url
        else:
            found = sample.get(slot.field or "", "") or (slot.default or "")
            found = safe_url(found) if slot.url else found
        found = " ".join(found.split()) if not html else found
        return html_lib.escape(found, quote=True) if html else found

    return value
