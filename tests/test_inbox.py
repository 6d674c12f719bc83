"""Inbox processing: classification of real-world-shaped DSNs, ARF reports and mail, and whole
runs against a real Dovecot on loopback over verified TLS."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict, Unpack
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from newsletter.audience import SubscriberStatus, SubscriberStore, make_token
from newsletter.config_reader import TableReader
from newsletter.inbox import (
    MAX_DEPTH,
    ImapMailbox,
    InboxError,
    InboxReport,
    InboxSettings,
    Kind,
    SoftBounces,
    classify,
    connect,
    imap_utf7,
    organisational_domain,
    parse_inbox_table,
    process_inbox,
    shape_problem,
)
from tests.imapserver import DovecotServer

FIXTURES = Path(__file__).parent / "fixtures" / "inbox"
SECRET = b"inbox-test-secret"
UNSUBSCRIBE = "unsubscribe@riverside-garden.example.org"
OUR_MX = "mail.riverside-garden.example.org"
SUBSCRIBERS = [
    "gone@example.net",
    "slow@example.org",
    "nobody@example.com",
    "full@example.com",
    "ghost@contoso.example",
    "grumpy@example.org",
    "picky@example.org",
    "ann@example.org",
    "dirk@example.org",
    "erin@example.org",
    "bob@example.org",
    "holiday@example.org",
    "carol@example.org",
    "dave@example.org",
    "vera@example.org",
]
RETURNED = "our token in the returned message"


def load(name: str, secret: bytes = SECRET) -> bytes:
    """A fixture with real tokens in place of `@@TOKEN(address)@@`, with CRLF line ends."""
    raw = (FIXTURES / name).read_bytes()
    raw = re.sub(
        rb"@@TOKEN\(([^)]+)\)@@", lambda m: make_token(secret, m.group(1).decode()).encode(), raw
    )
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# --- classification -----------------------------------------------------------------------------

EXPECTED = {
    "postfix-hard-user-unknown.eml": (Kind.HARD_BOUNCE, "gone@example.net", "5.1.1", RETURNED),
    "postfix-delayed.eml": (Kind.NOTICE, "slow@example.org", "4.4.1", RETURNED),
    "postfix-hard-not-a-subscriber.eml": (
        Kind.HARD_BOUNCE, "stranger@elsewhere.example", "5.4.4", None
    ),
    "postfix-hard-verp.eml": (Kind.HARD_BOUNCE, "vera@example.org", "5.1.1", "VERP return path"),
    "dsn-forged-without-original.eml": (Kind.HARD_BOUNCE, "carol@example.org", "5.1.1", None),
    "exim-hard-generic-status.eml": (Kind.HARD_BOUNCE, "nobody@example.com", "5.1.1", RETURNED),
    "gmail-soft-mailbox-full.eml": (Kind.SOFT_BOUNCE, "full@example.com", "4.2.2", RETURNED),
    "microsoft-hard-recipient-not-found.eml": (
        Kind.HARD_BOUNCE, "ghost@contoso.example", "5.1.10", RETURNED
    ),
    "arf-abuse-redacted.eml": (Kind.COMPLAINT, "grumpy@example.org", None, RETURNED),
    # Original-Rcpt-To is only what the report says: no token, no proof.
    "arf-abuse-original-rcpt-to.eml": (Kind.COMPLAINT, "Picky@Example.org", None, None),
    "arf-not-spam.eml": (Kind.NOTICE, None, None, None),
    "unsubscribe-gmail.eml": (
        Kind.UNSUBSCRIBE, "ann@example.org", None, "our token in the subject"
    ),
    "unsubscribe-outlook.eml": (Kind.UNSUBSCRIBE, "dirk@example.org", None, None),
    "unsubscribe-unauthenticated.eml": (Kind.UNSUBSCRIBE, "erin@example.org", None, None),
    "reply-from-reader.eml": (Kind.UNKNOWN, None, None, None),
    "auto-reply-out-of-office.eml": (Kind.NOTICE, "holiday@example.org", None, None),
    "forged-bounce-token-mismatch.eml": (Kind.UNKNOWN, "carol@example.org", "5.1.1", None),
}  # fmt: skip


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_classification_of_real_world_shapes(name: str) -> None:
    kind, address, status, proof = EXPECTED[name]
    found = classify(load(name), unsubscribe_address=UNSUBSCRIBE, secret=SECRET)
    assert found.kind == kind, found.reason
    assert (found.addresses[0] if found.addresses else None) == address
    assert found.status == status
    assert found.proof == proof
    # Without the secret nothing can be proved.
    assert classify(load(name), unsubscribe_address=UNSUBSCRIBE).proof is None


def test_the_diagnostic_is_kept_readable() -> None:
    found = classify(load("microsoft-hard-recipient-not-found.eml"), secret=SECRET)
    assert found.reason == (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    )
    assert found.original_id == (
        "<2026-11.1234abcd5678ef901234abcd5678ef90@riverside-garden.example.org>"
    )


def test_a_bounce_whose_token_is_not_genuine_is_suspicious() -> None:
    found = classify(load("postfix-hard-user-unknown.eml", secret=b"another-secret"), secret=SECRET)
    assert found.kind == Kind.UNKNOWN
    assert "not genuine" in found.reason


def test_a_token_for_another_address_is_suspicious() -> None:
    found = classify(load("forged-bounce-token-mismatch.eml"), secret=SECRET)
    assert found.reason == (
        "suspicious: the report is about carol@example.org, but the returned message was for "
        "dave@example.org"
    )


def test_only_the_token_places_of_our_links_count_in_the_returned_message() -> None:
    """A host name with a 22-letter label looks like a token; it must not make a real bounce
    "suspicious", and a mailto's token counts like the URL's."""
    raw = load("postfix-hard-user-unknown.eml")
    token = make_token(SECRET, "gone@example.net").encode()
    lookalike = raw.replace(
        b"https://riverside-garden.example.org/", b"https://news.abcdefghijklmnopqrstuv.example/"
    )
    assert classify(lookalike, secret=SECRET).proof == "our token in the returned message"
    mailto_only = re.sub(
        rb"<https://[^>]*>,",
        b"",
        raw.replace(b"?subject=unsubscribe>", b"?subject=unsubscribe%20" + token + b">"),
    )
    assert b"token=" not in mailto_only
    found = classify(mailto_only, secret=SECRET)
    assert (found.kind, found.proof) == (Kind.HARD_BOUNCE, "our token in the returned message")


def test_unsubscribe_mail_without_a_token_needs_our_servers_authentication() -> None:
    def proof(name: str, raw: bytes | None = None) -> str | None:
        found = classify(
            raw or load(name), unsubscribe_address=UNSUBSCRIBE, trusted_authserv_id=OUR_MX,
            secret=SECRET,
        )  # fmt: skip
        assert found.kind == Kind.UNSUBSCRIBE
        return found.proof

    without_token = load("unsubscribe-gmail.eml").replace(
        b"Subject: unsubscribe " + make_token(SECRET, "ann@example.org").encode(),
        b"Subject: unsubscribe",
    )
    assert proof("", without_token) == f"{OUR_MX}: dkim=pass for example.org"
    assert proof("unsubscribe-outlook.eml") == f"{OUR_MX}: dkim=pass for example.org"
    # dmarc=fail from our server; a dmarc=pass written by someone else's server does not count.
    assert proof("unsubscribe-unauthenticated.eml") is None


def test_automatic_mail_to_the_unsubscribe_address_unsubscribes_no_one() -> None:
    raw = load("unsubscribe-gmail.eml").replace(
        b"Subject: unsubscribe", b"Auto-Submitted: auto-replied\r\nSubject: unsubscribe"
    )
    found = classify(raw, unsubscribe_address=UNSUBSCRIBE)
    assert found.kind == Kind.UNKNOWN and "auto-replied" in found.reason


def _unsubscribe_mail(sender: str, *results: str) -> bytes:
    headers = "".join(f"Authentication-Results: {r}\r\n" for r in results)
    return (
        f"{headers}From: <{sender}>\r\nTo: {UNSUBSCRIBE}\r\nSubject: unsubscribe\r\n"
        "Message-ID: <u1@example.org>\r\n\r\nunsubscribe\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("sender", "results", "proof"),
    [
        ("a@example.org", [f"{OUR_MX}; dmarc=pass header.from=example.org"], "dmarc=pass"),
        ("a@example.org", [f"{OUR_MX} 1; dkim=pass header.d=mail.example.org"],
         "dkim=pass for mail.example.org"),
        ("a@news.example.co.uk", [f"{OUR_MX}; dkim=pass header.i=@example.co.uk"],
         "dkim=pass for example.co.uk"),
        # A public suffix is no organisation: a signature by com or co.uk aligns with nobody.
        ("a@example.com", [f"{OUR_MX}; dkim=pass header.d=com"], None),
        ("a@example.co.uk", [f"{OUR_MX}; dkim=pass header.d=co.uk"], None),
        ("a@example.org", [f"{OUR_MX}; dkim=pass header.d=example.net"], None),
        ("a@example.org", [f"{OUR_MX}; dmarc=pass header.from=evil.example"], None),
        ("a@example.org", [f"{OUR_MX}; dmarc=pass"], None),
        ("a@example.org", [f"{OUR_MX}; dmarc=fail header.from=example.org"], None),
        # Only the topmost header counts: ours is added on top of whatever came with the mail.
        ("a@example.org", ["other.example; dmarc=pass header.from=example.org",
                           f"{OUR_MX}; dmarc=pass header.from=example.org"], None),
        ("a@example.org", [f"{OUR_MX}; dmarc=fail header.from=example.org",
                           f"{OUR_MX}; dmarc=pass header.from=example.org"], None),
        ("a@example.org", [f"{OUR_MX}.evil.example; dmarc=pass header.from=example.org"], None),
        ("a@example.org", [f"{OUR_MX}; dkim=pass (a comment; with dmarc=pass) header.d=x.example"],
         None),
        ("a@example.org", [], None),
    ],
)  # fmt: skip
def test_authentication_results_are_ours_topmost_and_aligned(
    sender: str, results: list[str], proof: str | None
) -> None:
    found = classify(
        _unsubscribe_mail(sender, *results), unsubscribe_address=UNSUBSCRIBE,
        trusted_authserv_id=OUR_MX, secret=SECRET,
    )  # fmt: skip
    assert found.kind == Kind.UNSUBSCRIBE
    assert found.proof == (f"{OUR_MX}: {proof}" if proof else None)


def test_organisational_domains_follow_the_public_suffix_list() -> None:
    assert organisational_domain("mail.example.co.uk") == "example.co.uk"
    assert organisational_domain("Example.ORG.") == "example.org"
    assert organisational_domain("com") is None
    assert organisational_domain("co.uk") is None
    assert organisational_domain("someone.github.io") == "someone.github.io"


def test_an_unsubscribe_token_in_the_subject_or_address_names_whom() -> None:
    token = make_token(SECRET, "ann@example.org")
    forged_from = (
        f"From: <victim@example.org>\r\nTo: {UNSUBSCRIBE}\r\nSubject: unsubscribe\r\n\r\nx\r\n"
    ).encode()
    found = classify(forged_from, unsubscribe_address=UNSUBSCRIBE, secret=SECRET)
    assert (found.kind, found.proof) == (Kind.UNSUBSCRIBE, None)
    # The token decides whom: a forwarded mail from another address unsubscribes the reader.
    with_subject = forged_from.replace(
        b"Subject: unsubscribe", f"Subject: unsubscribe {token}".encode()
    )
    found = classify(with_subject, unsubscribe_address=UNSUBSCRIBE, secret=SECRET)
    assert (found.kind, found.addresses, found.proof) == (
        Kind.UNSUBSCRIBE, ("ann@example.org",), "our token in the subject"
    )  # fmt: skip
    local, _, domain = UNSUBSCRIBE.partition("@")
    to_tagged = forged_from.replace(
        f"To: {UNSUBSCRIBE}".encode(), f"To: {local}+{token}@{domain}".encode()
    )
    found = classify(to_tagged, unsubscribe_address=UNSUBSCRIBE, secret=SECRET)
    assert (found.addresses, found.proof) == (("ann@example.org",), "our token in the address")
    forged = with_subject.replace(token[-4:].encode(), b"AAAA")
    found = classify(forged, unsubscribe_address=UNSUBSCRIBE, secret=SECRET)
    assert found.kind == Kind.UNKNOWN and "not genuine" in found.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not a bounce"),
        (b"\xff\xfe\x00garbage\r\n\r\n\x00", "not a bounce"),
        (
            b"From: Mail Delivery System <Mailer-Daemon@old.example>\r\n"
            b"Subject: Mail delivery failed\r\n\r\nA message that you sent could not be "
            b"delivered.\r\n  someone@example.org\r\n",
            "not a bounce",
        ),
        (
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n"
            b"--x\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; a\r\n\r\n"
            b"--x--\r\n",
            "without a recipient",
        ),
    ],
    ids=["empty", "binary", "legacy-plain-text-bounce", "dsn-without-recipient"],
)
def test_what_cannot_be_classified_is_unknown(raw: bytes, reason: str) -> None:
    found = classify(raw, unsubscribe_address=UNSUBSCRIBE, secret=SECRET)
    assert found.kind == Kind.UNKNOWN
    assert reason in found.reason


@pytest.mark.parametrize(
    ("action", "status", "diagnostic", "kind"),
    [
        ("failed", "5.1.1", "", Kind.HARD_BOUNCE),
        ("failed", "5.1.2", "", Kind.HARD_BOUNCE),
        ("failed", "5.2.1", "", Kind.HARD_BOUNCE),
        ("failed", "5.4.4", "", Kind.HARD_BOUNCE),
        ("failed", "5.2.2", "552 mailbox full", Kind.SOFT_BOUNCE),
        ("failed", "5.7.1", "554 rejected by policy", Kind.SOFT_BOUNCE),
        ("failed", "4.4.7", "", Kind.SOFT_BOUNCE),
        ("failed", "5.0.0", "550 5.1.1 user unknown", Kind.HARD_BOUNCE),
        (
            "failed",
            "5.0.0",
            "550 Requested action not taken: mailbox unavailable",
            Kind.HARD_BOUNCE,
        ),
        ("failed", "5.0.0", "550 message rejected", Kind.SOFT_BOUNCE),
        (
            "failed",
            "5.4.1",
            "550 5.4.1 Recipient address rejected: Access denied",
            Kind.SOFT_BOUNCE,
        ),
        ("delayed", "4.4.1", "", Kind.NOTICE),
        ("delivered", "2.0.0", "", Kind.NOTICE),
    ],
)
def test_hard_and_soft(action: str, status: str, diagnostic: str, kind: Kind) -> None:
    raw = (
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
        f"Final-Recipient: rfc822; a@example.org\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n\r\n--b--\r\n"
    ).encode()
    assert classify(raw).kind == kind


def test_folder_names_in_modified_utf7() -> None:
    assert imap_utf7("Processed") == "Processed"
    assert imap_utf7("Verwerkt/Afgehandeld") == "Verwerkt/Afgehandeld"
    assert imap_utf7("Tom & Jerry") == "Tom &- Jerry"
    assert imap_utf7("Gelöscht") == "Gel&APY-scht"
    assert imap_utf7("台北") == "&U,BTFw-"


# --- bounds: nesting, parts, size -------------------------------------------------------------


def nested(depth: int, inner: bytes = b"hello") -> bytes:
    """A message with `depth` multiparts inside each other (1,200 levels: ~84 KB)."""
    head = (
        b"From: x@example.org\r\nTo: news@example.org\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
    )
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    return head + opening + b"Content-Type: text/plain\r\n\r\n" + inner + closing


def test_the_nested_message_of_the_report_is_84_kb() -> None:
    assert 80_000 < len(nested(1200)) < 86_000


@pytest.mark.parametrize("depth", [1200, 5000, MAX_DEPTH + 1])
def test_deep_nesting_is_unreadable_not_a_crash(depth: int) -> None:
    found = classify(nested(depth), unsubscribe_address=UNSUBSCRIBE, secret=SECRET)
    assert found.kind == Kind.UNREADABLE
    assert found.reason == f"cannot be parsed: MIME parts nested deeper than {MAX_DEPTH} levels"


def test_nesting_up_to_the_bound_is_parsed() -> None:
    assert shape_problem(nested(MAX_DEPTH)) is None
    found = classify(nested(MAX_DEPTH), unsubscribe_address=UNSUBSCRIBE, secret=SECRET)
    assert found.kind == Kind.UNKNOWN and found.reason == "not a bounce, complaint or unsubscribe"


def test_embedded_messages_count_as_levels() -> None:
    raw = b"Subject: x\r\n"
    for _ in range(MAX_DEPTH + 1):
        raw += b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
    raw += b"\r\nbody\r\n"
    assert shape_problem(raw) == f"MIME parts nested deeper than {MAX_DEPTH} levels"


def test_too_many_parts() -> None:
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\n%d\r\n" % i for i in range(1200))
    raw = b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + parts + b"--p--\r\n"
    assert shape_problem(raw) == "more than 1000 MIME parts"
    assert shape_problem(raw, max_parts=2000) is None


def test_many_lines_deep_inside_is_refused_before_the_slow_parse() -> None:
    """The email package checks each line against every open boundary: 10 MB of short lines
    40 levels deep took it 27 s. The scan refuses that work up front."""
    raw = nested(MAX_DEPTH, inner=b"--not-a-boundary\r\n" * 600_000)
    found = classify(raw, unsubscribe_address=UNSUBSCRIBE, secret=SECRET)
    assert found.kind == Kind.UNREADABLE
    assert found.reason == (
        "cannot be parsed: too many lines inside nested parts (more than 2,000,000 line-levels)"
    )
    # A 3 MB bounce returning a message with an image, 5 levels deep, is well within.
    assert shape_problem(nested(5, inner=(b"A" * 76 + b"\r\n") * 40_000)) is None
    assert shape_problem(raw, max_work=100_000_000) is None


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"From: " + b"a." * 32_000, "a header field (from) longer than 4,096 bytes"),
        (b"To: " + b"a@b.example, " * 400, "a header field (to) longer than 4,096 bytes"),
        (b"To: a@b.example,\r\n" + b" c@d.example,\r\n" * 400 + b" e@f.example",
         "a header field (to) longer than 4,096 bytes"),  # folded: still one field
        (b"Cc: x@y.example\r\n" * 1200, "address fields longer than 16,384 bytes in all"),
        (b"Subject: " + b"x " * 40_000, "a header field (subject) longer than 65,536 bytes"),
    ],
    ids=["from-atoms", "to-list", "to-folded", "many-cc", "subject"],
)  # fmt: skip
def test_header_fields_that_would_make_the_parser_crawl_are_refused(
    header: bytes, reason: str
) -> None:
    """64 KB of `a.a.a.` in From took the email package 22 s; the scan refuses it at once."""
    raw = header + b"\r\nTo: " + UNSUBSCRIBE.encode() + b"\r\nSubject: x\r\n\r\nbody\r\n"
    found = classify(raw, unsubscribe_address=UNSUBSCRIBE, secret=SECRET)
    assert (found.kind, found.reason) == (Kind.UNREADABLE, f"cannot be parsed: {reason}")


def test_fields_inside_delivery_reports_have_the_same_bounds() -> None:
    report = (
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; a\r\n\r\n"
        b"Final-Recipient: rfc822; @@\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n"
    )
    assert shape_problem(report.replace(b"@@", b"a@example.org")) is None
    found = classify(report.replace(b"@@", b"a." * 5000 + b"@example.org"))
    assert (
        found.reason == "cannot be parsed: a header field (final-recipient) longer than 4,096 bytes"
    )


def test_real_reports_are_within_the_bounds() -> None:
    for name in EXPECTED:
        assert shape_problem(load(name)) is None, name


# --- settings -----------------------------------------------------------------------------------


def test_the_inbox_table() -> None:
    table = TableReader(
        "inbox", {"host": "imap.example.org", "username": "bounces", "soft_bounce_limit": 5}
    )
    settings = parse_inbox_table(table)
    assert table.problems == []
    assert settings == InboxSettings(
        host="imap.example.org", username="bounces", soft_bounce_limit=5
    )
    assert parse_inbox_table(TableReader("inbox", {})) is None
    table = TableReader(
        "inbox",
        {"host": "x", "security": "none", "password": "hunter2", "soft_bounce_limit": 0,
         "processed_folder": "INBOX", "colour": "red"},
    )  # fmt: skip
    assert parse_inbox_table(table) is None
    problems = table.problems
    assert [p.key for p in problems] == [
        "inbox.username",
        "inbox.security",
        "inbox.password",
        "inbox.processed_folder",
        "inbox.soft_bounce_limit",
    ]
    assert "hunter2" not in " ".join(str(p) for p in problems)
    # An unknown key is a warning, as in every table of newsletter.toml.
    assert table.warnings == ["newsletter.toml: unknown key 'inbox.colour' is ignored"]


# --- against Dovecot ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    with DovecotServer() as server:
        yield server


@pytest.fixture
def mailbox_user(dovecot: DovecotServer) -> str:
    return dovecot.new_user("bounces")


class SettingsChanges(TypedDict, total=False):
    """What a test changes of the `[inbox]` settings pointed at the test Dovecot."""

    port: int
    security: str
    folder: str
    processed_folder: str
    quarantine_folder: str
    max_message_bytes: int
    soft_bounce_limit: int
    trusted_authserv_id: str
    ca_file: str


def inbox_settings(
    dovecot: DovecotServer, user: str, **changes: Unpack[SettingsChanges]
) -> InboxSettings:
    settings = InboxSettings(host=dovecot.host, port=dovecot.port, username=user)
    return dataclasses.replace(settings, **changes)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SubscriberStore]:
    with SubscriberStore(tmp_path / "newsletter.db") as opened:
        for address in SUBSCRIBERS:
            opened.add(address)
        yield opened


def run(
    dovecot: DovecotServer,
    user: str,
    store: SubscriberStore,
    *,
    dry_run: bool = False,
    **changes: Unpack[SettingsChanges],
) -> InboxReport:
    settings = inbox_settings(dovecot, user, **changes)
    with ImapMailbox(
        settings, dovecot.password, ssl_context=dovecot.client_context(), readonly=dry_run
    ) as mailbox:
        return process_inbox(
            mailbox,
            store,
            settings=settings,
            unsubscribe_address=UNSUBSCRIBE,
            secret=SECRET,
            dry_run=dry_run,
        )


def status_of(store: SubscriberStore, email: str) -> str:
    found = store.get(email)
    assert found is not None
    return str(found.status)


def test_a_whole_mailbox_is_processed_filed_and_what_is_left_is_listed(
    dovecot: DovecotServer, mailbox_user: str, store: SubscriberStore
) -> None:
    dovecot.append(
        mailbox_user, dovecot.password, "INBOX", *(load(name) for name in sorted(EXPECTED))
    )
    seen: list[str] = []
    settings = inbox_settings(dovecot, mailbox_user)
    with ImapMailbox(settings, dovecot.password, ssl_context=dovecot.client_context()) as box:
        report = process_inbox(
            box,
            store,
            settings=settings,
            unsubscribe_address=UNSUBSCRIBE,
            secret=SECRET,
            progress=lambda item: seen.append(item.action),
        )
    assert len(seen) == len(EXPECTED)
    statuses = {address: status_of(store, address) for address in SUBSCRIBERS}
    assert statuses == {
        "gone@example.net": "bounced",  # Postfix 5.1.1, our token in the returned headers
        "slow@example.org": "subscribed",  # a delay is not a bounce
        "nobody@example.com": "bounced",  # Exim, 5.0.0 with 5.1.1 in the diagnostic
        "full@example.com": "subscribed",  # one soft bounce of 3
        "ghost@contoso.example": "bounced",  # Microsoft 5.1.10
        "grumpy@example.org": "complained",  # ARF, To redacted, token identifies
        "picky@example.org": "subscribed",  # ARF Original-Rcpt-To without our token: no proof
        "ann@example.org": "unsubscribed",  # the token of our mailto link in the subject
        "dirk@example.org": "subscribed",  # no token, no trusted_authserv_id: no proof
        "erin@example.org": "subscribed",  # the same, and a forgery
        "bob@example.org": "subscribed",  # a reply is for a person
        "holiday@example.org": "subscribed",
        "carol@example.org": "subscribed",  # forged bounces: token mismatch, no original
        "dave@example.org": "subscribed",
        "vera@example.org": "bounced",  # VERP return path, no original
    }
    sources = [e.source for e in store.events("gone@example.net")]
    assert sources[-1] == "inbox: hard bounce 5.1.1"
    assert store.events("grumpy@example.org")[-1].source == (
        "inbox: feedback report: abuse (MailhostFBL/2.1)"
    )
    assert store.events("ann@example.org")[-1].source == "inbox: unsubscribe mail"
    # Left: the reply, the forged bounce, and what proves nothing (reported as ignored).
    assert sorted(item.action for item in report.left if not item.ignored) == [
        "not a bounce, complaint or unsubscribe",
        "suspicious: the report is about carol@example.org, but the returned message was for "
        "dave@example.org",
    ]
    assert sorted((item.address, item.action.split(" (")[0]) for item in report.ignored) == [
        ("Picky@Example.org", "ignored: no proof"),
        ("carol@example.org", "ignored: no proof"),
        ("dirk@example.org", "ignored: no proof"),
        ("erin@example.org", "ignored: no proof"),
        ("stranger@elsewhere.example", "ignored: no proof"),
    ]
    assert [i.action for i in report.ignored if i.address == "carol@example.org"] == [
        "ignored: no proof (hard bounce for carol@example.org; 550 5.1.1 User unknown)"
    ]
    assert len(report.processed) == len(EXPECTED) - 7
    assert report.changes == {"bounced": 4, "complained": 1, "unsubscribed": 1}
    inbox = dovecot.messages(mailbox_user, dovecot.password, "INBOX")
    processed = dovecot.messages(mailbox_user, dovecot.password, "Processed")
    assert len(inbox) == 7 and len(processed) == len(EXPECTED) - 7
    assert any(b"Subject: Re: Harvest festival" in m for m in inbox)
    # What is left stays unread for the person who will look at it.
    assert all(
        "\\Seen" not in flags for flags in dovecot.flags(mailbox_user, dovecot.password, "INBOX")
    )
    # A second run finds only what was left, and changes nothing.
    again = run(dovecot, mailbox_user, store)
    assert again.processed == () and len(again.left) == 7 and again.changes == {}


def test_a_dry_run_changes_and_moves_nothing(
    dovecot: DovecotServer, mailbox_user: str, store: SubscriberStore
) -> None:
    names = ("postfix-hard-user-unknown.eml", "unsubscribe-gmail.eml")
    dovecot.append(mailbox_user, dovecot.password, "INBOX", *(load(name) for name in names))
    report = run(dovecot, mailbox_user, store, dry_run=True)
    assert report.dry_run
    assert [(i.handled, i.moved) for i in report.processed] == [(True, False), (True, False)]
    assert sorted(item.action for item in report.processed) == [
        "would be marked bounced (hard bounce 5.1.1)",
        "would be unsubscribed",
    ]
    assert status_of(store, "gone@example.net") == "subscribed"
    assert status_of(store, "ann@example.org") == "subscribed"
    assert len(dovecot.messages(mailbox_user, dovecot.password, "INBOX")) == 2
    assert dovecot.messages(mailbox_user, dovecot.password, "Processed") == []


def _soft_bounce(number: int) -> bytes:
    """The Gmail mailbox-full report, about a different issue each time."""
    raw = load("gmail-soft-mailbox-full.eml")
    raw = raw.replace(b"77aa88bb99cc00dd11ee22ff33aa44bb", f"{number:032x}".encode())
    return raw.replace(b"c0de.GMR@mx.google.com", f"{number}.GMR@mx.google.com".encode())


def test_soft_bounces_mark_bounced_at_the_limit_counting_each_message_once(
    dovecot: DovecotServer, mailbox_user: str, store: SubscriberStore
) -> None:
    # The same report twice (as after a crash between recording and filing).
    dovecot.append(mailbox_user, dovecot.password, "INBOX", _soft_bounce(1), _soft_bounce(1))
    first = run(dovecot, mailbox_user, store)
    assert [i.action for i in first.processed] == [
        "soft bounce 4.2.2: 1 of 3",
        "soft bounce 4.2.2: 1 of 3",
    ]
    dovecot.append(mailbox_user, dovecot.password, "INBOX", _soft_bounce(2))
    assert run(dovecot, mailbox_user, store).processed[0].action == "soft bounce 4.2.2: 2 of 3"
    assert status_of(store, "full@example.com") == "subscribed"
    dovecot.append(mailbox_user, dovecot.password, "INBOX", _soft_bounce(3))
    third = run(dovecot, mailbox_user, store)
    assert third.processed[0].action == "marked bounced (3 of 3 soft bounces)"
    assert status_of(store, "full@example.com") == "bounced"
    assert store.events("full@example.com")[-1].source == "inbox: 3 soft bounces (last 4.2.2)"
    # Subscribing again starts the count afresh.
    store.add("full@example.com", resubscribe=True)
    dovecot.append(mailbox_user, dovecot.password, "INBOX", _soft_bounce(4))
    assert run(dovecot, mailbox_user, store).processed[0].action == "soft bounce 4.2.2: 1 of 3"
    subscriber = store.get("full@example.com")
    assert subscriber is not None
    bounces = SoftBounces(store.path)
    try:
        assert bounces.count(subscriber.key, 0) == 4
    finally:
        bounces.close()


def test_a_soft_bounce_limit_of_one(
    dovecot: DovecotServer, mailbox_user: str, store: SubscriberStore
) -> None:
    dovecot.append(mailbox_user, dovecot.password, "INBOX", _soft_bounce(7))
    report = run(dovecot, mailbox_user, store, soft_bounce_limit=1)
    assert report.processed[0].action == "marked bounced (1 of 1 soft bounces)"


def test_complaints_win_over_bounces_and_unsubscribes_do_not_override(
    dovecot: DovecotServer, mailbox_user: str, store: SubscriberStore
) -> None:
    store.set_status("gone@example.net", "complained", source="test")
    store.set_status("ann@example.org", "bounced", source="test")
    names = ("postfix-hard-user-unknown.eml", "unsubscribe-gmail.eml")
    dovecot.append(mailbox_user, dovecot.password, "INBOX", *(load(name) for name in names))
    report = run(dovecot, mailbox_user, store)
    assert sorted(i.action for i in report.processed) == [
        "already bounced",
        "hard bounce; stays complained",
    ]
    assert status_of(store, "gone@example.net") == "complained"
    assert status_of(store, "ann@example.org") == "bounced"


def test_starttls_and_a_folder_with_a_non_ascii_name(
    dovecot: DovecotServer, mailbox_user: str, store: SubscriberStore
) -> None:
    dovecot.append(mailbox_user, dovecot.password, "INBOX", load("unsubscribe-gmail.eml"))
    report = run(
        dovecot,
        mailbox_user,
        store,
        security="starttls",
        port=dovecot.starttls_port,
        processed_folder="Verwerkt/Afgehandeld é",
    )
    assert report.processed[0].moved
    assert (
        len(dovecot.messages(mailbox_user, dovecot.password, imap_utf7("Verwerkt/Afgehandeld é")))
        == 1
    )


def test_an_untrusted_certificate_is_refused(dovecot: DovecotServer, mailbox_user: str) -> None:
    import ssl

    settings = inbox_settings(dovecot, mailbox_user)
    with pytest.raises(InboxError, match="TLS certificate is not trusted") as caught:
        ImapMailbox(settings, dovecot.password, ssl_context=ssl.create_default_context()).open()
    assert caught.value.hint is not None and "inbox.ca_file" in caught.value.hint


def test_the_ca_file_setting_is_used(
    dovecot: DovecotServer, mailbox_user: str, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(dovecot.ca_pem())
    with connect(inbox_settings(dovecot, mailbox_user, ca_file=str(ca)), dovecot.password) as box:
        assert box.uids() == []


def test_a_wrong_password_is_reported_without_the_password() -> None:
    # A server of its own: Dovecot delays the next logins from an address after a failure.
    with DovecotServer() as dovecot:
        settings = inbox_settings(dovecot, "bounces")
        with pytest.raises(InboxError, match="login failed for bounces") as caught:
            ImapMailbox(settings, "not-the-password", ssl_context=dovecot.client_context()).open()
    assert "not-the-password" not in caught.value.message
    assert caught.value.hint is not None and "NEWSLETTER_IMAP_PASSWORD" in caught.value.hint


def test_no_password_names_the_variable(dovecot: DovecotServer, mailbox_user: str) -> None:
    with pytest.raises(InboxError, match=f"no password for {mailbox_user}") as caught:
        connect(inbox_settings(dovecot, mailbox_user), None)
    assert caught.value.hint == "Set the environment variable NEWSLETTER_IMAP_PASSWORD."


def test_a_missing_folder_is_named(dovecot: DovecotServer, mailbox_user: str) -> None:
    settings = inbox_settings(dovecot, mailbox_user, folder="Bounces")
    with pytest.raises(InboxError, match="the folder 'Bounces' cannot be opened"):
        ImapMailbox(settings, dovecot.password, ssl_context=dovecot.client_context()).open()


def test_nothing_listens(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = InboxSettings(host="127.0.0.1", port=port, username="x", timeout=2)
    with pytest.raises(InboxError, match=f"127.0.0.1:{port}: cannot connect"):
        ImapMailbox(settings, "pw").open()


def test_statuses_are_real_subscriber_statuses() -> None:
    assert {s.value for s in SubscriberStatus} >= {"bounced", "complained", "unsubscribed"}


# --- quarantine ---------------------------------------------------------------------------------


def test_one_hostile_message_never_stops_a_run_it_goes_to_quarantine(
    dovecot: DovecotServer, mailbox_user: str, store: SubscriberStore
) -> None:
    """D2: the 84 KB message of 1,200 nested multiparts raised RecursionError and stopped every
    later run; now it is quarantined and the bounce behind it is handled."""
    dovecot.append(
        mailbox_user, dovecot.password, "INBOX", nested(1200), load("postfix-hard-user-unknown.eml")
    )
    seen: list[str] = []
    settings = inbox_settings(dovecot, mailbox_user)
    with ImapMailbox(settings, dovecot.password, ssl_context=dovecot.client_context()) as box:
        report = process_inbox(
            box, store, settings=settings, unsubscribe_address=UNSUBSCRIBE, secret=SECRET,
            progress=lambda item: seen.append(item.action),
        )  # fmt: skip
    assert [item.action for item in report.quarantined] == [
        f"cannot be parsed: MIME parts nested deeper than {MAX_DEPTH} levels"
    ]
    assert report.quarantined[0].moved and report.quarantined[0].subject == "nested"
    assert len(seen) == 2
    assert status_of(store, "gone@example.net") == "bounced"
    quarantine = dovecot.messages(mailbox_user, dovecot.password, "newsletter-quarantine")
    assert quarantine == [nested(1200)]  # unchanged, byte for byte
    assert dovecot.messages(mailbox_user, dovecot.password, "INBOX") == []
    again = run(dovecot, mailbox_user, store)
    assert again == InboxReport()


def test_a_message_over_the_size_limit_is_quarantined_without_downloading_it(
    dovecot: DovecotServer, mailbox_user: str, store: SubscriberStore
) -> None:
    huge = b"From: big@example.org\r\nSubject: huge\r\n\r\n" + b"x" * 200_000 + b"\r\n"
    dovecot.append(mailbox_user, dovecot.password, "INBOX", huge, load("unsubscribe-gmail.eml"))
    report = run(dovecot, mailbox_user, store, max_message_bytes=65536, quarantine_folder="Hostile")
    assert [item.action for item in report.quarantined] == [f"too large ({len(huge):,} bytes)"]
    assert len(report.processed) == 1
    assert dovecot.messages(mailbox_user, dovecot.password, "Hostile") == [huge]


def test_a_dry_run_quarantines_nothing(
    dovecot: DovecotServer, mailbox_user: str, store: SubscriberStore
) -> None:
    dovecot.append(mailbox_user, dovecot.password, "INBOX", nested(1200))
    report = run(dovecot, mailbox_user, store, dry_run=True)
    assert [(i.quarantined, i.moved) for i in report.quarantined] == [(True, False)]
    assert len(dovecot.messages(mailbox_user, dovecot.password, "INBOX")) == 1
    assert dovecot.messages(mailbox_user, dovecot.password, "newsletter-quarantine") == []


def test_the_quarantine_settings() -> None:
    table = TableReader(
        "inbox",
        {"host": "h", "username": "u", "quarantine_folder": "Junk/Hostile",
         "max_message_bytes": 1_000_000},
    )  # fmt: skip
    settings = parse_inbox_table(table)
    assert settings is not None and table.problems == []
    assert (settings.quarantine_folder, settings.max_message_bytes) == ("Junk/Hostile", 1_000_000)
    defaults = parse_inbox_table(TableReader("inbox", {"host": "h", "username": "u"}))
    assert defaults is not None and defaults.quarantine_folder == "newsletter-quarantine"
    table = TableReader(
        "inbox",
        {"host": "h", "username": "u", "quarantine_folder": "Processed",
         "max_message_bytes": 100},
    )  # fmt: skip
    assert parse_inbox_table(table) is None
    assert [p.key for p in table.problems] == ["inbox.quarantine_folder", "inbox.max_message_bytes"]


def test_soft_bounces_without_proof_count_for_nothing(
    dovecot: DovecotServer, mailbox_user: str, store: SubscriberStore
) -> None:
    """D5: three soft bounces without the original marked anyone bounced."""
    stripped = [
        re.sub(rb"List-Unsubscribe: [^\r]*\r\n(?: [^\r]*\r\n)*", b"", _soft_bounce(n))
        for n in (11, 12, 13)
    ]
    assert all(b"token=" not in raw for raw in stripped)
    dovecot.append(mailbox_user, dovecot.password, "INBOX", *stripped)
    report = run(dovecot, mailbox_user, store, soft_bounce_limit=2)
    assert [item.action.split(" (")[0] for item in report.ignored] == ["ignored: no proof"] * 3
    assert report.changes == {} and status_of(store, "full@example.com") == "subscribed"
    subscriber = store.get("full@example.com")
    assert subscriber is not None
    bounces = SoftBounces(store.path)
    try:
        assert bounces.count(subscriber.key, 0) == 0
    finally:
        bounces.close()


def test_the_mail_our_mailto_link_makes_proves_whom_it_unsubscribes() -> None:
    """What a mail app sends for the List-Unsubscribe mailto that delivery writes."""
    token = make_token(SECRET, "ann@example.org")
    link = urlsplit(f"mailto:{UNSUBSCRIBE}?subject=unsubscribe%20{token}")
    subject = parse_qs(link.query)["subject"][0]
    mail = (
        f"From: Ann <ann.private@example.net>\r\nTo: {unquote(link.path)}\r\n"
        f"Subject: {subject}\r\nMessage-ID: <m1@example.net>\r\n\r\n\r\n"
    ).encode()
    found = classify(mail, unsubscribe_address=UNSUBSCRIBE, secret=SECRET)
    assert (found.kind, found.addresses, found.proof) == (
        Kind.UNSUBSCRIBE, ("ann@example.org",), "our token in the subject"
    )  # fmt: skip
