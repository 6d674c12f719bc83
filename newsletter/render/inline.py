"""CSS inlining with premailer, guarded against its known pitfalls.

- mjml's own `<style>` blocks (media queries, client resets, `@font-face`) are left as they are:
  premailer would strip their `!important` and drop `@font-face`.
- Only the theme's inline CSS is inlined, and a rule marked `!important` beats an inline style, as
  in a browser (premailer always lets the inline style win).
- Slot markers are plain letters and digits, so premailer's URL quoting cannot mangle them.
"""

from __future__ import annotations

import logging
import re

_STYLE_OPEN = re.compile(r"<style(?![^>]*data-premailer)", re.I)
_TAG = re.compile(r"<([a-zA-Z][a-zA-Z0-9-]*)(\s[^<>]*?)?(/?)>", re.S)
# premailer writes style='...' when a value holds double quotes (a quoted font name).
_STYLE_ATTR = re.compile(r"""\sstyle=(?:"([^"]*)"|'([^']*)')""", re.I)
_SAVED_ATTR = re.compile(r'\sdata-nl-style="([^"]*)"', re.I)


def inline_css(html: str, css: str) -> str:
    """Inline `css` into `html`; existing `<style>` blocks stay untouched in the head."""
    if not css.strip():
        return html
    protected = _STYLE_OPEN.sub('<style data-premailer="ignore"', html)
    # Move existing inline styles aside so premailer writes only the rules' declarations; they are
    # merged back below with the right precedence.
    protected = _TAG.sub(_save_style, protected)
    head_end = protected.lower().find("</head>")
    style_block = f"<style>{css}</style>"
    if head_end == -1:
        protected = style_block + protected
    else:
        protected = protected[:head_end] + style_block + protected[head_end:]
    # premailer brings lxml, cssutils and requests: 0.3-0.7 s of imports, paid only by a render.
    from premailer import Premailer  # noqa: PLC0415 (heavy, only rendering needs it)

    inliner = Premailer(
        protected,
        keep_style_tags=False,
        strip_important=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        allow_network=False,
        remove_classes=False,
        disable_leftover_css=False,
        # A CSS `height: auto` must not overwrite an image's pixel height attribute (Outlook
        # needs the number; the style keeps proportions on phones).
        disable_basic_attributes=["height"],
    )
    result: str = inliner.transform(pretty_print=False)
    result = _TAG.sub(_merge_style, result)
    return result.replace(' data-premailer="ignore"', "")


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


def _value(match: re.Match[str]) -> str:
    """A style attribute's value, whichever quotes it had."""
    return match.group(1) if match.group(1) is not None else match.group(2)


def _declarations(style: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    # Split on semicolons outside parentheses and quotes (url(data:...;base64,...) stays whole).
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
    for piece in pieces:
        name, sep, value = piece.partition(":")
        if sep and name.strip():
            pairs.append((name.strip().lower(), " ".join(value.split())))
    return pairs
