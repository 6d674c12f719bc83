"""MJML to HTML with mjml-python, guarded: it passes unknown `<mj-*>` tags through silently and
ignores `<mj-style inline="inline">`, so tags are checked here and inline CSS is handed back."""

from __future__ import annotations

import re
from pathlib import Path

import mjml

from ..errors import Problem

KNOWN_TAGS = frozenset(
    (
        "mjml mj-head mj-body mj-attributes mj-all mj-class mj-breakpoint mj-font "
        "mj-html-attributes mj-html-attribute mj-selector mj-preview mj-style mj-title "
        "mj-accordion mj-accordion-element mj-accordion-title mj-accordion-text mj-button "
        "mj-carousel mj-carousel-image mj-column mj-divider mj-group mj-hero mj-image mj-navbar "
        "mj-navbar-link mj-raw mj-section mj-social mj-social-element mj-spacer mj-table mj-text "
        "mj-wrapper"
    ).split()
)
_TAG = re.compile(r"<(mj-[a-zA-Z0-9-]+|mjml)\b")
_INLINE_STYLE = re.compile(
    r"<mj-style\b[^>]*\binline\s*=\s*[\"']inline[\"'][^>]*>(.*?)</mj-style>", re.S | re.I
)


def unknown_tags(source: str, *, file: Path | None, template_source: str | None) -> list[Problem]:
    """Problems for every `<mj-*>` tag MJML does not know, with the template line if found."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for match in _TAG.finditer(source):
        tag = match.group(1)
        if tag in KNOWN_TAGS or tag in seen:
            continue
        seen.add(tag)
        line = None
        if template_source is not None:
            position = template_source.find(f"<{tag}")
            if position != -1:
                line = template_source.count("\n", 0, position) + 1
        hint = " (use Jinja's {% include %} instead)" if tag == "mj-include" else ""
        problems.append(Problem(f"unknown MJML tag <{tag}>{hint}", file=file, line=line))
    return problems


def extract_inline_css(source: str) -> tuple[str, str]:
    """Remove `<mj-style inline="inline">` blocks; return (mjml without them, their CSS)."""
    css: list[str] = []

    def take(match: re.Match[str]) -> str:
        css.append(match.group(1))
        return ""

    return _INLINE_STYLE.sub(take, source), "\n".join(css)


def compile_mjml(source: str, *, file: Path | None) -> tuple[str | None, list[Problem]]:
    """Compile MJML to HTML; invalid MJML becomes a problem naming the template."""
    try:
        html: str = mjml.mjml2html(source)
    except Exception as err:  # mjml-python raises ValueError, maybe others from the Rust side
        return None, [Problem(f"invalid MJML: {err}", file=file)]
    leftover = sorted(set(re.findall(r"<(mj-[a-z0-9-]+)", html)))
    if leftover:
        return None, [Problem(f"MJML left tags uncompiled: {', '.join(leftover)}", file=file)]
    return html, []
