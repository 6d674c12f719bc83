"""Addresses, names and attribute keys: checked and normalised before anything stores them.

Addresses are checked with email-validator (no DNS lookups) and stored normalised: surrounding
white space removed, the domain lower-cased, the local part's case kept. Two addresses that differ
only in case are the same subscriber: their `address_key` (the casefolded address) is the same.

Line breaks (CR, LF and the other Unicode line separators) are refused in addresses and names,
never silently stripped: they end up in headers, and a line break there is an injection attempt
or a broken file the editor should see. Attribute values may hold line breaks (a quoted postal
address, a note); the message builder turns controls into spaces wherever it splices a value.
Anything else in a name (`<`, quotes, `<script>`) is stored as given and escaped on output.
"""

from __future__ import annotations

import keyword
import re
import unicodedata
from collections.abc import Mapping
from types import ModuleType

from ..errors import AudienceError

__all__ = [
    "RESERVED_KEYS",
    "address_key",
    "attribute_key",
    "check_name",
    "clean_attributes",
    "has_line_break",
    "lookup_key",
    "normalise_address",
]

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


# email-validator's special-use domains as `.name` suffixes, and the list they were made from.
_special: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())


def _email_validator() -> ModuleType:
    """email-validator, imported on first use: compiling its patterns at import takes 0.1 s
    (more on a busy machine), which commands that never check an address should not pay."""
    import email_validator  # noqa: PLC0415 (heavy, only checking an address needs it)

    return email_validator


def _special_suffixes() -> tuple[str, ...]:
    """`.name` for each special-use domain name, rebuilt only when email-validator's list (a
    module global that may change) differs from last time: building it per address cost 3 µs."""
    global _special
    names = tuple(_email_validator().SPECIAL_USE_DOMAIN_NAMES)
    if names != _special[0]:
        _special = (names, tuple("." + name for name in names))
    return _special[1]


def _plain_ascii(address: str) -> re.Match[str] | None:
    """The fast path's match of `address` (its group 1 the domain), None when it does not take
    it: email-validator would keep such an address's local part and lower-case its domain, or
    refuse it only for a special-use domain."""
    found = _FAST_ADDRESS.fullmatch(address)
    if found is None or len(address) > 254 or "--" in found.group(1) or len(found.group(1)) > 253:
        return None
    return found


def _fast_normalise(address: str) -> str | None:
    found = _plain_ascii(address)
    if found is None:
        return None
    domain = found.group(1).lower()
    if ("." + domain).endswith(_special_suffixes()):
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
    validator = _email_validator()
    try:
        checked = validator.validate_email(address, check_deliverability=False)
    except validator.EmailNotValidError as err:
        raise AudienceError(f"{address!r} is not a valid email address: {err}") from err
    return str(checked.normalized)


def address_key(address: str) -> str:
    """What two spellings of one address have in common: the casefolded address."""
    return address.casefold()


def lookup_key(text: str) -> str:
    """The key to look `text` up by; lenient, so that rows from older checks can be found."""
    address = text.strip()
    if _plain_ascii(address) is not None and not has_line_break(text):
        # Accepted or refused (a special-use domain), such an address's key is its casefolded
        # self: no need for email-validator, whose import a send's first look-up would pay.
        return address_key(address)
    try:
        return address_key(normalise_address(text))
    except AudienceError:
        if has_line_break(text):
            raise
        return address_key(text.strip())


def check_name(name: str, what: str = "name") -> str:
    """`name` stripped; AudienceError if it holds a line break (`what` names it)."""
    if has_line_break(name):
        raise AudienceError(f"the {what} {name!r} contains a line break")
    return name.strip()


# Letters NFKD does not take apart into an ASCII letter and an accent.
_LETTERS = str.maketrans(
    {"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ß": "ss", "đ": "d",
     "Đ": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "TH", "ð": "d", "Ð": "D", "ı": "i"}
)  # fmt: skip

# Attribute keys that would hide a subscriber field in templates (`subscriber.email`).
RESERVED_KEYS = frozenset({"email", "name"})


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


def clean_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """Attributes with normalised keys and stripped values; empty values dropped."""
    cleaned: dict[str, str] = {}
    for raw_key, value in attributes.items():
        key = attribute_key(raw_key)
        if not key:
            raise AudienceError(f"attribute name {raw_key!r} has no letters or digits")
        if key in RESERVED_KEYS:
            raise AudienceError(
                f"attribute {raw_key!r} would hide the subscriber's {key}; give it another name"
            )
        if not isinstance(value, str):
            raise AudienceError(f"attribute {key!r} must be text, not {type(value).__name__}")
        if value.strip():
            cleaned[key] = value.strip()
    return cleaned
