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
    source, labels = _carry_button_titles(source)
    try:
        html: str = mjml.mjml2html(source)
    except Exception as err:  # mjml-python raises ValueError, maybe others from the Rust side
        return None, [Problem(f"invalid MJML: {err}", file=file)]
    leftover = sorted(set(re.findall(r"<(mj-[a-z0-9-]+)", html)))
    if leftover:
        return None, [Problem(f"MJML left tags uncompiled: {', '.join(leftover)}", file=file)]
    return _restore_button_titles(html, labels), []


_BUTTON = re.compile(r"<mj-button\b([^>]*)>")
_TITLE = re.compile(r'\stitle="([^"]*)"')
_CARRIER = re.compile(r'\sname="nl-button-(\d+)"')


def _carry_button_titles(source: str) -> tuple[str, list[str]]:
    """mjml-python drops mj-button's `title` but keeps `name`: carry each title in a `name`."""
    labels: list[str] = []

    def carry(match: re.Match[str]) -> str:
        attrs = match.group(1)
        title = _TITLE.search(attrs)
        if title is None or " name=" in attrs:
            return match.group(0)
        labels.append(title.group(1))
        return f'<mj-button{attrs} name="nl-button-{len(labels) - 1}">'

    return _BUTTON.sub(carry, source), labels


def _restore_button_titles(html: str, labels: list[str]) -> str:
    """Each carried title back as the link's `title` and `aria-label` (its accessible name:
    "Read more: <item title>" where the button only shows "Read more")."""

    def restore(match: re.Match[str]) -> str:
        label = labels[int(match.group(1))]
        return f' title="{label}" aria-label="{label}"'

    return _CARRIER.sub(restore, html) if labels else html
