"""Signed unsubscribe tokens: round trips, forgeries, refusals."""

from __future__ import annotations

import base64
import re
from urllib.parse import quote

import pytest

from newsletter.errors import AudienceError
from newsletter.tokens import (
    OPAQUE_TOKEN_LENGTH,
    TOKEN_PATTERN,
    ExpiredTokenError,
    make_opaque_token,
    make_token,
    read_unsubscribe_token,
    recipient_from_verp,
    subscriber_ref,
    token_from_verp,
    verify_token,
    verp_address,
    verp_with_token,
)

# --- tokens -------------------------------------------------------------------------------------

SECRET = b"a long random secret for tests only"


@pytest.mark.parametrize(
    "address", ["ann@example.org", "jörg@exämple.de", "用户@例子.广告", "a+b@x.io"]
)
def test_token_round_trip_and_url_safety(address: str) -> None:
    token = make_token(SECRET, address)
    assert verify_token(SECRET, token) == address
    assert quote(token, safe="") == token  # nothing to escape in a query
    assert "=" not in token
    signature = token.split(".")[1]
    assert len(signature) == 22  # 128 bits in base64


def _bad(token: str, *, secret: bytes = SECRET, purpose: str = "unsubscribe") -> None:
    with pytest.raises(AudienceError, match="link is not valid"):
        verify_token(secret, token, purpose)


def test_forged_truncated_and_tampered_tokens_are_refused() -> None:
    token = make_token(SECRET, "ann@example.org")
    payload, signature = token.split(".")
    for cut in range(len(token)):
        _bad(token[:cut])
    for position in range(len(token)):
        if token[position] == ".":
            continue
        for replacement in "A_-9":
            if token[position] != replacement:
                changed = token[:position] + replacement + token[position + 1 :]
                _bad(changed)
    other = make_token(SECRET, "eve@example.org")
    _bad(other.split(".")[0] + "." + signature)  # someone else's address with Ann's signature
    _bad(make_token(b"another secret", "ann@example.org"))
    _bad(token, purpose="confirm")
    _bad(token + "=")
    _bad(token + ".x")
    _bad(payload + "." + signature + "AA")
    _bad(payload + "==" + "." + signature)
    _bad(" " + token)
    _bad("")


def test_non_canonical_base64_is_refused() -> None:
    # "YQ" and "YR" decode to the same byte: only the canonical spelling may verify.
    token = make_token(SECRET, "a")
    payload, signature = token.split(".")
    assert payload == "YQ"
    _bad("YR." + signature)


@pytest.mark.parametrize(
    ("secret", "email", "purpose", "message"),
    [
        (b"", "a@example.org", "unsubscribe", "the signing secret is empty"),
        (SECRET, "a@example.org\r\nBcc: x", "unsubscribe", "cannot make a token for the address"),
        (SECRET, "", "unsubscribe", "cannot make a token"),
        (SECRET, "a@example.org", "", "token purpose '' must be non-empty"),
    ],
)
def test_token_refusals(secret: bytes, email: str, purpose: str, message: str) -> None:
    with pytest.raises(AudienceError, match=re.escape(message)):
        make_token(secret, email, purpose)


def test_purposes_do_not_mix() -> None:
    confirm = make_token(SECRET, "ann@example.org", "confirm")
    assert confirm != make_token(SECRET, "ann@example.org")
    assert verify_token(SECRET, confirm, "confirm") == "ann@example.org"
    _bad(confirm)


# --- VERP return paths --------------------------------------------------------------------------


def test_verp_return_paths() -> None:
    address = verp_address("news@news.example.org", "Vera@example.org", SECRET)
    local, _, rest = address.partition("+")
    assert local == "news" and rest.endswith("@news.example.org")
    assert recipient_from_verp(address, SECRET) == "Vera@example.org"
    assert recipient_from_verp(f"<{address}>", SECRET) == "Vera@example.org"
    assert recipient_from_verp(address, b"another-secret") is None
    assert recipient_from_verp(address.replace("news+", "news+x"), SECRET) is None
    assert recipient_from_verp("news@news.example.org", SECRET) is None
    assert recipient_from_verp(address.lower(), SECRET) is None  # case matters, documented
    with pytest.raises(AudienceError):
        verp_address("news+x@example.org", "a@example.org", SECRET)


@pytest.mark.parametrize("address", ["ann@example.org", "jörg@exämple.de", "a+b@x.io"])
def test_a_token_is_found_in_text_by_its_pattern(address: str) -> None:
    token = make_token(SECRET, address)
    assert re.findall(TOKEN_PATTERN, f"Subject: unsubscribe {token}\r\n") == [token]
    assert re.findall(TOKEN_PATTERN, f"news+{token}@example.org") == [token]
    assert recipient_from_verp(verp_address("news@example.org", address, SECRET), SECRET) == address


# --- opaque unsubscribe tokens ------------------------------------------------------------------

LIST = "news.example.org"
NOW = 1_796_000_000.0  # 2026-11-29
DAY = 86400


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize(
    "address", ["ann@example.org", "jörg@exämple.de", "a+b@x.io", "secretary.general@big-ngo.nl"]
)
def test_an_opaque_token_holds_no_address_and_is_shorter(address: str) -> None:
    key = address.casefold()
    token = make_opaque_token(SECRET, LIST, key, now=NOW)
    assert len(token) == OPAQUE_TOKEN_LENGTH
    assert quote(token, safe="") == token and "." not in token
    assert len(token) < len(make_token(SECRET, address))
    # Every way of reading it as text or base64 shows nothing of the address.
    data = _unb64(token)
    local, _, domain = address.partition("@")
    for text in (token, data.decode("latin-1"), data.decode("utf-8", "replace")):
        for part in (address, local, domain, key):
            assert part not in text and part.encode().hex() not in data.hex()
    for shift in range(4):  # base64 read from another offset
        assert local.encode() not in _unb64(token[shift:][: (len(token) - shift) // 4 * 4])
    claim = read_unsubscribe_token(SECRET, token, list_id=LIST, now=NOW)
    assert claim.address is None and claim.ref == subscriber_ref(SECRET, LIST, key)


def test_opaque_tokens_of_two_people_or_two_lists_differ() -> None:
    ann = make_opaque_token(SECRET, LIST, "ann@example.org", now=NOW)
    bob = make_opaque_token(SECRET, LIST, "bob@example.org", now=NOW)
    other_list = make_opaque_token(SECRET, "other.example.org", "ann@example.org", now=NOW)
    assert len({ann, bob, other_list}) == 3
    assert subscriber_ref(SECRET, LIST, "ann@example.org") != subscriber_ref(
        SECRET, "other.example.org", "ann@example.org"
    )


def _refused(token: str, *, list_id: str = LIST, accept_legacy: bool = True) -> None:
    with pytest.raises(AudienceError, match=r"not valid|old form") as caught:
        read_unsubscribe_token(SECRET, token, list_id=list_id, now=NOW, accept_legacy=accept_legacy)
    assert not isinstance(caught.value, ExpiredTokenError)


def test_forged_altered_and_other_list_opaque_tokens_are_refused() -> None:
    token = make_opaque_token(SECRET, LIST, "ann@example.org", now=NOW)
    for cut in range(len(token)):
        _refused(token[:cut])
    for position in range(len(token)):
        for replacement in "A_-9":
            if token[position] != replacement:
                _refused(token[:position] + replacement + token[position + 1 :])
    _refused(token, list_id="other.example.org")  # the same secret, another list
    _refused(make_opaque_token(b"another secret", LIST, "ann@example.org", now=NOW))
    _refused(token + "A")
    _refused(make_opaque_token(SECRET, LIST, "ann@example.org", now=NOW + 3 * DAY))  # future
    _refused(make_token(SECRET, "ann@example.org"), accept_legacy=False)


def test_opaque_tokens_expire_after_the_configured_days_and_old_ones_never() -> None:
    token = make_opaque_token(SECRET, LIST, "ann@example.org", now=NOW)
    later = NOW + 1095 * DAY
    assert read_unsubscribe_token(SECRET, token, list_id=LIST, now=later, max_age_days=1095).ref
    with pytest.raises(ExpiredTokenError, match="more than 1095 days old"):
        read_unsubscribe_token(SECRET, token, list_id=LIST, now=later + DAY, max_age_days=1095)
    # 0 is "for ever"; a token of the older form carries no date and is never too old.
    assert read_unsubscribe_token(SECRET, token, list_id=LIST, now=later * 2, max_age_days=0).ref
    legacy = make_token(SECRET, "ann@example.org")
    claim = read_unsubscribe_token(SECRET, legacy, list_id=LIST, now=later * 2, max_age_days=1)
    assert claim.address == "ann@example.org"


def test_an_opaque_token_is_found_in_text_and_in_a_verp_address() -> None:
    token = make_opaque_token(SECRET, LIST, "ann@example.org", now=NOW)
    assert re.findall(TOKEN_PATTERN, f"Subject: unsubscribe {token}\r\n") == [token]
    verp = verp_with_token("news@news.example.org", token)
    assert re.findall(TOKEN_PATTERN, verp) == [token]
    assert token_from_verp(f"<{verp}>") == token
    assert token_from_verp("news@news.example.org") is None
