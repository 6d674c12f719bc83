"""Signed tokens that name an address: the unsubscribe links (and any later purpose).

A token is `<base64url address>.<base64url HMAC-SHA256>`, the HMAC over the purpose and the
address with the project's secret, cut to 128 bits. Tokens do not expire: an unsubscribe link in
an old issue must keep working. Errors are AudienceErrors: a bad token is about a subscriber.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from .errors import AudienceError

__all__ = ["make_token", "verify_token"]

_SIGNATURE_BYTES = 16  # 128 bits of HMAC-SHA256
_TOKEN_PART = re.compile(r"[A-Za-z0-9_-]+")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    """Decoded URL-safe base64, only in its canonical unpadded form (no alternative spellings)."""
    if not _TOKEN_PART.fullmatch(text) or len(text) % 4 == 1:
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return data if _b64(data) == text else None


def _signature(secret: bytes, purpose: str, address: bytes) -> bytes:
    message = b"newsletter/" + purpose.encode("utf-8") + b"\x00" + address
    return hmac.new(secret, message, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def _check_signing(secret: bytes, purpose: str) -> None:
    if not secret:
        raise AudienceError("the signing secret is empty")
    if not purpose or "\x00" in purpose:
        raise AudienceError(f"token purpose {purpose!r} must be non-empty text without NUL")


def make_token(secret: bytes, email: str, purpose: str = "unsubscribe") -> str:
    """A token naming `email`, signed for `purpose`: `<base64url address>.<base64url HMAC>`.

    Only letters, digits, `-`, `_` and `.` appear: safe in a URL query without escaping. Tokens
    do not expire: an unsubscribe link in an old issue must keep working.
    """
    _check_signing(secret, purpose)
    if not email or email.splitlines() != [email]:  # holds CR, LF or another line separator
        raise AudienceError(f"cannot make a token for the address {email!r}")
    address = email.encode("utf-8")
    return f"{_b64(address)}.{_b64(_signature(secret, purpose, address))}"


def verify_token(secret: bytes, token: str, purpose: str = "unsubscribe") -> str:
    """The address a token made by `make_token` names; AudienceError if it is not genuine."""
    _check_signing(secret, purpose)
    invalid = AudienceError(
        f"the {purpose} link is not valid: it was changed, cut short or made with another secret",
        hint="Use the link from a recent issue, or ask the editor to do it by hand.",
    )
    payload, dot, mac = token.partition(".")
    address = _unb64(payload)
    signature = _unb64(mac) if dot else None
    if address is None or signature is None or len(signature) != _SIGNATURE_BYTES:
        raise invalid
    if not hmac.compare_digest(_signature(secret, purpose, address), signature):
        raise invalid
    try:
        return address.decode("utf-8")
    except UnicodeDecodeError as err:  # only a token signed over bytes we never sign
        raise invalid from err
