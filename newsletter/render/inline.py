"""CSS inlining with premailer, guarded against its known pitfalls.

- mjml's own `<style>` blocks (media queries, client resets, `@font-face`) are left as they are:
  premailer would strip their `!important` and drop `@font-face`.
- Only the theme's inline CSS is inlined, and a rule marked `!important` beats an inline style, as
  in a browser (premailer always lets the inline style win).
- Slot markers are plain letters and digits, so premailer's URL quoting cannot mangle them.
- premailer's rules for a stylesheet are kept (inline_rules.py): the next document with the same
  stylesheet is inlined with them, with the same output, without loading premailer and cssutils.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class InlineWork:
    """How this process's inlining went: with premailer, or with its stored rules (`known`)."""

    premailer: int = 0
    known: int = 0


work = InlineWork()

_STYLE_OPEN = re.compile(r"<style(?![^>]*data-premailer)", re.I)
_TAG = re.compile(r"<([a-zA-Z][a-zA-Z0-9-]*)(\s[^<>]*?)?(/?)>", re.S)
# premailer writes style='...' when a value holds double quotes (a quoted font name).
_STYLE_ATTR = re.compile(r"""\sstyle=(?:"([^"]*)"|'([^']*)')""", re.I)
_SAVED_ATTR = re.compile(r'\sdata-nl-style="([^"]*)"', re.I)


def inline_css(
    html: str, css: str, *, align_images: bool | None = None, rules_dir: Path | None = None
) -> str:
    """Inline `css` into `html`; existing `<style>` blocks stay untouched in the head.

    `align_images`: premailer's `align` attribute for images floated left or right; None: only
    when an image can be floated at all (`_may_float`), since premailer parses every image's
    style for it with cssutils, a third of the inlining time.

    `rules_dir`: where premailer's rules for a stylesheet are kept between processes
    (inline_rules.py); with them, a document is inlined without loading premailer. Without it
    they are kept in this process only.
    """
    if not css.strip():
        return html
    protected = _STYLE_OPEN.sub('<style data-premailer="ignore"', html)
    # Move existing inline styles aside so premailer writes only the rules' declarations; they are
    # merged back below with the right precedence.
    protected = _TAG.sub(_saving, protected)
    head_end = protected.lower().find("</head>")
    style_block = f"<style>{css}</style>"
    if head_end == -1:
        protected = style_block + protected
    else:
        protected = protected[:head_end] + style_block + protected[head_end:]
    may_float = _may_float(protected, css) if align_images is None else align_images
    result = None if may_float else _inline_known(protected, rules_dir)
    if result is None:
        result = _premailer(protected, align_images=may_float, rules_dir=rules_dir)
        work.premailer += 1
    else:
        work.known += 1
    result = _TAG.sub(_merging, result)
    return result.replace(' data-premailer="ignore"', "")


_IMG = re.compile(r"<img\b", re.I)
# Attributes as HTML writes them, quotes only around whole values: where a tag's text is not
# this, the `>` that `_TAG` stopped at may sit inside a value, and more attributes follow.
_PLAIN_ATTRIBUTES = re.compile(
    r"""(?:\s+[^\s"'=<>/`]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?)*\s*"""
)
_BARE_STYLE = re.compile(r"(?<![-\w])style\s*=", re.I)


def _inline_known(protected: str, rules_dir: Path | None) -> str | None:
    """`protected` inlined with premailer's stored rules for its stylesheet; None when
    premailer must run (no rules stored yet, or a document the rules alone cannot do)."""
    from . import inline_rules  # noqa: PLC0415 (lxml: only a render inlines)

    versions = _versions()

    def lookup(stylesheet: str) -> inline_rules.RuleBook | None:
        return inline_rules.find_book(inline_rules.book_key(stylesheet, versions), rules_dir)

    result = inline_rules.apply_known_rules(protected, lookup)
    return result if isinstance(result, str) else None


def _premailer(protected: str, *, align_images: bool, rules_dir: Path | None) -> str:
    """premailer itself; afterwards its rules for the stylesheet are kept (inline_rules.py)."""
    # premailer brings lxml, cssutils and requests: 0.3-0.7 s of imports, paid only by a render
    # whose stylesheet has no stored rules.
    from premailer import Premailer  # noqa: PLC0415 (heavy, only rendering needs it)

    from . import inline_rules  # noqa: PLC0415 (lxml: only a render inlines)

    def make(html: str | None = None) -> Premailer:
        return Premailer(
            html,
            keep_style_tags=False,
            strip_important=False,
            disable_validation=True,
            cssutils_logging_level=logging.CRITICAL,
            allow_network=False,
            remove_classes=False,
            disable_leftover_css=False,
            # A CSS `height: auto` must not overwrite an image's pixel height attribute
            # (Outlook needs the number; the style keeps proportions on phones).
            disable_basic_attributes=list(inline_rules.DISABLED_ATTRIBUTES),
            align_floating_images=align_images,
        )

    result: str = make(protected).transform(pretty_print=False)
    # The stylesheet as premailer read it; its rules, for the next document.
    found = inline_rules.apply_known_rules(protected, lambda stylesheet: None)
    if isinstance(found, inline_rules.Unknown):
        key = inline_rules.book_key(found.stylesheet, _versions())
        if inline_rules.find_book(key, rules_dir) is None:
            inline_rules.keep_book(key, inline_rules.learn_book(found.stylesheet, make), rules_dir)
    return result


def _versions() -> list[str]:
    """The installed distributions whose versions can change premailer's rules."""
    from .cache import _distributions  # noqa: PLC0415 (cycle-free only at call time)

    return _distributions()


def _may_float(protected: str, css: str) -> bool:
    """Whether premailer could find `float` in an image's style: when the CSS to inline says it
    (or hides a word in CSS escapes), or an `<img>` kept a style of its own that `_save_style`
    did not move aside (a tag `_TAG` cannot read, an unquoted style)."""
    if "float" in css.lower() or "\\" in css:
        return True
    for image in _IMG.finditer(protected):
        tag = _TAG.match(protected, image.start())
        if tag is None:
            return True
        attributes = tag.group(2) or ""
        if not _PLAIN_ATTRIBUTES.fullmatch(attributes) or _BARE_STYLE.search(attributes):
            return True
    return False


def _per_tag(change: Callable[[re.Match[str]], str]) -> Callable[[re.Match[str]], str]:
    """`change` kept per tag text: MJML repeats the same tags (749 tags, 107 different ones in a
    20-item issue), and a tag's result depends on its text alone."""
    done: dict[str, str] = {}

    def apply(match: re.Match[str]) -> str:
        tag = match.group(0)
        found = done.get(tag)
        if found is None:
            if len(done) >= _TAGS_KEPT:
                done.clear()
            found = done[tag] = change(match)
        return found

    return apply


_TAGS_KEPT = 4096


def _save_style(match: re.Match[str]) -> str:
    attrs = match.group(2) or ""
    if not _STYLE_ATTR.search(attrs):
        return match.group(0)
    attrs = _STYLE_ATTR.sub(
        lambda m: ' data-nl-style="' + _value(m).replace('"', "'") + '"', attrs, count=1
    )
    return f"<{match.group(1)}{attrs}{match.group(3)}>"


def _merge_style(match: re.Match[str]) -> str:
    attrs = match.group(2) or ""
    saved = _SAVED_ATTR.search(attrs)
    if not saved:
        return match.group(0) if "!important" not in attrs else _rebuild(match, attrs, "")
    attrs = _SAVED_ATTR.sub("", attrs)
    return _rebuild(match, attrs, saved.group(1))


def _rebuild(match: re.Match[str], attrs: str, original: str) -> str:
    from_rules = _STYLE_ATTR.search(attrs)
    rules = _declarations(_value(from_rules)) if from_rules else []
    merged: dict[str, str] = {}
    important: set[str] = set()
    for name, value in rules:
        if value.endswith("!important"):
            merged[name] = value[: -len("!important")].strip()
            important.add(name)
        else:
            merged[name] = value
    for name, value in _declarations(original):
        if name not in important:
            merged.pop(name, None)  # keep the original's place in the order
            merged[name] = value
    # One double-quoted attribute: quotes inside values become single quotes (same CSS).
    style = ";".join(f"{name}:{value}" for name, value in merged.items()).replace('"', "'")
    attrs = _STYLE_ATTR.sub("", attrs)
    if style:
        attrs += f' style="{style}"'
    return f"<{match.group(1)}{attrs}{match.group(3)}>"


_saving = _per_tag(_save_style)
_merging = _per_tag(_merge_style)


def _value(match: re.Match[str]) -> str:
    """A style attribute's value, whichever quotes it had."""
    return match.group(1) if match.group(1) is not None else match.group(2)


def _declarations(style: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if "(" in style or "'" in style or '"' in style:
        pieces = _split_outside(style)
    else:  # most styles: nothing to keep whole, and a character loop is slow
        pieces = style.split(";")
    for piece in pieces:
        name, sep, value = piece.partition(":")
        if sep and name.strip():
            pairs.append((name.strip().lower(), " ".join(value.split())))
    return pairs


def _split_outside(style: str) -> list[str]:
    """Split on semicolons outside parentheses and quotes (url(data:...;base64,...) stays whole)."""
    depth, quote, start = 0, "", 0
    pieces: list[str] = []
    for index, char in enumerate(style):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"" and not style[max(0, index - 5) : index].endswith("&quot"):
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == ";" and depth == 0:
            pieces.append(style[start:index])
            start = index + 1
    pieces.append(style[start:])
    return pieces
