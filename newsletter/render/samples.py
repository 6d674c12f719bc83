"""Filling a rendered issue's slots for a made-up subscriber: what build, check and preview show.

The sample subscriber itself is `Subscriber.sample(settings.locale)` (named in the project's
language); callers pass it in as a mapping, so that the renderer needs nothing of the audience.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from ..config import Settings
from ..content import Issue
from ..errors import Problem
from ..slots import UNSUBSCRIBE_URL, WEB_URL, Slot, safe_url
from .model import RenderedIssue
from .theme import package_theme_dir

__all__ = ["missing_sample_values", "sample_filler"]


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


def missing_sample_values(
    rendered: RenderedIssue, issue: Issue, settings: Settings, sample: Mapping[str, str]
) -> list[Problem]:
    """Subscriber fields used without a default that the sample subscriber has no value for.

    `build`, `check` and `send` all run this, so they agree. Each problem names the file and
    line where the field is used (the issue's Markdown first, then the templates).
    """
    problems: list[Problem] = []
    seen: set[str] = set()
    for part in (rendered.subject, rendered.html, rendered.text):
        for slot in part.slots:
            field = slot.field
            if field is None or slot.default is not None or field in seen or sample.get(field):
                continue
            seen.add(field)
            file, line = _where_used(field, issue, settings)
            problems.append(
                Problem(
                    f"subscriber.{field} has no value for the sample subscriber and no default, "
                    "so subscribers without it cannot be sent this issue; give it a default: "
                    f'{{{{ subscriber.{field} | default("...") }}}}',
                    file=file,
                    line=line,
                )
            )
    return problems


def _where_used(field: str, issue: Issue, settings: Settings) -> tuple[Path | None, int | None]:
    pattern = re.compile(
        rf"subscriber\s*(?:\.\s*{re.escape(field)}\b|\[\s*['\"]{re.escape(field)}['\"]\s*\])"
    )
    paths = [item.path for item in issue.items] + [issue.path]
    if settings.templates_dir.is_dir():
        paths += sorted(p for p in settings.templates_dir.rglob("*.j2") if p.is_file())
    paths += sorted(package_theme_dir().glob("*.j2"))
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError):
            continue
        found = pattern.search(text)
        if found:
            return path, text.count("\n", 0, found.start()) + 1
    return None, None
