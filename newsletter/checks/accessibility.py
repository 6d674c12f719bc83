"""Accessibility: the language is declared, headings do not skip levels, link texts say where they
go, and the theme's text colours are readable on their backgrounds (WCAG AA).

Link texts. A text such as "Read more" or "klik hier" tells a screen-reader user, who often lists
the links of a message on their own, nothing about where the link goes. How labels count:
- `aria-label` names the link for assistive technology, so a descriptive one makes the link fine.
- `title` (the theme's buttons carry "Read more: <item title>") is not read out by every screen
  reader and never shown on touch screens. The button sits right under its item's heading, which
  is the link's context (WCAG 2.4.4 allows purpose from context), so a vague text with a
  descriptive title is an *info* finding suggesting a `link_text`, not a warning.
- A vague text with neither is a warning.
- A link with no text at all (an icon with empty alt) is a warning, unless another link to the
  same address has text, as the theme's social icons beside their network's name do.
"""

from __future__ import annotations

import re

from ..render.colours import contrast_ratio, link_colour, readable_on
from .context import CheckContext, LinkTag, Location
from .model import Finding

AA_NORMAL_TEXT = 4.5
WHITE = "#ffffff"

# Link texts that say nothing about the target, in the languages the theme ships (en, nl).
VAGUE_LINK_TEXTS = frozenset(
    {
        "click here",
        "click",
        "here",
        "read more",
        "more",
        "learn more",
        "more info",
        "link",
        "this link",
        "this",
        "go",
        "continue",
        "klik hier",
        "klik",
        "hier",
        "lees meer",
        "lees verder",
        "meer",
        "meer info",
        "meer informatie",
        "deze link",
        "verder",
    }
)


def check_accessibility(context: CheckContext) -> list[Finding]:
    findings: list[Finding] = []
    lang = (context.scan.lang or "").strip()
    if not lang or lang.lower() == "und":  # MJML writes "und" (undetermined) when none is set
        findings.append(
            Finding(
                "warning",
                "lang-missing",
                "the HTML has no <html lang> language: screen readers cannot pick the right "
                'voice; set <mjml lang="{{ lang }}"> in the theme',
                context.email_template,
            )
        )
    findings += _headings(context)
    findings += _link_texts(context)
    findings += _contrast(context)
    return findings


def _headings(context: CheckContext) -> list[Finding]:
    findings: list[Finding] = []
    previous = 0
    for heading in context.scan.headings:
        if heading.level > previous + 1:
            where = _text_location(context, heading.text)
            after = f"h{previous}" if previous else "the start of the email"
            findings.append(
                Finding(
                    "warning",
                    "heading-skipped",
                    f"heading '{heading.text}' is an h{heading.level} right after {after}: a "
                    "level is skipped, which confuses screen-reader navigation",
                    where.file,
                    where.line,
                )
            )
        previous = heading.level
    return findings


def normalise_link_text(text: str) -> str:
    """Lower case, single spaces, no surrounding punctuation or arrows."""
    return re.sub(r"^[\W_]+|[\W_]+$", "", " ".join(text.lower().split()))


def is_vague(text: str) -> bool:
    return normalise_link_text(text) in VAGUE_LINK_TEXTS


def _link_texts(context: CheckContext) -> list[Finding]:
    findings: list[Finding] = []
    named_targets = {link.href for link in context.scan.links if link.text.strip()}
    seen: set[tuple[str, str]] = set()
    for link in context.scan.links:
        if (link.href, link.text) in seen:
            continue
        seen.add((link.href, link.text))
        label = (link.aria_label or "").strip()
        title = (link.title or "").strip()
        where = _link_location(context, link)
        if not link.text.strip():
            if (label and not is_vague(label)) or link.href in named_targets:
                continue
            findings.append(
                Finding(
                    "warning",
                    "link-text-empty",
                    f"a link has no text (an image without alt text?): {_short(link.href)}",
                    where.file,
                    where.line,
                    _url(link.href),
                )
            )
            continue
        if not is_vague(link.text) or (label and not is_vague(label)):
            continue
        if title and not is_vague(title):
            findings.append(
                Finding(
                    "info",
                    "link-text-title",
                    f"link text '{link.text}' relies on its title ('{title}'), which many screen "
                    "readers skip; give the item a 'link_text' that says where it goes",
                    where.file,
                    where.line,
                    _url(link.href),
                )
            )
            continue
        findings.append(
            Finding(
                "warning",
                "link-text-vague",
                f"link text '{link.text}' does not say where the link goes; name the place "
                f"instead{_example(context)}",
                where.file,
                where.line,
                _url(link.href),
            )
        )
    return findings


# Examples in the newsletter's language; none rather than one in another language.
_EXAMPLES = {"en": ", e.g. 'the festival programme'", "nl": ", bijv. 'het festivalprogramma'"}


def _example(context: CheckContext) -> str:
    return _EXAMPLES.get(context.settings.locale.replace("-", "_").split("_")[0].lower(), "")


def _contrast(context: CheckContext) -> list[Finding]:
    settings = context.settings
    config = settings.config_path
    brand_line = context.locator.key_line(config, "brand_color", table="newsletter")
    text_line = context.locator.key_line(config, "text_color", table="newsletter")
    on_brand = readable_on(settings.brand_color)
    pairs = (
        ("body text", settings.text_color, WHITE, "text_color", text_line),
        ("masthead text", on_brand, settings.brand_color, "brand_color", brand_line),
        ("button text", on_brand, settings.brand_color, "brand_color", brand_line),
        (
            "link text",
            link_colour(settings.brand_color, settings.text_color),
            WHITE,
            "text_color",
            text_line,
        ),
    )
    findings: list[Finding] = []
    for what, foreground, background, key, line in pairs:
        ratio = contrast_ratio(foreground, background)
        if ratio < AA_NORMAL_TEXT:
            findings.append(
                Finding(
                    "warning",
                    "contrast-low",
                    f"{what} ({foreground} on {background}) has a contrast of {ratio:.1f}:1; "
                    f"WCAG AA asks for {AA_NORMAL_TEXT}:1: change newsletter.{key}",
                    config,
                    line,
                )
            )
    return findings


def _link_location(context: CheckContext, link: LinkTag) -> Location:
    where = (
        context.locator.link(link.text, link.href)
        if link.href and "://" in link.href
        else Location()
    )
    if where.file is None and link.text:
        where = _text_location(context, link.text)
    return where


def _text_location(context: CheckContext, text: str) -> Location:
    where = context.locator.find(text)
    return where if where.file is not None else Location(context.email_template)


def _url(href: str) -> str | None:
    return href if "://" in href else None


def _short(href: str) -> str:
    return href if len(href) <= 80 else href[:77] + "..."
