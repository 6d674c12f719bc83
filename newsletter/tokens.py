"""Signed tokens: the opaque unsubscribe tokens, and the older tokens that name an address.

Opaque unsubscribe tokens (what messages carry from this release on) are 32 characters of
base64url over 24 bytes: a version byte (1), the day the token was made (2 bytes, days since
2020-01-01), a reference to the subscriber (9 bytes: keyed BLAKE2b of the subscriber's key) and a
MAC over all of that (12 bytes: keyed BLAKE2b); both keys are derived from the project's secret
and the list id by HMAC-SHA256. They hold no address, not even encrypted: whom a reference names
is looked up in the store (`audience.tokenbook`). The list (its List-Id) is in both keys, so a
token of another list signed with the same secret is refused. The day makes an expiry possible
(`[unsubscribe] token_days`).

The older form `<base64url address>.<base64url HMAC-SHA256>` (release 0.1's unsubscribe links,
and any other purpose: `make_token`/`verify_token`) names the address it signs; links of that form
in mail already sent keep working. Errors are AudienceErrors: a bad token is about a subscriber.

VERP (variable envelope return path). With `[sending] return_path`, each message's envelope
sender is `<local>+<token>@<domain>`: the return path's local part, `+`, the recipient's
unsubscribe token (the same token as in the List-Unsubscribe URL: opaque from this release,
`make_token(secret, recipient)` in release 0.1), `@` and the return path's domain. Bounces come
back to that address; `token_from_verp` reads the token back (`TokenBook` resolves it,
`recipient_from_verp` reads the older form): proof that we sent that mail to that person, which a
forger without the secret cannot make. The token holds only `A-Z a-z 0-9 - _ .`, so the address
needs no quoting; with an opaque token the local part stays within RFC 5321's 64 octets for a
return path local part of up to 31 characters, and the receiving server must keep its case
(Postfix, Exim and Dovecot do).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from functools import lru_cache

from .errors import AudienceError

__all__ = [
    "OPAQUE_TOKEN_LENGTH",
    "TOKEN_PATTERN",
    "ExpiredTokenError",
    "TokenClaim",
    "make_opaque_token",
    "make_token",
    "read_unsubscribe_token",
    "recipient_from_verp",
    "subscriber_ref",
    "token_from_verp",
    "verify_token",
    "verp_address",
    "verp_with_token",
]

_SIGNATURE_BYTES = 16  # 128 bits of HMAC-SHA256
_TOKEN_PART = re.compile(r"[A-Za-z0-9_-]+")
_OPAQUE_VERSION = 1
_REF_BYTES = 9  # 72 bits: no two of a million subscribers share one (p < 1e-9)
_OPAQUE_MAC_BYTES = 12  # 96 bits: guessing online is hopeless
_OPAQUE = struct.Struct(f">BH{_REF_BYTES}s{_OPAQUE_MAC_BYTES}s")
OPAQUE_TOKEN_LENGTH = 32  # base64url of the 24 bytes above, no padding
_EPOCH_DAY = 18262  # 2020-01-01, in days since 1970-01-01
_DAY = 86400
# A token as it appears in text: the older form (the address part, a dot, 22 characters of
# signature), or an opaque token (32 characters).
TOKEN_PATTERN = r"(?:[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{22}|[A-Za-z0-9_-]{32})(?![A-Za-z0-9_-])"
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


def token_from_verp(address: str) -> str | None:
    """The token in a VERP return path `<local>+<token>@<domain>`, unchecked; None without one."""
    found = _VERP.fullmatch(address.strip().removeprefix("<").removesuffix(">"))
    return None if found is None else found.group(2)


# --- opaque unsubscribe tokens ------------------------------------------------------------------


class ExpiredTokenError(AudienceError):
    """A genuine token, older than the list accepts (`[unsubscribe] token_days`)."""


@dataclass(frozen=True)
class TokenClaim:
    """What a genuine unsubscribe token says: an address (older form) or a subscriber reference
    (opaque form, with the day it was made)."""

    address: str | None = None
    ref: bytes | None = None
    issued_day: int | None = None


@lru_cache(maxsize=32)
def _list_keys(secret: bytes, list_id: str) -> tuple[bytes, bytes]:
    """The two keys of a list's opaque tokens (reference, MAC), derived from the secret and the
    list id by HMAC-SHA256: once per list, not once per message."""
    context = b"\x00" + list_id.encode("utf-8")
    return (
        hmac.digest(secret, b"newsletter/unsubscribe-ref" + context, "sha256"),
        hmac.digest(secret, b"newsletter/unsubscribe-mac" + context, "sha256"),
    )


def subscriber_ref(secret: bytes, list_id: str, key: str) -> bytes:
    """The reference an opaque token carries for the subscriber with `key` on `list_id`: keyed
    BLAKE2b (a PRF, one pass, several times cheaper than HMAC per message) of the key."""
    _check_signing(secret, "unsubscribe")
    ref_key = _list_keys(secret, list_id)[0]
    return hashlib.blake2b(key.encode("utf-8"), key=ref_key, digest_size=_REF_BYTES).digest()


def _opaque_mac(secret: bytes, list_id: str, head: bytes) -> bytes:
    mac_key = _list_keys(secret, list_id)[1]
    return hashlib.blake2b(head, key=mac_key, digest_size=_OPAQUE_MAC_BYTES).digest()


def _day(now: float) -> int:
    return int(now // _DAY) - _EPOCH_DAY


def make_opaque_token(secret: bytes, list_id: str, key: str, *, now: float) -> str:
    """An opaque unsubscribe token for the subscriber with `key` (their casefolded address) on
    `list_id`, made at `now` (Unix time). 32 characters of `A-Z a-z 0-9 - _`."""
    if not list_id:
        raise AudienceError("an unsubscribe token needs the list's id")
    day = _day(now)
    if not 0 <= day <= 0xFFFF:
        raise AudienceError(f"cannot date an unsubscribe token at {now!r}")
    ref = subscriber_ref(secret, list_id, key)
    head = _OPAQUE.pack(_OPAQUE_VERSION, day, ref, b"\x00" * _OPAQUE_MAC_BYTES)[:-_OPAQUE_MAC_BYTES]
    return _b64(head + _opaque_mac(secret, list_id, head))


def read_unsubscribe_token(
    secret: bytes,
    token: str,
    *,
    list_id: str,
    now: float,
    max_age_days: int = 0,
    accept_legacy: bool = True,
) -> TokenClaim:
    """What a genuine unsubscribe token says. AudienceError when it is not genuine (altered,
    cut, another secret or another list, or of the older form when `accept_legacy` is false);
    ExpiredTokenError when an opaque token is older than `max_age_days` (0: never too old)."""
    _check_signing(secret, "unsubscribe")
    if "." in token:
        if not accept_legacy:
            raise AudienceError(
                "the unsubscribe link is of an old form this list no longer accepts",
                hint="Use the link from a recent issue, or ask the editor to do it by hand.",
            )
        return TokenClaim(address=verify_token(secret, token))
    invalid = AudienceError(
        "the unsubscribe link is not valid: it was changed, cut short or made for another list",
        hint="Use the link from a recent issue, or ask the editor to do it by hand.",
    )
    data = _unb64(token) if len(token) == OPAQUE_TOKEN_LENGTH else None
    if data is None or len(data) != _OPAQUE.size:
        raise invalid
    version, day, ref, mac = _OPAQUE.unpack(data)
    expected = _opaque_mac(secret, list_id, data[:-_OPAQUE_MAC_BYTES])
    if version != _OPAQUE_VERSION or not hmac.compare_digest(expected, mac):
        raise invalid
    today = _day(now)
    if day > today + 1:  # made in the future: not by us (a day's slack for clocks and zones)
        raise invalid
    if max_age_days > 0 and today - day > max_age_days:
        raise ExpiredTokenError(
            f"the unsubscribe link is more than {max_age_days} days old",
            hint="Use the link from a recent issue, or reply to it and ask to be unsubscribed.",
        )
    return TokenClaim(ref=ref, issued_day=day)
