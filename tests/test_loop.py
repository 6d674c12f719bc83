"""The whole loop, every part real and on loopback: send an issue (DKIM-signed) through an SMTP
server, one reader unsubscribes with one click from the List-Unsubscribe header, another
reader's address bounces and the bounce is read from Dovecot, and the next issue reaches only
the reader who is left."""

from __future__ import annotations

import email
import email.policy
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import dkim as dkimpy
import httpx
import pytest

from newsletter.audience import SubscriberStore, make_token
from newsletter.config import Settings
from newsletter.content import load_issue
from newsletter.delivery.ledger import Ledger
from newsletter.delivery.message import MessageTemplate
from newsletter.delivery.sender import StoreAudience, send_issue
from newsletter.dkim import DkimSigner, generate_key
from newsletter.inbox import ImapMailbox, InboxSettings, process_inbox
from newsletter.render import render_issue
from newsletter.web import ServeSettings, WebServer
from tests.imapserver import DovecotServer
from tests.sendkit import smtp_transport
from tests.smtpserver import SmtpTestServer
from tests.test_web import running

SECRET = b"loop-test-secret"
READERS = ("ann@example.org", "bob@example.org", "carol@example.net")


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    with DovecotServer() as server:
        yield server


def template(settings: Settings, issue: str, sign: Callable[[bytes], bytes]) -> MessageTemplate:
    rendered = render_issue(load_issue(settings.issues_dir / issue), settings)
    return MessageTemplate.prepare(
        rendered, settings, secret=SECRET, token_for=make_token, sign=sign
    )


def bounce_for(original: bytes, recipient: str) -> bytes:
    """A Postfix-style 5.1.1 report returning the headers of the message we really sent."""
    headers = original.split(b"\r\n\r\n", 1)[0]
    return (
        b"From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
        b"To: news@riverside-garden.example.org\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Message-Id: <loop-bounce-1@mx.example.net>\r\n"
        b"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nUser unknown.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
        + f"Final-Recipient: rfc822; {recipient}\r\n".encode()
        + b"Action: failed\r\nStatus: 5.1.1\r\n"
        + f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: User unknown\r\n".encode()
        + b"\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        + headers
        + b"\r\n\r\n--b--\r\n"
    )


def test_send_unsubscribe_bounce_and_the_next_issue_skips_both(
    project: Path, settings: Settings, tmp_path: Path, dovecot: DovecotServer
) -> None:
    shutil.copytree(settings.issues_dir / "2026-11", settings.issues_dir / "2026-12")
    key = generate_key()
    signer = DkimSigner("riverside-garden.example.org", "loop", key.private_pem)
    dns = key.record().encode()

    with SubscriberStore(settings.database_path) as store, Ledger(settings.database_path) as ledger:
        for address in READERS:
            store.add(address, address.split("@")[0].title())

        # 1. The first issue goes out, signed, through a real SMTP server.
        with SmtpTestServer() as smtp:
            report = send_issue(
                template(settings, "2026-11", signer.sign),
                StoreAudience(store),
                transport=smtp_transport(smtp.port),
                ledger=ledger,
            )
            assert report.sent_now == 3
            received = {m.rcpt_tos[0]: m.data for m in smtp.messages}
        assert sorted(received) == sorted(READERS)
        assert all(
            dkimpy.verify(data, dnsfunc=lambda name, timeout=5: dns) for data in received.values()
        )

        # 2. Ann's mail client does what RFC 8058 says with the List-Unsubscribe header.
        message = email.message_from_bytes(received["ann@example.org"], policy=email.policy.default)
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        links = [part.strip().strip("<>") for part in str(message["List-Unsubscribe"]).split(",")]
        https = next(link for link in links if link.startswith("https://"))
        assert next(link for link in links if link.startswith("mailto:")).endswith(
            "?subject=unsubscribe%20" + make_token(SECRET, "ann@example.org")
        )
        server = WebServer(settings, secret=SECRET, serve_settings=ServeSettings(port=0))
        with running(server):
            # The public name resolves to this server (the reverse proxy's job in production).
            local = urlsplit(https)._replace(scheme="http", netloc=f"127.0.0.1:{server.port}")
            answer = httpx.post(
                local.geturl(),
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert answer.status_code == 200
        ann = store.get("ann@example.org")
        assert ann is not None and ann.status == "unsubscribed"

        # 3. Carol's address bounces; the report arrives in the bounce mailbox.
        user = dovecot.new_user("bounces")
        dovecot.append(
            user,
            dovecot.password,
            "INBOX",
            bounce_for(received["carol@example.net"], "carol@example.net"),
        )
        inbox = InboxSettings(host=dovecot.host, port=dovecot.port, username=user)
        with ImapMailbox(inbox, dovecot.password, ssl_context=dovecot.client_context()) as box:
            processed = process_inbox(
                box,
                store,
                settings=inbox,
                unsubscribe_address=settings.unsubscribe.mailto,
                secret=SECRET,
            )
        assert [item.action for item in processed.processed] == [
            "marked bounced (hard bounce 5.1.1)"
        ]
        carol = store.get("carol@example.net")
        assert carol is not None and carol.status == "bounced"

        # 4. The next issue reaches only Bob.
        with SmtpTestServer() as smtp:
            report = send_issue(
                template(settings, "2026-12", signer.sign),
                StoreAudience(store),
                transport=smtp_transport(smtp.port),
                ledger=ledger,
            )
            assert [m.rcpt_tos for m in smtp.messages] == [("bob@example.org",)]
        assert report.sent_now == 1 and report.total == 1

        history = [(e.new_status, e.source) for e in store.events("ann@example.org")]
        assert history[-1] == ("unsubscribed", "web one-click")
