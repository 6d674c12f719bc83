"""What a message in the reply/bounce mailbox is: pure functions over its raw bytes, no I/O.

What is recognised (anything else is `Kind.UNKNOWN`: left where it is, unread, and listed):

- Delivery status notifications (RFC 3464, `multipart/report; report-type=delivery-status`),
  as Postfix, Exim, Gmail and Microsoft 365 send them. Per failed recipient: a permanent
  failure about the address (5.1.x "no such user/domain", 5.2.1 "disabled", 5.4.4 "no route",
  also when only the diagnostic text carries such a code) is a hard bounce. Any other failure
  (4.x.x, a full mailbox 5.2.2, a too-large message, policy blocks 5.7.x) is a soft bounce.
  `delayed`, `delivered`, `relayed` reports are notices.
- Feedback reports (ARF, RFC 5965): `abuse`, `fraud`, `virus` and `other` are complaints;
  `not-spam` and `auth-failure` are notices.
- Mail to the List-Unsubscribe mailto address: an unsubscribe by its sender. Automatic mail
  (auto-replies, bounces, lists) never is. See "trust" below.
- Auto-replies (out of office) are notices.

Who a report is about: the DSN's Original-Recipient, else its Final-Recipient; for ARF the
Original-Rcpt-To, else the address in the unsubscribe token of the returned message (feedback
loops often redact the To header), else its To.

Trust. Anyone can send a bounce-shaped mail. When the returned message (or its headers) still
carries our List-Unsubscribe token, the token must be genuine and name the same address, else
the report is left as suspicious. Reports without the original are believed, like most list
managers do: the worst a forger gains is that someone stops getting the newsletter. For mail to
the unsubscribe address, the From address is all there is (the mailto link carries no token);
set `trusted_authserv_id` to the name your receiving server writes into Authentication-Results,
and such mail then only counts when that header says DMARC (or DKIM for the From domain) passed.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import enum
import hashlib
import re
from dataclasses import dataclass
from email.utils import getaddresses, parseaddr
from urllib.parse import unquote

from ..audience import verify_token
from ..errors import AudienceError

__all__ = ["Classification", "Kind", "classify", "classify_refusal"]


class Kind(enum.StrEnum):
    HARD_BOUNCE = "hard bounce"
    SOFT_BOUNCE = "soft bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    NOTICE = "notice"  # understood, nothing to change: delays, auto-replies, not-spam reports
    UNKNOWN = "unknown"  # left in the mailbox for a person


@dataclass(frozen=True)
class Classification:
    """What one message is, whom it is about, and why we think so."""

    kind: Kind
    addresses: tuple[str, ...] = ()
    status: str | None = None  # the DSN status code, e.g. "5.1.1"
    reason: str = ""
    report_id: str = ""  # the report's own Message-ID (or a digest): soft bounces count once
    original_id: str | None = None  # the Message-ID of the message it reports on


_STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_TOKEN = re.compile(r"[?&]token=([A-Za-z0-9_.%-]+)")
_HARD_CODES = {"5.2.1", "5.4.4", "5.1.0"}
_HARD_WORDS = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient)|does not exist|"
    r"recipient not found|address rejected: user unknown|mailbox unavailable|invalid recipient|"
    r"recipientnotfound|account (?:is )?disabled",
    re.IGNORECASE,
)
_COMPLAINT_TYPES = {"abuse", "fraud", "virus", "other"}
_NOTICE_TYPES = {"not-spam", "auth-failure"}


def _report_id(message: email.message.EmailMessage, raw: bytes) -> str:
    found = str(message.get("Message-ID", "") or "").strip()
    return found or "sha256:" + hashlib.sha256(raw).hexdigest()


def _address_of(field_value: str | None) -> str | None:
    """The address in a DSN/ARF address field: `rfc822; a@b`, `<a@b>` or a bare address."""
    if not field_value:
        return None
    value = " ".join(str(field_value).split())
    if ";" in value:
        kind, _, value = value.partition(";")
        if kind.strip().lower() not in ("rfc822", "utf-8"):
            return None
    address = parseaddr(value.strip())[1] or value.strip().strip("<>")
    return address if "@" in address else None


def _blocks(part: email.message.Message) -> list[email.message.Message]:
    """The field blocks of a delivery-status or feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        # The email package parses delivery-status into one message per block, and other
        # message/* parts (feedback-report) into one message whose headers are the fields.
        return [p for p in payload if isinstance(p, email.message.Message)]
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return []
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    parser = email.parser.HeaderParser(policy=email.policy.compat32)
    return [
        parser.parsestr(block.strip() + "\n")
        for block in re.split(r"\n\s*\n", text)
        if block.strip()
    ]


def _original(message: email.message.EmailMessage) -> email.message.Message | None:
    """The returned message (or only its headers), the third part of a report."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                inner = payload[0]
                return inner if isinstance(inner, email.message.Message) else None
        if kind in ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers"):
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return email.message_from_bytes(
                    raw.replace(b"\r\n", b"\n").strip() + b"\n\n", policy=email.policy.compat32
                )
    return None


def _original_token(original: email.message.Message | None) -> str | None:
    if original is None:
        return None
    for header in ("List-Unsubscribe", "X-List-Unsubscribe"):
        value = original.get(header)
        if value:
            found = _TOKEN.search(" ".join(str(value).split()))
            if found:
                return unquote(found.group(1))
    return None


def _check_token(
    original: email.message.Message | None, address: str | None, secret: bytes | None
) -> tuple[str | None, str | None]:
    """(address named by the returned message's token, problem); both None without a token."""
    token = _original_token(original)
    if token is None or secret is None:
        return None, None
    try:
        named = verify_token(secret, token)
    except AudienceError:
        return None, "the returned message carries an unsubscribe token that is not genuine"
    if address is not None and named.casefold() != address.casefold():
        return named, f"the report is about {address}, but the returned message was for {named}"
    return named, None


def classify_refusal(
    email: str, reply: str, *, report_id: str, original_id: str | None
) -> Classification:
    """A server's permanent refusal of a recipient at send time (e.g. "550 5.1.1 No such
    user"), judged by the same rules as a DSN: a hard or a soft bounce (issue 12)."""
    kind, code = _bounce_kind("failed", None, reply)
    return Classification(
        kind,
        addresses=(email,),
        status=code,
        reason=f"refused at send time: {reply}",
        report_id=report_id,
        original_id=original_id,
    )


def _bounce_kind(action: str, status: str | None, diagnostic: str) -> tuple[Kind, str | None]:
    action = action.strip().lower()
    code = None
    if status:
        found = _STATUS_CODE.search(status)
        code = ".".join(found.groups()) if found else None
    in_text = _STATUS_CODE.search(diagnostic or "")
    if (
        in_text
        and (code is None or code.endswith(".0.0"))
        and in_text.group(1) == (code or in_text.group(1))[0]
    ):
        # Generic 5.0.0 (Exim, some relays): the remote server's own code is more precise.
        code = ".".join(in_text.groups())
    if action in ("delayed", "delivered", "relayed", "expanded"):
        return Kind.NOTICE, code
    if action != "failed":
        return Kind.UNKNOWN, code
    if code is None:
        return (
            Kind.HARD_BOUNCE if _HARD_WORDS.search(diagnostic or "") else Kind.SOFT_BOUNCE
        ), code
    if code.startswith("5.1.") or code in _HARD_CODES:
        return Kind.HARD_BOUNCE, code
    if code.startswith("5.") and code in ("5.0.0", "5.4.1") and _HARD_WORDS.search(diagnostic):
        return Kind.HARD_BOUNCE, code
    return Kind.SOFT_BOUNCE, code


def _classify_dsn(
    message: email.message.EmailMessage, status_part: email.message.Message, raw: bytes,
    secret: bytes | None,
) -> Classification:  # fmt: skip
    blocks = _blocks(status_part)
    recipients = blocks[1:] if len(blocks) > 1 else blocks
    original = _original(message)
    original_id = str(original.get("Message-ID", "")).strip() or None if original else None
    report_id = _report_id(message, raw)
    findings: list[tuple[Kind, str, str | None, str]] = []
    for block in recipients:
        address = _address_of(block.get("Original-Recipient")) or _address_of(
            block.get("Final-Recipient")
        )
        if address is None:
            continue
        diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
        kind, code = _bounce_kind(str(block.get("Action", "")), block.get("Status"), diagnostic)
        findings.append((kind, address, code, diagnostic))
    if not findings:
        return Classification(Kind.UNKNOWN, reason="a delivery report without a recipient")
    # The most consequential finding decides (one recipient per message is the norm here).
    order = [Kind.HARD_BOUNCE, Kind.SOFT_BOUNCE, Kind.NOTICE, Kind.UNKNOWN]
    findings.sort(key=lambda f: order.index(f[0]))
    kind, _, code, diagnostic = findings[0]
    addresses = tuple(dict.fromkeys(f[1] for f in findings if f[0] == kind))
    _, problem = _check_token(original, addresses[0], secret)
    if problem is not None:
        return Classification(Kind.UNKNOWN, addresses, code, f"suspicious: {problem}", report_id)
    # "smtp; 550 ..." -> "550 ...": the diagnostic type says nothing to a person.
    reason = diagnostic.partition(";")[2].strip() if ";" in diagnostic[:12] else diagnostic
    reason = reason or (f"status {code}" if code else "")
    return Classification(kind, addresses, code, reason, report_id, original_id)


def _classify_arf(
    message: email.message.EmailMessage, report: email.message.Message, raw: bytes,
    secret: bytes | None,
) -> Classification:  # fmt: skip
    blocks = _blocks(report)
    fields = blocks[0] if blocks else email.message.Message()
    feedback = str(fields.get("Feedback-Type", "")).strip().lower()
    original = _original(message)
    original_id = str(original.get("Message-ID", "")).strip() or None if original else None
    report_id = _report_id(message, raw)
    address = _address_of(fields.get("Original-Rcpt-To"))
    named, problem = _check_token(original, address, secret)
    if problem is not None:
        return Classification(Kind.UNKNOWN, (address or "",), None, f"suspicious: {problem}")
    if address is None:
        address = named
    if address is None and original is not None:
        to = getaddresses([str(v) for v in original.get_all("To", [])])
        if len(to) == 1 and "@" in to[0][1]:
            address = to[0][1]
    if feedback in _NOTICE_TYPES:
        return Classification(Kind.NOTICE, (address,) if address else (), None,
                              f"feedback report: {feedback}", report_id, original_id)  # fmt: skip
    if feedback not in _COMPLAINT_TYPES:
        return Classification(Kind.UNKNOWN, reason=f"feedback report of type {feedback!r}")
    if address is None:
        return Classification(
            Kind.UNKNOWN, reason="a complaint that does not say about whom (redacted)"
        )
    agent = " ".join(str(fields.get("User-Agent", "")).split())
    reason = f"feedback report: {feedback}" + (f" ({agent})" if agent else "")
    return Classification(Kind.COMPLAINT, (address,), None, reason, report_id, original_id)


def _is_automatic(message: email.message.EmailMessage) -> str | None:
    """Why the message was sent by a machine (None: by a person, as far as headers tell)."""
    auto = str(message.get("Auto-Submitted", "no")).strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    for header in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"):
        if header in message and header != "X-Auto-Response-Suppress":
            return header
    precedence = str(message.get("Precedence", "")).strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return f"Precedence: {precedence}"
    if "List-Id" in message or "List-Unsubscribe" in message:
        return "a mailing list message"
    sender = parseaddr(str(message.get("From", "")))[1].lower()
    if sender.split("@")[0] in ("mailer-daemon", "postmaster"):
        return f"from {sender}"
    if str(message.get("Return-Path", "")).strip() == "<>":
        return "an empty Return-Path (a bounce)"
    return None


def _delivered_to(message: email.message.EmailMessage) -> set[str]:
    values = []
    for header in ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To"):
        values += [str(v) for v in message.get_all(header, [])]
    return {address.casefold() for _, address in getaddresses(values) if "@" in address}


def _authenticated(message: email.message.EmailMessage, authserv_id: str, domain: str) -> bool:
    """Whether our own server's Authentication-Results say the From domain passed DMARC, or a
    DKIM signature of that domain (or a parent of it) verified."""
    for value in message.get_all("Authentication-Results", []):
        text = " ".join(str(value).split())
        server, _, results = text.partition(";")
        if server.strip().split()[0:1] != [authserv_id]:
            continue
        for result in results.split(";"):
            words = result.strip().lower()
            if words.startswith("dmarc=pass"):
                return True
            if words.startswith("dkim=pass"):
                found = re.search(r"header\.d=([a-z0-9.-]+)", words)
                if found and (domain == found.group(1) or domain.endswith("." + found.group(1))):
                    return True
    return False


def classify(
    raw: bytes,
    *,
    unsubscribe_address: str | None = None,
    secret: bytes | None = None,
    trusted_authserv_id: str | None = None,
) -> Classification:
    """What the raw message `raw` is (see the module notes); never raises for odd input."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        return _classify(message, raw, unsubscribe_address, secret, trusted_authserv_id)
    except (ValueError, LookupError, TypeError, IndexError, AttributeError) as err:
        # The email package raises a handful of types on malformed input; a person looks.
        return Classification(Kind.UNKNOWN, reason=f"cannot be parsed ({type(err).__name__})")


def _classify(
    message: email.message.EmailMessage,
    raw: bytes,
    unsubscribe_address: str | None,
    secret: bytes | None,
    authserv: str | None,
) -> Classification:
    if message.get_content_type() == "multipart/report":
        report_type = str(message.get_param("report-type", "") or "").lower()
        for part in message.walk():
            kind = part.get_content_type()
            if kind in ("message/delivery-status", "message/global-delivery-status"):
                return _classify_dsn(message, part, raw, secret)
            if kind == "message/feedback-report":
                return _classify_arf(message, part, raw, secret)
        return Classification(Kind.UNKNOWN, reason=f"a report of type {report_type!r}")
    automatic = _is_automatic(message)
    sender = parseaddr(str(message.get("From", "")))[1]
    if unsubscribe_address and unsubscribe_address.casefold() in _delivered_to(message):
        if automatic is not None:
            return Classification(
                Kind.UNKNOWN, reason=f"mail to the unsubscribe address, but {automatic}"
            )
        if "@" not in sender:
            return Classification(Kind.UNKNOWN, reason="mail to the unsubscribe address without "
                                  "a From address")  # fmt: skip
        if authserv is not None and not _authenticated(
            message, authserv, sender.rpartition("@")[2].lower()
        ):
            return Classification(
                Kind.UNKNOWN,
                (sender,),
                reason=f"unsubscribe mail that {authserv} did not authenticate (no DMARC or "
                "DKIM pass for the From domain)",
            )
        subject = " ".join(str(message.get("Subject", "")).split())
        return Classification(
            Kind.UNSUBSCRIBE, (sender,), None, f"mail to the unsubscribe address: {subject!r}",
            _report_id(message, raw),
        )  # fmt: skip
    auto = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto.startswith("auto-replied") or "X-Autoreply" in message:
        return Classification(Kind.NOTICE, (sender,) if sender else (), None, "auto-reply")
    return Classification(Kind.UNKNOWN, reason="not a bounce, complaint or unsubscribe")
