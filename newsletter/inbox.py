"""`newsletter inbox process`: read the reply/bounce mailbox over IMAP and act on what it holds.

What is recognised (anything else is left where it is, unread, and listed):

- Delivery status notifications (RFC 3464, `multipart/report; report-type=delivery-status`),
  as Postfix, Exim, Gmail and Microsoft 365 send them. Per failed recipient: a permanent
  failure about the address (5.1.x "no such user/domain", 5.2.1 "disabled", 5.4.4 "no route",
  also when only the diagnostic text carries such a code) is a hard bounce and marks the
  subscriber `bounced`. Any other failure (4.x.x, a full mailbox 5.2.2, a too-large message,
  policy blocks 5.7.x) is a soft bounce: counted, and `soft_bounce_limit` of them (for different
  messages since the person last subscribed) mark the subscriber bounced. `delayed`,
  `delivered`, `relayed` reports are notices: filed, nothing changed.
- Feedback reports (ARF, RFC 5965): `abuse`, `fraud`, `virus` and `other` mark the subscriber
  `complained`; `not-spam` and `auth-failure` are notices.
- Mail to the List-Unsubscribe mailto address: the sender is unsubscribed. Automatic mail
  (auto-replies, bounces, lists) never is. See "trust" below.
- Auto-replies (out of office) are notices.

Who a report is about: the DSN's Original-Recipient, else its Final-Recipient; for ARF the
Original-Rcpt-To, else the address in the unsubscribe token of the returned message (feedback
loops often redact the To header), else its To. Only subscribers are acted on: a report about an
address that is not on the list is left, as it may concern someone's personal mail.

Trust. Anyone can send a bounce-shaped mail. When the returned message (or its headers) still
carries our List-Unsubscribe token, the token must be genuine and name the same address, else
the report is left as suspicious. Reports without the original are believed, like most list
managers do: the worst a forger gains is that someone stops getting the newsletter. For mail to
the unsubscribe address, the From address is all there is (the mailto link carries no token);
set `trusted_authserv_id` to the name your receiving server writes into Authentication-Results,
and such mail then only counts when that header says DMARC (or DKIM for the From domain) passed.

Processed messages are moved to `processed_folder` (created if missing), never deleted; changes
are written to the subscriber store first, so a crash in between only repeats harmless work
(soft bounces are recorded once per report, keyed by its Message-ID).
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.message
import email.parser
import email.policy
import enum
import hashlib
import imaplib
import re
import sqlite3
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

from .audience import SubscriberStatus, SubscriberStore, verify_token
from .config_tables import InboxSettings, parse_inbox_table
from .errors import AudienceError, NewsletterError

__all__ = [
    "Classification",
    "ImapMailbox",
    "InboxError",
    "InboxItem",
    "InboxReport",
    "InboxSettings",
    "Kind",
    "Mailbox",
    "classify",
    "imap_utf7",
    "parse_inbox_table",
    "process_inbox",
]


class InboxError(NewsletterError):
    """The mailbox cannot be read or changed (connection, login, folder, server reply)."""


# --- settings -----------------------------------------------------------------------------------


# --- classification -----------------------------------------------------------------------------


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


# --- soft bounce counts -------------------------------------------------------------------------

_BOUNCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox_soft_bounces (
    id INTEGER PRIMARY KEY,
    subscriber_key TEXT NOT NULL,
    report_id TEXT NOT NULL,
    message_key TEXT NOT NULL,
    status TEXT,
    at REAL NOT NULL,
    UNIQUE (subscriber_key, report_id)
);
CREATE INDEX IF NOT EXISTS inbox_soft_bounces_by_key ON inbox_soft_bounces (subscriber_key, at);
"""


class SoftBounces:
    """Soft bounces per subscriber, in a table of its own in the project's `newsletter.db`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(_BOUNCE_SCHEMA)
        except sqlite3.Error as err:
            raise InboxError(f"{path}: cannot open the bounce records: {err}") from err

    def close(self) -> None:
        self._db.close()

    def record(
        self, key: str, report_id: str, message_key: str, status: str | None, at: float
    ) -> None:
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO inbox_soft_bounces"
                " (subscriber_key, report_id, message_key, status, at) VALUES (?, ?, ?, ?, ?)",
                (key, report_id, message_key, status, at),
            )
        except sqlite3.Error as err:
            raise InboxError(f"{self.path}: cannot record a soft bounce: {err}") from err

    def count(self, key: str, since: float) -> int:
        """Soft bounces for different messages since `since`."""
        try:
            row = self._db.execute(
                "SELECT COUNT(DISTINCT message_key) FROM inbox_soft_bounces"
                " WHERE subscriber_key = ? AND at >= ?",
                (key, since),
            ).fetchone()
        except sqlite3.Error as err:
            raise InboxError(f"{self.path}: cannot count soft bounces: {err}") from err
        return int(row[0])


# --- the mailbox --------------------------------------------------------------------------------


class Mailbox(Protocol):
    """What processing needs of a mailbox; `ImapMailbox` is the real one."""

    def uids(self) -> list[int]: ...

    def fetch(self, uid: int) -> bytes: ...

    def move(self, uid: int, folder: str) -> None: ...


def imap_utf7(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 5.1.3): `Verwerkt/Ç` -> `Verwerkt/&AMc-`."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def _quoted(name: str) -> str:
    encoded = imap_utf7(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapMailbox:
    """One folder of an IMAP mailbox over TLS (IMAPS or STARTTLS, certificate verified)."""

    def __init__(
        self,
        settings: InboxSettings,
        password: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        readonly: bool = False,
    ) -> None:
        self.settings = settings
        self._password = password
        self._context = ssl_context or _default_context(settings)
        self.readonly = readonly
        self._imap: imaplib.IMAP4 | None = None
        self._capabilities: set[str] = set()
        self._created: set[str] = set()
        self.server = f"{settings.host}:{settings.port}"

    def __repr__(self) -> str:
        return f"ImapMailbox({self.settings.username}@{self.server}/{self.settings.folder})"

    def __enter__(self) -> ImapMailbox:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        settings = self.settings
        step = "connect"
        try:
            if settings.security == "tls":
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    settings.host, settings.port, ssl_context=self._context,
                    timeout=settings.timeout,
                )  # fmt: skip
            else:
                imap = imaplib.IMAP4(settings.host, settings.port, timeout=settings.timeout)
                step = "STARTTLS"
                imap.starttls(ssl_context=self._context)
            self._imap = imap
            step = "login"
            imap.login(settings.username, self._password)
            step = "CAPABILITY"
            status, data = imap.capability()
            self._capabilities = {c.upper() for c in b" ".join(data).decode().split()}
            step = f"select {settings.folder}"
            status, data = imap.select(_quoted(settings.folder), readonly=self.readonly)
            if status != "OK":
                raise InboxError(
                    f"{self.server}: the folder {settings.folder!r} cannot be opened: "
                    f"{_text(data)}",
                    hint="Check inbox.folder in newsletter.toml.",
                )
        except InboxError:
            self.close()
            raise
        except ssl.SSLCertVerificationError as err:
            self.close()
            raise InboxError(
                f"{self.server}: the server's TLS certificate is not trusted "
                f"({err.verify_message})",
                hint="Set inbox.ca_file to the CA that issued it, or fix the server's certificate.",
            ) from err
        except imaplib.IMAP4.error as err:
            self.close()
            if step == "login":
                raise InboxError(
                    f"{self.server}: login failed for {settings.username}: {err}",
                    hint=f"Check inbox.username and the environment variable "
                    f"{settings.password_env}.",
                ) from err
            raise InboxError(f"{self.server}: {step} failed: {err}") from err
        except OSError as err:
            self.close()
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise InboxError(f"{self.server}: cannot {step}: {reason}") from err

    def close(self) -> None:
        imap, self._imap = self._imap, None
        if imap is None:
            return
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            if imap.state == "SELECTED":
                imap.close()
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            imap.logout()

    def _client(self) -> imaplib.IMAP4:
        if self._imap is None:
            raise InboxError(f"{self.server}: not connected")
        return self._imap

    def _command(self, what: str, *args: str) -> list[Any]:
        try:
            status, data = self._client().uid(*args)
        except (imaplib.IMAP4.error, OSError) as err:
            raise InboxError(f"{self.server}: {what} failed: {err}") from err
        if status != "OK":
            raise InboxError(f"{self.server}: {what} failed: {_text(data)}")
        return list(data)

    def uids(self) -> list[int]:
        data = self._command("listing the messages", "SEARCH", "ALL")
        return [int(uid) for uid in (data[0] or b"").split()] if data else []

    def fetch(self, uid: int) -> bytes:
        # PEEK: a message left for a person stays unread.
        for item in self._command(f"reading message {uid}", "FETCH", str(uid), "(BODY.PEEK[])"):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                return item[1]
        raise InboxError(f"{self.server}: message {uid} has gone from {self.settings.folder}")

    def ensure_folder(self, folder: str) -> None:
        if folder in self._created:
            return
        try:
            status, data = self._client().create(_quoted(folder))
        except (imaplib.IMAP4.error, OSError) as err:
            raise InboxError(f"{self.server}: cannot create the folder {folder!r}: {err}") from err
        if status != "OK" and b"ALREADYEXISTS" not in b" ".join(
            d for d in data if isinstance(d, bytes)
        ) and "exists" not in _text(data).lower():  # fmt: skip
            raise InboxError(f"{self.server}: cannot create the folder {folder!r}: {_text(data)}")
        self._created.add(folder)

    def move(self, uid: int, folder: str) -> None:
        if self.readonly:
            raise InboxError("a dry run moves nothing")
        self.ensure_folder(folder)
        if "MOVE" in self._capabilities:
            self._command(f"moving message {uid} to {folder}", "MOVE", str(uid), _quoted(folder))
            return
        if "UIDPLUS" not in self._capabilities:
            raise InboxError(
                f"{self.server} supports neither MOVE nor UIDPLUS; messages cannot be moved "
                "without risking other deleted messages"
            )
        # COPY, then flag and expunge only this UID: the message is never lost.
        self._command(f"copying message {uid} to {folder}", "COPY", str(uid), _quoted(folder))
        self._command(f"flagging message {uid}", "STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
        self._command(f"expunging message {uid}", "EXPUNGE", str(uid))


def _text(data: Any) -> str:
    if isinstance(data, list | tuple):
        return " ".join(_text(d) for d in data if d is not None)
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def _default_context(settings: InboxSettings) -> ssl.SSLContext:
    context = (
        ssl.create_default_context(cafile=settings.ca_file)
        if settings.ca_file
        else (ssl.create_default_context())
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# --- processing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxItem:
    """One message: what it is, what was done, and whether it was filed away.

    `handled`: understood and filed (in a dry run: would be); `moved`: really moved.
    """

    uid: int
    kind: Kind
    address: str | None
    action: str
    sender: str
    subject: str
    moved: bool
    handled: bool = True


@dataclass(frozen=True)
class InboxReport:
    """What a run did: `processed` were filed in the processed folder, `left` were not."""

    processed: tuple[InboxItem, ...] = ()
    left: tuple[InboxItem, ...] = ()
    dry_run: bool = False
    changes: dict[str, int] = field(default_factory=dict)

    def count(self, kind: Kind) -> int:
        return sum(1 for item in self.processed if item.kind == kind)


def _event_since(store: SubscriberStore, email: str) -> float:
    """When the subscriber last became subscribed: soft bounces before it do not count."""
    since = 0.0
    for event in store.events(email):
        if event.new_status == SubscriberStatus.SUBSCRIBED:
            since = event.at
    return since


def process_inbox(
    mailbox: Mailbox,
    store: SubscriberStore,
    *,
    settings: InboxSettings,
    unsubscribe_address: str | None,
    secret: bytes | None,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
    progress: Callable[[InboxItem], None] | None = None,
) -> InboxReport:
    """Classify every message in the mailbox's folder, apply what it says to the store, file it.

    `unsubscribe_address` is the address of the List-Unsubscribe mailto; `secret` checks the
    tokens in returned messages. With `dry_run`, nothing is changed or moved: the report says
    what would have happened.
    """
    bounces = SoftBounces(store.path)
    processed: list[InboxItem] = []
    left: list[InboxItem] = []
    changes: dict[str, int] = {}
    try:
        for uid in mailbox.uids():
            raw = mailbox.fetch(uid)
            found = classify(
                raw,
                unsubscribe_address=unsubscribe_address,
                secret=secret,
                trusted_authserv_id=settings.trusted_authserv_id,
            )
            header = email.message_from_bytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n",
                                              policy=email.policy.default)  # fmt: skip
            sender = parseaddr(str(header.get("From", "")))[1]
            subject = " ".join(str(header.get("Subject", "")).split())
            action, file_it, change = _apply(
                found, store, bounces, settings, dry_run=dry_run, now=clock()
            )
            if change:
                changes[change] = changes.get(change, 0) + 1
            moved = False
            if file_it and not dry_run:
                mailbox.move(uid, settings.processed_folder)
                moved = True
            address = found.addresses[0] if found.addresses else None
            item = InboxItem(uid, found.kind, address, action, sender, subject, moved, file_it)
            (processed if file_it else left).append(item)
            if progress is not None:
                progress(item)
    finally:
        bounces.close()
    return InboxReport(tuple(processed), tuple(left), dry_run, changes)


def _apply(
    found: Classification,
    store: SubscriberStore,
    bounces: SoftBounces,
    settings: InboxSettings,
    *,
    dry_run: bool,
    now: float,
) -> tuple[str, bool, str | None]:
    """(what was done, whether to file the message, the status it changed to)."""
    would = "would be " if dry_run else ""
    if found.kind == Kind.UNKNOWN:
        return found.reason or "not recognised", False, None
    if found.kind == Kind.NOTICE:
        return f"{found.reason or 'notice'}: nothing to change", True, None
    address = found.addresses[0] if found.addresses else None
    subscriber = store.get(address) if address else None
    if subscriber is None:
        return f"{found.kind} for {address}, who is not a subscriber", False, None
    current = SubscriberStatus(subscriber.status)
    code = f" {found.status}" if found.status else ""

    def set_status(status: SubscriberStatus, source: str) -> str | None:
        if current == status:
            return None
        if not dry_run:
            store.set_status(subscriber.email, status, source=source)
        return str(status)

    if found.kind == Kind.COMPLAINT:
        changed = set_status(SubscriberStatus.COMPLAINED, f"inbox: {found.reason}")
        return (f"{would}marked complained" if changed else "already complained"), True, changed
    if found.kind == Kind.UNSUBSCRIBE:
        if current != SubscriberStatus.SUBSCRIBED:
            return f"already {current}", True, None
        changed = set_status(SubscriberStatus.UNSUBSCRIBED, "inbox: unsubscribe mail")
        return f"{would}unsubscribed", True, changed
    if found.kind == Kind.HARD_BOUNCE:
        if current == SubscriberStatus.COMPLAINED:
            return "hard bounce; stays complained", True, None
        changed = set_status(SubscriberStatus.BOUNCED, f"inbox: hard bounce{code}")
        return (
            (f"{would}marked bounced (hard bounce{code})" if changed else "already bounced"),
            (True),
            changed,
        )
    # Soft bounce: count it once per report, per message it reports on.
    message_key = found.original_id or found.report_id
    since = _event_since(store, subscriber.email)
    if not dry_run:
        bounces.record(subscriber.key, found.report_id, message_key, found.status, now)
        count = bounces.count(subscriber.key, since)
    else:
        count = bounces.count(subscriber.key, since) + 1
    limit = settings.soft_bounce_limit
    if count >= limit and current == SubscriberStatus.SUBSCRIBED:
        changed = set_status(
            SubscriberStatus.BOUNCED, f"inbox: {count} soft bounces (last{code or ' unknown'})"
        )
        return f"{would}marked bounced ({count} of {limit} soft bounces)", True, changed
    return f"soft bounce{code}: {min(count, limit)} of {limit}", True, None


def connect(
    settings: InboxSettings,
    password: str | None,
    *,
    readonly: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> ImapMailbox:
    """An open mailbox; InboxError naming what is missing when there is no password."""
    if not password:
        raise InboxError(
            f"no password for {settings.username} at {settings.host}",
            hint=f"Set the environment variable {settings.password_env}.",
        )
    mailbox = ImapMailbox(settings, password, ssl_context=ssl_context, readonly=readonly)
    mailbox.open()
    return mailbox


@contextlib.contextmanager
def opened(settings: InboxSettings, password: str | None, **options: Any) -> Iterator[ImapMailbox]:
    mailbox = connect(settings, password, **options)
    try:
        yield mailbox
    finally:
        mailbox.close()
