"""What a subscriber is: an address, a name, attributes, a status, and its history."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import idna

from ..errors import AudienceError
from .addresses import address_key

__all__ = [
    "NAME_PARTICLES",
    "NO_ATTRIBUTES",
    "StatusEvent",
    "Subscriber",
    "SubscriberStatus",
    "parse_status",
    "split_name",
]


class SubscriberStatus(enum.StrEnum):
    """Where a subscriber stands; only `subscribed` people are sent issues."""

    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    # Signed up on the form, confirmation link not yet followed: never sent an issue.
    UNCONFIRMED = "unconfirmed"


_STATUS_NAMES = ", ".join(s.value for s in SubscriberStatus)


def parse_status(text: str) -> SubscriberStatus:
    """`text` as a status (case-insensitive); AudienceError naming the valid ones otherwise."""
    try:
        return SubscriberStatus(text.strip().lower())
    except ValueError as err:
        raise AudienceError(f"unknown status {text!r} (use {_STATUS_NAMES})") from err


NO_ATTRIBUTES: Mapping[str, str] = MappingProxyType({})

# Words that start a family name (Dutch tussenvoegsels, German, French, Italian, Spanish,
# Portuguese, Arabic particles), lower case as they are written after a given name.
NAME_PARTICLES = frozenset(
    {
        "van", "von", "de", "der", "den", "del", "della", "di", "da", "du", "des", "le", "la",
        "ten", "ter", "te", "zu", "zum", "zur", "vom", "dos", "das", "do", "'t", "in", "op",
        "uit", "bin", "ibn", "al", "el", "d'", "l'",
    }
)  # fmt: skip


def split_name(name: str) -> tuple[str, str]:
    """A full name as (given names, family name with particles): "Jan van der Berg" →
    ("Jan", "van der Berg"); without a particle the first word is the given name."""
    words = name.split()
    if not words:
        return "", ""
    for index in range(1, len(words) - 1):
        if words[index].lower() in NAME_PARTICLES:
            return " ".join(words[:index]), " ".join(words[index:])
    return words[0], " ".join(words[1:])


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
    attributes: Mapping[str, str] = field(default_factory=lambda: NO_ATTRIBUTES, hash=False)
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
        return address_key(self.email)

    @property
    def first_name(self) -> str:
        """The given name(s): an imported first name, else the full name before its family
        name ("Anna Maria" of "Anna Maria van Dijk")."""
        explicit = self.attributes.get("first_name")
        if explicit:
            return explicit
        return split_name(self.name)[0]

    @property
    def last_name(self) -> str:
        """The family name with its particles ("van der Berg", "von Weizsäcker")."""
        explicit = self.attributes.get("last_name")
        if explicit:
            return explicit
        return split_name(self.name)[1]

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
