"""Signed unsubscribe tokens: round trips, forgeries, refusals."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from newsletter.errors import AudienceError
from newsletter.tokens import (
    TOKEN_PATTERN,
    make_token,
    recipient_from_verp,
    verify_token,
    verp_address,
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
