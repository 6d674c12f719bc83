"""DKIM: signatures checked by dkimpy (the reference verifier) after a real SMTP server had the
message, canonicalisation compared with dkimpy's, keys, settings."""

from __future__ import annotations

import base64
import random
import stat
from collections.abc import Callable
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dkim.canonicalization import Relaxed

from newsletter.audience import Subscriber
from newsletter.config import load_settings
from newsletter.config_reader import TableReader
from newsletter.content import load_issue
from newsletter.delivery.ledger import Ledger
from newsletter.delivery.message import MessageTemplate
from newsletter.delivery.sender import send_issue
from newsletter.dkim import (
    DkimError,
    DkimSettings,
    DkimSigner,
    generate_key,
    keygen,
    parse_dkim_table,
    relaxed_body,
    relaxed_header,
    signer_from_settings,
)
from newsletter.render import render_issue
from tests.sendkit import (
    SECRET,
    ListAudience,
    example_template,
    people,
    smtp_transport,
    token_for,
)
from tests.smtpserver import SmtpTestServer

DOMAIN = "riverside-garden.example.org"
SELECTOR = "news2026"
NOW = 1_790_000_000


@pytest.fixture(scope="module")
def key() -> tuple[bytes, bytes]:
    """A 2048-bit key (PEM) and its DNS record; made once, key generation takes a while."""
    made = generate_key()
    return made.private_pem, made.record().encode()


def dns_for(
    record: bytes, name: str = f"{SELECTOR}._domainkey.{DOMAIN}."
) -> Callable[[bytes | str, int], bytes | None]:
    """A dnsfunc for dkimpy that knows one TXT record."""

    def lookup(asked: bytes | str, timeout: int = 5) -> bytes | None:
        asked_name = asked.decode() if isinstance(asked, bytes) else asked
        return record if asked_name.rstrip(".") == name.rstrip(".") else None

    return lookup


def signer(key: tuple[bytes, bytes]) -> DkimSigner:
    return DkimSigner(DOMAIN, SELECTOR, key[0], clock=lambda: NOW)


def example_message(project: Path, name: str = "Ann Example") -> bytes:
    template = example_template(project)
    return template.personalise(Subscriber("ann@example.org", name)).data


def signed_template(project: Path, sign: Callable[[bytes], bytes]) -> MessageTemplate:
    """The example issue's template with every message signed by `sign` (the message pipeline)."""
    settings = load_settings(project)
    rendered = render_issue(load_issue(project / "issues" / "2026-11"), settings)
    return MessageTemplate.prepare(
        rendered, settings, secret=SECRET, token_for=token_for, sign=sign
    )


def tags(signed: bytes) -> dict[str, str]:
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    first = header.split("\r\nFrom:", 1)[0]
    value = first.split(":", 1)[1].replace("\r\n", "")
    return {
        part.split("=", 1)[0].strip(): "".join(part.split("=", 1)[1].split())
        for part in value.split(";")
        if part.strip()
    }


def test_messages_sent_through_a_real_smtp_server_verify_with_dkimpy(
    project: Path, tmp_path: Path, key: tuple[bytes, bytes]
) -> None:
    template = signed_template(project, signer(key).sign)
    audience = ListAudience(people(5))
    with SmtpTestServer() as server, Ledger(tmp_path / "newsletter.db") as ledger:
        report = send_issue(
            template, audience, transport=smtp_transport(server.port), ledger=ledger
        )
        assert report.sent_now == 5
        received = server.messages
    assert len(received) == 5
    for message in received:
        assert message.data.startswith(b"DKIM-Signature: ")
        assert dkimpy.verify(message.data, dnsfunc=dns_for(key[1]))
        found = tags(message.data)
        assert (found["d"], found["s"], found["a"], found["c"]) == (
            DOMAIN,
            SELECTOR,
            "rsa-sha256",
            "relaxed/relaxed",
        )
        signed = found["h"].split(":")
        for name in ("from", "subject", "date", "message-id", "to", "list-unsubscribe",
                     "list-unsubscribe-post"):  # fmt: skip
            assert name in signed
        # Oversigned: one more than present, so a second header of the name cannot be added.
        for name in ("from", "subject", "list-unsubscribe", "list-unsubscribe-post"):
            assert signed.count(name) == 2


def test_the_signature_survives_refolding_and_trailing_white_space(
    project: Path, key: tuple[bytes, bytes]
) -> None:
    signed = signer(key).sign(example_message(project))
    relaid = signed.replace(b"\r\nSubject: ", b"\r\nSubject:\r\n\t  ", 1)
    relaid = relaid.replace(b"</html>", b"</html>   \t", 1)
    assert relaid != signed
    assert dkimpy.verify(relaid, dnsfunc=dns_for(key[1]))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"\r\nSubject: ", b"\r\nSubject: Win a prize! "),
        (b"token=", b"token=x"),  # List-Unsubscribe pointing elsewhere
        (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: nope"),
        (b"\r\nTo: ", b"\r\nTo: Mallory <m@evil.example>, "),
        (b"\r\nFrom: ", b"\r\nFrom: Bank <bank@evil.example>\r\nX-From: "),
        (b"\r\nDate: ", b"\r\nSubject: second subject\r\nDate: "),
        (b"Harvest", b"Harvust"),
    ],
    ids=["subject", "list-unsubscribe", "one-click", "to", "extra-from", "extra-subject", "body"],
)
def test_tampering_breaks_the_signature(
    project: Path, key: tuple[bytes, bytes], old: bytes, new: bytes
) -> None:
    signed = signer(key).sign(example_message(project))
    assert dkimpy.verify(signed, dnsfunc=dns_for(key[1]))
    head, body = signed.split(b"\r\n\r\n", 1)
    if old == b"Harvest":
        changed = head + b"\r\n\r\n" + body.replace(old, new, 1)
    else:
        assert old in head
        changed = head.replace(old, new, 1) + b"\r\n\r\n" + body
    assert not dkimpy.verify(changed, dnsfunc=dns_for(key[1]))


def test_a_wrong_public_key_does_not_verify(project: Path, key: tuple[bytes, bytes]) -> None:
    other = generate_key().record().encode()
    signed = signer(key).sign(example_message(project))
    assert not dkimpy.verify(signed, dnsfunc=dns_for(other))


def test_the_timestamp_comes_from_the_clock(project: Path, key: tuple[bytes, bytes]) -> None:
    assert tags(signer(key).sign(example_message(project)))["t"] == str(NOW)


@pytest.mark.parametrize("seed", range(5))
def test_body_canonicalisation_matches_dkimpy(seed: int) -> None:
    rng = random.Random(seed)
    atoms = [b"a", b"b", b" ", b"\t", b"\r\n", b"  ", b"x y", b"\r\n\r\n", b"=20"]
    for _ in range(2000):
        body = b"".join(rng.choice(atoms) for _ in range(rng.randint(0, 24)))
        assert relaxed_body(body) == Relaxed.canonicalize_body(body), body


@pytest.mark.parametrize(
    "field",
    [
        b"Subject: Hello   world \r\n",
        b"SUBJECT :\tfolded\r\n  over\r\n\tlines  \r\n",
        b"To: \r\n Ann <ann@example.org>\r\n",
        b"X-Empty:\r\n",
    ],
)
def test_header_canonicalisation_matches_dkimpy(field: bytes) -> None:
    name, _, value = field.partition(b":")
    [(want_name, want_value)] = Relaxed.canonicalize_headers([(name, value)])
    assert relaxed_header(field) == want_name + b":" + want_value


# --- keys ---------------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_for_the_owner_only_and_prints_the_record(
    tmp_path: Path, project: Path
) -> None:
    out = tmp_path / "dkim.pem"
    report = keygen(DOMAIN, SELECTOR, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert report.record_name == f"{SELECTOR}._domainkey.{DOMAIN}"
    assert report.record.startswith("v=DKIM1; k=rsa; p=")
    assert report.zone_line.startswith(f"{SELECTOR}._domainkey.{DOMAIN}. IN TXT (")
    # Each quoted string of a TXT record holds at most 255 octets.
    assert all(len(part) <= 255 for part in report.zone_line.split('"')[1::2])
    assert "".join(report.zone_line.split('"')[1::2]) == report.record
    # The record and the written key belong together: a signature verifies with it.
    settings = DkimSettings(DOMAIN, SELECTOR, str(out))
    signed = signer_from_settings(settings, tmp_path).sign(example_message(project))
    assert dkimpy.verify(signed, dnsfunc=dns_for(report.record.encode()))


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    out = tmp_path / "dkim.pem"
    out.write_text("published key")
    with pytest.raises(DkimError, match="already exists"):
        keygen(DOMAIN, SELECTOR, out)
    assert out.read_text() == "published key"


@pytest.mark.parametrize(("domain", "selector"), [("not a domain", "s"), (DOMAIN, "bad_sel!")])
def test_keygen_checks_domain_and_selector(tmp_path: Path, domain: str, selector: str) -> None:
    with pytest.raises(DkimError, match="is not a"):
        keygen(domain, selector, tmp_path / "k.pem")
    assert not (tmp_path / "k.pem").exists()


def test_an_openssl_style_pkcs1_key_is_accepted(project: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    signed = DkimSigner(DOMAIN, SELECTOR, pem).sign(example_message(project))
    assert dkimpy.verify(signed, dnsfunc=dns_for(record))


def _pem(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, password: bytes | None = None
) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: b"not a key", "not a PEM private key"),
        (lambda: _pem(rsa.generate_private_key(65537, 2048), b"pw"), "encrypted"),
        (lambda: _pem(ec.generate_private_key(ec.SECP256R1())), "must be an RSA key"),
    ],
    ids=["garbage", "encrypted", "ec"],
)
def test_unusable_keys_are_refused_naming_the_file(make: Callable[[], bytes], message: str) -> None:
    with pytest.raises(DkimError, match=message) as caught:
        DkimSigner(DOMAIN, SELECTOR, make(), source="/etc/dkim/news.pem")
    assert "/etc/dkim/news.pem" in str(caught.value)


def test_short_keys_are_not_made() -> None:
    with pytest.raises(DkimError, match="at least 1024 bits"):
        generate_key(768)


def test_a_missing_key_file_is_named_with_a_hint(tmp_path: Path) -> None:
    settings = DkimSettings(DOMAIN, SELECTOR, "keys/dkim.pem")
    with pytest.raises(DkimError) as caught:
        signer_from_settings(settings, tmp_path)
    assert str(tmp_path / "keys" / "dkim.pem") in caught.value.message
    assert caught.value.hint is not None and "newsletter dkim keygen" in caught.value.hint


def test_a_message_without_from_cannot_be_signed(key: tuple[bytes, bytes]) -> None:
    with pytest.raises(DkimError, match="without a From"):
        signer(key).sign(b"To: a@example.org\r\nSubject: x\r\n\r\nbody\r\n")


# --- settings -----------------------------------------------------------------------------------


def test_the_dkim_table_parses() -> None:
    table = TableReader("dkim", {"domain": DOMAIN, "selector": SELECTOR, "key_file": "dkim.pem"})
    settings = parse_dkim_table(table)
    assert table.problems == []
    assert settings == DkimSettings(DOMAIN, SELECTOR, "dkim.pem")
    assert parse_dkim_table(TableReader("dkim", {})) is None


def test_the_dkim_table_reports_every_problem_with_its_key() -> None:
    table = TableReader("dkim", {"domain": "localhost", "selector": "a b", "keyfile": "x"})
    assert parse_dkim_table(table) is None
    assert sorted(str(p) for p in table.problems) == [
        "newsletter.toml: dkim.domain: must be a domain name like 'example.org'",
        "newsletter.toml: dkim.key_file: is required when [dkim] is present",
        "newsletter.toml: dkim.selector: must be letters, digits and '-' (e.g. 'news2026')",
    ]
    # An unknown key is a warning, as in every table of newsletter.toml.
    assert table.warnings == [
        "newsletter.toml: unknown key 'dkim.keyfile' is ignored (did you mean 'key_file'?)"
    ]
