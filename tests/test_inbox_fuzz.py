"""`inbox process` under attack: hundreds of malformed, deeply nested, huge, header-bomb and forged
messages from a seeded generator, appended to a real Dovecot mailbox and processed in one run.

The run must never stop, nothing forged may change a subscriber, every message beyond the
parsing bounds must end up in the quarantine folder, and the few genuine reports mixed in must
still be acted on.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from newsletter.audience import Subscriber, SubscriberStore, make_token
from newsletter.inbox import (
    MAX_DEPTH,
    MAX_PARTS,
    ImapMailbox,
    InboxItem,
    InboxSettings,
    SoftBounces,
    process_inbox,
)
from newsletter.tokens import verp_address
from tests.imapserver import DovecotServer

SECRET = b"fuzz-secret"
OTHER_SECRET = b"an-attacker-guess"
SEED = 15
DOMAIN = "riverside-garden.example.org"
UNSUBSCRIBE = f"unsubscribe@{DOMAIN}"
OUR_MX = f"mail.{DOMAIN}"
MAX_BYTES = 256 * 1024  # the test's inbox.max_message_bytes: "huge" stays cheap to append
VICTIMS = [f"reader{n}@example.org" for n in range(12)] + ["Ünïcode@example.org"]
# The genuine reports mixed into the noise, and what each must do.
GENUINE = {"real-bounce@example.net": "bounced", "real-unsub@example.org": "unsubscribed"}

_MESSAGE_IDS = itertools.count(1)
QUARANTINE = "quarantine"  # beyond the bounds: must be quarantined
NO_CHANGE = "no change"  # malformed or forged: may be left or quarantined, never acted on
ACT = "act"  # genuine


@dataclass(frozen=True)
class Sample:
    number: int
    expect: str
    what: str
    raw: bytes


def _tag(number: int, raw: bytes) -> bytes:
    """The sample's number in a header of its own, first, so every folder can be checked."""
    return f"X-Fuzz-Id: {number}\r\n".encode() + raw


# --- beyond the bounds ----------------------------------------------------------------------


def _nested(depth: int, rng: random.Random) -> bytes:
    head = b"From: a@evil.example\r\nTo: news@" + DOMAIN.encode() + b"\r\nSubject: nested\r\n"
    opening, closing = [], []
    for level in range(depth):
        if rng.random() < 0.1:
            opening.append(b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n")
        else:
            boundary = f"b{level}x{rng.randrange(10**6)}".encode()
            kind = rng.choice([b"mixed", b"alternative", b"related", b"report"])
            opening.append(
                b"Content-Type: multipart/" + kind + b'; boundary="' + boundary + b'"\r\n\r\n'
                b"--" + boundary + b"\r\n"
            )
            closing.append(b"\r\n--" + boundary + b"--\r\n")
    body = b"Content-Type: text/plain\r\n\r\nhello\r\n"
    return head + b"".join(opening) + body + b"".join(reversed(closing))


def _many_parts(count: int) -> bytes:
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\n%d\r\n" % n for n in range(count))
    return (
        b'Subject: parts\r\nContent-Type: multipart/mixed; boundary="p"\r\n\r\n'
        + parts
        + b"--p--\r\n"
    )


def _huge(size: int, rng: random.Random) -> bytes:
    filler = rng.choice([b"x" * 76 + b"\r\n", b"=?utf-8?B?AAAA?=\r\n", b"\x00\xff" * 38 + b"\r\n"])
    return b"From: big@evil.example\r\nSubject: huge\r\n\r\n" + filler * (size // len(filler) + 1)


def _crawling_header(rng: random.Random) -> bytes:
    """Header fields the email package's header parser is slow on (beyond the field bounds)."""
    victim = rng.choice(VICTIMS).encode()
    return (
        rng.choice(
            [
                b"From: " + b"a." * rng.randrange(3000, 40_000) + b"\r\n",
                b"To: " + b"x@y.example, " * rng.randrange(400, 3000) + victim + b"\r\n",
                b"From: " + b"=?utf-8?q?a?= " * rng.randrange(400, 3000) + b"<" + victim + b">\r\n",
                b"Cc: a@b.example\r\n" * rng.randrange(1100, 3000),
            ]
        )
        + f"To: {UNSUBSCRIBE}\r\nSubject: unsubscribe\r\n\r\nx\r\n".encode()
    )


# --- malformed --------------------------------------------------------------------------------


def _malformed(rng: random.Random) -> bytes:
    victim = rng.choice(VICTIMS).encode()
    choices: list[Callable[[], bytes]] = [
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))),
        lambda: b"From: " + victim + b"\r\nSubject: =?utf-8?B?!!!not base64?=\r\n\r\nx",
        lambda: (
            b"From: =?x-unknown-charset?Q?=FF=FE?= <"
            + victim
            + b">\r\nTo: "
            + UNSUBSCRIBE.encode()
            + b"\r\nSubject: =?utf-8?Q?=E2=82?=\r\n\r\nunsubscribe"
        ),
        lambda: b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\n--\r\n",
        lambda: (
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; "
            + victim
            + b"\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ),  # never closed
        lambda: b"Subject: " + b"a" * rng.randrange(1000, 100_000) + b"\r\n\r\nlong header",
        lambda: (
            b'Content-Type: text/plain; charset="\xff\xfe"\r\nContent-Transfer-Encoding: '
            b"base64\r\n\r\n" + b"!@#$" * 100
        ),
        lambda: b"\r\n".join(b"X-H%d: %s" % (n, b"v" * 10) for n in range(5000)) + b"\r\n\r\n",
        lambda: (
            b"From: <"
            + victim
            + b">\r\nTo: "
            + UNSUBSCRIBE.encode()
            + b"\r\nTo: "
            + UNSUBSCRIBE.encode()
            + b"\r\nFrom: <other@example.org>\r\nSubject: unsubscribe\r\n\r\n"
        ),
        lambda: b'Content-Type: multipart/mixed; boundary=""\r\n\r\n--\r\n--\r\n----\r\n',
        lambda: b"Content-Type: message/rfc822\r\n\r\n" * 30 + b"Subject: x\r\n\r\nbody",
        lambda: b"Content-Type: message/delivery-status\r\n\r\n" + b"Final-Recipient: ;;;\r\n" * 50,
        lambda: b"\x00" * rng.randrange(1, 5000),
        lambda: (
            b"Content-Type: multipart/report; report-type=feedback-report; boundary=f\r\n\r\n"
            b"--f\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
            b"Original-Rcpt-To: <<<" + victim + b">>>\r\n--f--\r\n"
        ),
    ]
    return rng.choice(choices)()


# --- forged -----------------------------------------------------------------------------------


def _dsn(recipient: str, status: str, original: str = "", to: str = f"news@{DOMAIN}") -> bytes:
    third = f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n{original}\r\n" if original else ""
    return (
        f"From: MAILER-DAEMON@mx.example\r\nTo: {to}\r\nSubject: Undelivered Mail\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        f"Message-ID: <{next(_MESSAGE_IDS)}@mx.example>\r\n\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nIt bounced.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} no\r\n\r\n{third}--B--\r\n"
    ).encode()


def _arf(recipient: str, original: str = "") -> bytes:
    third = f"--F\r\nContent-Type: text/rfc822-headers\r\n\r\n{original}\r\n" if original else ""
    return (
        f"From: fbl@isp.example\r\nTo: news@{DOMAIN}\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
        "--F\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
        f"Version: 1\r\nOriginal-Rcpt-To: <{recipient}>\r\n\r\n{third}--F--\r\n"
    ).encode()


def _unsubscribe_mail(sender: str, subject: str, *results: str, to: str = UNSUBSCRIBE) -> bytes:
    headers = "".join(f"Authentication-Results: {r}\r\n" for r in results)
    return (
        f"{headers}From: <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{next(_MESSAGE_IDS)}@example.org>\r\n\r\nunsubscribe\r\n"
    ).encode()


def _list_unsubscribe(token: str) -> str:
    return f"List-Unsubscribe: <https://{DOMAIN}/unsubscribe?token={token}>"


def _forged(rng: random.Random) -> bytes:
    victim = rng.choice(VICTIMS)
    attacker = "attacker@evil.example"
    wrong = make_token(OTHER_SECRET, victim)
    theirs = make_token(SECRET, attacker)  # genuine, but names the attacker
    local, _, domain = UNSUBSCRIBE.partition("@")
    choices: list[Callable[[], bytes]] = [
        lambda: _dsn(victim, rng.choice(["5.1.1", "5.2.1", "4.2.2", "5.7.1", "5.0.0"])),
        lambda: _dsn(victim, "5.1.1", _list_unsubscribe(wrong)),
        lambda: _dsn(victim, "5.1.1", _list_unsubscribe(theirs)),
        lambda: _dsn(victim, "4.2.2", f"Return-Path: <news+{wrong}@{DOMAIN}>"),
        lambda: _dsn(victim, "5.1.1", to=f"news+{wrong}@{DOMAIN}"),
        lambda: _dsn(victim, "5.1.1", to=verp_address(f"news@{DOMAIN}", attacker, SECRET)),
        lambda: _arf(victim),
        lambda: _arf(victim, _list_unsubscribe(wrong)),
        lambda: _arf(victim, _list_unsubscribe(theirs)),
        lambda: _unsubscribe_mail(victim, "unsubscribe"),
        lambda: _unsubscribe_mail(victim, f"unsubscribe {wrong}"),
        lambda: _unsubscribe_mail(victim, "unsubscribe", to=f"{local}+{wrong}@{domain}"),
        lambda: _unsubscribe_mail(
            victim,
            "unsubscribe",
            "other.example; dmarc=pass header.from=example.org",
            f"{OUR_MX}; dmarc=pass header.from=example.org",
        ),
        lambda: _unsubscribe_mail(
            victim,
            "unsubscribe",
            f"{OUR_MX}; dmarc=fail header.from=example.org",
            f"{OUR_MX}; dmarc=pass header.from=example.org",
        ),
        lambda: _unsubscribe_mail(victim, "unsubscribe", f"{OUR_MX}; dkim=pass header.d=org"),
        lambda: _unsubscribe_mail(
            victim, "unsubscribe", f"{OUR_MX}; dkim=pass (x; dmarc=pass) header.d=evil.example"
        ),
        lambda: _unsubscribe_mail(
            victim, "unsubscribe", f"{OUR_MX}.evil.example; dmarc=pass header.from=example.org"
        ),
    ]
    return rng.choice(choices)()


def samples() -> list[Sample]:
    rng = random.Random(SEED)
    made: list[tuple[str, str, bytes]] = [("bounds", QUARANTINE, _nested(1200, rng))]
    made += [("nested", QUARANTINE, _nested(rng.randrange(MAX_DEPTH + 1, 1500), rng))
             for _ in range(40)]  # fmt: skip
    made += [("parts", QUARANTINE, _many_parts(rng.randrange(MAX_PARTS + 1, 3000)))
             for _ in range(8)]  # fmt: skip
    made += [("huge", QUARANTINE, _huge(rng.randrange(MAX_BYTES + 1, 2 * MAX_BYTES), rng))
             for _ in range(6)]  # fmt: skip
    made += [("headers", QUARANTINE, _crawling_header(rng)) for _ in range(12)]
    made += [("malformed", NO_CHANGE, _malformed(rng)) for _ in range(130)]
    made += [("forged", NO_CHANGE, _forged(rng)) for _ in range(130)]
    bounce, unsub = GENUINE
    made.insert(
        123, ("genuine", ACT, _dsn(bounce, "5.1.1", _list_unsubscribe(make_token(SECRET, bounce))))
    )
    made.insert(
        250, ("genuine", ACT, _unsubscribe_mail(unsub, f"unsubscribe {make_token(SECRET, unsub)}"))
    )
    return [Sample(n, expect, what, _tag(n, raw)) for n, (what, expect, raw) in enumerate(made)]


def _ids(messages: list[bytes]) -> set[int]:
    found = set()
    for raw in messages:
        match = re.match(rb"X-Fuzz-Id: (\d+)\r\n", raw)
        assert match is not None, raw[:80]
        found.add(int(match.group(1)))
    return found


def all_subscribers(store: SubscriberStore) -> list[Subscriber]:
    return list(store.iter_subscribers(None))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SubscriberStore]:
    with SubscriberStore(tmp_path / "newsletter.db") as opened:
        for address in [*VICTIMS, *GENUINE, "attacker@evil.example"]:
            opened.add(address)
        yield opened


def test_hundreds_of_hostile_messages_never_stop_a_run_or_change_a_subscriber(
    store: SubscriberStore,
) -> None:
    made = samples()
    assert len(made) > 300
    by_number = {sample.number: sample for sample in made}
    before = {s.email: str(s.status) for s in all_subscribers(store)}
    with DovecotServer() as dovecot:
        user = dovecot.new_user("fuzz")
        dovecot.append(user, dovecot.password, "INBOX", *(sample.raw for sample in made))
        settings = InboxSettings(
            host=dovecot.host, port=dovecot.port, username=user, max_message_bytes=MAX_BYTES,
            trusted_authserv_id=OUR_MX, soft_bounce_limit=1,
        )  # fmt: skip
        seen: list[InboxItem] = []
        with ImapMailbox(settings, dovecot.password, ssl_context=dovecot.client_context()) as box:
            report = process_inbox(
                box, store, settings=settings, unsubscribe_address=UNSUBSCRIBE, secret=SECRET,
                progress=seen.append,
            )  # fmt: skip
        quarantined = _ids(dovecot.messages(user, dovecot.password, settings.quarantine_folder))
        processed = _ids(dovecot.messages(user, dovecot.password, settings.processed_folder))
        left = _ids(dovecot.messages(user, dovecot.password, "INBOX"))

    # It never stopped: every message was looked at, and each is in exactly one folder.
    assert len(seen) == len(made)
    assert quarantined | processed | left == set(by_number)
    assert not (quarantined & processed or quarantined & left or processed & left)
    # Everything beyond the bounds is in quarantine, unchanged apart from nothing.
    beyond = {n for n, s in by_number.items() if s.expect == QUARANTINE}
    assert beyond <= quarantined
    # ... and each is listed in the report with its reason.
    assert len(report.quarantined) == len(quarantined)
    assert all(item.quarantined and item.moved and item.action for item in report.quarantined)
    # Nothing forged or malformed changed anyone; the genuine reports did.
    after = {s.email: str(s.status) for s in all_subscribers(store)}
    assert after == {**before, **GENUINE}
    for subscriber in all_subscribers(store):
        inbox_events = [e for e in store.events(subscriber.email) if e.source.startswith("inbox")]
        assert len(inbox_events) == (1 if subscriber.email in GENUINE else 0), subscriber.email
    bounces = SoftBounces(store.path)
    try:
        assert all(bounces.count(s.key, 0) == 0 for s in all_subscribers(store))
    finally:
        bounces.close()
    # The forged ones were all read (none quarantined) and reported as ignored or suspicious.
    forged = {n for n, s in by_number.items() if s.what == "forged"}
    assert not forged & quarantined and not forged & processed
    assert report.changes == {"bounced": 1, "unsubscribed": 1}
