"""What a message is made of, as transports receive it: the whole MIME message
(`OutgoingMessage`), or structured content for provider APIs (`MessageContent`, `Envelope`,
`ProviderTemplate`, `InlineImage`, `Mailbox`), and what personalising needs of a subscriber
(`Recipient`).

Plain frozen dataclasses with no behaviour beyond formatting, so both the message template
(message.py) and the transports can import them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.headerregistry import Address
from typing import Final, Literal, Protocol

from ..slots import Slot

__all__ = [
    "HTML",
    "SUBJECT",
    "TEXT",
    "Envelope",
    "InlineImage",
    "Mailbox",
    "MessageContent",
    "OutgoingMessage",
    "ProviderTemplate",
    "Recipient",
    "SlotContext",
]


class Recipient(Protocol):
    """What personalising needs of a subscriber (the audience module's `Subscriber` fits)."""

    @property
    def email(self) -> str: ...

    @property
    def name(self) -> str | None: ...

    @property
    def needs_smtputf8(self) -> bool: ...

    def value(self, field: str) -> str | None: ...


_set = object.__setattr__  # how an immutable object sets its own attributes


class OutgoingMessage:
    """One fully personalised message, ready for the wire (immutable).

    `data` is the whole RFC 5322 message (headers and body, CRLF line ends). `smtputf8` is true
    when the envelope or headers need SMTPUTF8 (an internationalised address).

    `wire_ready`: `data` is its own SMTP wire form (CRLF line ends only, no line starting with
    ".", ends with CRLF), as `MessageTemplate.personalise` builds it; the SMTP client then
    sends it as it is instead of scanning and copying it. `eight_bit`: whether `data` has
    bytes over 127 (None: not known, the transport looks).

    `pieces`: the message may be made from pieces (`data` is then their concatenation, joined
    only when asked for): the SMTP client writes the pieces in one gathering write, so a
    spliced message of ~185 KB is not copied into one string first (~40 us a message). Not a
    dataclass for that reason alone; it compares and hashes like one.
    """

    __slots__ = (
        "_data",
        "_pieces",
        "eight_bit",
        "message_id",
        "recipient",
        "sender",
        "smtputf8",
        "wire_ready",
    )
    sender: str
    recipient: str
    message_id: str
    smtputf8: bool
    wire_ready: bool
    eight_bit: bool | None
    _data: bytes | None  # None until joined from `_pieces`
    _pieces: tuple[bytes, ...]

    def __init__(
        self,
        sender: str,
        recipient: str,
        message_id: str,
        data: bytes = b"",
        smtputf8: bool = False,
        wire_ready: bool = False,
        eight_bit: bool | None = None,
        *,
        pieces: tuple[bytes, ...] = (),
    ) -> None:
        if data and pieces:
            raise ValueError("a message is made of data or of pieces, not both")
        # Spelt out, not a loop over the names: one or two of these are made per message.
        _set(self, "sender", sender)
        _set(self, "recipient", recipient)
        _set(self, "message_id", message_id)
        _set(self, "_data", None if pieces else data)
        _set(self, "_pieces", pieces)
        _set(self, "smtputf8", smtputf8)
        _set(self, "wire_ready", wire_ready)
        _set(self, "eight_bit", eight_bit)

    @property
    def data(self) -> bytes:
        """The whole message (joined from its pieces on first use, then kept)."""
        data: bytes | None = self._data
        if data is None:
            data = b"".join(self._pieces)
            _set(self, "_data", data)
        return data

    @property
    def pieces(self) -> tuple[bytes, ...]:
        """The message in pieces, in order, for a gathering write (one piece: `data`)."""
        return self._pieces or (self.data,)

    @property
    def size(self) -> int:
        """`len(data)`, without joining the pieces."""
        data: bytes | None = self._data
        return len(data) if data is not None else sum(map(len, self._pieces))

    def _fields(self) -> tuple[object, ...]:
        return (
            self.sender,
            self.recipient,
            self.message_id,
            self.data,
            self.smtputf8,
            self.wire_ready,
            self.eight_bit,
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"OutgoingMessage is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"OutgoingMessage is immutable: cannot delete {name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OutgoingMessage):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"OutgoingMessage(sender={self.sender!r}, recipient={self.recipient!r}, "
            f"message_id={self.message_id!r}, size={self.size}, smtputf8={self.smtputf8}, "
            f"wire_ready={self.wire_ready}, eight_bit={self.eight_bit})"
        )


# --- what provider APIs get -------------------------------------------------------------------

SlotContext = Literal["subject", "html", "text"]
SUBJECT: Final = "subject"
HTML: Final = "html"
TEXT: Final = "text"


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One address with its display name (cleaned: one line, no control characters)."""

    email: str
    name: str = ""

    def formatted(self) -> str:
        """`Name <address>` for APIs that take one string, quoted as RFC 5322 requires.

        Built with `Address`, so a name such as `Lee, <x@y>` stays a name and adds no recipient.
        """
        if not self.name:
            return self.email
        local, _, domain = self.email.rpartition("@")
        return str(Address(display_name=self.name, username=local, domain=domain))


@dataclass(frozen=True, slots=True)
class InlineImage:
    """An image embedded in the message, referenced from the html as `cid:<cid>`."""

    cid: str
    filename: str
    content_type: str
    data: bytes = field(repr=False)
    base64: str = field(repr=False)  # encoded once per issue, without line breaks


@dataclass(frozen=True, slots=True)
class MessageContent:
    """One recipient's message as structured content, for provider APIs.

    `headers` are the extra headers to add, as (name, one-line value): List-Unsubscribe (the
    recipient's https URL and/or mailto), List-Unsubscribe-Post (with an https URL) and List-Id.
    Values never contain CR or LF. `message_id` includes its angle brackets.
    """

    sender: Mailbox
    to: Mailbox
    reply_to: Mailbox | None
    subject: str
    html: str
    text: str
    headers: tuple[tuple[str, str], ...]
    message_id: str
    images: tuple[InlineImage, ...] = ()

    def header(self, name: str) -> str | None:
        """The value of extra header `name` (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What differs per recipient besides the slot values: address, headers, Message-ID."""

    to: Mailbox
    headers: tuple[tuple[str, str], ...]
    message_id: str


@dataclass(frozen=True, slots=True)
class ProviderTemplate:
    """The shared subject, html and text with a provider placeholder in every hole.

    `keys` lists the (slot index, context) pairs that occur, i.e. exactly the keys of
    `MessageTemplate.slot_values`; `slots[index]` says which value a slot index stands for.
    """

    subject: str
    html: str
    text: str
    keys: tuple[tuple[int, SlotContext], ...]
    slots: tuple[Slot, ...]
