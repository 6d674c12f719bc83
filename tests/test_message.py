"""Per-recipient messages: encoded once, spliced, and parsed back with the stdlib parser."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import re
import tracemalloc
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.config import Footer, SendingSettings, Settings, UnsubscribeSettings
from newsletter.delivery.message import MessageTemplate
from newsletter.delivery.mime import encoded_words
from newsletter.delivery.transports.base import OutgoingMessage
from newsletter.errors import AudienceError, ConfigError, RenderError
from newsletter.render.model import EmbeddedImage, RenderedIssue
from newsletter.slots import Slot, SlotText
from newsletter.tokens import make_token, verify_token

SECRET = b"test-secret"
DATE = datetime(2026, 11, 3, 9, 30, tzinfo=timezone(timedelta(hours=1)))
UNSUBSCRIBE = "https://example.org/unsubscribe"
MAILTO = "mailto:{address}@example.org?subject=unsubscribe%20{token}"
BASE_URL = "https://news.example.org/"
FIRST_NAME = Slot("subscriber.first_name", "there")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


@dataclass(frozen=True)
class Person:
    """A stand-in for the audience module's subscriber."""

    email: str
    name: str | None = None
    first_name: str | None = None
    city: str | None = None
    needs_smtputf8: bool = False

    def value(self, field: str) -> str | None:
        return {
            "email": self.email,
            "name": self.name,
            "first_name": self.first_name,
            "city": self.city,
        }.get(field)


def token_for(secret: bytes, address: str) -> str:
    return hmac.new(secret, address.encode(), hashlib.sha256).hexdigest()[:24]


def make_settings(
    tmp_path: Path,
    *,
    url: str | None = UNSUBSCRIBE,
    mailto: str | None = "unsubscribe@example.org",
    base_url: str | None = BASE_URL,
    reply_to: Address | None = None,
) -> Settings:
    return Settings(
        root=tmp_path,
        name="Example News",
        sender=Address("Example News", addr_spec="news@example.org"),
        footer=Footer(address="1 Example Street"),
        base_url=base_url,
        reply_to=reply_to,
        unsubscribe=UnsubscribeSettings(url=url, mailto=mailto),
    )


def make_rendered(*, images: bool = False, subject: SlotText | None = None) -> RenderedIssue:
    """An ~84 KB issue: long inline-styled lines, non-ASCII text, a few slots in each part."""
    row = (
        '<tr><td style="padding:12px 24px;font-family:Georgia,serif;font-size:16px;'
        'line-height:1.5;color:#1f2933">Café de Flore — “naïve” résumé &amp; more; '
        "a long line of text that goes on without a break so the encoder must fold it. "
        '<a href="https://example.org/a?x=1&amp;y=2" style="color:#1b6b5a">read</a></td></tr>'
    )
    rows = "\n".join(row for _ in range(290))
    image = '<img src="cid:logo@example.org" alt="Logo" width="160">' if images else ""
    html = SlotText(
        (
            f'<!doctype html><html lang="en"><body>{image}<p>Hello ',
            FIRST_NAME,
            ",</p>\n<p>Sent to ",
            Slot("subscriber.email"),
            f'.</p>\n<table role="presentation">\n{rows}\n</table>\n<p><a href="',
            Slot("web_url"),
            '">View online</a> · <a href="',
            Slot("unsubscribe_url"),
            '">Unsubscribe</a></p></body></html>\n',
        )
    )
    text = SlotText(
        (
            "Hello ",
            FIRST_NAME,
            ",\n\n" + "Café de Flore — a line of text.\n" * 200 + "\nView online: ",
            Slot("web_url"),
            "\nUnsubscribe: ",
            Slot("unsubscribe_url"),
            "\n",
        )
    )
    embedded = (EmbeddedImage("logo@example.org", "logo.png", "image/png", PNG),) if images else ()
    return RenderedIssue(
        name="2026-11",
        subject=subject or SlotText(("November news for ", FIRST_NAME)),
        preheader="What happened in November",
        html=html,
        text=text,
        web_html="",
        language="en",
        embedded_images=embedded,
        fingerprint="render-fingerprint",
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(params=[False, True], ids=["no-images", "images"])
def images(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def template(settings: Settings, images: bool) -> MessageTemplate:
    return MessageTemplate.prepare(
        make_rendered(images=images), settings, secret=SECRET, token_for=token_for, date=DATE
    )


def parse(message: OutgoingMessage) -> EmailMessage:
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def body_text(parsed: EmailMessage, subtype: str) -> str:
    part = parsed.get_body((subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def assert_wire_format(data: bytes) -> None:
    """CRLF line ends only, no header line over 998 octets, encoded body lines at most 76."""
    assert b"\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in data.replace(b"\r\n", b""), "bare CR"
    head, body = data.split(b"\r\n\r\n", 1)
    for line in head.split(b"\r\n"):
        assert len(line) <= 998
        # Every header line starts a field or continues one (folding); nothing else.
        assert re.match(rb"^([A-Za-z-]+: |[ \t])", line), line
    for line in body.split(b"\r\n"):
        assert len(line) <= 78, line
    for part in email.message_from_bytes(data, policy=email.policy.default).walk():
        if not part.is_multipart():
            payload = part.get_payload()
            assert isinstance(payload, str)
            assert part["Content-Transfer-Encoding"] in {"quoted-printable", "base64"}
            assert max(len(line) for line in payload.splitlines()) <= 76


def to_display_name(data: bytes) -> str:
    """The To display name decoded as RFC 2047 says.

    The stdlib's header parser keeps the white space between adjacent encoded words of a phrase
    (RFC 2047 section 6.2 says to ignore it), so encoded names are decoded with `decode_header`.
    """
    match = re.search(rb"^To: (.*?)\r\n(?! )", header_block(data) + b"\r\n", re.M | re.S)
    assert match is not None
    value = match.group(1).decode("utf-8").replace("\r\n", "")
    if "=?" not in value:
        (address,) = email.message_from_bytes(data, policy=email.policy.default)["To"].addresses
        return str(address.display_name)
    return str(make_header(decode_header(value.rsplit("<", 1)[0]))).strip()


def unsubscribe_url(address: str, url: str = UNSUBSCRIBE) -> str:
    return f"{url}?token={token_for(SECRET, address)}"


# --- structure and headers -------------------------------------------------------------------


def test_structure(template: MessageTemplate, images: bool) -> None:
    parsed = parse(template.personalise(Person("lee@example.org", "Lee", "Lee")))

    # The canonical nesting: alternative > [text, related > [html, images]].
    assert parsed.get_content_type() == "multipart/alternative"
    plain, second = parsed.iter_parts()
    if images:
        assert second.get_content_type() == "multipart/related"
        assert second.get_param("type") == "text/html"
        rich, image = second.iter_parts()
        assert image.get_content_type() == "image/png"
        assert image["Content-ID"] == "<logo@example.org>"
        assert image.get_content_disposition() == "inline"
        assert image.get_filename() == "logo.png"
        assert image.get_payload(decode=True) == PNG
        assert "cid:logo@example.org" in body_text(parsed, "html")
    else:
        rich = second
    assert [plain.get_content_type(), rich.get_content_type()] == ["text/plain", "text/html"]
    for part in (plain, rich):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert not parsed.defects
    assert all(not part.defects for part in parsed.walk())


def test_headers(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, reply_to=Address("Editors", addr_spec="eds@example.org"))
    template = MessageTemplate.prepare(
        make_rendered(), settings, secret=SECRET, token_for=token_for, date=DATE
    )
    message = template.personalise(Person("lee@example.org", "Lee Smith", "Lee"))
    parsed = parse(message)

    assert str(parsed["From"]) == "Example News <news@example.org>"
    assert [a.addr_spec for a in parsed["To"].addresses] == ["lee@example.org"]
    assert parsed["To"].addresses[0].display_name == "Lee Smith"
    assert parsed["Subject"] == "November news for Lee"
    assert parsed["Date"].datetime == DATE
    assert parsed["Reply-To"] == "Editors <eds@example.org>"
    assert parsed["List-Id"] == "Example News <example-news.example.org>"
    assert parsed["List-Unsubscribe"] == (
        f"<{unsubscribe_url('lee@example.org')}>, "
        # The mailto carries the token too: `inbox process` needs proof of whom it came from.
        f"<{MAILTO.format(address='unsubscribe', token=token_for(SECRET, 'lee@example.org'))}>"
    )
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["Content-Language"] == "en"
    assert re.fullmatch(r"<2026-11\.[0-9a-f]{32}@example\.org>", parsed["Message-ID"])
    assert message.message_id == parsed["Message-ID"]
    assert (message.sender, message.recipient, message.smtputf8) == (
        "news@example.org",
        "lee@example.org",
        False,
    )


def test_personalised_parts_and_unsubscribe_links(template: MessageTemplate) -> None:
    parsed = parse(template.personalise(Person("ann@example.org", "Ann", "Ann")))
    url = unsubscribe_url("ann@example.org")
    html_part, text_part = body_text(parsed, "html"), body_text(parsed, "plain")

    assert f"<{url}>" in parsed["List-Unsubscribe"]
    assert f'<a href="{url}">Unsubscribe</a>' in html_part
    assert f"Unsubscribe: {url}\n" in text_part
    assert "<p>Hello Ann,</p>" in html_part
    assert "<p>Sent to ann@example.org.</p>" in html_part
    assert text_part.startswith("Hello Ann,\n\n")
    assert f'<a href="{BASE_URL}2026-11/web.html">View online</a>' in html_part
    assert f"View online: {BASE_URL}2026-11/web.html\n" in text_part
    # Another recipient gets their own token, not a copy of the first.
    other = parse(template.personalise(Person("bob@example.org")))
    assert unsubscribe_url("bob@example.org") in body_text(other, "html")
    assert url not in other.as_string()
    assert body_text(other, "plain").startswith("Hello there,\n")


def test_wire_format(template: MessageTemplate) -> None:
    for person in (
        Person("lee@example.org", "Lee", "Lee"),
        Person("long@example.org", "L" * 3000, "é" * 500 + "x" * 700),
        Person("emoji@example.org", "Zoë 🎉🎉 " * 40, "🎉" * 100),
    ):
        assert_wire_format(template.personalise(person).data)


@pytest.mark.parametrize("length", range(66, 82))
@pytest.mark.parametrize("filler", ["a", "é", " "])
def test_static_chunk_of_any_length_before_a_value(
    settings: Settings, length: int, filler: str
) -> None:
    """The soft break after a static chunk must fit even when its last line is full."""
    head = "x" * (length - 1) + filler
    text = SlotText((head, FIRST_NAME, head, FIRST_NAME))
    rendered = replace(make_rendered(), text=text, html=text)
    template = MessageTemplate.prepare(
        rendered, settings, secret=SECRET, token_for=token_for, date=DATE
    )
    message = template.personalise(Person("a@example.org", first_name="y" * length))
    assert_wire_format(message.data)
    assert body_text(parse(message), "plain") == head + "y" * length + head + "y" * length


# --- hostile and unusual names ---------------------------------------------------------------

HOSTILE = [
    pytest.param("Lee\r\nBcc: victim@example.net", "Lee Bcc: victim@example.net", id="crlf"),
    pytest.param("Lee\nX-Evil: 1\r", "Lee X-Evil: 1", id="lf-cr"),
    pytest.param("<script>alert(1)</script>", "<script>alert(1)</script>", id="script"),
    pytest.param('Lee "the boss" O\'Neil', 'Lee "the boss" O\'Neil', id="quotes"),
    pytest.param("Søren <x@y>", "Søren <x@y>", id="angle-non-ascii"),
    pytest.param('"Evil" <x@y>, bcc@z', '"Evil" <x@y>, bcc@z', id="address-list"),
    pytest.param("A" * 2000, "A" * 2000, id="very-long-ascii"),
    pytest.param("Ørjan Ærø " * 60, ("Ørjan Ærø " * 60).strip(), id="very-long-non-ascii"),
    pytest.param("Zoë Ünal-Çelik", "Zoë Ünal-Çelik", id="non-ascii"),
    pytest.param("Ana 🎉👩‍👩‍👧", "Ana 🎉👩‍👩‍👧", id="emoji"),
    pytest.param("=?utf-8?q?=3Cx=40y=3E?=", "=?utf-8?q?=3Cx=40y=3E?=", id="encoded-word-lookalike"),
    pytest.param("Tab\there\x00\x7f\u2028end", "Tab here end", id="controls"),
]


@pytest.mark.parametrize(("name", "shown"), HOSTILE)
def test_hostile_names(template: MessageTemplate, name: str, shown: str) -> None:
    person = Person("lee@example.org", name=name, first_name=name, city=name)
    message = template.personalise(person)
    parsed = parse(message)

    assert_wire_format(message.data)
    assert message.recipient == "lee@example.org"
    (address,) = parsed["To"].addresses
    assert address.addr_spec == "lee@example.org"
    assert to_display_name(message.data) == shown
    assert not parsed["To"].defects
    assert parsed["Subject"] == " ".join(f"November news for {shown}".split())
    for field in ("Bcc", "Cc", "X-Evil"):
        assert field not in parsed
    html_part = body_text(parsed, "html")
    assert "<script>" not in html_part
    assert f"<p>Hello {_html_escaped(name)},</p>" in html_part
    assert body_text(parsed, "plain").startswith(f"Hello {_controls_to_spaces(name)},\n\n")


def _controls_to_spaces(text: str) -> str:
    return "".join(
        " " if ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029" else c for c in text
    )


def _html_escaped(text: str) -> str:
    import html

    return html.escape(_controls_to_spaces(text), quote=True)


def test_script_in_html_is_escaped(template: MessageTemplate) -> None:
    html_part = body_text(
        parse(
            template.personalise(Person("a@example.org", first_name="<script>alert(1)</script>"))
        ),
        "html",
    )
    assert "<p>Hello &lt;script&gt;alert(1)&lt;/script&gt;,</p>" in html_part


@pytest.mark.parametrize(
    "address",
    [
        "lee@example.org\r\nBcc: victim@example.net",
        "no-at-sign",
        "<lee>@example.org",
        "a@b,c@d",
        "lee@",
        "a b@example.org",
    ],
)
def test_unusable_address_is_refused(template: MessageTemplate, address: str) -> None:
    with pytest.raises(AudienceError, match=re.escape(repr(address))):
        template.personalise(Person(address, "Lee"))


def test_internationalised_address(template: MessageTemplate) -> None:
    person = Person("søren@exämple.dk", "Søren", "Søren", needs_smtputf8=True)
    message = template.personalise(person)
    parsed = parse(message)

    assert message.smtputf8
    assert message.recipient == "søren@exämple.dk"
    assert "To: =?utf-8?q?S=C3=B8ren?= <søren@exämple.dk>\r\n".encode() in message.data
    # RFC 6532 headers are UTF-8; the bytes parser would read them as ASCII with surrogates.
    unicode = email.message_from_string(message.data.decode("utf-8"), policy=email.policy.default)
    assert [a.addr_spec for a in unicode["To"].addresses] == ["søren@exämple.dk"]
    assert body_text(parsed, "plain").startswith("Hello Søren,\n")
    assert message.message_id.isascii()
    assert_wire_format(message.data)


# --- message ids and test sends --------------------------------------------------------------


def test_message_id_is_stable_per_recipient(settings: Settings, template: MessageTemplate) -> None:
    lee = Person("lee@example.org", "Lee")
    first = template.personalise(lee).message_id
    assert template.personalise(lee).message_id == first
    # A template prepared again (a resumed send, another day) gives the same id.
    again = MessageTemplate.prepare(
        make_rendered(), settings, secret=SECRET, token_for=token_for, date=DATE + timedelta(1)
    )
    assert again.personalise(lee).message_id == first
    assert again.personalise(Person("LEE@example.org")).message_id == first
    assert template.personalise(Person("ann@example.org")).message_id != first


def test_test_sends(template: MessageTemplate) -> None:
    sample = Person("sample@example.org", "Sam Ple", "Sam")
    ids = set()
    for _ in range(3):
        message = template.personalise(sample, test=True, to="Rita Reviewer <rita@example.org>")
        parsed = parse(message)
        ids.add(message.message_id)
        assert parsed["Subject"] == "[TEST] November news for Sam"
        assert message.recipient == "rita@example.org"
        assert [str(a) for a in parsed["To"].addresses] == ["Rita Reviewer <rita@example.org>"]
        assert "<p>Hello Sam,</p>" in body_text(parsed, "html")
        # One-click unsubscribe from a test copy must not unsubscribe the sample subscriber.
        assert unsubscribe_url("rita@example.org") in parsed["List-Unsubscribe"]
        assert token_for(SECRET, "sample@example.org") not in message.data.decode()
    assert len(ids) == 3
    assert template.personalise(sample).message_id not in ids
    plain_test = template.personalise(sample, test=True)
    assert plain_test.recipient == "sample@example.org"
    assert parse(plain_test)["Subject"].startswith("[TEST] ")


def test_test_send_with_static_subject(settings: Settings) -> None:
    rendered = make_rendered(subject=SlotText.plain("Static news"))
    template = MessageTemplate.prepare(rendered, settings, secret=SECRET, token_for=token_for)
    person = Person("a@example.org")
    assert parse(template.personalise(person))["Subject"] == "Static news"
    assert parse(template.personalise(person, test=True))["Subject"] == "[TEST] Static news"


def test_reviewer_address_is_checked(template: MessageTemplate) -> None:
    with pytest.raises(AudienceError, match="not an email address"):
        template.personalise(Person("a@example.org"), test=True, to="rita@example.org\r\nBcc: x@y")


# --- against the stdlib ----------------------------------------------------------------------


def test_same_content_as_stdlib_email_message(
    settings: Settings, template: MessageTemplate, images: bool
) -> None:
    person = Person("zoe@example.org", "Zoë Ünal", "Zoë")
    rendered = make_rendered(images=images)
    values = {
        "subscriber.first_name": "Zoë",
        "subscriber.email": "zoe@example.org",
        "web_url": f"{BASE_URL}2026-11/web.html",
        "unsubscribe_url": unsubscribe_url("zoe@example.org"),
    }
    reference = EmailMessage(policy=email.policy.SMTP)
    reference["From"] = settings.sender
    reference["To"] = Address("Zoë Ünal", addr_spec="zoe@example.org")
    reference["Subject"] = rendered.subject.fill(lambda slot: values[slot.path])
    reference.set_content(rendered.text.fill(lambda slot: values[slot.path]))
    reference.add_alternative(rendered.html.fill(lambda slot: values[slot.path]), subtype="html")
    if images:
        html_part = reference.get_body(("html",))
        assert isinstance(html_part, EmailMessage)
        html_part.add_related(PNG, "image", "png", cid="<logo@example.org>", filename="logo.png")
    expected = email.message_from_bytes(bytes(reference), policy=email.policy.default)
    ours = parse(template.personalise(person))

    assert isinstance(expected, EmailMessage)
    for subtype in ("plain", "html"):
        assert body_text(ours, subtype) == body_text(expected, subtype)
    assert ours["Subject"] == expected["Subject"]
    assert ours["To"].addresses == expected["To"].addresses
    assert ours["From"].addresses == expected["From"].addresses
    ours_images = [
        p.get_payload(decode=True) for p in ours.walk() if p.get_content_maintype() == "image"
    ]
    expected_images = [
        p.get_payload(decode=True) for p in expected.walk() if p.get_content_maintype() == "image"
    ]
    assert ours_images == expected_images


# --- values, configuration, fingerprint ------------------------------------------------------


def test_missing_values(settings: Settings) -> None:
    subject = SlotText(("News for ", Slot("subscriber.city")))
    rendered = make_rendered(subject=subject)
    template = MessageTemplate.prepare(rendered, settings, secret=SECRET, token_for=token_for)

    complete = Person("a@example.org", city="Ghent")
    assert template.missing_values(complete) == []
    assert parse(template.personalise(complete))["Subject"] == "News for Ghent"
    # first_name has a default, so only city (in the subject, no default) is missing.
    for incomplete in (Person("b@example.org"), Person("b@example.org", city="")):
        assert template.missing_values(incomplete) == ["subscriber.city"]
        with pytest.raises(AudienceError, match=r"b@example\.org: no value for subscriber\.city"):
            template.personalise(incomplete)


def test_missing_value_in_body(settings: Settings) -> None:
    text = SlotText(("Dear ", Slot("subscriber.name"), ", from ", Slot("subscriber.city", "")))
    rendered = replace(make_rendered(), text=text)
    template = MessageTemplate.prepare(rendered, settings, secret=SECRET, token_for=token_for)
    assert template.missing_values(Person("a@example.org")) == ["subscriber.name"]
    with pytest.raises(AudienceError, match=r"subscriber\.name"):
        template.personalise(Person("a@example.org"))
    message = template.personalise(Person("a@example.org", name="Ann"))
    assert body_text(parse(message), "plain") == "Dear Ann, from "


BOTH_URL = unsubscribe_url("a@example.org", "https://example.org/u?list=news").replace(
    "?token", "&token"
)


@pytest.mark.parametrize(
    ("url", "mailto", "in_body", "header"),
    [
        (
            UNSUBSCRIBE,
            None,
            unsubscribe_url("a@example.org"),
            f"<{unsubscribe_url('a@example.org')}>",
        ),
        (
            None,
            "Unsubscribe <unsub@example.org>",
            MAILTO.format(address="unsub", token=token_for(SECRET, "a@example.org")),
            f"<{MAILTO.format(address='unsub', token=token_for(SECRET, 'a@example.org'))}>",
        ),
        (
            "https://example.org/u?list=news",
            "unsub@example.org",
            BOTH_URL,
            f"<{BOTH_URL}>, "
            f"<{MAILTO.format(address='unsub', token=token_for(SECRET, 'a@example.org'))}>",
        ),
    ],
    ids=["url", "mailto", "both"],
)
def test_unsubscribe_settings(
    tmp_path: Path, url: str | None, mailto: str | None, in_body: str, header: str
) -> None:
    settings = make_settings(tmp_path, url=url, mailto=mailto)
    template = MessageTemplate.prepare(
        make_rendered(), settings, secret=SECRET, token_for=token_for
    )
    parsed = parse(template.personalise(Person("a@example.org")))

    assert parsed["List-Unsubscribe"] == header
    assert ("List-Unsubscribe-Post" in parsed) == (url is not None)
    assert f"Unsubscribe: {in_body}\n" in body_text(parsed, "plain")
    import html

    assert f'<a href="{html.escape(in_body)}">Unsubscribe</a>' in body_text(parsed, "html")


def test_no_unsubscribe_configured(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, url=None, mailto=None)
    with pytest.raises(ConfigError, match="unsubscribe"):
        MessageTemplate.prepare(make_rendered(), settings, secret=SECRET, token_for=token_for)


def test_no_base_url_means_empty_web_url(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, base_url=None)
    template = MessageTemplate.prepare(
        make_rendered(), settings, secret=SECRET, token_for=token_for
    )
    parsed = parse(template.personalise(Person("a@example.org")))
    assert '<a href="">View online</a>' in body_text(parsed, "html")
    assert "View online: \n" in body_text(parsed, "plain")


def test_unknown_slot_is_refused(settings: Settings) -> None:
    rendered = replace(make_rendered(), text=SlotText(("x", Slot("favourite_colour"))))
    with pytest.raises(RenderError, match="favourite_colour"):
        MessageTemplate.prepare(rendered, settings, secret=SECRET, token_for=token_for)


def test_long_and_non_ascii_subjects(settings: Settings) -> None:
    long_subject = "A rather long subject line " * 6 + "for "
    for subject in (long_subject, "Nieuws van november — voor ", "x" * 1200 + " "):
        rendered = make_rendered(subject=SlotText((subject, FIRST_NAME)))
        template = MessageTemplate.prepare(rendered, settings, secret=SECRET, token_for=token_for)
        message = template.personalise(Person("a@example.org", first_name="Zoë"))
        assert_wire_format(message.data)
        assert parse(message)["Subject"] == (subject + "Zoë").strip()
        header = re.search(rb"^Subject: .*?\r\n(?! )", message.data, re.M | re.S)
        assert header is not None
        for line in header.group(0).split(b"\r\n"):
            if b"x" * 100 not in line:
                assert len(line) <= 78, line


def test_fingerprint_and_determinism(settings: Settings, tmp_path: Path) -> None:
    rendered = make_rendered()

    def prepare(rendered: RenderedIssue, settings: Settings, date: datetime) -> MessageTemplate:
        return MessageTemplate.prepare(
            rendered, settings, secret=SECRET, token_for=token_for, date=date
        )

    first = prepare(rendered, settings, DATE)
    person = Person("a@example.org", "Ann")
    assert (
        prepare(rendered, settings, DATE).personalise(person).data == first.personalise(person).data
    )
    # The date is not content: a send resumed later is the same issue.
    assert prepare(rendered, settings, DATE + timedelta(days=2)).fingerprint == first.fingerprint
    changed_text = replace(rendered, text=SlotText.plain("other text"))
    changed_settings = replace(
        settings, unsubscribe=UnsubscribeSettings(url="https://example.org/u")
    )
    with_image = make_rendered(images=True)
    fingerprints = {
        first.fingerprint,
        prepare(changed_text, settings, DATE).fingerprint,
        prepare(rendered, changed_settings, DATE).fingerprint,
        prepare(with_image, settings, DATE).fingerprint,
    }
    assert len(fingerprints) == 4
    assert re.fullmatch(r"[0-9a-f]{64}", first.fingerprint)


def test_message_size_and_memory_do_not_grow(template: MessageTemplate) -> None:
    """An ~84 KB HTML part; personalising thousands keeps nothing per recipient."""
    size = len(template.personalise(Person("a@example.org")).data)
    assert 84_000 < size < 160_000
    tracemalloc.start()
    try:
        for number in range(3000):
            template.personalise(Person(f"user{number}@example.org", f"User {number}"))
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current < 200_000
    assert peak < 3 * size + 200_000


def test_non_ascii_sender_and_list_name(tmp_path: Path) -> None:
    settings = replace(
        make_settings(tmp_path),
        name="Ørsted Nieuws",
        sender=Address("Ørsted Nieuws", addr_spec="nieuws@example.nl"),
    )
    template = MessageTemplate.prepare(
        make_rendered(), settings, secret=SECRET, token_for=token_for
    )
    message = template.personalise(Person("a@example.org"))
    parsed = parse(message)
    assert_wire_format(message.data)
    assert b"\xc3" not in header_block(message.data)  # ASCII headers: RFC 2047, not raw UTF-8
    assert parsed["From"].addresses == (Address("Ørsted Nieuws", addr_spec="nieuws@example.nl"),)
    assert parsed["List-Id"] == "Ørsted Nieuws <orsted-nieuws.example.nl>"
    assert parsed["Message-ID"].endswith("@example.nl>")


def test_to_is_only_for_test_sends(template: MessageTemplate) -> None:
    with pytest.raises(ValueError, match="test"):
        template.personalise(Person("a@example.org"), to="rita@example.org")


# --- bulk-mail headers, return path and VERP ----------------------------------------------------


def test_bulk_headers_and_no_feedback_id_by_default(template: MessageTemplate) -> None:
    parsed = parse(template.personalise(Person("lee@example.org")))
    assert parsed["Precedence"] == "bulk"
    assert parsed["X-Auto-Response-Suppress"] == "OOF, AutoReply"
    assert parsed["Feedback-ID"] is None


def test_feedback_id_names_the_issue(settings: Settings) -> None:
    settings = replace(settings, sending=SendingSettings(feedback_id="riverside"))
    template = MessageTemplate.prepare(
        make_rendered(), settings, secret=SECRET, token_for=token_for, date=DATE
    )
    assert parse(template.personalise(Person("lee@example.org")))["Feedback-ID"] == (
        "2026-11:riverside"
    )


def test_envelope_sender_is_the_return_path_with_a_verp_token(settings: Settings) -> None:
    plain = MessageTemplate.prepare(make_rendered(), settings, secret=SECRET, token_for=make_token)
    assert plain.personalise(Person("lee@example.org")).sender == "news@example.org"

    bounce = replace(settings, sending=SendingSettings(return_path="bounces@example.org"))
    template = MessageTemplate.prepare(make_rendered(), bounce, secret=SECRET, token_for=make_token)
    message = template.personalise(Person("lee@example.org"))
    assert message.sender == "bounces@example.org"
    assert b"Return-Path" not in header_block(message.data), "the receiving server adds it"

    verp = replace(settings, sending=SendingSettings(return_path="bounces@example.org", verp=True))
    template = MessageTemplate.prepare(make_rendered(), verp, secret=SECRET, token_for=make_token)
    for address in ("lee@example.org", "Søren.Ø@example.org"):
        sender = template.personalise(Person(address, needs_smtputf8=True)).sender
        local, _, domain = sender.rpartition("@")
        assert domain == "example.org"
        prefix, plus, token = local.partition("+")
        assert (prefix, plus) == ("bounces", "+")
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", token), "no quoting needed"
        # The token is the recipient's signed token: it names them, and only we can make it.
        assert verify_token(SECRET, token) == address
    # A test send's bounce names the reviewer it went to, never the sample subscriber.
    reviewer = template.personalise(Person("lee@example.org"), test=True, to="ed@example.org")
    assert verify_token(SECRET, reviewer.sender.split("+", 1)[1].rsplit("@", 1)[0]) == (
        "ed@example.org"
    )


def test_encoded_words_end_at_spaces() -> None:
    text = "Nieuwsbrief van de buurtmoestuin — oogstfeest, compostbakken en het winterrooster"
    folded = encoded_words(text, 60)
    words = folded.split("\r\n ")
    assert len(words) > 1
    decoded = str(make_header(decode_header(folded.replace("\r\n ", " "))))
    assert decoded == text
    for word in words[:-1]:
        # Every word but the last ends with an encoded space: no word of the text is cut.
        assert word.endswith("_?="), word
        assert len(word) <= 75
    # A run without spaces still splits (mid-word is the only way), within the limit.
    long_run = encoded_words("ë" * 60, 60).split("\r\n ")
    assert len(long_run) > 1 and all(len(word) <= 75 for word in long_run)
