"""Messages built by the template are their own SMTP wire form (`OutgoingMessage.wire_ready`).

SMTP doubles a dot that starts a line and wants CRLF line ends (RFC 5321 4.5.2). The template
never makes a line that starts with "." (quoted-printable writes it `=2E`) nor a bare CR or LF,
so the SMTP client writes the bytes as they are. These tests feed hostile values and text and
check the bytes, the decoded text, and what a real SMTP server receives.
"""

from __future__ import annotations

import binascii
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.config import Settings, TransportSettings
from newsletter.delivery.message import MessageTemplate
from newsletter.delivery.mime import dots_escaped, qp, qp_value, wire_clean
from newsletter.delivery.transports.base import OutgoingMessage
from newsletter.delivery.transports.smtp import SmtpTransport, smtp_body
from newsletter.dkim import DkimSigner, generate_key
from newsletter.render.model import EmbeddedImage, RenderedIssue
from newsletter.slots import Slot, SlotText
from tests.smtpserver import SmtpTestServer
from tests.test_message import (
    DATE,
    PNG,
    SECRET,
    Person,
    assert_wire_format,
    body_text,
    make_settings,
    parse,
    token_for,
)

FIRST_NAME = Slot("subscriber.first_name", "there")
CITY = Slot("subscriber.city", "")

# Static text full of what needs care on the wire: leading dots at every line length around
# the 76-octet limit, a lone ".", bare CR, CRLF, lines of dots longer than a QP line.
HOSTILE_TEXT = "".join(
    (
        ".starts with a dot\n",
        ".\n",
        "..\n",
        "line\r.after a bare CR\r\n.after CRLF\n",
        *("." + "x" * width + "\n" for width in range(70, 80)),
        *("." * width + "\n" for width in (74, 75, 76, 77, 150, 152, 300)),
        *("x" * width + "." * 5 + "\n" for width in range(70, 78)),
        "=." * 60 + "\n",
        "é." * 50 + "\n",
        "trailing dot.",
    )
)
HOSTILE_VALUES = [
    ".",
    "..",
    "\n.",
    "\r",
    "\r\n.\r\n",
    ".\r\n.",
    "." * 200,
    "a" * 75 + ".b",
    "x" * 74 + "." * 10,
    ".\x00.",
    "\u2028.\u2029.",
    "=2E.",
    " .",
    "é" * 30 + ".",
    "<.>&\".'",
]


def hostile_random(rng: random.Random) -> str:
    alphabet = [".", ".", ".", "\r", "\n", "a", " ", "=", "é", "\t", "<", "&"]
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300)))


def hostile_rendered(*, images: bool) -> RenderedIssue:
    html = SlotText(
        (
            "<html><head><style>\n.button { color: red }\n.x{}\n</style></head><body>\n",
            FIRST_NAME,
            ".\n.",
            CITY,
            "\n<p>" + HOSTILE_TEXT.replace("\n", "<br>\n") + "</p>\n",
            Slot("unsubscribe_url"),
            "\n.</body></html>",
        )
    )
    text = SlotText(
        (
            ".Hello ",
            FIRST_NAME,
            ".",
            CITY,
            "\n" + HOSTILE_TEXT,
            FIRST_NAME,
            "\n.Unsubscribe: ",
            Slot("unsubscribe_url"),
            "\n",
        )
    )
    embedded = (EmbeddedImage("logo@example.org", "logo.png", "image/png", PNG),) if images else ()
    return RenderedIssue(
        name="2026-11",
        subject=SlotText((".News for ", FIRST_NAME, ". " + "." * 100)),
        preheader="",
        html=html,
        text=text,
        web_html="",
        language="en",
        embedded_images=embedded,
        fingerprint="wire-test",
    )


def people() -> list[Person]:
    rng = random.Random(20261203)
    values = HOSTILE_VALUES + [hostile_random(rng) for _ in range(60)]
    return [
        Person(
            f"reader{n}@example.org",
            name=value[:60],
            first_name=value,
            city=values[-1 - n],
        )
        for n, value in enumerate(values)
    ]


@pytest.fixture(scope="module")
def signer() -> DkimSigner:
    return DkimSigner("example.org", "news", generate_key(1024).private_pem)


def templates(settings: Settings, signer: DkimSigner) -> Iterator[tuple[str, MessageTemplate]]:
    for images in (False, True):
        for sign in (None, signer.sign):
            yield (
                f"images={images} dkim={sign is not None}",
                MessageTemplate.prepare(
                    hostile_rendered(images=images),
                    settings,
                    secret=SECRET,
                    token_for=token_for,
                    date=DATE,
                    sign=sign,
                ),
            )


def test_hostile_values_and_text_give_messages_that_are_their_own_wire_form(
    tmp_path: Path, signer: DkimSigner
) -> None:
    settings = make_settings(tmp_path)
    for label, template in templates(settings, signer):
        for person in people():
            message = template.personalise(person)
            assert message.wire_ready, (label, person)
            # Spliced, not joined: the SMTP client writes the pieces as they are.
            assert len(message.pieces) > 1 and b"".join(message.pieces) == message.data
            assert message.eight_bit is False
            assert message.data.isascii()
            assert wire_clean(message.data)
            # What the generic path would put on the wire is exactly the message.
            assert smtp_body(message.data) == message.data, (label, person)
            assert_wire_format(message.data)
            parsed = parse(message)
            text = body_text(parsed, "plain")
            # The static text decodes as written (=2E is "."), bare CRs as line ends.
            assert HOSTILE_TEXT.replace("\r\n", "\n").replace("\r", "\n") in text
            first = " ".join((person.first_name or "").translate(_SPACES).split(" "))
            assert f".Hello {first}." in text, (label, person)
            assert "." * 300 in text


_SPACES = {code: " " for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}


def test_a_test_copy_is_wire_ready_too(tmp_path: Path) -> None:
    template = MessageTemplate.prepare(
        hostile_rendered(images=False),
        make_settings(tmp_path),
        secret=SECRET,
        token_for=token_for,
        date=DATE,
    )
    message = template.personalise(
        Person("ann@example.org", first_name="\n.x"), test=True, to='".Rev" <rev@example.org>'
    )
    assert message.wire_ready
    assert wire_clean(message.data)


def test_a_server_receives_exactly_the_message(tmp_path: Path, signer: DkimSigner) -> None:
    """aiosmtpd un-stuffs what it receives: with nothing stuffed, that is the message itself."""
    settings = make_settings(tmp_path)
    sent: list[OutgoingMessage] = []
    with SmtpTestServer() as server:
        transport = SmtpTransport(
            TransportSettings(kind="smtp", host=server.host, port=server.port, security="none"),
            password=None,
        )
        try:
            for _label, template in templates(settings, signer):
                for person in people()[:20]:
                    message = template.personalise(person)
                    transport.send(message)
                    sent.append(message)
        finally:
            transport.close()
        received = server.wait_for_messages(len(sent))
    assert [m.data for m in received] == [m.data for m in sent]


def test_a_template_with_a_signer_that_rewrites_the_body_is_not_wire_ready(
    tmp_path: Path,
) -> None:
    # Only a header block put on top keeps the guarantee; anything else goes through smtp_body.
    template = MessageTemplate.prepare(
        hostile_rendered(images=False),
        make_settings(tmp_path),
        secret=SECRET,
        token_for=token_for,
        date=DATE,
        sign=lambda data: data.replace(b"=2E", b"."),
    )
    message = template.personalise(Person("ann@example.org", first_name="x"))
    assert not message.wire_ready
    assert smtp_body(message.data) != message.data  # leading dots to double


@pytest.mark.parametrize(
    "text",
    [
        ".",
        ".a",
        "." * 76,
        "." * 77,
        "." + "=" * 30,
        "." + "é" * 40,
        "a" * 75 + ".",
        "a" * 76 + ".",
        "a" * 74 + "=.",
        "\n".join("." + "x" * width for width in range(60, 90)),
        ".\t\n. \n.",
    ],
)
def test_quoted_printable_never_starts_a_line_with_a_dot_and_decodes_back(text: str) -> None:
    for encoded in (qp(text), qp_value(text.replace("\n", " "))):
        assert wire_clean(encoded), encoded
        for line in encoded.split(b"\r\n"):
            assert len(line) <= 76, line
        assert binascii.a2b_qp(encoded.replace(b"\r\n", b"\n")).decode("utf-8").rstrip("\n") in (
            text,
            text.replace("\n", " "),
        )


def test_dots_escaped_leaves_dotless_text_alone() -> None:
    encoded = b"a.b\r\nc.\r\n"
    assert dots_escaped(encoded) is encoded


def test_a_message_in_pieces_is_the_message_they_make() -> None:
    pieces = (b"Subject: x\r\n", b"", b"\r\nHello\r\n")
    whole = OutgoingMessage("a@example.org", "b@example.org", "<1@x>", b"".join(pieces))
    spliced = OutgoingMessage("a@example.org", "b@example.org", "<1@x>", pieces=pieces)
    assert spliced.size == whole.size == 21
    assert spliced.pieces == pieces and whole.pieces == (whole.data,)
    assert spliced.data == whole.data and spliced == whole and hash(spliced) == hash(whole)
    assert spliced != OutgoingMessage("a@example.org", "c@example.org", "<1@x>", whole.data)
    assert "size=21" in repr(spliced) and "Hello" not in repr(spliced)
    with pytest.raises(AttributeError, match="immutable"):
        spliced.recipient = "c@example.org"
    with pytest.raises(ValueError, match="data or of pieces"):
        OutgoingMessage("a@example.org", "b@example.org", "<1@x>", b"x", pieces=(b"x",))
