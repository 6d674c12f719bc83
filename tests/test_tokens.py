"""Signed unsubscribe tokens: round trips, forgeries, refusals."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from newsletter.errors import AudienceError
from newsletter.tokens import make_token, verify_token

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
