"""CSV files of subscribers: reading the layouts other tools export, and writing our own.

Import reads UTF-8 (with or without a BOM) or BOM-marked UTF-16 (Excel's "Unicode Text"); a file
that is neither but reads as Windows-1252 (Excel's "CSV" on Western European Windows) is read so
with a warning naming the guess; `encoding` reads exactly the encoding given. Anything else is
refused with the line of the first bad byte. The delimiter (`,` `;` tab) is the one the header
line uses most. A tussenvoegsel column (`Tussenvoegsel`, "van der") is kept: `last_name` becomes
"van der Berg", with `particle` and `family_name` apart. Headers are matched case-insensitively:
Mailchimp (`Email Address`, `First Name`, `Last Name`, and `UNSUB_TIME`/`CLEAN_TIME` that mark
people who must not be mailed), listmonk (`email`, `name`, `attributes` as a JSON object,
`status`), Substack (`email`, ...), plain `email,name`, and Dutch headers (`e-mailadres`, `naam`,
`voornaam`, `tussenvoegsel`, `achternaam`). Tag columns (Mailchimp's `TAGS`, listmonk's `lists`,
`tags`, `labels`) give the row tags: `"Volunteers","Board"`, `members, board` or a JSON list;
a name a tag cannot hold is renamed (`Partners & Friends` → `partners-friends`, with a warning).
Every other column becomes an attribute
under a snake_case key (`Favourite Colour` → `favourite_colour`), usable as `subscriber.<key>`.

This module only parses and writes; `SubscriberStore.import_csv` and `export_csv` use it. An
import streams: `open_csv` checks the encoding a block at a time and `parse_rows` yields one
checked row (or problem) at a time, so memory does not grow with the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..errors import AudienceError
from ..segment import import_tag
from .addresses import RESERVED_KEYS, address_key, attribute_key, check_name, normalise_address
from .model import Subscriber, SubscriberStatus, parse_status

__all__ = [
    "ColumnMapping",
    "CsvRow",
    "ImportProblemsError",
    "ImportReport",
    "RowProblem",
    "open_csv",
    "parse_csv",
    "parse_rows",
    "read_csv_text",
    "write_csv",
]


@dataclass(frozen=True)
class ColumnMapping:
    """Which CSV columns (header text, case-insensitive) hold what; None: detect it."""

    email: str | None = None
    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    particle: str | None = None


@dataclass(frozen=True)
class RowProblem:
    """A CSV row that was not imported: its physical line in the file and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class ImportReport:
    """What an import did. `kept_unsubscribed` counts rows for people who unsubscribed (bounced,
    complained) and were left so; `resubscribed` those subscribed again on request."""

    file: Path
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_unsubscribed: int = 0
    resubscribed: int = 0
    problems: tuple[RowProblem, ...] = ()
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line of counts, for people."""
        parts = [
            f"{self.added} added",
            f"{self.updated} updated",
            f"{self.unchanged} unchanged",
            f"{self.kept_unsubscribed} kept unsubscribed",
        ]
        if self.resubscribed:
            parts.append(f"{self.resubscribed} resubscribed")
        if self.problems:
            parts.append(f"{len(self.problems)} skipped")
        return ", ".join(parts)


class ImportProblemsError(AudienceError):
    """A strict import found problems; nothing was imported. `problems` lists them all."""

    shown = 20

    def __init__(self, file: Path, problems: Iterable[RowProblem]) -> None:
        self.file = file
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = [f"{file}: {count} problem{'s' if count != 1 else ''}; nothing was imported"]
        lines += [f"  {file}:{p.line}: {p.reason}" for p in self.problems[: self.shown]]
        if count > self.shown:
            lines.append(f"  ... and {count - self.shown} more")
        super().__init__(
            "\n".join(lines), hint="Fix the rows, or import without --strict to skip them."
        )


# Header words (as attribute keys) for each role, in English and Dutch (the built-in locales).
_ROLE_ALIASES = {
    "email": frozenset(
        {
            "email",
            "email_address",
            "e_mail",
            "e_mail_address",
            "emailaddress",
            "mail",
            "e_mailadres",
            "emailadres",
        }
    ),
    "name": frozenset({"name", "full_name", "fullname", "display_name", "naam"}),
    "first_name": frozenset({"first_name", "firstname", "fname", "given_name", "voornaam"}),
    "last_name": frozenset(
        {"last_name", "lastname", "lname", "surname", "family_name", "achternaam"}
    ),
    # Dutch tussenvoegsel ("van der"), or a particle column of other tools.
    "particle": frozenset(
        {"tussenvoegsel", "tussenvoegsels", "voorvoegsel", "particle", "name_particle", "infix"}
    ),
    "status": frozenset({"status"}),
    "attributes": frozenset({"attributes", "attribs"}),  # listmonk: a JSON object
}
_ROLE_WORDS = {
    "first_name": "first name",
    "last_name": "last name",
    "particle": "name particle (tussenvoegsel)",
}

# Other tools' status words. listmonk: enabled / disabled / blocklisted.
_STATUS_ALIASES = {
    "": None,
    "enabled": SubscriberStatus.SUBSCRIBED,
    "active": SubscriberStatus.SUBSCRIBED,
    "disabled": SubscriberStatus.UNSUBSCRIBED,
    "blocklisted": SubscriberStatus.UNSUBSCRIBED,
    "cleaned": SubscriberStatus.BOUNCED,
}

# Mailchimp exports unsubscribed and cleaned contacts with these columns filled in: importing such
# a file must not make them subscribers.
_MAILCHIMP_STATUS_COLUMNS = {
    "unsub_time": SubscriberStatus.UNSUBSCRIBED,
    "clean_time": SubscriberStatus.BOUNCED,
}

_DELIMITERS = (",", ";", "\t")

# Columns of tag names: Mailchimp's TAGS, listmonk's lists, our own export's tags.
_TAG_COLUMNS = frozenset({"tags", "tag", "lists", "labels"})
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class _Layout:
    """Column positions for each role, and the attribute key of every other column."""

    width: int
    email: int
    name: int | None
    first_name: int | None
    last_name: int | None
    particle: int | None
    status: int | None
    json_attributes: int | None
    extras: tuple[tuple[int, str], ...]
    status_columns: tuple[tuple[int, SubscriberStatus], ...]
    tag_columns: tuple[int, ...] = ()


@dataclass(frozen=True)
class CsvRow:
    """One checked row of a CSV file: its physical line, key, and what it says."""

    line: int
    key: str
    email: str
    name: str
    attributes: dict[str, str]
    status: SubscriberStatus | None
    tags: tuple[str, ...] = ()
    # (as written in the file, the tag it became) for tags that had to be renamed
    renamed_tags: tuple[tuple[str, str], ...] = ()


def read_csv_text(path: Path, encoding: str | None = None) -> tuple[str, tuple[str, ...]]:
    """The file's text and any warning about how it was read.

    Without `encoding`: UTF-8 (BOM or not) or BOM-marked UTF-16; a file that is neither but reads
    as Windows-1252 (what Excel saves as "CSV" on Western European Windows) is read so, with a
    warning naming the guess. With `encoding` (any Python codec name: cp1252, latin-1,
    mac-roman...), exactly that, strictly.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise AudienceError(f"{path}: no such file") from err
    except OSError as err:
        raise AudienceError(f"{path}: cannot be read ({err.strerror})") from err
    if encoding is not None:
        return _decode_as(path, raw, encoding), ()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # Excel's "Unicode Text" export: UTF-16 with a byte order mark.
        try:
            return raw.decode("utf-16"), ()
        except UnicodeDecodeError as err:
            raise AudienceError(f"{path}: the file is not valid UTF-16 text") from err
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8"), ()
    except UnicodeDecodeError as err:
        bad = err.start
    line = raw.count(b"\n", 0, bad) + 1
    utf8_error = AudienceError(
        f"{path}:{line}: the file is not UTF-8 text (byte 0x{raw[bad]:02X})",
        hint="Give its encoding with --encoding (e.g. --encoding cp1252), or save the file "
        "as 'CSV UTF-8' (Excel) or with the Unicode (UTF-8) character set (LibreOffice).",
    )
    try:
        text = raw.decode("cp1252")
    except UnicodeDecodeError:
        raise utf8_error from None
    if re.search(r"[\x00-\x08\x0e-\x1f\x7f]", text):
        raise utf8_error  # control characters: not text in any 8-bit encoding
    return text, (
        f"{path}: not UTF-8; read as Windows-1252 (Excel's 'CSV' on Western European Windows), "
        f"first non-ASCII text on line {line}: check the names, or give the encoding with "
        "--encoding (--encoding utf-8 refuses anything else)",
    )


def _decode_as(path: Path, raw: bytes, encoding: str) -> str:
    try:
        codec = codecs.lookup(encoding)
    except LookupError as err:
        raise AudienceError(
            f"{path}: unknown encoding {encoding!r}",
            hint="Use a name like utf-8, cp1252 (Excel on Western European Windows), latin-1, "
            "utf-16 or mac-roman.",
        ) from err
    if codec.name == "utf-8" and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode(codec.name)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise AudienceError(
            f"{path}:{line}: the file is not {encoding} text (byte 0x{raw[err.start]:02X})",
            hint="Check the encoding the file was saved with.",
        ) from err


_BLOCK = 1 << 20  # bytes decoded at a time while checking a file's encoding


def open_csv(path: Path, encoding: str | None = None) -> tuple[TextIO, tuple[str, ...]]:
    """The file opened as text (`newline=""`, for `csv`), and any warning about how it is read.

    The same rules as `read_csv_text`, checked by decoding the file a block at a time first, so
    a bad byte is reported (with its line) before anything is imported, and memory stays flat.
    """
    try:
        with path.open("rb") as raw:
            head = raw.read(4)
    except FileNotFoundError as err:
        raise AudienceError(f"{path}: no such file") from err
    except OSError as err:
        raise AudienceError(f"{path}: cannot be read ({err.strerror})") from err
    warnings: tuple[str, ...] = ()
    if encoding is not None:
        try:
            codec = codecs.lookup(encoding).name
        except LookupError as err:
            raise AudienceError(
                f"{path}: unknown encoding {encoding!r}",
                hint="Use a name like utf-8, cp1252 (Excel on Western European Windows), "
                "latin-1, utf-16 or mac-roman.",
            ) from err
        if codec == "utf-8" and head.startswith(codecs.BOM_UTF8):
            codec = "utf-8-sig"
        bad = _first_bad_byte(path, codec)
        if bad is not None:
            line, byte = bad
            raise AudienceError(
                f"{path}:{line}: the file is not {encoding} text (byte 0x{byte:02X})",
                hint="Check the encoding the file was saved with.",
            )
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        codec = "utf-16"
        if _first_bad_byte(path, codec) is not None:
            raise AudienceError(f"{path}: the file is not valid UTF-16 text")
    else:
        codec = "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"
        bad = _first_bad_byte(path, codec)
        if bad is not None:
            line, byte = bad
            utf8_error = AudienceError(
                f"{path}:{line}: the file is not UTF-8 text (byte 0x{byte:02X})",
                hint="Give its encoding with --encoding (e.g. --encoding cp1252), or save the "
                "file as 'CSV UTF-8' (Excel) or with the Unicode (UTF-8) character set "
                "(LibreOffice).",
            )
            if _first_bad_byte(path, "cp1252") is not None or _has_control_bytes(path):
                raise utf8_error
            codec = "cp1252"
            warnings = (
                f"{path}: not UTF-8; read as Windows-1252 (Excel's 'CSV' on Western European "
                f"Windows), first non-ASCII text on line {line}: check the names, or give the "
                "encoding with --encoding (--encoding utf-8 refuses anything else)",
            )
    try:
        return path.open(encoding=codec, newline=""), warnings
    except OSError as err:
        raise AudienceError(f"{path}: cannot be read ({err.strerror})") from err


def _first_bad_byte(path: Path, codec: str) -> tuple[int, int] | None:
    """The line and value of the first byte that `codec` cannot decode, or None."""
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    lines = 1
    with path.open("rb") as raw:
        while True:
            block = raw.read(_BLOCK)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                # Positions are within what the decoder held: the block, after any bytes it
                # kept from the previous one (at most a few); close enough to name the line.
                start = max(err.start - (len(err.object) - len(block)), 0)
                offending = block[start] if start < len(block) else err.object[err.start]
                return lines + block.count(b"\n", 0, start), offending
            if not block:
                return None
            lines += block.count(b"\n")


def _has_control_bytes(path: Path) -> bool:
    """Whether the file holds control characters: not text in any 8-bit encoding."""
    control = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")
    with path.open("rb") as raw:
        while block := raw.read(_BLOCK):
            if control.search(block):
                return True
    return False


def _sniff_delimiter(text: str) -> str:
    """The delimiter the header line uses most, outside quotes; a comma if it has none."""
    header = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]
    unquoted = re.sub(r'"[^"]*"', "", header)
    counts = {d: unquoted.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _find_column(path: Path, headers: list[str], wanted: str, role: str) -> int:
    lowered = wanted.strip().casefold()
    for index, header in enumerate(headers):
        if header.strip().casefold() == lowered:
            return index
    key = attribute_key(wanted)
    for index, header in enumerate(headers):
        if key and attribute_key(header) == key:
            return index
    raise AudienceError(
        f"{path}: no column {wanted!r} for the {_ROLE_WORDS.get(role, role)}; "
        f"the header has {_header_list(headers)}"
    )


def _header_list(headers: list[str]) -> str:
    return ", ".join(repr(h) for h in headers) if headers else "no columns"


def _layout(path: Path, headers: list[str], mapping: ColumnMapping) -> _Layout:
    roles: dict[str, int] = {}
    for role in ("email", "name", "first_name", "last_name", "particle"):
        wanted = getattr(mapping, role)
        if wanted is not None:
            roles[role] = _find_column(path, headers, wanted, role)
    keys = [attribute_key(h) for h in headers]
    for index, key in enumerate(keys):
        if index in roles.values():
            continue
        for role, aliases in _ROLE_ALIASES.items():
            if key not in aliases or getattr(mapping, role, None) is not None:
                continue
            if role in roles:
                raise AudienceError(
                    f"{path}: both {headers[roles[role]]!r} and {headers[index]!r} look like "
                    f"the {_ROLE_WORDS.get(role, role)} column",
                    hint="Name the right one with --email-column, --name-column, ...",
                )
            roles[role] = index
    if "email" not in roles:
        first_row = [h for h in headers if "@" in h]
        hint = (
            "The first line must be a header naming the columns, e.g. 'email,name'."
            if first_row
            else "Name the column that holds the addresses with --email-column."
        )
        raise AudienceError(
            f"{path}: no email column; the header has {_header_list(headers)}", hint=hint
        )
    taken = set(RESERVED_KEYS)
    if "first_name" in roles:
        taken.add("first_name")
    if "last_name" in roles:
        taken.add("last_name")
    if "particle" in roles:
        taken.update(("particle", "family_name"))
    extras: list[tuple[int, str]] = []
    status_columns: list[tuple[int, SubscriberStatus]] = []
    tag_columns = tuple(
        index
        for index, key in enumerate(keys)
        if key in _TAG_COLUMNS and index not in roles.values()
    )
    for index, key in enumerate(keys):
        if index in roles.values() or index in tag_columns:
            continue
        if key in _MAILCHIMP_STATUS_COLUMNS:
            status_columns.append((index, _MAILCHIMP_STATUS_COLUMNS[key]))
        unique = key or f"column_{index + 1}"
        number = 2
        while unique in taken:
            unique = f"{key or 'column'}_{number}"
            number += 1
        taken.add(unique)
        extras.append((index, unique))
    return _Layout(
        width=len(headers),
        email=roles["email"],
        name=roles.get("name"),
        first_name=roles.get("first_name"),
        last_name=roles.get("last_name"),
        particle=roles.get("particle"),
        status=roles.get("status"),
        json_attributes=roles.get("attributes"),
        extras=tuple(extras),
        status_columns=tuple(status_columns),
        tag_columns=tag_columns,
    )


def _json_attributes(text: str) -> dict[str, str]:
    """A listmonk `attributes` cell: a JSON object; nested values are kept as JSON text."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise AudienceError(f"the attributes are not valid JSON ({err.msg})") from err
    if not isinstance(data, dict):
        raise AudienceError('the attributes must be a JSON object like {"city": "Gent"}')
    values: dict[str, str] = {}
    for raw_key, value in data.items():
        key = attribute_key(str(raw_key))
        if not key or key in RESERVED_KEYS or value is None:
            continue
        if isinstance(value, str):
            text_value = value
        elif isinstance(value, bool):
            text_value = "true" if value else "false"
        elif isinstance(value, int | float):
            text_value = str(value)
        else:
            text_value = json.dumps(value, ensure_ascii=False)
        if text_value.strip():
            values[key] = text_value.strip()
    return values


def _row(layout: _Layout, line: int, cells: list[str]) -> CsvRow:
    """One data row checked; AudienceError with the reason when it cannot be imported."""
    if len(cells) > layout.width:
        raise AudienceError(
            f"{len(cells)} fields but the header has {layout.width} "
            "(an unquoted delimiter in a value?)"
        )

    def cell(index: int | None) -> str:
        return formula_undone(cells[index]) if index is not None and index < len(cells) else ""

    raw_email = cell(layout.email)
    if not raw_email.strip():
        raise AudienceError("empty email address")
    email = normalise_address(raw_email)
    name = check_name(cell(layout.name))
    first = check_name(cell(layout.first_name), "first name")
    last = check_name(cell(layout.last_name), "last name")
    particle = check_name(cell(layout.particle), "name particle")
    status: SubscriberStatus | None = None
    if layout.status is not None:
        word = cell(layout.status).strip().lower()
        status = _STATUS_ALIASES[word] if word in _STATUS_ALIASES else parse_status(word)
    for index, column_status in layout.status_columns:
        if cell(index).strip() and status in (None, SubscriberStatus.SUBSCRIBED):
            status = column_status
    attributes = _json_attributes(cell(layout.json_attributes))
    for index, key in layout.extras:
        value = cell(index).strip()
        if value:
            attributes[key] = value
    if particle and last:
        # "van der" + "Berg": templates' last_name is the family name as written after a
        # given name; the parts stay apart for whoever needs them (sorting, formal address).
        attributes["particle"] = particle
        attributes["family_name"] = last
        last = f"{particle} {last}"
    if first:
        attributes["first_name"] = first
    if last:
        attributes["last_name"] = last
    if not name:
        name = f"{first} {last}".strip()
    tags: dict[str, None] = {}
    renamed: list[tuple[str, str]] = []
    for index in layout.tag_columns:
        for original in _tag_names(cell(index)):
            tag = _imported_tag(original)
            tags[tag] = None
            if tag != re.sub(r"\s+", "-", original.strip()).casefold():
                renamed.append((original, tag))
    return CsvRow(
        line, address_key(email), email, name, attributes, status, tuple(tags), tuple(renamed)
    )


def _tag_names(text: str) -> list[str]:
    """The tag names in one cell: Mailchimp's `"Volunteers","Board"`, a plain `members, board`,
    or a JSON list of names or of objects with a `name` (listmonk's lists)."""
    if not text.strip():
        return []
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, list):
            names = [item.get("name") if isinstance(item, dict) else item for item in data]
            return [str(n) for n in names if isinstance(n, str | int) and str(n).strip()]
    cells = next(csv.reader([text], skipinitialspace=True), [])
    return [c for c in cells if c.strip()]


def _imported_tag(original: str) -> str:
    """A tag name from the file as a tag (`import_tag`); AudienceError naming it if it cannot
    be one (a control character, or no letter or digit)."""
    found = _CONTROL.search(original)
    if found is not None:
        raise AudienceError(f"tag {original!r} holds the control character {found[0]!r}")
    tag = import_tag(original)
    if tag is None:
        raise AudienceError(f"tag {original!r} has no letter or digit")
    return tag


def parse_rows(
    path: Path, lines: TextIO, mapping: ColumnMapping, delimiter: str | None
) -> Iterator[CsvRow | RowProblem]:
    """Each data row of an open CSV file, checked: a `CsvRow`, or the `RowProblem` saying why
    it cannot be imported, in file order. Duplicates are not looked for here (the caller
    decides where to remember the keys). AudienceError for a file with no usable header."""
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        raise AudienceError(f"{path}: the delimiter must be one character, not {delimiter!r}")
    if delimiter is None:
        start = lines.tell()
        delimiter = _sniff_delimiter(lines.readline())
        lines.seek(start)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    layout: _Layout | None = None
    while True:
        # A record starts on the line after the previous one ended; quoted newlines advance
        # reader.line_num, so this is the physical line in the file.
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            end = reader.line_num
            where = f" (lines {line}-{end} skipped)" if end > line else ""
            yield RowProblem(line, f"malformed quoting: {err}{where}")
            continue
        except UnicodeDecodeError as err:
            raise AudienceError(
                f"{path}:{line}: the file is not valid text ({err.reason})"
            ) from err
        if not any(c.strip() for c in cells):
            continue
        if layout is None:
            layout = _layout(path, [c.strip() for c in cells], mapping)
            continue
        try:
            yield _row(layout, line, cells)
        except AudienceError as err:
            yield RowProblem(line, err.message)
    if layout is None:
        raise AudienceError(f"{path}: the file has no header line (it is empty)")


def parse_csv(
    path: Path, text: str, mapping: ColumnMapping, delimiter: str | None
) -> tuple[list[CsvRow], list[RowProblem]]:
    """The rows of a CSV file's `text` that can be imported, and the problems of the others
    (a repeated address is a problem naming the line it first appeared on)."""
    rows: list[CsvRow] = []
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}
    for found in parse_rows(path, io.StringIO(text, newline=""), mapping, delimiter):
        if isinstance(found, RowProblem):
            problems.append(found)
            continue
        first_line = seen.get(found.key)
        if first_line is not None:
            problems.append(
                RowProblem(found.line, f"duplicate of line {first_line} ({found.email})")
            )
            continue
        seen[found.key] = found.line
        rows.append(found)
    return rows, problems


# A spreadsheet reads a cell starting with one of these as a formula (`=HYPERLINK(...)`).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def formula_safe(value: str) -> str:
    """`value` with a leading apostrophe when a spreadsheet would run it as a formula.

    OWASP's advice for CSV injection; `import` takes the apostrophe off again (`formula_undone`).
    """
    return "'" + value if value.startswith(_FORMULA_START) else value


def formula_undone(value: str) -> str:
    """The value `formula_safe` was given: an exported file imports as it was."""
    if value.startswith("'") and value[1:].startswith(_FORMULA_START):
        return value[1:]
    return value


def write_csv(
    out: TextIO,
    attribute_keys: list[str],
    subscribers: Iterable[Subscriber] | Iterable[tuple[Subscriber, Sequence[str]]],
    *,
    with_tags: bool = False,
) -> int:
    """Subscribers as CSV: email, name, status, (with `with_tags`) tags, then one column per
    attribute key, CRLF lines. `subscribers` yields subscribers, or (subscriber, tags) pairs.

    Returns the number of rows written. Open files with `newline=""`.
    """
    writer = csv.writer(out, lineterminator="\r\n")
    tag_column = ["tags"] if with_tags else []
    writer.writerow(["email", "name", "status", *tag_column, *map(formula_safe, attribute_keys)])
    written = 0
    for item in subscribers:
        subscriber, tags = item if isinstance(item, tuple) else (item, ())
        values = subscriber.attributes
        # Tags hold no comma or quote (segment.normalise_tag): a plain comma list reads back.
        tag_cell = [formula_safe(",".join(tags))] if with_tags else []
        writer.writerow(
            [
                formula_safe(subscriber.email),
                formula_safe(subscriber.name),
                subscriber.status,
                *tag_cell,
                *(formula_safe(values.get(k, "")) for k in attribute_keys),
            ]
        )
        written += 1
    return written
