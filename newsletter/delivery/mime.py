"""MIME building blocks: RFC 2047 encoded words, quoted-printable pieces, address and header
lines, and the body builder that leaves holes for per-recipient values.

Everything here is pure (no settings beyond what is passed in, no state). Header values never carry
CR, LF or other control characters from subscriber data (`clean`, `clean_line`), and addresses are
built with `email.headerregistry.Address`, never by formatting strings.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import unicodedata
from collections.abc import Iterable
from email.headerregistry import Address
from urllib.parse import quote

from ..config import Settings
from ..errors import AudienceError
from ..render.model import EmbeddedImage
from ..slots import WEB_URL, Slot, SlotText
from .content import HTML, TEXT

__all__ = [
    "BodyBuilder",
    "address_value",
    "ascii_domain",
    "clean",
    "clean_line",
    "dots_escaped",
    "encoded_words",
    "fold_at_spaces",
    "id_part",
    "list_id_header",
    "list_identifier",
    "mailbox_address",
    "needs_encoding",
    "open_end",
    "param",
    "qp",
    "qp_value",
    "quote_phrase",
    "resolve_web_url",
    "slug",
    "unstructured",
    "wire_clean",
]


# --- text cleaning ---------------------------------------------------------------------------

# Every C0/C1 control (CR, LF and TAB included) and the Unicode line/paragraph separators become a
# space: subscriber data must never break a header or inject lines into a part.
_CONTROLS = {code: " " for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}


def clean(value: str) -> str:
    """`value` with control characters replaced by spaces (for body text)."""
    # isprintable() is false for every character in _CONTROLS, and much cheaper than translate.
    return value if value.isprintable() else value.translate(_CONTROLS)


def clean_line(value: str) -> str:
    """`value` as one header-safe line: no controls, whitespace runs collapsed, trimmed."""
    return " ".join(clean(value).split())


# --- quoted-printable pieces -----------------------------------------------------------------

_SOFT_BREAK = b"=\r\n"
_QP_MAX = 76


def qp(text: str) -> bytes:
    """Quoted-printable (UTF-8) of `text` with CRLF line ends and lines of at most 76 octets.

    No line starts with "." (see `dots_escaped`), so the result is already in SMTP's wire form.
    """
    if not text:
        return b""
    # Hard line breaks are "\n" for b2a_qp; a lone CR would otherwise pass through raw.
    normal = text.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(normal.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    return dots_escaped(encoded)


def dots_escaped(encoded: bytes) -> bytes:
    """Quoted-printable `encoded` (CRLF line ends) with a "." that starts a line written `=2E`.

    SMTP doubles a leading dot on the wire (RFC 5321 4.5.2); a message with none is its own
    wire form, so the SMTP client sends it as it is, with no per-message scan or copy. `=2E`
    decodes to the same ".", so readers see no difference. A line the escape makes longer
    than 76 octets is split with a soft break (never inside an `=XX` escape).
    """
    if not encoded.startswith(b".") and b"\n." not in encoded:
        return encoded
    lines = encoded.split(b"\r\n")
    for number, line in enumerate(lines):
        if line.startswith(b"."):
            lines[number] = _escaped_line(line)
    return b"\r\n".join(lines)


def _escaped_line(line: bytes) -> bytes:
    """One quoted-printable line starting with ".", escaped and folded to 76 octets."""
    line = b"=2E" + line[1:]
    folded: list[bytes] = []
    while len(line) > _QP_MAX:
        cut = _QP_MAX - 1  # room for the "=" of the soft break
        if line[cut - 1 : cut] == b"=":
            cut -= 1
        elif line[cut - 2 : cut - 1] == b"=":
            cut -= 2
        folded.append(line[:cut] + b"=")
        line = line[cut:]
        if line.startswith(b"."):
            line = b"=2E" + line[1:]
    folded.append(line)
    return b"\r\n".join(folded)


def wire_clean(data: bytes) -> bool:
    """True when `data` is its own SMTP wire form: CRLF line ends only, no line starting with
    "." (so nothing to double), which `qp`, base64 and our headers always are."""
    crlf = data.count(b"\r\n")
    return (
        data.count(b"\r") == crlf
        and data.count(b"\n") == crlf
        and not data.startswith(b".")
        and b"\n." not in data
    )


def open_end(encoded: bytes) -> bytes:
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
    tail = encoded[cut:]
    if tail.startswith(b"."):
        tail = b"=2E" + tail[1:]  # the tail starts a line: keep the message its own wire form
    return encoded[:cut] + _SOFT_BREAK + tail + _SOFT_BREAK


def qp_value(text: str) -> bytes:
    """A per-recipient value: quoted-printable, then a soft break (nothing for an empty value)."""
    if not text:
        return b""
    # `text` is one line (callers `clean` it: no CR or LF), so b2a_qp adds only soft breaks.
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    if b"\n" in encoded:
        encoded = encoded.replace(b"\n", b"\r\n")
    return open_end(dots_escaped(encoded))


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


def encoded_words(text: str, first_room: int) -> str:
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
    after_space = 0  # pieces in `current` up to and including its last space
    for char in text:
        piece = _q_char(char)
        while size + len(piece) > room and current:
            # End the word after the last space when there is one, so clients that show each
            # encoded word separately (or a reader of the raw header) never see a word cut.
            cut = after_space or len(current)
            words.append(_EW_PREFIX + "".join(current[:cut]) + _EW_SUFFIX)
            current = current[cut:]
            size = sum(len(one) for one in current)
            after_space = 0
            room = _ENCODED_WORD_MAX - overhead
        current.append(piece)
        size += len(piece)
        if char == " ":
            after_space = len(current)
    if current:
        words.append(_EW_PREFIX + "".join(current) + _EW_SUFFIX)
    return "\r\n ".join(words)


def needs_encoding(text: str) -> bool:
    # A literal "=?" could be taken for an encoded word and decoded into something else.
    return not text.isascii() or "=?" in text


def unstructured(name: str, text: str) -> str:
    """A whole `Name: value` header line (CRLF included) for free text such as the subject."""
    line = f"{name}: {text}"
    if not needs_encoding(text):
        if len(line) <= _HEADER_SOFT_LIMIT:
            return line + "\r\n"
        folded = fold_at_spaces(line)
        if folded is not None:
            return folded
    return f"{name}: {encoded_words(text, _HEADER_SOFT_LIMIT - len(name) - 2)}\r\n"


def fold_at_spaces(line: str) -> str | None:
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


def quote_phrase(text: str) -> str:
    """An ASCII display name as an RFC 5322 phrase: atoms as they are, else a quoted string."""
    if text and all(char in _ATEXT for char in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def address_value(header: str, display_name: str, address: Address) -> str:
    """The value of an address header for one mailbox (folded with CRLF where needed).

    The display name is cleaned and, when it is plain ASCII, quoted by `Address` itself; anything
    else becomes encoded words, so no name can ever add a recipient or change the address.
    """
    display = clean_line(display_name)
    addr_spec = address.addr_spec
    if not display:
        return addr_spec
    if not needs_encoding(display):
        quoted = str(
            Address(display_name=display, username=address.username, domain=address.domain)
        )
        if len(header) + 2 + len(quoted) <= _HEADER_SOFT_LIMIT:
            return quoted
        phrase = quoted[: -len(addr_spec) - 3]
        if len(header) + 2 + len(phrase) <= _HEADER_HARD_LIMIT:
            return f"{phrase}\r\n <{addr_spec}>"
    words = encoded_words(display, _HEADER_SOFT_LIMIT - len(header) - 2)
    if "\r\n" not in words and len(header) + len(words) + len(addr_spec) + 5 <= _HEADER_SOFT_LIMIT:
        return f"{words} <{addr_spec}>"
    return f"{words}\r\n <{addr_spec}>"


# Characters that only a quoted local part could hold; such an address cannot be put raw into
# the SMTP envelope, so it is refused rather than guessed at.
_ADDRESS_BAD = re.compile(r"[<>,;:\"()\[\]\\ ]")


def mailbox_address(email: str, who: str) -> Address:
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


def ascii_domain(domain: str) -> str:
    """The domain in ASCII (IDNA) for Message-IDs, which must be ASCII."""
    if domain.isascii():
        return domain.lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "newsletter.invalid"


def id_part(text: str) -> str:
    """`text` reduced to characters that are safe anywhere in a Message-ID or List-Id."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "issue"


# Letters NFKD does not take apart into an ASCII letter and an accent.
_LETTERS = str.maketrans(
    {"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ß": "ss", "đ": "d",
     "Đ": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "TH", "ð": "d", "Ð": "D", "ı": "i"}
)  # fmt: skip


def slug(text: str) -> str:
    """`text` as lower-case ASCII letters, digits and hyphens (for a derived List-Id)."""
    plain = unicodedata.normalize("NFKD", text.translate(_LETTERS))
    ascii_text = plain.encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-") or "newsletter"


def param(name: str, value: str) -> str:
    """A MIME parameter; RFC 2231 (`name*=utf-8''...`) when the value is not plain ASCII."""
    if value.isascii() and value.isprintable():
        return f'{name}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name}*=utf-8''{quote(value, safe='')}"


# --- the body -------------------------------------------------------------------------------


class BodyBuilder:
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
        key = (index, context == HTML)
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
        parts = list(resolve_web_url(text, self.web_url, raw=context == TEXT))
        for index, part in enumerate(parts):
            if isinstance(part, Slot):
                self.hole(part, context)
                continue
            encoded = qp(part)
            # A static chunk followed by a value ends with a soft break so the value starts a
            # fresh line; the value carries its own soft break after it.
            self.static(open_end(encoded) if index + 1 < len(parts) else encoded)
        self.static("\r\n")

    def image(self, image: EmbeddedImage) -> None:
        payload = base64.encodebytes(image.data).replace(b"\n", b"\r\n")
        self.static(
            f"Content-Type: {image.content_type}\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            f"Content-ID: <{image.cid}>\r\n"
            f"Content-Disposition: inline; {param('filename', image.filename)}\r\n\r\n"
        )
        self.static(payload)


def resolve_web_url(text: SlotText, web_url: str, *, raw: bool) -> Iterable[str | Slot]:
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


def _list_id_parts(settings: Settings, domain: str) -> tuple[str, str]:
    """(the List-Id's phrase, its identifier)."""
    configured = clean_line(settings.list_id or "")
    if configured:
        phrase, _, rest = configured.partition("<")
        list_id = rest.rstrip(">").strip() if rest else phrase
        phrase = phrase.strip() if rest else ""
    else:
        phrase, list_id = clean_line(settings.name), f"{slug(settings.name)}.{domain}"
    return phrase, re.sub(r"[^A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+", "-", list_id)


def list_identifier(settings: Settings) -> str:
    """The identifier of the List-Id header (`news.example.org`): what tokens are bound to."""
    return _list_id_parts(settings, ascii_domain(settings.sender.domain))[1]


def list_id_header(settings: Settings, domain: str) -> str:
    """The List-Id header line: `settings.list_id`, else derived from the name and domain."""
    phrase, list_id = _list_id_parts(settings, domain)
    if not phrase:
        return f"List-Id: <{list_id}>\r\n"
    if needs_encoding(phrase):
        words = encoded_words(phrase, _HEADER_SOFT_LIMIT - len("List-Id: "))
        return f"List-Id: {words}\r\n <{list_id}>\r\n"
    line = f"List-Id: {quote_phrase(phrase)} <{list_id}>"
    if len(line) > _HEADER_SOFT_LIMIT:
        line = f"List-Id: {quote_phrase(phrase)}\r\n <{list_id}>"
    return line + "\r\n"
