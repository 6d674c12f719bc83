"""Per-recipient slots: text rendered once per issue with holes filled in per recipient.

An issue is rendered once. Wherever a template or item used a per-recipient value
(`{{ subscriber.first_name }}`, the unsubscribe URL, ...) the rendered text holds a `Slot`.
Personalising a message is then only splicing a few strings together.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# The per-recipient values the theme and the message headers can use besides subscriber fields.
UNSUBSCRIBE_URL = "unsubscribe_url"
WEB_URL = "web_url"


@dataclass(frozen=True)
class Slot:
    """A hole for one per-recipient value.

    `path` is what the template asked for: `subscriber.name`, `subscriber.first_name`,
    `subscriber.<attribute>`, `unsubscribe_url` or `web_url`. `default` is used when the
    subscriber has no (or an empty) value; None means the value is required.
    """

    path: str
    default: str | None = None
    # The slot starts a link or image address (`href`, `src`, ...): its value decides the
    # scheme, so it goes through `safe_url` (a subscriber's `javascript:` must not run).
    url: bool = False

    @property
    def field(self) -> str | None:
        """The subscriber field name for `subscriber.*` slots, else None."""
        prefix = "subscriber."
        return self.path[len(prefix) :] if self.path.startswith(prefix) else None


# Schemes a per-recipient value may give a link or image address; a value without a scheme
# (`/path`, `//host/path`, `page.html`) is kept too.
SAFE_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# What browsers ignore in a URL: leading C0 controls and spaces, and tabs and line breaks anywhere
# (`java\tscript:` is `javascript:`).
_URL_IGNORED = re.compile(r"[\t\n\r]|^[\x00-\x20\x7f]+")


def safe_url(value: str) -> str:
    """`value` if, read as a URL, its scheme is http, https, mailto or tel (or it has none);
    `#` otherwise (`javascript:`, `data:`, `vbscript:`, ...)."""
    compact = _URL_IGNORED.sub("", value)
    match = _SCHEME.match(compact)
    if match is not None and match.group(1).lower() not in SAFE_SCHEMES:
        return "#"
    if match is None and ":" in re.split(r"[/?#]", compact, maxsplit=1)[0]:
        return "#"  # a colon before any slash that is not a scheme: not worth guessing
    return value


Part = str | Slot


@dataclass(frozen=True)
class SlotText:
    """Text with holes: static strings and `Slot`s in order."""

    parts: tuple[Part, ...]

    @classmethod
    def plain(cls, text: str) -> SlotText:
        return cls((text,) if text else ())

    @property
    def slots(self) -> tuple[Slot, ...]:
        return tuple(part for part in self.parts if isinstance(part, Slot))

    def fill(self, value: Callable[[Slot], str]) -> str:
        """Join the parts, asking `value` for each slot (it escapes as the context needs)."""
        return "".join(part if isinstance(part, str) else value(part) for part in self.parts)

    def __iter__(self) -> Iterator[Part]:
        return iter(self.parts)
