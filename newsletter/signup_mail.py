"""The mails of the sign-up flow: the confirmation link, and the optional welcome message.

Both go through the project's transport (SMTP, the outbox, a provider) by the same seam as an
issue: a one-recipient `MessageTemplate` (so addresses, headers, DKIM and provider payloads are
built by the one code path that is tested for header injection), handed over as a batch of one.
Their HTML is a small branded card (the newsletter's colour and name), with a text part.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jinja2
from markupsafe import Markup

from .audience import Subscriber
from .config import Settings
from .delivery.message import MessageTemplate
from .delivery.sender import make_item
from .delivery.transports import make_transport
from .delivery.transports.base import Transport
from .dkim import signer_from_settings
from .errors import DeliveryError
from .render.markdown import to_html, to_text
from .render.model import RenderedIssue
from .signup_words import SignupWords
from .slots import SlotText
from .tokens import make_token

__all__ = [
    "SignupMail",
    "TransportFactory",
    "confirmation_mail",
    "send_signup_mail",
    "welcome_mail",
]

TransportFactory = Callable[[Settings, Mapping[str, str]], Transport]
_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$")

_HTML = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!doctype html>
<html lang="{{ language }}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{{ subject }}</title>
</head>
<body style="margin:0;padding:24px 12px;background:#f2f4f3;font-family:Arial,sans-serif;
color:#1f2933">
<div style="max-width:560px;margin:0 auto;background:#ffffff;border-radius:8px;padding:24px">
<p style="margin:0 0 16px;font-weight:bold;color:{{ colour }}">{{ name }}</p>
{{ body }}
</div></body></html>"""
)


@dataclass(frozen=True)
class SignupMail:
    """One mail of the sign-up flow, ready to hand to a transport."""

    kind: str  # "confirm" or "welcome"
    subject: str
    html: str
    text: str
    language: str


def confirmation_mail(
    settings: Settings, words: SignupWords, *, email: str, link: str, days: int
) -> SignupMail:
    """The mail with the confirmation link (which is the only way to be subscribed)."""
    name = settings.name
    subject = words.sub("mail_subject", name=name)
    lead = words.sub("mail_lead", name=name, email=email)
    ignore = words.sub("mail_ignore", days=days)
    button = words.sub("mail_button")
    body = (
        jinja2.Environment(autoescape=True)
        .from_string(
            '<p style="margin:0 0 16px">{{ lead }}</p>'
            '<p style="margin:0 0 16px"><a href="{{ link }}" style="display:inline-block;'
            "padding:12px 20px;background:{{ colour }};color:#ffffff;border-radius:6px;"
            'text-decoration:none;font-weight:bold">{{ button }}</a></p>'
            '<p style="margin:0 0 16px;word-break:break-all;font-size:14px">{{ link }}</p>'
            '<p style="margin:0;color:#475467;font-size:14px">{{ ignore }}</p>'
        )
        .render(lead=lead, link=link, colour=settings.brand_color, button=button, ignore=ignore)
    )
    html = _HTML.render(
        language=words.language, subject=subject, colour=settings.brand_color, name=name,
        body=Markup(body),
    )  # fmt: skip
    text = f"{name}\n\n{lead}\n\n{link}\n\n{ignore}\n"
    return SignupMail("confirm", subject, html, text, words.language)


def welcome_mail(settings: Settings, words: SignupWords) -> SignupMail | None:
    """The project's welcome message (`[signup] welcome`, Markdown; its first `# heading` is
    the subject), or None when the file is not there."""
    path = settings.root / settings.signup.welcome
    try:
        source = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        return None
    subject = words.sub("welcome_subject", name=settings.name)
    for line in source.splitlines():
        if line.strip():
            found = _HEADING.match(line.strip())
            if found:
                subject = found.group(1)
            break
    html = _HTML.render(
        language=words.language, subject=subject, colour=settings.brand_color,
        name=settings.name, body=Markup(to_html(source)),
    )  # fmt: skip
    return SignupMail("welcome", subject, html, to_text(source), words.language)


def _rendered(mail: SignupMail) -> RenderedIssue:
    return RenderedIssue(
        name=f"signup-{mail.kind}",
        subject=SlotText.plain(mail.subject),
        preheader="",
        html=SlotText.plain(mail.html),
        text=SlotText.plain(mail.text),
        web_html="",
        language=mail.language,
    )


def send_signup_mail(
    settings: Settings,
    mail: SignupMail,
    to: Subscriber,
    *,
    secret: bytes,
    environ: Mapping[str, str] = os.environ,
    transport_factory: TransportFactory = make_transport,
) -> str:
    """Hand `mail` for `to` to the project's transport; the transport's reply. Raises
    `DeliveryError` (or a subclass) when it is not accepted."""
    transport = transport_factory(settings, environ)
    try:
        sign = None
        if settings.dkim is not None and transport.delivers_mime_as_is:
            sign = signer_from_settings(settings.dkim, settings.root).sign
        template = MessageTemplate.prepare(
            _rendered(mail), settings, secret=secret, token_for=make_token, sign=sign
        )
        item = make_item(template, to.key, to, mime=transport.needs_mime)
        [result] = transport.send_batch([item])
    finally:
        transport.close()
    if result.error is not None:
        if isinstance(result.error, DeliveryError):
            raise result.error
        raise DeliveryError(f"the {mail.kind} mail to {to.email} was not sent: {result.error}")
    return result.receipt.reply if result.receipt is not None else ""
