"""Inlining with premailer's results for a known stylesheet, without loading premailer.

premailer spends most of a render's inlining time, and 0.2-0.3 s of imports (cssutils, requests),
on things that depend only on the stylesheet: parsing it into rules, ordering them by
specificity and normalising each rule's declarations. The theme's stylesheet changes rarely;
the document changes with every edit. So premailer's rule list for a stylesheet (as premailer
computed it: `_parse_style_rules`, `csstext_to_pairs`) is kept in a small file, and a later
document is inlined by applying those rules the way premailer's `transform` applies them (the
same lxml parser, the same selectors, the same merge and the same serialisation).

Where premailer would need cssutils for the document itself, `apply_known_rules` declines
(returns None) and the caller runs premailer: an element that keeps a style of its own, rules
that premailer leaves in a `<style>` block (media queries, pseudo-classes), a document without a
`<head>`, several stylesheets. The caller also runs premailer when floated images need an
`align`. That the two paths agree is tested on every variant of the theme
(tests/test_render_inline_rules.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "1"
# premailer's options in inline.py that change what is written; the fast path follows them.
DISABLED_ATTRIBUTES = ("height",)
_SHORT_COLOUR = re.compile(r"^#([0-9a-f])([0-9a-f])([0-9a-f])$", re.I)
_FILTER_PSEUDO = (":last-child", ":first-child", ":nth-child")


@dataclass(frozen=True)
class RuleBook:
    """premailer's rules for one stylesheet, in the order it applies them: (CSS selector, its
    XPath as lxml.cssselect translates it, declarations). `usable` is False when premailer
    would need more than these rules (it leaves rules in a `<style>` block): then premailer
    inlines every document."""

    rules: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]
    usable: bool


@dataclass(frozen=True)
class Unknown:
    """No rule book yet for `stylesheet` (the `<style>` text premailer will read)."""

    stylesheet: str


_books: dict[str, RuleBook] = {}


def book_key(stylesheet: str, versions: list[str]) -> str:
    """The name of a stylesheet's rule book: the stylesheet, the installed premailer, cssutils
    and lxml (their dist-info names: `versions`), this module's format and options."""
    digest = hashlib.sha256()
    for part in (FORMAT, repr(DISABLED_ATTRIBUTES), repr(versions), stylesheet):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(f"{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def find_book(key: str, folder: Path | None) -> RuleBook | None:
    """The rule book `key`: kept in this process, or read from `folder`; None if unknown."""
    book = _books.get(key)
    if book is None and folder is not None:
        book = _read(folder / f"{key}.json", key)
        if book is not None:
            _books[key] = book
    return book


def keep_book(key: str, book: RuleBook, folder: Path | None) -> None:
    """Remember `book` in this process and, if given, in `folder` (a failed write only costs
    the next process premailer again)."""
    _books[key] = book
    if folder is None:
        return
    data = json.dumps(
        {
            "format": FORMAT,
            "key": key,
            "usable": book.usable,
            "rules": [
                [selector, path, [list(pair) for pair in pairs]]
                for selector, path, pairs in book.rules
            ],
        },
        ensure_ascii=True,
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(handle, "w", encoding="ascii") as out:
                out.write(data)
            os.replace(temporary, folder / f"{key}.json")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        pass


def _read(path: Path, key: str) -> RuleBook | None:
    """A stored rule book; None when absent, torn or not this key's."""
    try:
        entry = json.loads(path.read_text(encoding="ascii"))
        if entry["format"] != FORMAT or entry["key"] != key:
            return None
        rules: list[tuple[str, str, tuple[tuple[str, str], ...]]] = []
        for selector, path, pairs in entry["rules"]:
            if not isinstance(selector, str) or not isinstance(path, str):
                return None
            declarations = []
            for name, value in pairs:
                if not isinstance(name, str) or not isinstance(value, str):
                    return None
                declarations.append((name, value))
            rules.append((selector, path, tuple(declarations)))
        return RuleBook(tuple(rules), entry["usable"] is True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def learn_book(stylesheet: str, make_premailer: Callable[[], Any]) -> RuleBook:
    """premailer's own rules for `stylesheet` (premailer is loaded: a render that ran it)."""
    from lxml.cssselect import CSSSelector  # noqa: PLC0415 (premailer loaded it)
    from premailer.merge_style import csstext_to_pairs  # noqa: PLC0415 (premailer is loaded here)

    inliner = make_premailer()
    rules, leftover = inliner._parse_style_rules(stylesheet, 0)
    if leftover:
        return RuleBook((), usable=False)
    ordered = []
    for _, selector, bulk in sorted(rules, key=lambda rule: rule[0]):
        if ":" in selector:
            # As premailer's transform: a pseudo-class it does not filter on is applied as a
            # `{...} :hover{...}` style, which the fast path does not write.
            pseudo = ":" + selector.split(":", 1)[1]
            if pseudo not in _FILTER_PSEUDO and not pseudo.startswith(":nth-child"):
                return RuleBook((), usable=False)
        path = CSSSelector(selector).path
        if "__lxml_internal" in path:
            # A function only lxml.cssselect registers (`:contains()`), not a plain XPath.
            return RuleBook((), usable=False)
        pairs = tuple((str(name), str(value)) for name, value in csstext_to_pairs(bulk, False))
        ordered.append((selector, path, pairs))
    return RuleBook(tuple(ordered), usable=True)


def apply_known_rules(
    html: str, lookup: Callable[[str], RuleBook | None]
) -> str | RuleBook | Unknown | None:
    """`html` inlined as premailer (inline.py's options) would, with the rule book `lookup`
    finds for the document's stylesheet.

    Returns the HTML; `Unknown(stylesheet)` when there is no book for it yet; the unusable
    `RuleBook` or None when premailer must do it (see the module docstring).
    """
    from lxml import etree  # noqa: PLC0415 (only a render inlines)

    stripped = html.strip()
    page = etree.fromstring(stripped, etree.HTMLParser())
    if page is None:
        return None
    tree = page.getroottree()
    root = tree if stripped.startswith(tree.docinfo.doctype) else page
    if not _select(HEAD)(tree):
        return None  # premailer would add one
    sheets = []
    for element in _select(STYLE)(page):
        media = element.get("media")
        if media and media not in ("all", "screen"):
            continue
        marker = element.get("data-premailer")
        if marker == "ignore":
            del element.attrib["data-premailer"]
            continue
        if marker:
            return None
        sheets.append(element)
    if len(sheets) != 1:
        return None
    stylesheet = sheets[0].text or ""
    book = lookup(stylesheet)
    if book is None:
        return Unknown(stylesheet)
    if not book.usable:
        return book
    sheet = sheets[0]
    parent = sheet.getparent()
    if parent is None:
        return None
    parent.remove(sheet)  # premailer's: the stylesheet was all inlined
    matched: dict[Any, list[tuple[tuple[str, str], ...]]] = {}
    for _, path, pairs in book.rules:
        for element in _select(path)(page):
            matched.setdefault(element, []).append(pairs)
    for element, styles in matched.items():
        if element.get("style"):
            return None  # premailer parses an element's own style with cssutils
        merged: dict[str, str] = {}
        for pairs in styles:
            for name, value in pairs:
                merged[name] = value
        style = "; ".join(f"{name}:{value}" for name, value in merged.items()).strip()
        if style:
            element.set("style", style)
        for name, value in _html_attributes(style):
            element.set(name, value)
    out: bytes = etree.tostring(root, method="html", pretty_print=False, encoding="utf-8")
    return out.decode("utf-8")


# lxml.cssselect's XPath for `head` and `style` (tested), so that a render need not load it.
HEAD = "descendant-or-self::head"
STYLE = "descendant-or-self::style"
# Compiled XPaths per thread (lxml's evaluators are not meant to be shared between threads).
_compiled = threading.local()


def _select(path: str) -> Any:
    """The compiled XPath `path` (kept in this thread, for the preview's rebuilds)."""
    kept: dict[str, Any] | None = getattr(_compiled, "paths", None)
    if kept is None:
        kept = _compiled.paths = {}
    found = kept.get(path)
    if found is None:
        from lxml import etree  # noqa: PLC0415 (only a render inlines)

        found = kept[path] = etree.XPath(path)
    return found


def _html_attributes(style: str) -> list[tuple[str, str]]:
    """The HTML attributes premailer writes for a merged style (`align`, `valign`, `bgcolor`,
    `width`), overwriting any the element had; `height` is disabled in inline.py."""
    if style.count("}") and style.count("{") == style.count("}"):
        style = style.split("}")[0][1:]
    found: dict[str, str] = {}
    for declaration in style.split(";"):
        parts = declaration.split(":")
        if len(parts) != 2:
            continue
        name, value = parts[0].strip(), parts[1]
        if name == "text-align":
            found["align"] = value.strip()
        elif name == "vertical-align":
            found["valign"] = value.strip()
        elif name == "background-color" and "transparent" not in value.lower():
            found["bgcolor"] = _SHORT_COLOUR.sub(r"#\1\1\2\2\3\3", value.strip())
        elif name in ("width", "height"):
            value = value.strip()
            found[name] = value[:-2] if value.endswith("px") else value
    return [(name, value) for name, value in found.items() if name not in DISABLED_ATTRIBUTES]
