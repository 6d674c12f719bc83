"""The sign-up's mails through the transport seam: the outbox, SMTP (test_web_signup.py) and a
provider API (Postmark, played by a real HTTP server on loopback checking its spec)."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from collections.abc import Mapping
from pathlib import Path

import pytest

from newsletter.audience import Subscriber
from newsletter.config import Settings, TransportSettings
from newsletter.delivery.transports.base import Transport
from newsletter.errors import DeliveryError
from newsletter.signup_mail import confirmation_mail, send_signup_mail, welcome_mail
from newsletter.signup_words import signup_words
from tests.providerfake import ProviderFake
from tests.test_transport_postmark import PostmarkFake, transport_for

SECRET = b"mail-test-secret"
LINK = "https://riverside-garden.example.org/confirm?token=abc.def&lang=en"


def test_the_confirmation_mail_in_the_outbox(settings: Settings) -> None:
    mail = confirmation_mail(
        settings, signup_words("en"), email="ann@example.org", link=LINK, days=7
    )
    send_signup_mail(settings, mail, Subscriber("ann@example.org"), secret=SECRET)
    [written] = list((settings.root / "outbox").rglob("*.eml"))
    message = email.message_from_bytes(written.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Please confirm: Riverside Roots"
    assert message["To"] == "ann@example.org"
    assert message["Content-Language"] == "en"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert LINK in str(text.get_content())
    assert f'href="{LINK.replace("&", "&amp;")}"' in str(html.get_content())
    assert "The link works for 7 days." in str(text.get_content())


@pytest.mark.parametrize(
    ("locale", "words"),
    [("nl", "Was jij dit niet?"), ("nl-formal", "Was u dit niet?"), ("en", "Not you?")],
)
def test_the_confirmation_mail_speaks_the_register(
    settings: Settings, locale: str, words: str
) -> None:
    mail = confirmation_mail(settings, signup_words(locale), email="a@example.org", link=LINK,
                             days=3)  # fmt: skip
    assert words in mail.text and words in mail.html


def test_the_welcome_mail_is_optional_and_escapes_raw_html(settings: Settings) -> None:
    assert welcome_mail(settings, signup_words("en")) is None
    (settings.root / "welcome.md").write_text(
        "# Welkom!\n\nHello <script>alert(1)</script> **friend**.\n", encoding="utf-8"
    )
    mail = welcome_mail(settings, signup_words("nl"))
    assert mail is not None and mail.subject == "Welkom!"
    assert "<script>" not in mail.html and "<strong>friend</strong>" in mail.html
    assert "**" not in mail.text and "friend" in mail.text


def test_the_confirmation_mail_through_a_provider_api(settings: Settings) -> None:
    with ProviderFake(hang_seconds=3) as server:
        PostmarkFake(server)
        provider = dataclasses.replace(
            settings, transport=TransportSettings(kind="postmark", api_url=server.url)
        )

        def factory(_settings: Settings, _environ: Mapping[str, str]) -> Transport:
            return transport_for(server)

        mail = confirmation_mail(
            provider, signup_words("en"), email="ann@example.org", link=LINK, days=7
        )
        reply = send_signup_mail(
            provider, mail, Subscriber("ann@example.org"), secret=SECRET, transport_factory=factory
        )
        assert reply.startswith("pm-")
        assert server.accepted["ann@example.org"] == 1
        [request] = [r for r in server.requests if r.path == "/email/batch"]
        [sent] = request.json()
        assert sent["Subject"] == "Please confirm: Riverside Roots"
        assert LINK in sent["TextBody"]


def test_a_refused_mail_is_an_error(settings: Settings, tmp_path: Path) -> None:
    with ProviderFake(hang_seconds=3) as server:
        fake = PostmarkFake(server)
        fake.inactive.add("gone@example.org")

        def factory(_settings: Settings, _environ: Mapping[str, str]) -> Transport:
            return transport_for(server)

        mail = confirmation_mail(settings, signup_words("en"), email="gone@example.org",
                                 link=LINK, days=7)  # fmt: skip
        with pytest.raises(DeliveryError, match="inactive"):
            send_signup_mail(settings, mail, Subscriber("gone@example.org"), secret=SECRET,
                             transport_factory=factory)  # fmt: skip
