"""The audience: subscribers in SQLite, CSV import and export, addresses, unsubscribe tokens.

Addresses are checked with email-validator (no DNS lookups) and stored normalised: surrounding
white space removed, the domain lower-cased, the local part's case kept. Two addresses that differ
only in case are the same subscriber: the `key` column holds the casefolded address and is unique.

Line breaks (CR, LF and the other Unicode line separators) are refused in addresses and names,
never silently stripped: they end up in headers, and a line break there is an injection attempt
or a broken file the editor should see. Attribute values may hold line breaks (a quoted postal
address, a note); the message builder turns controls into spaces wherever it splices a value.
Anything else in a name (`<`, quotes, `<script>`) is stored as given and escaped on output.

CSV import reads UTF-8 (with or without a BOM) or BOM-marked UTF-16 (Excel's "Unicode Text");
anything else is refused with the line of the first bad byte rather than guessed, because a wrong
guess mangles names silently. The delimiter (`,` `;` tab) is the one the header line uses most.
Headers are matched case-insensitively: Mailchimp (`Email Address`, `First Name`, `Last Name`,
and `UNSUB_TIME`/`CLEAN_TIME` that mark people who must not be mailed), listmonk (`email`, `name`,
`attributes` as a JSON object, `status`), Substack (`email`, ...), plain `email,name`, and Dutch
headers (`e-mailadres`, `naam`, `voornaam`, `achternaam`). Every other column becomes an attribute
under a snake_case key (`Favourite Colour` → `favourite_colour`), usable as `subscriber.<key>`.

The store shares the project's `newsletter.db` with the send ledger; `PRAGMA user_version` is the
store's schema version (the ledger keeps its own in `ledger_meta`).
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import csv
import enum
import hashlib
import hmac
import io
import json
import keyword
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, TextIO, overload

import email_validator
import idna
from email_validator import EmailNotValidError, validate_email

from .errors import AudienceError

__all__ = [
    "SCHEMA_VERSION",
    "ColumnMapping",
    "ImportProblemsError",
    "ImportReport",
    "RowProblem",
    "StatusEvent",
    "Subscriber",
    "SubscriberStatus",
    "SubscriberStore",
    "attribute_key",
    "make_token",
    "normalise_address",
    "parse_status",
    "verify_token",
]

SCHEMA_VERSION = 1
_PAGE = 1000  # rows per query while streaming: bounded memory, the lock held only briefly


class SubscriberStatus(enum.StrEnum):
    """Where a subscriber stands; only `subscribed` people are sent issues."""

    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


_STATUS_NAMES = ", ".join(s.value for s in SubscriberStatus)


def parse_status(text: str) -> SubscriberStatus:
    """`text` as a status (case-insensitive); AudienceError naming the valid ones otherwise."""
    try:
        return SubscriberStatus(text.strip().lower())
    except ValueError as err:
        raise AudienceError(f"unknown status {text!r} (use {_STATUS_NAMES})") from err


# --- addresses and names ------------------------------------------------------------------------

# CR and LF plus every other character str.splitlines() breaks on: each can end a header line in
# some mail software.
_LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")

# A conservative subset of what email-validator accepts, normalised exactly as it would be
# (local part kept, domain lower-cased). Validating 100,000 addresses with email-validator alone
# takes 4 s here; this path takes a fraction of that. Anything unusual (quotes, non-ASCII, "--"
# in the domain, Punycode) goes through email-validator. tests/test_audience.py compares both.
_FAST_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)


def has_line_break(text: str) -> bool:
    """Whether `text` holds CR, LF or another line separator."""
    return _LINE_BREAKS.search(text) is not None


def _fast_normalise(address: str) -> str | None:
    found = _FAST_ADDRESS.fullmatch(address)
    if found is None or len(address) > 254 or "--" in found.group(1):
        return None
    domain = found.group(1).lower()
    if len(domain) > 253:
        return None
    # Read each time: email-validator's list is a module global that may change.
    special = tuple("." + name for name in email_validator.SPECIAL_USE_DOMAIN_NAMES)
    if ("." + domain).endswith(special):
        return None
    return address[: found.start(1)] + domain


def normalise_address(text: str) -> str:
    """The address in `text`, checked and normalised; AudienceError saying what is wrong.

    Surrounding white space is removed and the domain lower-cased (an IDNA domain becomes its
    Unicode form); the local part keeps its case. No DNS lookups are made.
    """
    if has_line_break(text):
        raise AudienceError(f"the email address {text!r} contains a line break")
    address = text.strip()
    if not address:
        raise AudienceError("the email address is empty")
    fast = _fast_normalise(address)
    if fast is not None:
        return fast
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as err:
        raise AudienceError(f"{address!r} is not a valid email address: {err}") from err
    return str(checked.normalized)


def _address_key(address: str) -> str:
    return address.casefold()


def _lookup_key(text: str) -> str:
    """The key to look `text` up by; lenient, so that rows from older checks can be found."""
    try:
        return _address_key(normalise_address(text))
    except AudienceError:
        if has_line_break(text):
            raise
        return _address_key(text.strip())


def _check_name(name: str, what: str = "name") -> str:
    if has_line_break(name):
        raise AudienceError(f"the {what} {name!r} contains a line break")
    return name.strip()


# Letters NFKD does not take apart into an ASCII letter and an accent.
_LETTERS = str.maketrans(
    {"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ß": "ss", "đ": "d",
     "Đ": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "TH", "ð": "d", "Ð": "D", "ı": "i"}
)  # fmt: skip

# Attribute keys that would hide a subscriber field in templates (`subscriber.email`).
_RESERVED_KEYS = frozenset({"email", "name"})


def attribute_key(text: str) -> str:
    """`text` (a CSV header, an attribute name) as a snake_case identifier; "" if nothing is left.

    `Email Address` → `email_address`, `MEMBER_RATING` → `member_rating`, `optInTime` →
    `opt_in_time`, `Straße` → `strasse`, `2fa` → `field_2fa`, `class` → `class_`.
    """
    plain = unicodedata.normalize("NFKD", text.translate(_LETTERS))
    plain = plain.encode("ascii", "ignore").decode("ascii")
    plain = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", plain)
    plain = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", plain)
    key = re.sub(r"[^A-Za-z0-9]+", "_", plain).strip("_").lower()
    if not key:
        return ""
    if key[0].isdigit():
        key = "field_" + key
    if keyword.iskeyword(key):
        key += "_"
    return key


def _clean_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """Attributes with normalised keys and stripped values; empty values dropped."""
    cleaned: dict[str, str] = {}
    for raw_key, value in attributes.items():
        key = attribute_key(raw_key)
        if not key:
            raise AudienceError(f"attribute name {raw_key!r} has no letters or digits")
        if key in _RESERVED_KEYS:
            raise AudienceError(
                f"attribute {raw_key!r} would hide the subscriber's {key}; give it another name"
            )
        if not isinstance(value, str):
            raise AudienceError(f"attribute {key!r} must be text, not {type(value).__name__}")
        if value.strip():
            cleaned[key] = value.strip()
    return cleaned


# --- subscribers --------------------------------------------------------------------------------

_EMPTY: Mapping[str, str] = MappingProxyType({})

_SAMPLES = {
    "en": ("alex@example.org", "Alex Example", "Alex", "Example"),
    "nl": ("sanne@example.org", "Sanne de Vries", "Sanne", "de Vries"),
}


@dataclass(frozen=True)
class Subscriber:
    """One subscriber: a normalised address, a name, attributes from extra CSV columns."""

    email: str
    name: str = ""
    # Read-only; a plain dict given here is copied into a MappingProxyType.
    attributes: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    status: str = SubscriberStatus.SUBSCRIBED
    id: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.attributes, MappingProxyType):
            object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))

    @classmethod
    def sample(cls, locale: str = "en") -> Subscriber:
        """A made-up subscriber for previews, named in the language of `locale`."""
        language = locale.replace("-", "_").split("_")[0].lower()
        email, name, first, last = _SAMPLES.get(language, _SAMPLES["en"])
        return cls(email=email, name=name, attributes={"first_name": first, "last_name": last})

    @property
    def key(self) -> str:
        """The casefolded address: what duplicates are compared by (and the ledger's key)."""
        return _address_key(self.email)

    @property
    def first_name(self) -> str:
        explicit = self.attributes.get("first_name")
        if explicit:
            return explicit
        words = self.name.split(maxsplit=1)
        return words[0] if words else ""

    @property
    def last_name(self) -> str:
        explicit = self.attributes.get("last_name")
        if explicit:
            return explicit
        words = self.name.split(maxsplit=1)
        return words[1] if len(words) > 1 else ""

    @property
    def needs_smtputf8(self) -> bool:
        """Whether the local part is non-ASCII, so only an SMTPUTF8 server can take the address.

        A non-ASCII domain alone does not need it: `ascii_email` gives its IDNA form.
        """
        return not self.email.rpartition("@")[0].isascii()

    @property
    def ascii_email(self) -> str | None:
        """The address with an IDNA (ASCII) domain; None when the local part is not ASCII."""
        local, _, domain = self.email.rpartition("@")
        if not local.isascii():
            return None
        if domain.isascii():
            return self.email
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"

    def value(self, field: str) -> str | None:
        """A template field (`email`, `name`, `first_name`, `last_name`, an attribute) or None."""
        if field == "email":
            found: str | None = self.email
        elif field == "name":
            found = self.name
        elif field == "first_name":
            found = self.first_name
        elif field == "last_name":
            found = self.last_name
        else:
            found = self.attributes.get(field)
        return found or None

    def as_dict(self) -> dict[str, str]:
        """Every non-empty field and attribute by name (what previews fill slots from)."""
        values = {key: value for key, value in self.attributes.items() if value}
        for name in ("email", "name", "first_name", "last_name"):
            found = self.value(name)
            if found:
                values[name] = found
        return values


@dataclass(frozen=True)
class StatusEvent:
    """One change of a subscriber's status, and who made it (`source`)."""

    at: float
    old_status: str | None
    new_status: str
    source: str


# --- CSV import ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnMapping:
    """Which CSV columns (header text, case-insensitive) hold what; None: detect it."""

    email: str | None = None
    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None


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
    "status": frozenset({"status"}),
    "attributes": frozenset({"attributes", "attribs"}),  # listmonk: a JSON object
}
_ROLE_WORDS = {"first_name": "first name", "last_name": "last name"}

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


@dataclass(frozen=True)
class _Layout:
    """Column positions for each role, and the attribute key of every other column."""

    width: int
    email: int
    name: int | None
    first_name: int | None
    last_name: int | None
    status: int | None
    json_attributes: int | None
    extras: tuple[tuple[int, str], ...]
    status_columns: tuple[tuple[int, SubscriberStatus], ...]


@dataclass(frozen=True)
class _Row:
    line: int
    key: str
    email: str
    name: str
    attributes: dict[str, str]
    status: SubscriberStatus | None


def _read_csv_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise AudienceError(f"{path}: no such file") from err
    except OSError as err:
        raise AudienceError(f"{path}: cannot be read ({err.strerror})") from err
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # Excel's "Unicode Text" export: UTF-16 with a byte order mark.
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as err:
            raise AudienceError(f"{path}: the file is not valid UTF-16 text") from err
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        # Guessing a legacy encoding would mangle names quietly; the editor can re-save the file.
        line = raw.count(b"\n", 0, err.start) + 1
        raise AudienceError(
            f"{path}:{line}: the file is not UTF-8 text (byte 0x{raw[err.start]:02X})",
            hint="Save the file as 'CSV UTF-8' (Excel) or with the Unicode (UTF-8) character "
            "set (LibreOffice), then import it again.",
        ) from err


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
    for role in ("email", "name", "first_name", "last_name"):
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
                    hint="Name the right one with --email-column, --name-column, ... "
                    "(ColumnMapping in the library).",
                )
            roles[role] = index
    if "email" not in roles:
        first_row = [h for h in headers if "@" in h]
        hint = (
            "The first line must be a header naming the columns, e.g. 'email,name'."
            if first_row
            else "Name the column that holds the addresses with --email-column "
            "(ColumnMapping(email=...) in the library)."
        )
        raise AudienceError(
            f"{path}: no email column; the header has {_header_list(headers)}", hint=hint
        )
    taken = set(_RESERVED_KEYS)
    if "first_name" in roles:
        taken.add("first_name")
    if "last_name" in roles:
        taken.add("last_name")
    extras: list[tuple[int, str]] = []
    status_columns: list[tuple[int, SubscriberStatus]] = []
    for index, key in enumerate(keys):
        if index in roles.values():
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
        status=roles.get("status"),
        json_attributes=roles.get("attributes"),
        extras=tuple(extras),
        status_columns=tuple(status_columns),
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
        if not key or key in _RESERVED_KEYS or value is None:
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


def _row(layout: _Layout, line: int, cells: list[str]) -> _Row:
    """One data row checked; AudienceError with the reason when it cannot be imported."""
    if len(cells) > layout.width:
        raise AudienceError(
            f"{len(cells)} fields but the header has {layout.width} "
            "(an unquoted delimiter in a value?)"
        )

    def cell(index: int | None) -> str:
        return cells[index] if index is not None and index < len(cells) else ""

    raw_email = cell(layout.email)
    if not raw_email.strip():
        raise AudienceError("empty email address")
    email = normalise_address(raw_email)
    name = _check_name(cell(layout.name))
    first = _check_name(cell(layout.first_name), "first name")
    last = _check_name(cell(layout.last_name), "last name")
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
    if first:
        attributes["first_name"] = first
    if last:
        attributes["last_name"] = last
    if not name:
        name = f"{first} {last}".strip()
    return _Row(line, _address_key(email), email, name, attributes, status)


def _parse_csv(
    path: Path, text: str, mapping: ColumnMapping, delimiter: str | None
) -> tuple[list[_Row], list[RowProblem]]:
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        raise AudienceError(f"{path}: the delimiter must be one character, not {delimiter!r}")
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=delimiter or _sniff_delimiter(text), strict=True
    )
    layout: _Layout | None = None
    rows: list[_Row] = []
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}
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
            problems.append(RowProblem(line, f"malformed quoting: {err}{where}"))
            continue
        if not any(c.strip() for c in cells):
            continue
        if layout is None:
            layout = _layout(path, [c.strip() for c in cells], mapping)
            continue
        try:
            row = _row(layout, line, cells)
        except AudienceError as err:
            problems.append(RowProblem(line, err.message))
            continue
        first_line = seen.get(row.key)
        if first_line is not None:
            problems.append(RowProblem(line, f"duplicate of line {first_line} ({row.email})"))
            continue
        seen[row.key] = line
        rows.append(row)
    if layout is None:
        raise AudienceError(f"{path}: the file has no header line (it is empty)")
    return rows, problems


# --- the store ----------------------------------------------------------------------------------

_SCHEMA_V1 = (
    """CREATE TABLE subscribers (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        email TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        attributes TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'subscribed'
            CHECK (status IN ('subscribed', 'unsubscribed', 'bounced', 'complained')),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    "CREATE INDEX subscribers_by_status ON subscribers (status, key)",
    # Removing a subscriber erases their history too (a request to be forgotten); to stop
    # mailing someone and remember it, unsubscribe them instead.
    """CREATE TABLE subscriber_events (
        id INTEGER PRIMARY KEY,
        subscriber_key TEXT NOT NULL
            REFERENCES subscribers (key) ON DELETE CASCADE ON UPDATE CASCADE,
        at REAL NOT NULL,
        old_status TEXT,
        new_status TEXT NOT NULL,
        source TEXT NOT NULL
    )""",
    "CREATE INDEX subscriber_events_by_key ON subscriber_events (subscriber_key, at)",
)

# MIGRATIONS[n] takes the schema from version n to n + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_SCHEMA_V1,)

_COLUMNS = "id, email, name, attributes, status"


def migrate(db: sqlite3.Connection, path: Path) -> int:
    """Bring the schema up to SCHEMA_VERSION, one step per transaction; the version reached."""
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            # Read inside the write lock: another process may have migrated meanwhile.
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise AudienceError(
                    f"{path}: the subscriber database has schema version {version}; this "
                    f"program knows up to {SCHEMA_VERSION}",
                    hint="Upgrade newsletter to work with this project.",
                )
            if version == SCHEMA_VERSION:
                db.execute("COMMIT")
                return version
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _dump(attributes: Mapping[str, str]) -> str:
    return json.dumps(dict(attributes), ensure_ascii=False, sort_keys=True) if attributes else "{}"


def _load(text: str) -> Mapping[str, str]:
    return _EMPTY if text == "{}" else MappingProxyType(json.loads(text))


def _subscriber(row: tuple[Any, ...]) -> Subscriber:
    return Subscriber(
        email=row[1],
        name=row[2],
        attributes=_load(row[3]),
        status=SubscriberStatus(row[4]),
        id=row[0],
    )


class SubscriberStore:
    """Subscribers in a SQLite file (WAL). One connection per store, shared by threads under a
    lock. Use it as a context manager, or call `close()`."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except sqlite3.Error as err:
            raise AudienceError(f"{self.path}: cannot open the subscriber database: {err}") from err
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            migrate(self._db, self.path)
        except sqlite3.Error as err:
            self._db.close()
            raise AudienceError(f"{self.path}: cannot open the subscriber database: {err}") from err
        except BaseException:
            self._db.close()
            raise

    # --- plumbing -------------------------------------------------------------------------------

    def __enter__(self) -> SubscriberStore:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[sqlite3.Connection]:
        """The connection under the lock; SQLite errors become AudienceErrors naming `action`."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as err:
                raise AudienceError(f"{self.path}: cannot {action}: {err}") from err

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._guard(action) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _row_by_key(self, db: sqlite3.Connection, key: str) -> tuple[Any, ...] | None:
        found: tuple[Any, ...] | None = db.execute(
            f"SELECT {_COLUMNS} FROM subscribers WHERE key = ?", (key,)
        ).fetchone()
        return found

    def _event(
        self,
        db: sqlite3.Connection,
        key: str,
        old: str | None,
        new: str,
        source: str,
        now: float,
    ) -> None:
        db.execute(
            "INSERT INTO subscriber_events (subscriber_key, at, old_status, new_status, source)"
            " VALUES (?, ?, ?, ?, ?)",
            (key, now, old, new, source),
        )

    # --- single subscribers ---------------------------------------------------------------------

    def add(
        self,
        email: str,
        name: str = "",
        attributes: Mapping[str, str] | None = None,
        *,
        resubscribe: bool = False,
        source: str = "add",
    ) -> Subscriber:
        """Add a subscriber, or update the name and attributes of an existing one.

        An empty name or attribute value leaves the stored one alone. Someone who unsubscribed
        (bounced, complained) keeps that status unless `resubscribe` is true; check the returned
        subscriber's status.
        """
        address = normalise_address(email)
        clean_name = _check_name(name)
        clean = _clean_attributes(attributes or {})
        key = _address_key(address)
        now = self._clock()
        with self._transaction(f"add {address}") as db:
            found = self._row_by_key(db, key)
            if found is None:
                db.execute(
                    "INSERT INTO subscribers (key, email, name, attributes, status, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, 'subscribed', ?, ?)",
                    (key, address, clean_name, _dump(clean), now, now),
                )
                self._event(db, key, None, SubscriberStatus.SUBSCRIBED, source, now)
            else:
                old = _subscriber(found)
                status = old.status
                if status != SubscriberStatus.SUBSCRIBED and resubscribe:
                    status = SubscriberStatus.SUBSCRIBED
                    self._event(db, key, old.status, status, source, now)
                db.execute(
                    "UPDATE subscribers SET email = ?, name = ?, attributes = ?, status = ?,"
                    " updated_at = ? WHERE key = ?",
                    (
                        address,
                        clean_name or old.name,
                        _dump({**old.attributes, **clean}),
                        status,
                        now,
                        key,
                    ),
                )
            row = self._row_by_key(db, key)
        assert row is not None
        return _subscriber(row)

    def get(self, email: str) -> Subscriber | None:
        """The subscriber with this address (case-insensitive), or None."""
        key = _lookup_key(email)
        with self._guard(f"look up {email.strip()}") as db:
            found = self._row_by_key(db, key)
        return None if found is None else _subscriber(found)

    def remove(self, email: str) -> bool:
        """Delete the subscriber and their history; whether there was one."""
        key = _lookup_key(email)
        with self._transaction(f"remove {email.strip()}") as db:
            deleted = db.execute("DELETE FROM subscribers WHERE key = ?", (key,)).rowcount
        return deleted > 0

    def set_status(self, email: str, status: str, *, source: str) -> Subscriber:
        """Change a subscriber's status, recording who did it (`source`, e.g. `cli`, `bounce`).

        Setting the status a subscriber already has changes and records nothing.
        """
        new = parse_status(status)
        if not source.strip():
            raise AudienceError("a status change needs a source (who or what made it)")
        key = _lookup_key(email)
        now = self._clock()
        with self._transaction(f"change the status of {email.strip()}") as db:
            found = self._row_by_key(db, key)
            if found is None:
                raise AudienceError(f"no subscriber {email.strip()}")
            if found[4] != new:
                db.execute(
                    "UPDATE subscribers SET status = ?, updated_at = ? WHERE key = ?",
                    (new, now, key),
                )
                self._event(db, key, found[4], new, source, now)
                found = (*found[:4], new)
        return _subscriber(found)

    def events(self, email: str) -> tuple[StatusEvent, ...]:
        """The subscriber's status changes, oldest first (empty for an unknown address)."""
        key = _lookup_key(email)
        with self._guard(f"read the history of {email.strip()}") as db:
            rows = db.execute(
                "SELECT at, old_status, new_status, source FROM subscriber_events"
                " WHERE subscriber_key = ? ORDER BY at, id",
                (key,),
            ).fetchall()
        return tuple(StatusEvent(*row) for row in rows)

    # --- the whole list -------------------------------------------------------------------------

    def iter_subscribers(
        self, status: str | None = SubscriberStatus.SUBSCRIBED
    ) -> Iterator[Subscriber]:
        """Subscribers with `status` (None: everyone) in address order, fetched a page at a time.

        Not a snapshot: changes made while iterating may or may not be seen.
        """
        wanted = None if status is None else parse_status(status)
        where = "key > ?" if wanted is None else "status = ? AND key > ?"
        query = f"SELECT {_COLUMNS}, key FROM subscribers WHERE {where} ORDER BY key LIMIT ?"
        last = ""
        while True:
            arguments: tuple[Any, ...] = (last, _PAGE) if wanted is None else (wanted, last, _PAGE)
            with self._guard("list the subscribers") as db:
                rows = db.execute(query, arguments).fetchall()
            for row in rows:
                yield _subscriber(row)
            if len(rows) < _PAGE:
                return
            last = rows[-1][5]

    @overload
    def count(self, status: None = None) -> dict[str, int]: ...

    @overload
    def count(self, status: str) -> int: ...

    def count(self, status: str | None = None) -> dict[str, int] | int:
        """How many subscribers have `status`; without one, a count for every status."""
        wanted = None if status is None else parse_status(status)
        with self._guard("count the subscribers") as db:
            if wanted is not None:
                return int(
                    db.execute(
                        "SELECT COUNT(*) FROM subscribers WHERE status = ?", (wanted,)
                    ).fetchone()[0]
                )
            found = dict(
                db.execute("SELECT status, COUNT(*) FROM subscribers GROUP BY status").fetchall()
            )
        return {s.value: int(found.get(s.value, 0)) for s in SubscriberStatus}

    def export_csv(self, out: TextIO, status: str | None = None) -> int:
        """Write subscribers (None: everyone) as CSV: email, name, status, then one column per
        attribute. Returns the number of rows. Open files with `newline=""`."""
        wanted = None if status is None else parse_status(status)
        with self._guard("export the subscribers") as db:
            keys = [
                row[0]
                for row in db.execute(
                    "SELECT DISTINCT j.key FROM subscribers, json_each(subscribers.attributes) j"
                    + ("" if wanted is None else " WHERE subscribers.status = ?")
                    + " ORDER BY j.key",
                    () if wanted is None else (wanted,),
                )
            ]
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["email", "name", "status", *keys])
        written = 0
        for subscriber in self.iter_subscribers(wanted):
            values = subscriber.attributes
            writer.writerow(
                [
                    subscriber.email,
                    subscriber.name,
                    subscriber.status,
                    *(values.get(k, "") for k in keys),
                ]
            )
            written += 1
        return written

    def import_csv(
        self,
        path: Path,
        *,
        mapping: ColumnMapping | None = None,
        strict: bool = False,
        resubscribe: bool = False,
        delimiter: str | None = None,
    ) -> ImportReport:
        """Import a CSV file in one transaction (the module notes list the layouts recognised).

        Invalid rows are reported by physical line and skipped; with `strict`, any problem means
        nothing is imported (ImportProblemsError). Existing subscribers get the file's name and
        attributes (empty cells leave stored values alone). People who unsubscribed, bounced or
        complained stay so unless `resubscribe`; a `status` column (or Mailchimp's UNSUB_TIME /
        CLEAN_TIME) may unsubscribe people, never subscribe them again on its own.
        """
        path = Path(path)
        rows, problems = _parse_csv(
            path, _read_csv_text(path), mapping or ColumnMapping(), delimiter
        )
        if strict and problems:
            raise ImportProblemsError(path, problems)
        source = f"import {path.name}"
        now = self._clock()
        counts = {"added": 0, "updated": 0, "unchanged": 0, "kept": 0, "resubscribed": 0}
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        with self._transaction(f"import {path}") as db:
            existing = self._existing(db, rows)
            for row in rows:
                found = existing.get(row.key)
                if found is None:
                    status = row.status or SubscriberStatus.SUBSCRIBED
                    inserts.append(
                        (row.key, row.email, row.name, _dump(row.attributes), status, now, now)
                    )
                    events.append((row.key, now, None, status, source))
                    counts["added"] += 1
                    continue
                email, name, attributes_text, old_status = found
                old_attributes = _load(attributes_text)
                new_name = row.name or name
                new_attributes = {**old_attributes, **row.attributes}
                status, outcome = _import_status(SubscriberStatus(old_status), row, resubscribe)
                changed = (row.email, new_name, new_attributes) != (email, name, old_attributes)
                if status != old_status:
                    events.append((row.key, now, old_status, status, source))
                if changed or status != old_status:
                    updates.append(
                        (row.email, new_name, _dump(new_attributes), status, now, row.key)
                    )
                if outcome == "same":
                    outcome = "updated" if changed or status != old_status else "unchanged"
                counts[outcome] += 1
            db.executemany(
                "INSERT INTO subscribers (key, email, name, attributes, status, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                inserts,
            )
            db.executemany(
                "UPDATE subscribers SET email = ?, name = ?, attributes = ?, status = ?,"
                " updated_at = ? WHERE key = ?",
                updates,
            )
            db.executemany(
                "INSERT INTO subscriber_events (subscriber_key, at, old_status, new_status, source)"
                " VALUES (?, ?, ?, ?, ?)",
                events,
            )
        return ImportReport(
            file=path,
            added=counts["added"],
            updated=counts["updated"],
            unchanged=counts["unchanged"],
            kept_unsubscribed=counts["kept"],
            resubscribed=counts["resubscribed"],
            problems=tuple(problems),
        )

    def _existing(
        self, db: sqlite3.Connection, rows: list[_Row]
    ) -> dict[str, tuple[str, str, str, str]]:
        """The stored email, name, attributes and status of each row's subscriber, by key."""
        db.execute("CREATE TEMP TABLE IF NOT EXISTS import_keys (key TEXT PRIMARY KEY)")
        try:
            db.executemany("INSERT INTO import_keys (key) VALUES (?)", ((r.key,) for r in rows))
            return {
                row[0]: (row[1], row[2], row[3], row[4])
                for row in db.execute(
                    "SELECT s.key, s.email, s.name, s.attributes, s.status"
                    " FROM subscribers s JOIN import_keys USING (key)"
                )
            }
        finally:
            db.execute("DELETE FROM import_keys")


def _import_status(
    old: SubscriberStatus, row: _Row, resubscribe: bool
) -> tuple[SubscriberStatus, str]:
    """The status an imported row leaves, and which count it goes to ("same": by the data)."""
    wanted = row.status or SubscriberStatus.SUBSCRIBED
    if wanted != SubscriberStatus.SUBSCRIBED:
        # The file says this person must not be mailed: always honoured.
        return wanted, "same"
    if old == SubscriberStatus.SUBSCRIBED:
        return old, "same"
    if resubscribe:
        return SubscriberStatus.SUBSCRIBED, "resubscribed"
    return old, "kept"


# --- unsubscribe tokens -------------------------------------------------------------------------

_SIGNATURE_BYTES = 16  # 128 bits of HMAC-SHA256
_TOKEN_PART = re.compile(r"[A-Za-z0-9_-]+")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    """Decoded URL-safe base64, only in its canonical unpadded form (no alternative spellings)."""
    if not _TOKEN_PART.fullmatch(text) or len(text) % 4 == 1:
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return data if _b64(data) == text else None


def _signature(secret: bytes, purpose: str, address: bytes) -> bytes:
    message = b"newsletter/" + purpose.encode("utf-8") + b"\x00" + address
    return hmac.new(secret, message, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def _check_signing(secret: bytes, purpose: str) -> None:
    if not secret:
        raise AudienceError("the signing secret is empty")
    if not purpose or "\x00" in purpose:
        raise AudienceError(f"token purpose {purpose!r} must be non-empty text without NUL")


def make_token(secret: bytes, email: str, purpose: str = "unsubscribe") -> str:
    """A token naming `email`, signed for `purpose`: `<base64url address>.<base64url HMAC>`.

    Only letters, digits, `-`, `_` and `.` appear: safe in a URL query without escaping. Tokens
    do not expire: an unsubscribe link in an old issue must keep working.
    """
    _check_signing(secret, purpose)
    if not email or has_line_break(email):
        raise AudienceError(f"cannot make a token for the address {email!r}")
    address = email.encode("utf-8")
    return f"{_b64(address)}.{_b64(_signature(secret, purpose, address))}"


def verify_token(secret: bytes, token: str, purpose: str = "unsubscribe") -> str:
    """The address a token made by `make_token` names; AudienceError if it is not genuine."""
    _check_signing(secret, purpose)
    invalid = AudienceError(
        f"the {purpose} link is not valid: it was changed, cut short or made with another secret",
        hint="Use the link from a recent issue, or ask the editor to do it by hand.",
    )
    payload, dot, mac = token.partition(".")
    address = _unb64(payload)
    signature = _unb64(mac) if dot else None
    if address is None or signature is None or len(signature) != _SIGNATURE_BYTES:
        raise invalid
    if not hmac.compare_digest(_signature(secret, purpose, address), signature):
        raise invalid
    try:
        return address.decode("utf-8")
    except UnicodeDecodeError as err:  # only a token signed over bytes we never sign
        raise invalid from err
