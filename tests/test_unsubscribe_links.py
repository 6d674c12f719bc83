"""Unsubscribe links as messages carry them, end to end: a message made by this release (opaque
tokens) and one made the way release 0.1 made them (the address inside), through a real
`serve` and through `inbox process` on a real Dovecot (the mailto, `unsubscribe+<token>@`, a
VERP bounce)."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
import time
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from newsletter.audience import Subscriber, SubscriberStore, make_token
from newsletter.audience.tokenbook import TokenBook
from newsletter.cli._project import message_template
from newsletter.config import Settings
from newsletter.config_tables import InboxSettings
from newsletter.content import load_issue
from newsletter.delivery.message import MessageTemplate
from newsletter.delivery.mime import list_identifier
from newsletter.inbox import ImapMailbox, InboxReport, process_inbox
from newsletter.render import render_issue
from newsletter.tokens import OPAQUE_TOKEN_LENGTH, make_opaque_token
from newsletter.web import ServeSettings, WebServer
from tests.imapserver import DovecotServer
from tests.test_loop import bounce_for
from tests.test_web import running

SECRET = b"links-test-secret"
READERS = ("ann@example.org", "bob@example.org", "carol@example.net", "dave@example.com")
DOMAIN = "riverside-garden.example.org"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    with DovecotServer() as server:
        yield server


@pytest.fixture
def store(settings: Settings) -> Iterator[SubscriberStore]:
    with SubscriberStore(settings.database_path) as opened:
        for address in READERS:
            opened.add(address, address.split("@")[0].title())
        yield opened


def _verp(settings: Settings) -> Settings:
    sending = dataclasses.replace(settings.sending, return_path=f"bounces@{DOMAIN}", verp=True)
    return dataclasses.replace(settings, sending=sending)


def _message(template: MessageTemplate, store: SubscriberStore, address: str) -> tuple[str, bytes]:
    subscriber = store.get(address)
    assert isinstance(subscriber, Subscriber)
    outgoing = template.personalise(subscriber)
    return outgoing.sender, outgoing.data


def _links(data: bytes) -> tuple[str, str]:
    """(the https link, the mailto) of the message's List-Unsubscribe header."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    links = [part.strip().strip("<>") for part in str(message["List-Unsubscribe"]).split(",")]
    return (
        next(link for link in links if link.startswith("https://")),
        next(link for link in links if link.startswith("mailto:")),
    )


def _local(server: WebServer, https: str) -> str:
    """The link as the reverse proxy hands it to this server."""
    return urlsplit(https)._replace(scheme="http", netloc=f"127.0.0.1:{server.port}").geturl()


def test_a_link_in_a_message_of_this_release_carries_no_address_and_unsubscribes(
    settings: Settings, store: SubscriberStore
) -> None:
    settings = _verp(settings)
    rendered = render_issue(load_issue(settings.issues_dir / "2026-11"), settings)
    sender, data = _message(message_template(settings, rendered, SECRET), store, "ann@example.org")
    https, mailto = _links(data)
    token = https.rpartition("token=")[2]
    assert len(token) == OPAQUE_TOKEN_LENGTH
    assert mailto.endswith(f"?subject=unsubscribe%20{token}")
    assert sender == f"bounces+{token}@{DOMAIN}"  # the VERP return path: the same token
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    unsubscribe_header = head[head.index("List-Unsubscribe:") :].split("\r\nList-Id")[0]
    assert "ann" not in unsubscribe_header.lower() and "ann" not in sender
    # Shorter than the link release 0.1 wrote for the same person.
    assert len(token) < len(make_token(SECRET, "ann@example.org"))
    with running(WebServer(settings, secret=SECRET, serve_settings=ServeSettings(port=0))) as s:
        page = httpx.get(_local(s, https))
        assert page.status_code == 200 and "ann@example.org" in page.text  # the person's own page
        answer = httpx.post(_local(s, https), data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200
        forged = httpx.post(
            _local(s, https).replace(token, token[:-4] + "AAAA"),
            data={"List-Unsubscribe": "One-Click"},
        )
        assert forged.status_code == 400
    assert store.get("ann@example.org").status == "unsubscribed"  # type: ignore[union-attr]
    assert store.events("ann@example.org")[-1].source == "web one-click"


def test_a_link_in_a_message_made_like_release_0_1_still_unsubscribes(
    settings: Settings, store: SubscriberStore
) -> None:
    rendered = render_issue(load_issue(settings.issues_dir / "2026-11"), settings)
    old = MessageTemplate.prepare(rendered, settings, secret=SECRET, token_for=make_token)
    _, data = _message(old, store, "bob@example.org")
    https, _ = _links(data)
    assert "." in https.rpartition("token=")[2]  # the old form, the address inside
    with running(WebServer(settings, secret=SECRET, serve_settings=ServeSettings(port=0))) as s:
        answer = httpx.post(_local(s, https), data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200
    assert store.get("bob@example.org").status == "unsubscribed"  # type: ignore[union-attr]
    # A list that has stopped accepting the old form (`legacy_tokens = false`) refuses it.
    unsubscribe = dataclasses.replace(settings.unsubscribe, legacy_tokens=False)
    strict = dataclasses.replace(settings, unsubscribe=unsubscribe)
    with running(WebServer(strict, secret=SECRET, serve_settings=ServeSettings(port=0))) as s:
        assert httpx.get(_local(s, https)).status_code == 400


def test_an_old_web_link_expires_but_its_mailto_keeps_working(
    settings: Settings, store: SubscriberStore, dovecot: DovecotServer
) -> None:
    four_years = time.time() - 4 * 365 * 86400
    token = make_opaque_token(
        SECRET, list_identifier(settings), "carol@example.net", now=four_years
    )
    with running(WebServer(settings, secret=SECRET, serve_settings=ServeSettings(port=0))) as s:
        page = httpx.get(f"{s.url}unsubscribe?token={token}")
        assert page.status_code == 410 and "This link is too old" in page.text
        assert "carol" not in page.text
    assert store.get("carol@example.net").status == "subscribed"  # type: ignore[union-attr]
    mail = (
        f"From: Carol <carol.private@example.net>\r\nTo: unsubscribe@{DOMAIN}\r\n"
        f"Subject: unsubscribe {token}\r\nMessage-ID: <old-1@example.net>\r\n\r\nplease\r\n"
    ).encode()
    report = _process(settings, store, dovecot, mail)
    assert [item.action for item in report.processed] == ["unsubscribed"]
    assert store.get("carol@example.net").status == "unsubscribed"  # type: ignore[union-attr]


def _process(
    settings: Settings, store: SubscriberStore, dovecot: DovecotServer, *mails: bytes
) -> InboxReport:
    user = dovecot.new_user("bounces")
    dovecot.append(user, dovecot.password, "INBOX", *mails)
    inbox = InboxSettings(host=dovecot.host, port=dovecot.port, username=user)
    book = TokenBook(store.database, SECRET, list_identifier(settings))
    with ImapMailbox(inbox, dovecot.password, ssl_context=dovecot.client_context()) as box:
        return process_inbox(
            box,
            store,
            settings=inbox,
            unsubscribe_address=settings.unsubscribe.mailto,
            secret=SECRET,
            tokens=book.resolve,
        )


def test_the_mailto_and_a_verp_bounce_with_opaque_tokens_through_dovecot(
    settings: Settings, store: SubscriberStore, dovecot: DovecotServer
) -> None:
    settings = _verp(settings)
    rendered = render_issue(load_issue(settings.issues_dir / "2026-11"), settings)
    template = message_template(settings, rendered, SECRET)
    messages = {address: _message(template, store, address) for address in READERS}
    # Ann's mail client sends the mailto as it is (from an alias: the token says who).
    _, mailto = _links(messages["ann@example.org"][1])
    to, _, query = mailto.removeprefix("mailto:").partition("?subject=")
    by_mailto = (
        f"From: <ann.alias@example.org>\r\nTo: {unquote(to)}\r\n"
        f"Subject: {unquote(query)}\r\nMessage-ID: <u-1@example.org>\r\n\r\n\r\n"
    ).encode()
    # Bob writes to unsubscribe+<token>@ (the token in the address, an empty subject).
    bob_token = _links(messages["bob@example.org"][1])[0].rpartition("token=")[2]
    by_address = (
        f"From: <bob@example.org>\r\nTo: unsubscribe+{bob_token}@{DOMAIN}\r\n"
        f"Subject: \r\nMessage-ID: <u-2@example.org>\r\n\r\nstop\r\n"
    ).encode()
    # Dave's mailbox is gone: the report comes back to his VERP return path.
    dave_sender, dave_data = messages["dave@example.com"]
    bounce = bounce_for(dave_data, "dave@example.com").replace(
        f"To: news@{DOMAIN}".encode(), f"To: {dave_sender}".encode()
    )
    # A forged mailto: a made-up token in the subject changes nobody.
    forged = by_mailto.replace(b"<u-1@", b"<u-3@")
    forged = re.sub(rb"unsubscribe [A-Za-z0-9_-]{32}", b"unsubscribe " + b"A" * 32, forged)
    report = _process(settings, store, dovecot, by_mailto, by_address, bounce, forged)
    statuses = {a: store.get(a).status for a in READERS}  # type: ignore[union-attr]
    assert statuses == {
        "ann@example.org": "unsubscribed",
        "bob@example.org": "unsubscribed",
        "carol@example.net": "subscribed",
        "dave@example.com": "bounced",
    }
    assert store.events("ann@example.org")[-1].source == "inbox: unsubscribe mail"
    assert len(report.processed) == 3
    assert [item.address for item in report.left] == ["ann.alias@example.org"]  # the forgery
