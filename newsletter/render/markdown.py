"""Markdown to HTML (markdown-it-py, CommonMark plus tables) and to readable plain text."""

from __future__ import annotations

import html as html_lib
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

TEXT_WIDTH = 72


@dataclass(frozen=True)
class BodyImage:
    """An image written in Markdown (`![alt](src)`): its source and 0-based line in the text."""

    src: str
    line: int


@dataclass(frozen=True)
class ShownImage:
    """What an image in the Markdown becomes in the email: its `src` and displayed size."""

    src: str
    width: int | None
    height: int | None


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    # Raw HTML stays off: item files are content, and the theme decides the markup.
    parser = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable(
        ["table", "strikethrough"]
    )
    parser.add_render_rule("image", _render_image)
    return parser


def _render_image(
    self: Any, tokens: Sequence[Token], index: int, options: Any, env: Mapping[str, Any]
) -> str:
    """`<img>` with the prepared image's src, width and height (from `env["images"]`)."""
    token = tokens[index]
    src = str(token.attrGet("src") or "")
    shown = env.get("images", {}).get(src) if isinstance(env, Mapping) else None
    alt = self.renderInlineAsText(token.children or [], options, env)
    attrs = {"src": shown.src if shown else src, "alt": alt}
    title = token.attrGet("title")
    if title:
        attrs["title"] = str(title)
    if shown and shown.width:
        attrs["width"] = str(shown.width)
        if shown.height:
            attrs["height"] = str(shown.height)
    # Scales down on narrow screens; height:auto keeps the proportions the attributes give.
    attrs["style"] = "display:block;max-width:100%;height:auto;border:0;"
    rendered = " ".join(f'{key}="{html_lib.escape(value)}"' for key, value in attrs.items())
    return f"<img {rendered}>"


# Markdown is parsed for the HTML, the text and the images of each item, and the preview renders
# every item again on each save: the results are kept per source (they depend on nothing else;
# the parser's options are fixed), so an edit parses only the edited item.
_KEEP = 512


def body_images(source: str) -> list[BodyImage]:
    """Every `![alt](src)` in `source`, with the line it is on (0-based)."""
    return list(_body_images(source))


@lru_cache(maxsize=_KEEP)
def _body_images(source: str) -> tuple[BodyImage, ...]:
    found: list[BodyImage] = []
    for token in _parser().parse(source):
        if token.type != "inline" or token.map is None:
            continue
        start = token.map[0]
        for child in token.children or []:
            if child.type == "softbreak" or child.type == "hardbreak":
                start += 1
            elif child.type == "image":
                found.append(BodyImage(str(child.attrGet("src") or ""), start))
    return tuple(found)


def to_html(source: str, images: Mapping[str, ShownImage] | None = None) -> str:
    """CommonMark with tables and strikethrough; raw HTML in the source is escaped.

    `images` maps an image's `src` as written to what the email shows instead.
    """
    return _to_html(source, tuple(sorted((images or {}).items())))


@lru_cache(maxsize=_KEEP)
def _to_html(source: str, images: tuple[tuple[str, ShownImage], ...]) -> str:
    html: str = _parser().render(source, {"images": dict(images)})
    return html


@lru_cache(maxsize=_KEEP)
def to_text(source: str, width: int = TEXT_WIDTH) -> str:
    """Plain text that reads well in a mail client: wrapped, every link kept, no entities."""
    tokens = _parser().parse(source)
    writer = _TextWriter(width)
    writer.blocks(tokens)
    return writer.result()


@dataclass
class _TextWriter:
    width: int
    out: list[str] = field(default_factory=list)
    prefixes: list[tuple[str, str]] = field(default_factory=list)  # (first line, following lines)
    list_stack: list[list[int]] = field(default_factory=list)  # [next number] or [] for bullets

    def result(self) -> str:
        return "\n".join(self.out).strip("\n") + "\n" if self.out else ""

    def emit_block(self, text: str, *, wrap: bool = True) -> None:
        first, rest = self._prefix()
        if self.out and self.out[-1] != "" and not self.prefixes:
            self.out.append("")
        if wrap:
            lines = textwrap.wrap(
                text,
                width=max(20, self.width - len(rest)),
                break_long_words=False,
                break_on_hyphens=False,
            ) or [""]
        else:
            lines = text.split("\n")
        for index, line in enumerate(lines):
            self.out.append((first if index == 0 else rest) + line)
        if self.prefixes:
            # Only the first line of a list item carries the bullet.
            bullet, indent = self.prefixes[-1]
            self.prefixes[-1] = (indent, indent)
            _ = bullet

    def _prefix(self) -> tuple[str, str]:
        first = "".join(p[0] for p in self.prefixes)
        rest = "".join(p[1] for p in self.prefixes)
        return first, rest

    def blocks(self, tokens: Sequence[Token]) -> None:
        index = 0
        while index < len(tokens):
            token = tokens[index]
            kind = token.type
            if kind == "heading_open":
                text = self.inline(tokens[index + 1])
                level = int(token.tag[1])
                if self.out and self.out[-1] != "":
                    self.out.append("")
                self.out.append(text)
                self.out.append(("=" if level <= 2 else "-") * min(len(text), self.width))
                index += 3
                continue
            if kind == "paragraph_open":
                self.emit_block(self.inline(tokens[index + 1]))
                index += 3
                continue
            if kind in ("bullet_list_open", "ordered_list_open"):
                start = int(token.attrGet("start") or 1) if kind == "ordered_list_open" else 0
                self.list_stack.append([start] if kind == "ordered_list_open" else [])
                if self.out and self.out[-1] != "" and len(self.list_stack) == 1:
                    self.out.append("")
            elif kind in ("bullet_list_close", "ordered_list_close"):
                self.list_stack.pop()
                if not self.list_stack:
                    self.out.append("")
            elif kind == "list_item_open":
                counter = self.list_stack[-1] if self.list_stack else []
                if counter:
                    bullet = f"{counter[0]}. "
                    counter[0] += 1
                else:
                    bullet = "- "
                self.prefixes.append((bullet, " " * len(bullet)))
            elif kind == "list_item_close":
                self.prefixes.pop()
            elif kind == "blockquote_open":
                self.prefixes.append(("> ", "> "))
            elif kind == "blockquote_close":
                self.prefixes.pop()
            elif kind in ("fence", "code_block"):
                self.emit_block(token.content.rstrip("\n"), wrap=False)
            elif kind == "hr":
                self.emit_block("-" * 20, wrap=False)
            elif kind == "table_open":
                index = self.table(tokens, index)
                continue
            index += 1

    def table(self, tokens: Sequence[Token], index: int) -> int:
        rows: list[list[str]] = []
        row: list[str] = []
        while tokens[index].type != "table_close":
            token = tokens[index]
            if token.type == "tr_open":
                row = []
            elif token.type == "inline":
                row.append(self.inline(token))
            elif token.type == "tr_close":
                rows.append(row)
            index += 1
        if self.out and self.out[-1] != "":
            self.out.append("")
        for cells in rows:
            self.out.append(" | ".join(cells))
        self.out.append("")
        return index + 1

    def inline(self, token: Token) -> str:
        parts: list[str] = []
        links: list[tuple[str, int]] = []  # (href, position where the link text started)
        for child in token.children or []:
            kind = child.type
            if kind in ("text", "code_inline"):
                parts.append(child.content)
            elif kind in ("softbreak", "hardbreak"):
                parts.append(" ")
            elif kind in ("em_open", "em_close"):
                parts.append("_")  # the plain-text conventions readers know: _this_, *this*
            elif kind in ("strong_open", "strong_close"):
                parts.append("*")
            elif kind == "link_open":
                links.append((str(child.attrGet("href") or ""), len("".join(parts))))
            elif kind == "link_close" and links:
                href, start = links.pop()
                label = "".join(parts)[start:].strip()
                bare = href.removeprefix("mailto:")
                if label not in (href, bare):
                    parts.append(f" ({bare if href.startswith('mailto:') else href})")
            elif kind == "image":
                alt = child.content or str(child.attrGet("alt") or "")
                if alt:
                    parts.append(f"[{alt}]")
        return "".join(parts).strip()
