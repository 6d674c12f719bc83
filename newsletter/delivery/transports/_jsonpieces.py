"""JSON request bodies spliced from pieces encoded once per issue (Postmark, Brevo).

JSON-encoding a message is most of the cost of a provider request, and nearly all of it is the
same for every recipient: the static text of the html and plain bodies. JSON escaping works
character by character, so a body's static pieces are encoded once and joined with each
recipient's encoded values; the bodies are never built as strings.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring

from ..content import SlotContext
from ..message import Personalisation


def json_bytes(value: object) -> bytes:
    """`value` as compact JSON, UTF-8 (non-ASCII characters as they are)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_string(value: str) -> bytes:
    """`json_bytes(value)` of a string (json's own C escaping, without an encoder object)."""
    return encode_basestring(value).encode("utf-8")


@dataclass(frozen=True)
class EncodedText:
    """A provider template's text as JSON string content: static pieces encoded once, and the
    (slot index, context) key of the value between each two of them."""

    statics: tuple[bytes, ...]
    keys: tuple[tuple[int, SlotContext], ...]

    @classmethod
    def split(cls, text: str, marker: str) -> EncodedText:
        """`text` holds `marker index:context marker` in each hole."""
        pieces = text.split(marker)
        keys: list[tuple[int, SlotContext]] = []
        for hole in pieces[1::2]:
            index, context = hole.split(":")
            keys.append((int(index), _context(context)))
        return cls(tuple(json_bytes(piece)[1:-1] for piece in pieces[0::2]), tuple(keys))

    def fill(self, values: Mapping[tuple[int, SlotContext], str], parts: list[bytes]) -> None:
        """Append the text with `values` (already escaped for their context) to `parts`."""
        parts.append(self.statics[0])
        for key, static in zip(self.keys, self.statics[1:], strict=True):
            parts += (json_string(values[key])[1:-1], static)


def encoded_bodies(found: Personalisation) -> tuple[EncodedText, EncodedText]:
    """The html and plain bodies of `found`'s issue (and test flag), as `EncodedText`."""
    marker = f"\ue000{secrets.token_hex(8)}\ue000"  # cannot occur in the issue
    template = found.provider_template(lambda n, context: f"{marker}{n}:{context}{marker}")
    return EncodedText.split(template.html, marker), EncodedText.split(template.text, marker)


def _context(name: str) -> SlotContext:
    if name == "html":
        return "html"
    if name == "text":
        return "text"
    if name == "subject":
        return "subject"
    raise ValueError(f"unknown slot context {name!r}")
