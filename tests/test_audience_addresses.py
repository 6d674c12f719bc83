"""Addresses, names and attribute keys, and the Subscriber model (no database)."""

from __future__ import annotations

import random

import email_validator
import pytest
from email_validator import EmailNotValidError, validate_email

from newsletter.audience.addresses import (
    address_key,
    attribute_key,
    has_line_break,
    lookup_key,
    normalise_address,
)
from newsletter.audience.model import Subscriber
from newsletter.errors import AudienceError

# --- addresses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("  Ann.Smith@Example.ORG ", "Ann.Smith@example.org"),
        ("UPPER+tag@EXAMPLE.COM", "UPPER+tag@example.com"),
        ("jörg@exämple.de", "jörg@exämple.de"),
        ("JÖRG@EXÄMPLE.DE", "JÖRG@exämple.de"),
        ("用户@例子.广告", "用户@例子.广告"),
        ("x@XN--EXMPLE-CUA.DE", "x@exämple.de"),
        ("o'brien@example.ie", "o'brien@example.ie"),
    ],
)
def test_addresses_are_normalised(given: str, stored: str) -> None:
    assert normalise_address(given) == stored


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "the email address is empty"),
        ("   ", "the email address is empty"),
        (
            "a@b.org\r\nBcc: x@y.org",
            "the email address 'a@b.org\\r\\nBcc: x@y.org' contains a line break",
        ),
        ("a@b.org\n", "the email address 'a@b.org\\n' contains a line break"),
        ("a@b.org\u2028", "contains a line break"),
        (
            "ann@localhost",
            "'ann@localhost' is not a valid email address: The part after the @-sign",
        ),
        ("Ann <ann@example.org>", "is not a valid email address"),
        ("ann@@example.org", "is not a valid email address"),
        ("ann@example..org", "is not a valid email address"),
        ("ann@printer.local", "special-use or reserved name"),
    ],
)
def test_bad_addresses_are_refused_with_the_reason(given: str, message: str) -> None:
    with pytest.raises(AudienceError) as caught:
        normalise_address(given)
    assert message in caught.value.message


def _reference(address: str) -> str | None:
    try:
        return str(validate_email(address.strip(), check_deliverability=False).normalized)
    except EmailNotValidError:
        return None


def _ours(address: str) -> str | None:
    try:
        return normalise_address(address)
    except AudienceError:
        return None


TRICKY = [
    "a@b.co",
    "a@b.c",
    "a@b.c1",
    "a@1.com",
    "a@b.123",
    "a@-b.com",
    "a@b-.com",
    "a@ab--cd.com",
    "a@xn--exmple-cua.de",
    "a@xn--zz.com",
    "a.@b.com",
    ".a@b.com",
    "a..b@b.com",
    "a+b@sub.example.co.uk",
    "a@example.test",
    "a@example.arpa",
    "a@EXAMPLE.ONION",
    "x" * 64 + "@example.org",
    "x" * 65 + "@example.org",
    "a@" + "b" * 63 + ".com",
    "a@" + "b" * 64 + ".com",
    "a@" + ".".join(["b" * 60] * 4) + ".com",
    "x" * 240 + "@example.org",
    "a_b-c@under_score.com",
    "a@b_c.com",
    "1@2.3.4.com",
]


def test_the_fast_path_agrees_with_email_validator() -> None:
    # The fast path is an optimisation only: on every input it must give email-validator's
    # answer (accept with the same normal form, or refuse).
    rng = random.Random(20260)
    alphabet = "aZ09._+-@é"
    corpus = list(TRICKY)
    for _ in range(4000):
        local = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        labels = [
            "".join(rng.choice("aZ09-") for _ in range(rng.randint(0, 5)))
            for _ in range(rng.randint(1, 3))
        ]
        corpus.append(f"{local}@{'.'.join(labels)}{rng.choice(['', '.org', '.DE', '.c0m'])}")
    disagreements = [a for a in corpus if _ours(a) != _reference(a)]
    assert disagreements == []
    assert sum(_ours(a) is not None for a in corpus) > 500  # the corpus exercises acceptance


def _lookup_reference(text: str) -> str:
    """lookup_key as defined: the key of the normalised address, else of the text as given."""
    try:
        return address_key(normalise_address(text))
    except AudienceError:
        if has_line_break(text):
            raise
        return address_key(text.strip())


def test_lookup_keys_agree_with_normalising_first() -> None:
    # lookup_key skips email-validator for plain ASCII addresses (a send looks every recipient
    # up): special-use domains, odd spellings and Punycode must give the same key as before.
    rng = random.Random(16)
    corpus = [*TRICKY, " Ann@Example.ORG ", "ann@printer.local", "Ann@Mail.Test", "x@ab.onion"]
    for _ in range(3000):
        local = "".join(rng.choice("aZ09._+-é") for _ in range(rng.randint(0, 6)))
        domain = ".".join(
            "".join(rng.choice("aZ09-") for _ in range(rng.randint(0, 5)))
            for _ in range(rng.randint(1, 3))
        )
        tail = rng.choice(["", ".org", ".DE", ".test", ".local", ".invalid"])
        corpus.append(rng.choice(["", " "]) + f"{local}@{domain}{tail}")
    assert [a for a in corpus if lookup_key(a) != _lookup_reference(a)] == []
    with pytest.raises(AudienceError, match="line break"):
        lookup_key("ann@example.org\n")


# --- subscribers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "attributes", "first", "last"),
    [
        ("Ann Smith", {}, "Ann", "Smith"),
        ("Mary Ann van Dijk", {"first_name": "Mary Ann", "last_name": "van Dijk"}, "Mary Ann",
         "van Dijk"),
        ("Cher", {}, "Cher", ""),
        ("", {}, "", ""),
        ("Søren <x@y>", {}, "Søren", "<x@y>"),
        ("Jo Janssens", {"first_name": "Joke"}, "Joke", "Janssens"),
    ],
)  # fmt: skip
def test_first_and_last_names(name: str, attributes: dict[str, str], first: str, last: str) -> None:
    subscriber = Subscriber("a@example.org", name, attributes)
    assert (subscriber.first_name, subscriber.last_name) == (first, last)
    assert subscriber.value("first_name") == (first or None)
    assert subscriber.value("last_name") == (last or None)


def test_subscriber_values_and_read_only_attributes() -> None:
    given = {"city": "Gent", "empty": ""}
    subscriber = Subscriber("ann@example.org", "Ann Smith", given)
    given["city"] = "changed"
    assert subscriber.value("email") == "ann@example.org"
    assert subscriber.value("name") == "Ann Smith"
    assert subscriber.value("city") == "Gent"
    assert subscriber.value("empty") is None
    assert subscriber.value("missing") is None
    assert Subscriber("a@example.org").value("name") is None
    with pytest.raises(TypeError):
        # The point of the test: read-only at run time, which the type says too.
        subscriber.attributes["city"] = "Brugge"  # type: ignore[index]
    assert hash(subscriber) == hash(Subscriber("ann@example.org", "Ann Smith", {"city": "Gent"}))
    assert subscriber.as_dict() == {
        "email": "ann@example.org",
        "name": "Ann Smith",
        "first_name": "Ann",
        "last_name": "Smith",
        "city": "Gent",
    }


@pytest.mark.parametrize(
    ("email", "smtputf8", "ascii_email"),
    [
        ("ann@example.org", False, "ann@example.org"),
        ("ann@exämple.de", False, "ann@xn--exmple-cua.de"),
        ("jörg@exämple.de", True, None),
        ("用户@例子.广告", True, None),
    ],
)
def test_internationalised_addresses(email: str, smtputf8: bool, ascii_email: str | None) -> None:
    subscriber = Subscriber(email)
    assert subscriber.needs_smtputf8 is smtputf8
    assert subscriber.ascii_email == ascii_email


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("en", "Alex Example <alex@example.org>"),
        ("nl", "Sanne de Vries <sanne@example.org>"),
        ("nl_BE", "Sanne de Vries <sanne@example.org>"),
        ("pt_BR", "Alex Example <alex@example.org>"),
    ],
)
def test_sample_subscriber(locale: str, expected: str) -> None:
    sample = Subscriber.sample(locale)
    assert f"{sample.name} <{sample.email}>" == expected
    assert sample.last_name == expected.split(" <")[0].split(" ", 1)[1]


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Email Address", "email_address"),
        ("MEMBER_RATING", "member_rating"),
        ("optInTime", "opt_in_time"),
        ("HTTPStatus", "http_status"),
        ("E-Mail", "e_mail"),
        ("Straße", "strasse"),
        ("Café  (Lieblings)", "cafe_lieblings"),
        ("2fa", "field_2fa"),
        ("class", "class_"),
        ("用户", ""),
    ],
)
def test_attribute_keys_are_identifiers(header: str, key: str) -> None:
    assert attribute_key(header) == key


def test_the_fast_path_follows_changes_to_the_special_use_domains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert normalise_address("ann@example.net") == "ann@example.net"
    # Projects may allow `test` addresses by removing it, or refuse more names by adding them.
    monkeypatch.setattr(email_validator, "SPECIAL_USE_DOMAIN_NAMES", ["example.net"])
    with pytest.raises(AudienceError, match="special-use or reserved name"):
        normalise_address("ann@example.net")
    assert normalise_address("ann@mail.test") == "ann@mail.test"
    email_validator.SPECIAL_USE_DOMAIN_NAMES.append("mail.test")  # changed in place
    with pytest.raises(AudienceError, match="special-use or reserved name"):
        normalise_address("ann@mail.test")
