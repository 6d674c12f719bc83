"""Signed tokens that name an address: the unsubscribe links (and any later purpose).

A token is `<base64url address>.<base64url HMAC-SHA256>`, the HMAC over the purpose and the
address with the project's secret, cut to 128 bits. Tokens do not expire: an unsubscribe link in
an old issue must keep working. Errors are AudienceErrors: a bad token is about a subscriber.

VERP (variable envelope return path). With `[sending] return_path`, each message's envelope
sender is `<local>+<token>@<domain>`: the return path's local part, `+`, the recipient's
unsubscribe token (`make_token(secret, recipient)`, the same token as in the List-Unsubscribe
URL), `@` and the return path's domain. Bounces come back to that address, and
`recipient_from_verp` gives the recipient it names: proof that we sent that mail to that person,
which a forger without the secret cannot make. The token holds only `A-Z a-z 0-9 - _ .`, so the
address needs no quoting; its local part is longer than RFC 5321's 64 octets for addresses over
about 20 characters, which every common MTA accepts, and the receiving server must keep its case
(Postfix, Exim and Dovecot do).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from .errors import AudienceError

__all__ = [
    "TOKEN_PATTERN",
    "make_token",
    "recipient_from_verp",
    "verify_token",
    "verp_address",
    "verp_with_token",
]

_SIGNATURE_BYTES = 16  # 128 bits of HMAC-SHA256
_TOKEN_PART = re.compile(r"[A-Za-z0-9_-]+")
# A token as it appears in text: the address part, a dot, 22 characters of signature.
TOKEN_PATTERN = r"[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{22}(?![A-Za-z0-9_-])"
_VERP = re.compile(r"([^\s@<>]+)\+(" + TOKEN_PATTERN + r")@([^\s@<>]+)")


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


def verp_address(return_path: str, email: str, secret: bytes) -> str:
    """The envelope sender for a message to `email`: `<local>+<token>@<domain>` of `return_path`."""
    local, at, domain = return_path.strip().rpartition("@")
    if not at or not local or not domain or "+" in local:
        raise AudienceError(
            f"{return_path!r} cannot carry a VERP token: it must be local@domain without '+'"
        )
    return verp_with_token(return_path.strip(), make_token(secret, email))


def verp_with_token(return_path: str, token: str) -> str:
    """`<local>+<token>@<domain>` of a checked `return_path` (the config refuses one with '+'):
    the one place the VERP format is written; `recipient_from_verp` reads it back."""
    local, _, domain = return_path.rpartition("@")
    return f"{local}+{token}@{domain}"


def recipient_from_verp(address: str, secret: bytes) -> str | None:
    """The recipient a VERP return path made by `verp_address` names; None when `address` holds
    no token or one that is not genuine (made with another secret, altered, cut short)."""
    found = _VERP.fullmatch(address.strip().removeprefix("<").removesuffix(">"))
    if found is None:
        return None
    try:
        return verify_token(secret, found.group(2))
    except AudienceError:
        return None
