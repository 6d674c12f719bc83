"""The MIME message of an issue: encoded once, personalised per recipient by splicing.

`MessageTemplate.prepare` does everything that is the same for every recipient once: the static
headers, the MIME structure and boundaries, the quoted-printable encoding of every static chunk of
the text and HTML parts, the base64 of embedded images. `personalise` then only encodes the few
per-recipient values and joins pre-encoded bytes. Each value is put between quoted-printable soft
line breaks (`=\\r\\n`), so no line grows past 76 octets and nothing else is re-encoded.

Header values never carry CR, LF or other control characters from subscriber data, and addresses
are built with `email.headerregistry.Address`, never by formatting strings.

Provider APIs take structured content rather than MIME. `MessageTemplate.content(recipient)` gives
one recipient's fully personalised `MessageContent` (addresses, subject, html, text, the list
headers, Message-ID, embedded images). Providers that substitute values themselves use
`provider_template(placeholder)` once (the shared subject, html and text with a placeholder of the
provider's syntax in each hole) and `slot_values(recipient)` per recipient (each value already
escaped for its context: HTML-escaped in html, control-free in text, one line in the subject).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.utils import format_datetime
from typing import Final, Literal, Protocol
from urllib.parse import quote

from ..config import Settings, parse_address
from ..errors import AudienceError, ConfigError, Problem, RenderError
from ..render.model import EmbeddedImage, RenderedIssue
from ..slots import UNSUBSCRIBE_URL, WEB_URL, Slot, SlotText
from .transports.base import OutgoingMessage

__all__ = [
    "HTML",
    "SUBJECT",
    "TEXT",
    "Envelope",
    "InlineImage",
    "Mailbox",
    "MessageContent",
    "MessageTemplate",
    "Personalisation",
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


@dataclass(frozen=True, slots=True)
class Personalisation:
    """One recipient of one issue, as a provider transport receives it (`BatchItem.content`).

    Computed on demand and once: the recipient's raw values are worked out on first use and
    shared by `envelope`, `slot_values` and `content`, so a provider pays only for what it
    uses, and the sender's look-up of the envelope is not repeated. Use from one thread.
    """

    template: MessageTemplate
    recipient: Recipient
    test: bool = False
    to: str | None = None
    _cache: list[tuple[Envelope, list[str]]] = field(
        default_factory=list, compare=False, repr=False
    )

    def _raw(self) -> tuple[Envelope, list[str]]:
        if not self._cache:
            self._cache.append(self.template._personal(self.recipient, self.test, self.to))
        return self._cache[0]

    def content(self) -> MessageContent:
        envelope, values = self._raw()
        return self.template._content(envelope, values, self.test)

    def envelope(self) -> Envelope:
        return self._raw()[0]

    def slot_values(self) -> dict[tuple[int, SlotContext], str]:
        return self.template._escaped(self._raw()[1])

    def envelope_and_values(self) -> tuple[Envelope, dict[tuple[int, SlotContext], str]]:
        envelope, values = self._raw()
        return envelope, self.template._escaped(values)

    def mime(self) -> OutgoingMessage:
        """The whole MIME message, for providers that take raw messages (costly: ~0.1 ms)."""
        return self.template.personalise(self.recipient, test=self.test, to=self.to)

    def provider_template(self, placeholder: Callable[[int, SlotContext], str]) -> ProviderTemplate:
        return self.template.provider_template(placeholder, test=self.test)


# --- text cleaning ---------------------------------------------------------------------------

# Every C0/C1 control (CR, LF and TAB included) and the Unicode line/paragraph separators become a
# space: subscriber data must never break a header or inject lines into a part.
_CONTROLS = {code: " " for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}


def _clean(value: str) -> str:
    """`value` with control characters replaced by spaces (for body text)."""
    # isprintable() is false for every character in _CONTROLS, and much cheaper than translate.
    return value if value.isprintable() else value.translate(_CONTROLS)


def _clean_line(value: str) -> str:
    """`value` as one header-safe line: no controls, whitespace runs collapsed, trimmed."""
    return " ".join(_clean(value).split())


# --- quoted-printable pieces -----------------------------------------------------------------

_SOFT_BREAK = b"=\r\n"
_QP_MAX = 76


def _qp(text: str) -> bytes:
    """Quoted-printable (UTF-8) of `text` with CRLF line ends and lines of at most 76 octets."""
    if not text:
        return b""
    # Hard line breaks are "\n" for b2a_qp; a lone CR would otherwise pass through raw.
    normal = text.replace("\r\n", "\n").replace("\r", "\n")
    return binascii.b2a_qp(normal.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")


def _open_end(encoded: bytes) -> bytes:
    """`encoded` followed by a soft line break, so whatever comes next starts a fresh line.

    A chunk that already ends with a hard line break needs none. b2a_qp lets a last line reach 76
    octets; the `=` of the soft break must still fit, so such a line is cut before it, never
    inside an `=XX` escape.
    """
    if not encoded or encoded.endswith(b"\r\n"):
        return encoded
    start = encoded.rfind(b"\n") + 1
    if len(encoded) - start < _QP_MAX:
        return encoded + _SOFT_BREAK
    cut = start + _QP_MAX - 1
    if encoded[cut - 1 : cut] == b"=":
        cut -= 1
    elif encoded[cut - 2 : cut - 1] == b"=":
        cut -= 2
    return encoded[:cut] + _SOFT_BREAK + encoded[cut:] + _SOFT_BREAK


def _qp_value(text: str) -> bytes:
    """A per-recipient value: quoted-printable, then a soft break (nothing for an empty value)."""
    if not text:
        return b""
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    if b"\n" in encoded:
        encoded = encoded.replace(b"\n", b"\r\n")
    return _open_end(encoded)


# --- headers ---------------------------------------------------------------------------------

_HEADER_SOFT_LIMIT = 78  # RFC 5322 "should"
_HEADER_HARD_LIMIT = 998  # RFC 5322 "must"
_ENCODED_WORD_MAX = 75  # RFC 2047
_EW_PREFIX = "=?utf-8?q?"
_EW_SUFFIX = "?="
# Characters an RFC 2047 "Q" word may carry as themselves in every context, phrases included.
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_ATEXT = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~ "
)


def _q_char(char: str) -> str:
    if char in _Q_SAFE:
        return char
    if char == " ":
        return "_"
    return "".join(f"={byte:02X}" for byte in char.encode("utf-8"))


def _encoded_words(text: str, first_room: int) -> str:
    """`text` as RFC 2047 encoded words (UTF-8, Q), folded so each line stays short.

    `first_room` is what is left of the first line after the header name. Words hold whole
    characters only, as RFC 2047 requires; the folding white space between them is ignored by
    decoders, so the text decodes exactly.
    """
    overhead = len(_EW_PREFIX) + len(_EW_SUFFIX)
    room = max(min(first_room, _ENCODED_WORD_MAX) - overhead, 12)
    words: list[str] = []
    current: list[str] = []
    size = 0
    for char in text:
        piece = _q_char(char)
        if size + len(piece) > room and current:
            words.append(_EW_PREFIX + "".join(current) + _EW_SUFFIX)
            current, size = [], 0
            room = _ENCODED_WORD_MAX - overhead
        current.append(piece)
        size += len(piece)
    if current:
        words.append(_EW_PREFIX + "".join(current) + _EW_SUFFIX)
    return "\r\n ".join(words)


def _needs_encoding(text: str) -> bool:
    # A literal "=?" could be taken for an encoded word and decoded into something else.
    return not text.isascii() or "=?" in text


def _unstructured(name: str, text: str) -> str:
    """A whole `Name: value` header line (CRLF included) for free text such as the subject."""
    line = f"{name}: {text}"
    if not _needs_encoding(text):
        if len(line) <= _HEADER_SOFT_LIMIT:
            return line + "\r\n"
        folded = _fold_at_spaces(line)
        if folded is not None:
            return folded
    return f"{name}: {_encoded_words(text, _HEADER_SOFT_LIMIT - len(name) - 2)}\r\n"


def _fold_at_spaces(line: str) -> str | None:
    """`line` folded at spaces to about 78 octets; None if a word is too long to fold legally."""
    lines: list[str] = []
    current = ""
    for word in line.split(" "):
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= _HEADER_SOFT_LIMIT:
            current += " " + word
        else:
            lines.append(current)
            current = " " + word
    lines.append(current)
    if any(len(one) > _HEADER_HARD_LIMIT for one in lines):
        return None
    return "\r\n".join(lines) + "\r\n"


def _quote_phrase(text: str) -> str:
    """An ASCII display name as an RFC 5322 phrase: atoms as they are, else a quoted string."""
    if text and all(char in _ATEXT for char in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _address_value(header: str, display_name: str, address: Address) -> str:
    """The value of an address header for one mailbox (folded with CRLF where needed).

    The display name is cleaned and, when it is plain ASCII, quoted by `Address` itself; anything
    else becomes encoded words, so no name can ever add a recipient or change the address.
    """
    display = _clean_line(display_name)
    addr_spec = address.addr_spec
    if not display:
        return addr_spec
    if not _needs_encoding(display):
        quoted = str(
            Address(display_name=display, username=address.username, domain=address.domain)
        )
        if len(header) + 2 + len(quoted) <= _HEADER_SOFT_LIMIT:
            return quoted
        phrase = quoted[: -len(addr_spec) - 3]
        if len(header) + 2 + len(phrase) <= _HEADER_HARD_LIMIT:
            return f"{phrase}\r\n <{addr_spec}>"
    words = _encoded_words(display, _HEADER_SOFT_LIMIT - len(header) - 2)
    if "\r\n" not in words and len(header) + len(words) + len(addr_spec) + 5 <= _HEADER_SOFT_LIMIT:
        return f"{words} <{addr_spec}>"
    return f"{words}\r\n <{addr_spec}>"


# Characters that only a quoted local part could hold; such an address cannot be put raw into
# the SMTP envelope, so it is refused rather than guessed at.
_ADDRESS_BAD = re.compile(r"[<>,;:\"()\[\]\\ ]")


def _mailbox(email: str, who: str) -> Address:
    """`email` as an `Address`; `AudienceError` naming `who` when it cannot be a recipient."""
    local, at, domain = email.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or "@" in local
        # isprintable() rules out controls and every white space but the plain space.
        or not email.isprintable()
        or _ADDRESS_BAD.search(email)
        or domain.startswith(".")
        or domain.endswith(".")
    ):
        raise AudienceError(
            f"{who}: {email!r} is not an address a message can be sent to",
            hint="Fix or remove the subscriber's address.",
        )
    return Address(username=local, domain=domain)


def _ascii_domain(domain: str) -> str:
    """The domain in ASCII (IDNA) for Message-IDs, which must be ASCII."""
    if domain.isascii():
        return domain.lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "newsletter.invalid"


def _id_part(text: str) -> str:
    """`text` reduced to characters that are safe anywhere in a Message-ID or List-Id."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "issue"


# Letters NFKD does not take apart into an ASCII letter and an accent.
_LETTERS = str.maketrans(
    {"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ß": "ss", "đ": "d",
     "Đ": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "TH", "ð": "d", "Ð": "D", "ı": "i"}
)  # fmt: skip


def _slug(text: str) -> str:
    """`text` as lower-case ASCII letters, digits and hyphens (for a derived List-Id)."""
    plain = unicodedata.normalize("NFKD", text.translate(_LETTERS))
    ascii_text = plain.encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-") or "newsletter"


def _param(name: str, value: str) -> str:
    """A MIME parameter; RFC 2231 (`name*=utf-8''...`) when the value is not plain ASCII."""
    if value.isascii() and value.isprintable():
        return f'{name}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name}*=utf-8''{quote(value, safe='')}"


# --- the template ----------------------------------------------------------------------------

_HTML = HTML
_TEXT = TEXT
_KNOWN_PATHS = (UNSUBSCRIBE_URL, WEB_URL)
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
_CID = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*$")
_SAFE_URL = re.compile(r"^[^\s<>\"\x00-\x1f\x7f]+$")


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """An issue's message, encoded once; `personalise` splices in one recipient's values.

    Build it with `MessageTemplate.prepare`. It holds no per-recipient state, so one template
    serves any number of recipients (and threads) without growing. `fingerprint` identifies what
    recipients receive: the rendered issue plus every setting that changes the bytes, except the
    Date header (a send resumed another day is the same issue).
    """

    fingerprint: str
    issue: str
    sender: str
    _smtputf8: bool
    _slots: tuple[Slot, ...] = field(repr=False)
    _head_from: str = field(repr=False)
    _head_date: str = field(repr=False)
    _head_lists: str = field(repr=False)
    _head_end: str = field(repr=False)
    _subject: SlotText = field(repr=False)
    _subject_line: str | None = field(repr=False)
    _subject_test_line: str | None = field(repr=False)
    _pieces: tuple[bytes, ...] = field(repr=False)
    _keys: tuple[tuple[int, bool], ...] = field(repr=False)
    _holes: tuple[tuple[int, int], ...] = field(repr=False)
    _id_prefix: str = field(repr=False)
    _id_domain: str = field(repr=False)
    _id_key: hmac.HMAC = field(repr=False)
    _secret: bytes = field(repr=False)
    _token_for: Callable[[bytes, str], str] = field(repr=False)
    _unsubscribe_prefix: str | None = field(repr=False)
    _unsubscribe_mailto: str | None = field(repr=False)
    _web_url: str = field(repr=False)
    # For provider APIs (see `content`, `provider_template`, `slot_values`).
    _all_slots: tuple[Slot, ...] = field(repr=False)
    _slot_keys: tuple[tuple[int, SlotContext], ...] = field(repr=False)
    _html: SlotText = field(repr=False)
    _text: SlotText = field(repr=False)
    _from_box: Mailbox = field(repr=False)
    _reply_box: Mailbox | None = field(repr=False)
    _list_id_value: str = field(repr=False)
    _images: tuple[InlineImage, ...] = field(repr=False)

    @classmethod
    def prepare(
        cls,
        rendered: RenderedIssue,
        settings: Settings,
        *,
        secret: bytes,
        token_for: Callable[[bytes, str], str],
        date: datetime | None = None,
    ) -> MessageTemplate:
        """Encode everything that is the same for every recipient, once.

        Raises `ConfigError` when no unsubscribe URL or address is configured (every message must
        carry a working unsubscribe link) and `RenderError` for an unknown slot or an embedded
        image whose Content-ID or content type cannot go into a message.
        """
        unsubscribe_prefix, mailto = _unsubscribe_settings(settings)
        _check_slots(rendered)
        web_url = f"{settings.base_url}{rendered.name}/web.html" if settings.base_url else ""
        sender = settings.sender
        smtputf8 = not sender.addr_spec.isascii()
        domain = _ascii_domain(sender.domain)
        fingerprint = _fingerprint(rendered, settings)
        boundary = f"=_{fingerprint[:24]}"

        when = date or datetime.now().astimezone()
        if when.tzinfo is None:
            when = when.astimezone()
        head_from = f"From: {_address_value('From', sender.display_name, sender)}\r\n"
        head_date = f"Date: {format_datetime(when)}\r\n"

        lists = ""
        if settings.reply_to is not None:
            reply_to = settings.reply_to
            lists += f"Reply-To: {_address_value('Reply-To', reply_to.display_name, reply_to)}\r\n"
        lists += _list_id(settings, domain)

        head_end = ""
        if unsubscribe_prefix is not None:
            head_end += "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        language = rendered.language.replace("_", "-")
        if language and _LANGUAGE.match(language):
            head_end += f"Content-Language: {language}\r\n"
        head_end += "MIME-Version: 1.0\r\n"

        builder = _BodyBuilder(web_url)
        alternative = f"{boundary}_alt"
        images = rendered.embedded_images
        if images:
            related = f"{boundary}_rel"
            head_end += (
                f'Content-Type: multipart/related; type="multipart/alternative";\r\n'
                f' boundary="{related}"\r\n\r\n'
            )
            builder.static(
                f"--{related}\r\n"
                "Content-Type: multipart/alternative;\r\n"
                f' boundary="{alternative}"\r\n\r\n'
            )
        else:
            head_end += f'Content-Type: multipart/alternative; boundary="{alternative}"\r\n\r\n'
        builder.text_part(alternative, "text/plain", rendered.text, _TEXT)
        builder.text_part(alternative, "text/html", rendered.html, _HTML)
        builder.static(f"--{alternative}--\r\n")
        if images:
            for image in images:
                builder.static(f"--{related}\r\n")
                builder.image(image)
            builder.static(f"--{related}--\r\n")

        subject = SlotText(
            tuple(
                _clean(part) if isinstance(part, str) else part
                for part in _resolve_web_url(rendered.subject, web_url, raw=True)
            )
        )
        static_subject = None if subject.slots else _clean_line(subject.fill(lambda slot: ""))
        html_text = SlotText(tuple(_resolve_web_url(rendered.html, web_url, raw=False)))
        plain_text = SlotText(tuple(_resolve_web_url(rendered.text, web_url, raw=True)))
        all_slots, slot_keys = _slot_index(
            ((SUBJECT, subject), (HTML, html_text), (TEXT, plain_text))
        )
        reply_box = None
        if settings.reply_to is not None:
            reply_box = Mailbox(
                settings.reply_to.addr_spec, _clean_line(settings.reply_to.display_name)
            )
        list_id_line = _list_id(settings, domain)
        return cls(
            fingerprint=fingerprint,
            issue=rendered.name,
            sender=sender.addr_spec,
            _smtputf8=smtputf8,
            _slots=builder.slots,
            _head_from=head_from,
            _head_date=head_date,
            _head_lists=lists,
            _head_end=head_end,
            _subject=subject,
            _subject_line=(
                _unstructured("Subject", static_subject) if static_subject is not None else None
            ),
            _subject_test_line=(
                _unstructured("Subject", f"[TEST] {static_subject}")
                if static_subject is not None
                else None
            ),
            _pieces=tuple(builder.pieces),
            _keys=tuple(builder.keys),
            _holes=tuple(builder.holes),
            _id_prefix=_id_part(rendered.name),
            _id_domain=domain,
            _id_key=hmac.new(
                secret, b"message-id\0" + rendered.name.encode() + b"\0", hashlib.sha256
            ),
            _secret=secret,
            _token_for=token_for,
            _unsubscribe_prefix=unsubscribe_prefix,
            _unsubscribe_mailto=mailto,
            _web_url=web_url,
            _all_slots=all_slots,
            _slot_keys=slot_keys,
            _html=html_text,
            _text=plain_text,
            _from_box=Mailbox(sender.addr_spec, _clean_line(sender.display_name)),
            _reply_box=reply_box,
            _list_id_value=list_id_line[len("List-Id: ") :].rstrip("\r\n").replace("\r\n", ""),
            _images=tuple(
                InlineImage(
                    image.cid,
                    image.filename,
                    image.content_type,
                    image.data,
                    base64.b64encode(image.data).decode("ascii"),
                )
                for image in images
            ),
        )

    # --- per recipient ---------------------------------------------------------------------

    def missing_values(self, recipient: Recipient) -> list[str]:
        """Slot paths this recipient has no value for and that have no default."""
        missing: list[str] = []
        for slot in (*self._slots, *self._subject.slots):
            if (
                slot.default is None
                and slot.path not in missing
                and not self._field_value(recipient, slot)
            ):
                missing.append(slot.path)
        return missing

    def personalise(
        self, recipient: Recipient, *, test: bool = False, to: str | None = None
    ) -> OutgoingMessage:
        """The whole message for `recipient`, ready for a transport.

        `test=True` marks a test send: the subject gets `[TEST] `, the Message-ID is random, and
        `to` (a reviewer) receives the message personalised for `recipient`. Raises
        `AudienceError` when the address is unusable or a required value is missing.
        """
        email = recipient.email
        target, target_name, target_email = self._target(recipient, test, to)
        unsubscribe_url, header_url = self._unsubscribe_urls(target_email if to else email)

        values: list[str] = []
        missing: list[str] = []
        for slot in self._slots:
            value = self._slot_value(recipient, slot, unsubscribe_url)
            if value is None:
                missing.append(slot.path)
                value = ""
            values.append(value)
        subject_line = self._subject_test_line if test else self._subject_line
        if subject_line is None:
            subject_line = self._subject_for(recipient, test, unsubscribe_url, missing)
        if missing:
            raise AudienceError(
                f"{email}: no value for {', '.join(dict.fromkeys(missing))} and no default",
                hint="Fill in the subscriber's field, or give the template a default, e.g. "
                "{{ subscriber.first_name | default('there') }}.",
            )

        message_id = self._message_id(email, test)

        unsubscribe = ""
        if header_url:
            unsubscribe = f"List-Unsubscribe: <{header_url}>"
            if self._unsubscribe_mailto is not None:
                unsubscribe += f",\r\n <{self._unsubscribe_mailto}>"
            unsubscribe += "\r\n"
        elif self._unsubscribe_mailto is not None:
            unsubscribe = f"List-Unsubscribe: <{self._unsubscribe_mailto}>\r\n"

        head = "".join(
            (
                self._head_from,
                "To: ",
                _address_value("To", target_name, target),
                "\r\n",
                subject_line,
                self._head_date,
                "Message-ID: ",
                message_id,
                "\r\n",
                self._head_lists,
                unsubscribe,
                self._head_end,
            )
        )
        encoded = [
            _qp_value(html.escape(_clean(values[slot])) if in_html else _clean(values[slot]))
            for slot, in_html in self._keys
        ]
        pieces = list(self._pieces)
        pieces[0] = head.encode("utf-8")
        for position, key in self._holes:
            pieces[position] = encoded[key]
        return OutgoingMessage(
            sender=self.sender,
            recipient=target_email,
            message_id=message_id,
            data=b"".join(pieces),
            smtputf8=self._smtputf8 or not target_email.isascii() or _flag(recipient, to),
        )

    # --- for provider APIs -----------------------------------------------------------------

    def content(
        self, recipient: Recipient, *, test: bool = False, to: str | None = None
    ) -> MessageContent:
        """`recipient`'s message as structured content (same values as `personalise`).

        `test` and `to` work as for `personalise`. Raises `AudienceError` when the address is
        unusable or a required value is missing.
        """
        envelope, values = self._personal(recipient, test, to)
        return self._content(envelope, values, test)

    def _content(self, envelope: Envelope, values: list[str], test: bool) -> MessageContent:
        by_slot = dict(zip(self._all_slots, values, strict=True))
        subject = _clean_line(self._subject.fill(by_slot.__getitem__))
        if test:
            subject = f"[TEST] {subject}"
        html_text = self._html.fill(lambda slot: html.escape(_clean(by_slot[slot])))
        plain = self._text.fill(lambda slot: _clean(by_slot[slot]))
        return MessageContent(
            sender=self._from_box,
            to=envelope.to,
            reply_to=self._reply_box,
            subject=subject,
            html=html_text,
            text=plain,
            headers=envelope.headers,
            message_id=envelope.message_id,
            images=self._images,
        )

    def envelope(
        self, recipient: Recipient, *, test: bool = False, to: str | None = None
    ) -> Envelope:
        """`recipient`'s address, extra headers and Message-ID (cheap: no body is built)."""
        target, target_name, target_email = self._target(recipient, test, to)
        _, header_url = self._unsubscribe_urls(target_email if to else recipient.email)
        return Envelope(
            Mailbox(target.addr_spec, _clean_line(target_name)),
            self._headers(header_url),
            self._message_id(recipient.email, test),
        )

    @property
    def images(self) -> tuple[InlineImage, ...]:
        """The embedded images (the same for every recipient)."""
        return self._images

    @property
    def from_mailbox(self) -> Mailbox:
        return self._from_box

    @property
    def reply_to(self) -> Mailbox | None:
        return self._reply_box

    def provider_template(
        self, placeholder: Callable[[int, SlotContext], str], *, test: bool = False
    ) -> ProviderTemplate:
        """Subject, html and text with `placeholder(slot index, context)` in every hole.

        The provider module chooses the placeholder syntax (`-name_0-`, `%recipient.v0%`, ...);
        `slot_values` gives the values for the same (index, context) keys. Static text is
        used as it is: the provider fills in values, it must not re-escape anything.
        """
        index = {slot: n for n, slot in enumerate(self._all_slots)}

        def fill(text: SlotText, context: SlotContext) -> str:
            return text.fill(lambda slot: placeholder(index[slot], context))

        subject = self._subject.fill(lambda slot: "\0" + placeholder(index[slot], SUBJECT) + "\0")
        # One line, whitespace collapsed as `_clean_line` does for a personalised subject.
        pieces = subject.split("\0")
        for n in range(0, len(pieces), 2):
            pieces[n] = re.sub(r"\s+", " ", pieces[n])
        subject = "".join(pieces).strip()
        if test:
            subject = f"[TEST] {subject}"
        return ProviderTemplate(
            subject=subject,
            html=fill(self._html, HTML),
            text=fill(self._text, TEXT),
            keys=self._slot_keys,
            slots=self._all_slots,
        )

    def slot_values(
        self, recipient: Recipient, *, test: bool = False, to: str | None = None
    ) -> dict[tuple[int, SlotContext], str]:
        """`recipient`'s value for every (slot index, context) of `provider_template`.

        Escaped for the context: HTML-escaped (quotes too) in html, control characters
        removed in text, one trimmed line in the subject. Raises like `content`.
        """
        return self._escaped(self._personal(recipient, test, to)[1])

    def envelope_and_values(
        self, recipient: Recipient, *, test: bool = False, to: str | None = None
    ) -> tuple[Envelope, dict[tuple[int, SlotContext], str]]:
        """`envelope` and `slot_values` together, computing the shared parts once."""
        envelope, values = self._personal(recipient, test, to)
        return envelope, self._escaped(values)

    def _escaped(self, values: list[str]) -> dict[tuple[int, SlotContext], str]:
        result: dict[tuple[int, SlotContext], str] = {}
        for key in self._slot_keys:
            value, context = values[key[0]], key[1]
            if context == HTML:
                result[key] = html.escape(_clean(value))
            elif context == TEXT:
                result[key] = _clean(value)
            else:
                result[key] = _clean_line(value)
        return result

    def _personal(
        self, recipient: Recipient, test: bool, to: str | None
    ) -> tuple[Envelope, list[str]]:
        """The envelope and the raw value of every slot; `AudienceError` when one is missing."""
        target, target_name, target_email = self._target(recipient, test, to)
        unsubscribe_url, header_url = self._unsubscribe_urls(
            target_email if to else recipient.email
        )
        values: list[str] = []
        missing: list[str] = []
        for slot in self._all_slots:
            value = self._slot_value(recipient, slot, unsubscribe_url)
            if value is None:
                missing.append(slot.path)
                value = ""
            values.append(value)
        if missing:
            raise AudienceError(
                f"{recipient.email}: no value for {', '.join(dict.fromkeys(missing))} "
                "and no default",
                hint="Fill in the subscriber's field, or give the template a default, e.g. "
                "{{ subscriber.first_name | default('there') }}.",
            )
        envelope = Envelope(
            Mailbox(target.addr_spec, _clean_line(target_name)),
            self._headers(header_url),
            self._message_id(recipient.email, test),
        )
        return envelope, values

    def _headers(self, header_url: str) -> tuple[tuple[str, str], ...]:
        mailto = self._unsubscribe_mailto
        urls = [f"<{url}>" for url in (header_url, mailto) if url]
        headers = [("List-Unsubscribe", ", ".join(urls))]
        if header_url:
            headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        headers.append(("List-Id", self._list_id_value))
        return tuple(headers)

    # --- shared by both ---------------------------------------------------------------------

    def _target(self, recipient: Recipient, test: bool, to: str | None) -> tuple[Address, str, str]:
        """(mailbox, display name, address) the message goes to: the recipient or a reviewer."""
        email = recipient.email
        mailbox = _mailbox(email, email)
        if to is None:
            return mailbox, recipient.name or "", email
        if not test:
            raise ValueError("'to' is only for test sends (test=True)")
        reviewer = parse_address(to)
        if reviewer is None:
            raise AudienceError(f"{to!r} is not an email address a test can be sent to")
        target = _mailbox(reviewer.addr_spec, to)
        return target, reviewer.display_name, target.addr_spec

    def _unsubscribe_urls(self, token_email: str) -> tuple[str, str]:
        """(the unsubscribe link for the body, the https URL for the header or "").

        A test's token is the reviewer's (the caller passes the reviewer's address): a
        one-click unsubscribe from the test copy must never unsubscribe the sample subscriber.
        """
        if self._unsubscribe_prefix is not None:
            token = quote(self._token_for(self._secret, token_email), safe="")
            header_url = self._unsubscribe_prefix + token
            return header_url, header_url
        return self._unsubscribe_mailto or "", ""

    def _message_id(self, email: str, test: bool) -> str:
        if test:
            return f"<{self._id_prefix}.test.{secrets.token_hex(12)}@{self._id_domain}>"
        digest = self._id_key.copy()
        digest.update(email.lower().encode("utf-8"))
        return f"<{self._id_prefix}.{digest.hexdigest()[:32]}@{self._id_domain}>"

    def _subject_for(
        self, recipient: Recipient, test: bool, unsubscribe_url: str, missing: list[str]
    ) -> str:
        parts: list[str] = ["[TEST] "] if test else []
        for part in self._subject:
            if isinstance(part, str):
                parts.append(part)
                continue
            value = self._slot_value(recipient, part, unsubscribe_url)
            if value is None:
                missing.append(part.path)
                value = ""
            parts.append(value)
        return _unstructured("Subject", _clean_line("".join(parts)))

    def _slot_value(self, recipient: Recipient, slot: Slot, unsubscribe_url: str) -> str | None:
        """The raw value of `slot` for `recipient` (None: missing, no default)."""
        if slot.path == UNSUBSCRIBE_URL:
            return unsubscribe_url
        if slot.path == WEB_URL:
            return self._web_url
        value = self._field_value(recipient, slot)
        if value:
            return value
        return slot.default

    @staticmethod
    def _field_value(recipient: Recipient, slot: Slot) -> str | None:
        name = slot.field
        if name is None:  # unsubscribe_url and web_url always have a value
            return "-"
        value = recipient.value(name)
        if value is None:
            if name == "email":
                value = recipient.email
            elif name == "name":
                value = recipient.name
        return value


def _flag(recipient: Recipient, to: str | None) -> bool:
    # The recipient's own flag counts only when the message goes to the recipient.
    return to is None and bool(recipient.needs_smtputf8)


# --- prepare helpers -------------------------------------------------------------------------


class _BodyBuilder:
    """Collects the body as pre-encoded pieces with holes for per-recipient values."""

    def __init__(self, web_url: str) -> None:
        self.web_url = web_url
        self.pieces: list[bytes] = [b""]  # piece 0 is the per-recipient header block
        self.holes: list[tuple[int, int]] = []  # (piece index, key index)
        self.keys: list[tuple[int, bool]] = []  # (slot index, in HTML): each encoded once
        self.slots: tuple[Slot, ...] = ()
        self._index: dict[Slot, int] = {}

    def static(self, data: str | bytes) -> None:
        raw = data.encode("ascii") if isinstance(data, str) else data
        if len(self.pieces) > 1 and not self._is_hole(len(self.pieces) - 1):
            self.pieces[-1] += raw
        else:
            self.pieces.append(raw)

    def _is_hole(self, position: int) -> bool:
        return bool(self.holes) and self.holes[-1][0] == position

    def hole(self, slot: Slot, context: str) -> None:
        index = self._index.get(slot)
        if index is None:
            index = self._index[slot] = len(self.slots)
            self.slots = (*self.slots, slot)
        key = (index, context == _HTML)
        if key not in self.keys:
            self.keys.append(key)
        self.pieces.append(b"")
        self.holes.append((len(self.pieces) - 1, self.keys.index(key)))

    def text_part(self, boundary: str, content_type: str, text: SlotText, context: str) -> None:
        self.static(
            f"--{boundary}\r\n"
            f'Content-Type: {content_type}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        parts = list(_resolve_web_url(text, self.web_url, raw=context == _TEXT))
        for index, part in enumerate(parts):
            if isinstance(part, Slot):
                self.hole(part, context)
                continue
            encoded = _qp(part)
            # A static chunk followed by a value ends with a soft break so the value starts a
            # fresh line; the value carries its own soft break after it.
            self.static(_open_end(encoded) if index + 1 < len(parts) else encoded)
        self.static("\r\n")

    def image(self, image: EmbeddedImage) -> None:
        payload = base64.encodebytes(image.data).replace(b"\n", b"\r\n")
        self.static(
            f"Content-Type: {image.content_type}\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            f"Content-ID: <{image.cid}>\r\n"
            f"Content-Disposition: inline; {_param('filename', image.filename)}\r\n\r\n"
        )
        self.static(payload)


def _resolve_web_url(text: SlotText, web_url: str, *, raw: bool) -> Iterable[str | Slot]:
    """`text` with `web_url` slots (the same for everyone) merged into the static text."""
    merged: list[str | Slot] = []
    for part in text:
        if isinstance(part, Slot) and part.path == WEB_URL:
            part = web_url if raw else html.escape(web_url)
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif part != "":
            merged.append(part)
    return merged


def _slot_index(
    texts: Iterable[tuple[SlotContext, SlotText]],
) -> tuple[tuple[Slot, ...], tuple[tuple[int, SlotContext], ...]]:
    """Every distinct slot (in first-use order) and the (slot index, context) pairs used."""
    slots: dict[Slot, int] = {}
    keys: dict[tuple[int, SlotContext], None] = {}
    for context, text in texts:
        for slot in text.slots:
            index = slots.setdefault(slot, len(slots))
            keys[(index, context)] = None
    return tuple(slots), tuple(keys)


def _check_slots(rendered: RenderedIssue) -> None:
    problems = []
    for where, text in (
        ("subject", rendered.subject),
        ("html", rendered.html),
        ("text", rendered.text),
    ):
        for slot in text.slots:
            if slot.field is None and slot.path not in _KNOWN_PATHS:
                problems.append(
                    Problem(f"{where}: unknown per-recipient value '{slot.path}'", key=slot.path)
                )
            elif slot.field is not None and not slot.field:
                problems.append(Problem(f"{where}: 'subscriber.' names no field", key=slot.path))
    for image in rendered.embedded_images:
        if not _CID.match(image.cid):
            problems.append(Problem(f"image {image.filename!r}: unusable Content-ID {image.cid!r}"))
        if not _CONTENT_TYPE.match(image.content_type):
            problems.append(
                Problem(f"image {image.filename!r}: bad content type {image.content_type!r}")
            )
    if problems:
        raise RenderError(problems)


def _unsubscribe_settings(settings: Settings) -> tuple[str | None, str | None]:
    """The https URL prefix (ending in `token=`) and the mailto URL, whichever are configured."""
    config = settings.unsubscribe
    path = settings.config_path
    prefix = None
    if config.url:
        if not _SAFE_URL.match(config.url):
            raise ConfigError(
                [Problem('must be a URL without spaces or <>"', file=path, key="unsubscribe.url")]
            )
        prefix = config.url + ("&" if "?" in config.url else "?") + "token="
    mailto = None
    if config.mailto:
        address = parse_address(config.mailto)
        if address is None:
            raise ConfigError(
                [Problem("is not an email address", file=path, key="unsubscribe.mailto")]
            )
        mailto = f"mailto:{quote(address.addr_spec, safe='@')}?subject=unsubscribe"
    if prefix is None and mailto is None:
        raise ConfigError(
            [
                Problem(
                    "set 'url' or 'mailto': every message needs a working unsubscribe link",
                    file=path,
                    key="unsubscribe",
                )
            ]
        )
    return prefix, mailto


def _list_id(settings: Settings, domain: str) -> str:
    """The List-Id header line: `settings.list_id`, else derived from the name and domain."""
    configured = _clean_line(settings.list_id or "")
    if configured:
        phrase, _, rest = configured.partition("<")
        list_id = rest.rstrip(">").strip() if rest else phrase
        phrase = phrase.strip() if rest else ""
    else:
        phrase, list_id = _clean_line(settings.name), f"{_slug(settings.name)}.{domain}"
    list_id = re.sub(r"[^A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+", "-", list_id)
    if not phrase:
        return f"List-Id: <{list_id}>\r\n"
    if _needs_encoding(phrase):
        words = _encoded_words(phrase, _HEADER_SOFT_LIMIT - len("List-Id: "))
        return f"List-Id: {words}\r\n <{list_id}>\r\n"
    line = f"List-Id: {_quote_phrase(phrase)} <{list_id}>"
    if len(line) > _HEADER_SOFT_LIMIT:
        line = f"List-Id: {_quote_phrase(phrase)}\r\n <{list_id}>"
    return line + "\r\n"


def _fingerprint(rendered: RenderedIssue, settings: Settings) -> str:
    """Everything that changes what a recipient receives, except the Date header.

    The date is left out on purpose: a send resumed another day is the same issue.
    """
    digest = hashlib.sha256(b"newsletter-message-v1\0")
    unsubscribe = settings.unsubscribe
    for value in (
        rendered.fingerprint,
        rendered.name,
        repr(rendered.subject.parts),
        repr(rendered.html.parts),
        repr(rendered.text.parts),
        rendered.language,
        str(settings.sender),
        str(settings.reply_to or ""),
        settings.name,
        settings.list_id or "",
        settings.base_url or "",
        unsubscribe.url or "",
        unsubscribe.mailto or "",
    ):
        digest.update(value.encode("utf-8", "surrogatepass") + b"\0")
    for image in rendered.embedded_images:
        digest.update(f"{image.cid}\0{image.filename}\0{image.content_type}\0".encode())
        digest.update(hashlib.sha256(image.data).digest())
    return digest.hexdigest()
