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

Proof. Anyone can send a bounce-shaped mail, so a bounce, complaint or unsubscribe mail only
changes a subscriber with proof that we sent that mail to that recipient (`Classification.proof`
says which; without it the caller ignores the message):

- a VERP return path `<local>+<token>@<domain>` (`tokens.recipient_from_verp`) in the report's
  To, Delivered-To, X-Original-To or Envelope-To, or in the returned message's Return-Path;
- our signed token in the returned message's List-Unsubscribe (the https URL's `token=` or the
  mailto's subject);
- for mail to the unsubscribe address: the token in its Subject (our mailto link puts it there)
  or in the address it was sent to (`unsubscribe+<token>@...`); without a token, only when the
  topmost Authentication-Results header was written by `trusted_authserv_id` (your own server)
  and says DMARC passed for the From domain, or DKIM passed for a domain aligned with it (same
  organisational domain by the Public Suffix List: `header.d=com` never passes `example.com`).

A token that is not genuine, or that names someone other than the address the report is about,
makes the report suspicious (left for a person). A DSN without the original, an ARF naming only
Original-Rcpt-To, or a `From: victim` mail without a token proves nothing.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import enum
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import getaddresses, parseaddr
from functools import cache
from urllib.parse import unquote

from publicsuffixlist import PublicSuffixList

from ..errors import AudienceError
from ..tokens import TOKEN_PATTERN, token_from_verp, verify_token
from .limits import shape_problem

__all__ = ["Classification", "Kind", "classify", "classify_refusal", "organisational_domain"]


class Kind(enum.StrEnum):
    HARD_BOUNCE = "hard bounce"
    SOFT_BOUNCE = "soft bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    NOTICE = "notice"  # understood, nothing to change: delays, auto-replies, not-spam reports
    UNKNOWN = "unknown"  # left in the mailbox for a person
    UNREADABLE = "unreadable"  # beyond the parsing bounds or broke the parser: quarantined


@dataclass(frozen=True)
class Classification:
    """What one message is, whom it is about, and why we think so."""

    kind: Kind
    addresses: tuple[str, ...] = ()
    status: str | None = None  # the DSN status code, e.g. "5.1.1"
    reason: str = ""
    report_id: str = ""  # the report's own Message-ID (or a digest): soft bounces count once
    original_id: str | None = None  # the Message-ID of the message it reports on
    proof: str | None = None  # how we know we sent it to `addresses[0]`; None: we do not

    @property
    def needs_proof(self) -> bool:
        """Whether acting on it changes a subscriber (and so needs `proof`)."""
        return self.kind in (Kind.HARD_BOUNCE, Kind.SOFT_BOUNCE, Kind.COMPLAINT, Kind.UNSUBSCRIBE)


_STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# The address a token names, or None when it is not genuine (`TokenBook.resolve`).
Resolver = Callable[[str], "str | None"]
_TOKEN = re.compile(r"(?<![A-Za-z0-9_.-])" + TOKEN_PATTERN)
# Where our List-Unsubscribe puts the token: the https URL's `token=`, the mailto's subject.
_LINK_TOKEN = re.compile(
    r"(?:[?&]token=|[?&]subject=unsubscribe(?:%20|\+| ))(" + TOKEN_PATTERN + ")", re.IGNORECASE
)
# Where a bounce's envelope recipient (our VERP return path) shows up in the report itself.
_ENVELOPE_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")
_VERP_CANDIDATE = re.compile(r"[^\s<>,;:\"()]+\+" + TOKEN_PATTERN + r"@[A-Za-z0-9.-]+")
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


@dataclass(frozen=True)
class _Proof:
    """Recipients a report proves we mailed (casefolded address -> where), and any forgery."""

    named: dict[str, str]
    forged: str | None = None

    def about(self, address: str | None) -> tuple[str | None, str | None]:
        """(proof for `address`, why the report is suspicious); None, None without any proof.

        Without an address (a redacted complaint), a single proven recipient is the one."""
        if self.forged is not None:
            return None, self.forged
        if not self.named:
            return None, None
        if address is None:
            return (next(iter(self.named.values())), None) if len(self.named) == 1 else (None, None)
        found = self.named.get(address.casefold())
        if found is None:
            others = ", ".join(sorted(self.named))
            return None, f"the report is about {address}, but the returned message was for {others}"
        return found, None


def _header_text(message: email.message.Message | None, *names: str) -> list[str]:
    if message is None:
        return []
    values: list[str] = []
    for name in names:
        for value in message.get_all(name, []) or []:
            try:
                values.append(" ".join(str(value).split()))
            except Exception:  # an undecodable header proves nothing
                continue
    return values


def _proof(
    message: email.message.Message,
    original: email.message.Message | None,
    tokens: Resolver | None,
) -> _Proof:
    """What in the report proves which recipient we sent the reported message to."""
    if tokens is None:
        return _Proof({})
    named: dict[str, str] = {}
    forged = None
    envelope = _header_text(message, *_ENVELOPE_HEADERS) + _header_text(original, "Return-Path")
    for text in envelope:
        for candidate in _VERP_CANDIDATE.findall(text):
            token = token_from_verp(candidate)
            recipient = None if token is None else tokens(token)
            if recipient is not None:
                named.setdefault(recipient.casefold(), "VERP return path")
    for text in _header_text(original, "List-Unsubscribe", "X-List-Unsubscribe"):
        for token in _LINK_TOKEN.findall(unquote(text)):
            recipient = tokens(token)
            if recipient is None:
                forged = "the returned message carries an unsubscribe token that is not genuine"
                continue
            named.setdefault(recipient.casefold(), "our token in the returned message")
    return _Proof(named, forged)


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
    tokens: Resolver | None,
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
    proof, problem = _proof(message, original, tokens).about(addresses[0])
    if problem is not None:
        return Classification(Kind.UNKNOWN, addresses, code, f"suspicious: {problem}", report_id)
    # "smtp; 550 ..." -> "550 ...": the diagnostic type says nothing to a person.
    reason = diagnostic.partition(";")[2].strip() if ";" in diagnostic[:12] else diagnostic
    reason = reason or (f"status {code}" if code else "")
    return Classification(kind, addresses[:1], code, reason, report_id, original_id, proof)


def _classify_arf(
    message: email.message.EmailMessage, report: email.message.Message, raw: bytes,
    tokens: Resolver | None,
) -> Classification:  # fmt: skip
    blocks = _blocks(report)
    fields = blocks[0] if blocks else email.message.Message()
    feedback = str(fields.get("Feedback-Type", "")).strip().lower()
    original = _original(message)
    original_id = str(original.get("Message-ID", "")).strip() or None if original else None
    report_id = _report_id(message, raw)
    address = _address_of(fields.get("Original-Rcpt-To"))
    proven = _proof(message, original, tokens)
    proof, problem = proven.about(address)
    if problem is not None:
        return Classification(Kind.UNKNOWN, (address or "",), None, f"suspicious: {problem}")
    if address is None and proof is not None:
        address = next(iter(proven.named))
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
    return Classification(Kind.COMPLAINT, (address,), None, reason, report_id, original_id, proof)


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


def _to_unsubscribe(unsubscribe_address: str, delivered: set[str]) -> bool:
    """Whether the mail went to the unsubscribe address, or to its `+tag` form."""
    local, _, domain = unsubscribe_address.casefold().rpartition("@")
    for address in delivered:
        their_local, _, their_domain = address.rpartition("@")
        if their_domain == domain and their_local.partition("+")[0] == local.partition("+")[0]:
            return True
    return False


def _unsubscribe_token(
    subject: str, delivered: set[str], resolve: Resolver | None
) -> tuple[tuple[str, str] | None, str | None]:
    """((recipient, where) named by a token in the subject or address, problem)."""
    if resolve is None:
        return None, None
    tokens = [(t, "our token in the subject") for t in _TOKEN.findall(subject)]
    for address in delivered:
        local = address.rpartition("@")[0]
        tokens += [(t, "our token in the address") for t in _TOKEN.findall(local)]
    named: list[tuple[str, str]] = []
    for token, where in tokens:
        recipient = resolve(token)
        if recipient is not None:
            named.append((recipient, where))
    if named:
        return named[0], None
    if tokens:
        return None, "suspicious: mail to the unsubscribe address with a token that is not genuine"
    return None, None


def _delivered_to(message: email.message.EmailMessage) -> set[str]:
    """The addresses the mail went to, as written (a token in one is case-sensitive)."""
    values = []
    for header in ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To"):
        values += [str(v) for v in message.get_all(header, [])]
    return {address for _, address in getaddresses(values) if "@" in address}


@cache
def _suffixes() -> PublicSuffixList:
    """The Public Suffix List shipped with `publicsuffixlist` (offline; ~0.1 s to load once)."""
    return PublicSuffixList()


def organisational_domain(domain: str) -> str | None:
    """`mail.example.co.uk` -> `example.co.uk`; None for a public suffix itself (`com`, `co.uk`)."""
    name = domain.strip().strip(".").lower()
    if not name:
        return None
    found = _suffixes().privatesuffix(name)
    return found if isinstance(found, str) else None


_COMMENT = re.compile(r"\([^()]*\)")


def _authenticated(
    message: email.message.EmailMessage, authserv_id: str, domain: str
) -> str | None:
    """What in our own server's Authentication-Results shows the From domain is genuine:
    `dmarc=pass` for exactly that domain, or `dkim=pass` for a domain of the same organisation.

    Only the topmost header counts, and only when its authserv-id is ours: a receiving server
    adds its header on top, and anything below it came with the message (RFC 8601 section 5).
    """
    values = message.get_all("Authentication-Results", [])
    if not values:
        return None
    text = " ".join(str(values[0]).split())
    while _COMMENT.search(text):  # comments may hold ';' (Gmail: "(2048-bit key; unprotected)")
        text = _COMMENT.sub(" ", text)
    server, _, results = text.partition(";")
    if [w.lower() for w in server.split()[:1]] != [authserv_id.lower()]:
        return None
    own = organisational_domain(domain)
    if own is None:
        return None
    for result in results.split(";"):
        words = result.strip().lower().split()
        if not words or "=" not in words[0]:
            continue
        method, _, verdict = words[0].partition("=")
        properties = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        if verdict != "pass":
            continue
        if method == "dmarc" and properties.get("header.from", "").strip('"') == domain:
            return f"{authserv_id}: dmarc=pass"
        if method == "dkim":
            signer = properties.get("header.d") or properties.get("header.i", "").rpartition("@")[2]
            signer = signer.strip('"')
            if signer and organisational_domain(signer) == own:
                return f"{authserv_id}: dkim=pass for {signer}"
    return None


def classify(
    raw: bytes,
    *,
    unsubscribe_address: str | None = None,
    secret: bytes | None = None,
    trusted_authserv_id: str | None = None,
    tokens: Resolver | None = None,
) -> Classification:
    """What the raw message `raw` is (see the module notes); never raises for odd input.

    `tokens` gives the address a token names (None when it is not genuine): the list's
    `TokenBook.resolve`, which reads opaque tokens; without it, tokens of the older form are
    checked with `secret`.

    A message beyond the bounds of `limits.shape_problem`, or one the email package cannot
    take apart, is `Kind.UNREADABLE` (the caller quarantines it)."""
    problem = shape_problem(raw)
    if problem is not None:
        return Classification(Kind.UNREADABLE, reason=f"cannot be parsed: {problem}")
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        if tokens is None and secret is not None:
            tokens = _legacy_resolver(secret)
        return _classify(message, raw, unsubscribe_address, tokens, trusted_authserv_id)
    except Exception as err:
        # Whatever a hostile message makes the email package raise, it is about this message
        # only: it goes to quarantine and the run goes on.
        return Classification(
            Kind.UNREADABLE, reason=f"cannot be parsed ({type(err).__name__}: {_short(err)})"
        )


def _legacy_resolver(secret: bytes) -> Resolver:
    def resolve(token: str) -> str | None:
        try:
            return verify_token(secret, token)
        except AudienceError:
            return None

    return resolve


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 120 else text[:117] + "..."


def _classify(
    message: email.message.EmailMessage,
    raw: bytes,
    unsubscribe_address: str | None,
    tokens: Resolver | None,
    authserv: str | None,
) -> Classification:
    if message.get_content_type() == "multipart/report":
        report_type = str(message.get_param("report-type", "") or "").lower()
        for part in message.walk():
            kind = part.get_content_type()
            if kind in ("message/delivery-status", "message/global-delivery-status"):
                return _classify_dsn(message, part, raw, tokens)
            if kind == "message/feedback-report":
                return _classify_arf(message, part, raw, tokens)
        return Classification(Kind.UNKNOWN, reason=f"a report of type {report_type!r}")
    automatic = _is_automatic(message)
    senders = getaddresses([str(v) for v in message.get_all("From", [])])
    sender = senders[0][1] if len(senders) == 1 else ""
    delivered = _delivered_to(message)
    if unsubscribe_address and _to_unsubscribe(
        unsubscribe_address, {a.casefold() for a in delivered}
    ):
        if automatic is not None:
            return Classification(
                Kind.UNKNOWN, reason=f"mail to the unsubscribe address, but {automatic}"
            )
        subject = " ".join(str(message.get("Subject", "")).split())
        report_id = _report_id(message, raw)
        reason = f"mail to the unsubscribe address: {subject!r}"
        named, problem = _unsubscribe_token(subject, delivered, tokens)
        if problem is not None:
            return Classification(Kind.UNKNOWN, (sender,) if sender else (), reason=problem)
        if named is not None:
            return Classification(Kind.UNSUBSCRIBE, (named[0],), None, reason, report_id,
                                  proof=named[1])  # fmt: skip
        if "@" not in sender:
            return Classification(Kind.UNKNOWN, reason="mail to the unsubscribe address without "
                                  "a token or a single From address")  # fmt: skip
        passed = None
        if authserv is not None:
            passed = _authenticated(message, authserv, sender.rpartition("@")[2].lower())
        if passed is None:
            why = (
                f"no token, and {authserv} did not authenticate the sender"
                if authserv
                else "no token in the subject or address, and no trusted_authserv_id to "
                "authenticate the sender"
            )
            reason = f"{reason} ({why})"
        return Classification(Kind.UNSUBSCRIBE, (sender,), None, reason, report_id, proof=passed)
    auto = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto.startswith("auto-replied") or "X-Autoreply" in message:
        return Classification(Kind.NOTICE, (sender,) if sender else (), None, "auto-reply")
    return Classification(Kind.UNKNOWN, reason="not a bounce, complaint or unsubscribe")
