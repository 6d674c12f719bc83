"""Who gets an issue: tags and a small, documented audience expression language.

One audience, two spellings. In `issue.md` (YAML front matter)::

    audience:
      tags: [members, board]     # tagged members OR board (left out: any subscriber)
      exclude: [press]           # and NOT tagged press
      where:                     # and every condition holds (exact, case-sensitive text)
        city: Utrecht            # the attribute city is "Utrecht"
        region: [Noord, Zuid]    # the attribute region is "Noord" or "Zuid"

and on the command line (`send --audience`, `subscribers list --audience`)::

    tag:members,tag:board,-tag:press,city=Utrecht,region=Noord,region=Zuid

Items are separated by commas; a bare word is a tag (`members,-press`); a value with a comma is
quoted (`city="Den Haag, Centrum"`, `""` for a quote inside). Tags of one kind widen (any of),
kinds narrow (all of). `all` (or `everyone`) is every subscriber. Only subscribed people are
ever in an audience.

Nothing is evaluated: an expression becomes a `Segment` (tag names and literal values, checked
and put in a canonical order), which `audience.tags` turns into SQL with parameters. Two
segments are the same audience exactly when their `expression` (the canonical compact form)
is the same: the send ledger records it so a resumed send keeps its audience.

Tags are letters and digits (any script), `-`, `_` and `.`, starting with a letter or digit,
at most 64 characters; they are compared case-insensitively (stored casefolded) and white space
inside becomes `-` (`Board Members` is `board-members`).

This module depends only on `errors`: content (issue.md), the audience store and the CLI all
read expressions through it.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import AudienceError

__all__ = [
    "EVERYONE",
    "Condition",
    "Segment",
    "SegmentSyntaxError",
    "import_tag",
    "normalise_tag",
    "parse_audience",
    "parse_front_matter",
]

TAG_MAX = 64
KEY_MAX = 64
VALUE_MAX = 500
ITEMS_MAX = 200  # tags and values in one expression: an audience, not a subscriber list

# Words the compact form and YAML take for "every subscriber".
_EVERYONE_WORDS = ("all", "everyone")
# C0 and C1 controls, DEL, and Unicode line and paragraph separators: never part of a tag or
# a value to match (stored attributes are checked on import; these would only hide text).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_TAG_PUNCTUATION = frozenset("-_.")
_KEY = re.compile(r"[a-z_][a-z0-9_]*")
# Keys that are not attributes, and what to write instead.
_NOT_ATTRIBUTES = {
    "tag": "write a tag as tag:NAME (or just NAME), not tag=NAME",
    "tags": "write tags as tag:NAME (or just NAME)",
    "email": "an audience selects on tags and attributes, not on addresses",
    "name": "an audience selects on tags and attributes, not on names",
    "status": "only subscribed people are ever in an audience",
}
_YAML_KEYS = ("tags", "exclude", "where")


class SegmentSyntaxError(AudienceError):
    """An audience expression that cannot be read; `line` is where in the file, when known."""

    def __init__(self, message: str, *, line: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.line = line


def _shown(char: str) -> str:
    """A character for an error message: `'\\x1b'`, `'"'`, `'ж'`."""
    return repr(char) if char != "'" else '"\'"'


def normalise_tag(text: str) -> str:
    """`text` as a tag: NFC, trimmed, casefolded, inner white space as `-`.

    SegmentSyntaxError naming the tag and the first character not allowed; nothing is dropped
    silently (a tag typed at the prompt is meant as typed).
    """
    tag = re.sub(r"\s+", "-", unicodedata.normalize("NFC", text).strip()).casefold()
    if not tag:
        raise SegmentSyntaxError("a tag cannot be empty")
    for char in tag:
        if not (char.isalnum() or char in _TAG_PUNCTUATION):
            raise SegmentSyntaxError(
                f"tag {text!r}: {_shown(char)} is not allowed",
                hint="Tags are letters, digits, - _ and . (e.g. board-members).",
            )
    if not tag[0].isalnum():
        raise SegmentSyntaxError(
            f"tag {text!r} must start with a letter or digit",
            hint="A leading - means 'not' in an audience: -press excludes the tag press.",
        )
    if len(tag) > TAG_MAX:
        raise SegmentSyntaxError(f"tag {text[:20]!r}… is longer than {TAG_MAX} characters")
    return tag


def import_tag(text: str) -> str | None:
    """A tag name from another tool's export (Mailchimp `Partners & Friends`), made a tag:
    every run of characters a tag cannot hold becomes `-` (`partners-friends`). None when
    nothing is left."""
    plain = unicodedata.normalize("NFC", text).strip().casefold()
    slug = "".join(c if c.isalnum() or c in _TAG_PUNCTUATION else " " for c in plain)
    slug = re.sub(r"\s+", "-", slug.strip()).strip("-_.")[:TAG_MAX].strip("-_.")
    return slug or None


def _key(text: str) -> str:
    key = text.strip().lower().replace("-", "_").replace(" ", "_")
    if key in _NOT_ATTRIBUTES:
        raise SegmentSyntaxError(f"{text.strip()!r} is not an attribute: {_NOT_ATTRIBUTES[key]}")
    if not _KEY.fullmatch(key) or len(key) > KEY_MAX:
        raise SegmentSyntaxError(
            f"{text.strip()!r} is not an attribute name",
            hint="Attribute names are lower case letters, digits and _ (as `newsletter "
            "subscribers list` shows them), e.g. city or member_type.",
        )
    return key


def _value(key: str, text: str) -> str:
    found = _CONTROL.search(text)
    if found is not None:
        raise SegmentSyntaxError(f"the value for {key} holds the control character {found[0]!r}")
    value = text.strip()
    if not value:
        raise SegmentSyntaxError(f"no value for {key}")
    if len(value) > VALUE_MAX:
        raise SegmentSyntaxError(f"the value for {key} is longer than {VALUE_MAX} characters")
    return value


@dataclass(frozen=True)
class Condition:
    """The attribute `key` is exactly one of `values` (sorted, distinct)."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Segment:
    """An audience: subscribers with any of `tags` (when given), none of `exclude`, and every
    condition in `where`. Build with `Segment.of`, `parse_audience` or `parse_front_matter`:
    they check and order the parts, so equal audiences are equal segments."""

    tags: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    where: tuple[Condition, ...] = ()

    @classmethod
    def of(
        cls,
        tags: Iterable[str] = (),
        exclude: Iterable[str] = (),
        where: Mapping[str, Iterable[str]] | Iterable[tuple[str, str]] = (),
    ) -> Segment:
        """A checked segment; SegmentSyntaxError naming the tag, key or value at fault."""
        tags = [tags] if isinstance(tags, str) else tags
        exclude = [exclude] if isinstance(exclude, str) else exclude
        included = sorted({normalise_tag(t) for t in tags})
        excluded = sorted({normalise_tag(t) for t in exclude})
        both = set(included) & set(excluded)
        if both:
            raise SegmentSyntaxError(f"tag {min(both)!r} is both included and excluded")
        pairs = (
            [(k, v) for k, vs in where.items() for v in ([vs] if isinstance(vs, str) else vs)]
            if isinstance(where, Mapping)
            else list(where)
        )
        values: dict[str, set[str]] = {}
        for raw_key, raw_value in pairs:
            key = _key(raw_key)
            values.setdefault(key, set()).add(_value(key, raw_value))
        conditions = tuple(Condition(k, tuple(sorted(values[k]))) for k in sorted(values))
        if len(included) + len(excluded) + sum(len(c.values) for c in conditions) > ITEMS_MAX:
            raise SegmentSyntaxError(f"the audience has more than {ITEMS_MAX} tags and values")
        return cls(tuple(included), tuple(excluded), conditions)

    @property
    def everyone(self) -> bool:
        """Whether this is every subscriber (no tag or condition)."""
        return not (self.tags or self.exclude or self.where)

    @property
    def expression(self) -> str:
        """The canonical compact form (`all` for everyone): what the ledger records, and what
        `parse_audience` reads back to an equal segment."""
        if self.everyone:
            return "all"
        items = [f"tag:{t}" for t in self.tags] + [f"-tag:{t}" for t in self.exclude]
        items += [f"{c.key}={_quote(v)}" for c in self.where for v in c.values]
        return ",".join(items)

    def describe(self) -> str:
        """For people: `tagged members or board, not tagged press, city is Utrecht`."""
        if self.everyone:
            return "every subscriber"
        parts = []
        if self.tags:
            parts.append("tagged " + " or ".join(self.tags))
        if self.exclude:
            parts.append("not tagged " + " or ".join(self.exclude))
        for condition in self.where:
            shown = " or ".join(repr(v) for v in condition.values)
            parts.append(f"{condition.key} is {shown}")
        return ", ".join(parts)


EVERYONE = Segment()


def _quote(value: str) -> str:
    """A value as the compact form writes it: quoted only when a comma or a leading quote
    would be misread."""
    if "," in value or value.startswith('"'):
        return '"' + value.replace('"', '""') + '"'
    return value


# One item of the compact form: `key=value`, `key="quoted, value"`, or a tag (maybe `-`, `tag:`).
_ITEM = re.compile(
    r'\s*(?:(?P<key>[^,="]+?)\s*=\s*(?:"(?P<quoted>(?:[^"]|"")*)"|(?P<plain>[^,]*))'
    r'|(?P<tag>[^,="]*?))\s*(?:,|\Z)'
)


def parse_audience(text: str) -> Segment:
    """The compact form (`tag:members,-tag:press,city=Utrecht`; `all`) as a Segment.

    SegmentSyntaxError saying which item is wrong and why.
    """
    found = _CONTROL.search(text)
    if found is not None:
        raise SegmentSyntaxError(f"the audience holds the control character {found[0]!r}")
    stripped = text.strip()
    if stripped.casefold() in _EVERYONE_WORDS:
        return EVERYONE
    if not stripped:
        raise SegmentSyntaxError("the audience is empty", hint="Write 'all' for every subscriber.")
    if stripped.endswith(","):
        raise SegmentSyntaxError("the audience ends with a comma")
    tags: list[str] = []
    exclude: list[str] = []
    where: list[tuple[str, str]] = []
    position = 0
    while position < len(stripped):
        match = _ITEM.match(stripped, position)
        if match is None or match.end() == position:
            rest = stripped[position:]
            reason = "an unclosed quote" if '"' in rest else "cannot be read"
            raise SegmentSyntaxError(f"the audience at {rest[:30]!r}: {reason}")
        position = match.end()
        if match["key"] is not None:
            key = match["key"].strip()
            if key.startswith("-"):
                raise SegmentSyntaxError(
                    f"{match.group(0).strip(' ,')!r}: only a tag can be excluded with -",
                    hint="To leave out one value, list the values you want instead.",
                )
            if match["quoted"] is not None:
                value = match["quoted"].replace('""', '"')
            else:
                value = match["plain"]
                if value.lstrip().startswith('"'):
                    raise SegmentSyntaxError(f"the value for {key.strip()}: an unclosed quote")
            where.append((key, value))
            continue
        item = match["tag"].strip()
        if not item:
            raise SegmentSyntaxError(
                "the audience has an empty item (two commas in a row, or one at the end?)"
            )
        negate = item.startswith("-")
        item = item[1:].lstrip() if negate else item
        if item.casefold().startswith("tag:"):
            item = item[4:]
        (exclude if negate else tags).append(item)
    return Segment.of(tags, exclude, where)


def _lines(value: object) -> Mapping[str, int]:
    lines = value.get("__lines__") if isinstance(value, dict) else None
    return lines if isinstance(lines, dict) else {}


def _texts(value: object, what: str, line: int | None) -> list[str]:
    """A YAML scalar or list of text (`tags: members`, `tags: [members, board]`)."""
    items = value if isinstance(value, list) else [value]
    texts: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise SegmentSyntaxError(
                f'{what}: {item!r} is not text; put it in quotes ("{item}")', line=line
            )
        texts.append(item)
    return texts


def parse_front_matter(value: object, *, line: int | None = None, offset: int = 0) -> Segment:
    """`audience:` of issue.md as a Segment: a compact string, a list of tags, or a mapping
    with `tags`, `exclude` and `where`.

    `line` is the line of the `audience:` key; nested mappings may carry `__lines__` (each
    key's line in the YAML text), to which `offset` is added. SegmentSyntaxError has the line
    of the part at fault.
    """
    try:
        if isinstance(value, str):
            return parse_audience(value)
        if isinstance(value, list):
            return Segment.of(tags=_texts(value, "tags", line))
    except SegmentSyntaxError as err:
        raise SegmentSyntaxError(err.message, line=line, hint=err.hint) from None
    if not isinstance(value, dict):
        raise SegmentSyntaxError(
            "must be tags and conditions (e.g. 'tags: [members]' under it), a list of tags, "
            "or text like 'tag:members,-tag:press'",
            line=line,
        )
    lines = _lines(value)

    def where_is(key: str) -> int | None:
        found = lines.get(key)
        return found + offset if isinstance(found, int) else line

    parts = {k: v for k, v in value.items() if k != "__lines__"}
    for key in parts:
        if key not in _YAML_KEYS:
            close = difflib.get_close_matches(str(key), _YAML_KEYS, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise SegmentSyntaxError(
                f"unknown key '{key}' under audience{hint} (known: {', '.join(_YAML_KEYS)})",
                line=where_is(str(key)),
            )
    if not parts:
        raise SegmentSyntaxError(
            "names no tags or conditions; to send to every subscriber, leave audience out "
            "or write 'audience: all'",
            line=line,
        )
    found: dict[str, list[str]] = {"tags": [], "exclude": []}
    for key in ("tags", "exclude"):
        raw = parts.get(key)
        if raw is None:
            continue
        texts = _texts(raw, key, where_is(key))
        if not isinstance(raw, list):
            texts = texts[0].split(",")  # `tags: members, board` reads as two tags
        found[key] = texts
        try:
            Segment.of(tags=texts)
        except SegmentSyntaxError as err:
            raise SegmentSyntaxError(err.message, line=where_is(key), hint=err.hint) from None
    where: list[tuple[str, str]] = []
    raw_where = parts.get("where")
    if raw_where is not None:
        if not isinstance(raw_where, dict):
            raise SegmentSyntaxError(
                "where: must be attribute conditions, one per line (e.g. 'city: Utrecht')",
                line=where_is("where"),
            )
        where_lines = _lines(raw_where)
        for key, raw in raw_where.items():
            if key == "__lines__":
                continue
            at = where_lines.get(str(key))
            key_line = at + offset if isinstance(at, int) else where_is("where")
            if raw is None or (isinstance(raw, list) and not raw):
                raise SegmentSyntaxError(f"where: no value for {key}", line=key_line)
            pairs = [(str(key), text) for text in _texts(raw, f"where: {key}", key_line)]
            try:
                Segment.of(where=pairs)
            except SegmentSyntaxError as err:
                raise SegmentSyntaxError(err.message, line=key_line, hint=err.hint) from None
            where += pairs
    try:
        return Segment.of(found["tags"], found["exclude"], where)
    except SegmentSyntaxError as err:
        raise SegmentSyntaxError(err.message, line=line, hint=err.hint) from None
