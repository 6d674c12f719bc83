"""Brevo (ex-Sendinblue): `POST /v3/smtp/email`, one request per recipient.

Why not `messageVersions` (Brevo's batch form, up to 2,000 recipients a request): a version may
override only `to`, `cc`, `bcc`, `replyTo`, `subject`, `htmlContent`, `textContent` and `params`
(`sendSmtpEmail_messageVersions` in Brevo's own spec, and the same model in its official Go,
PHP and Ruby SDKs). There is no per-version `headers`, so each recipient's own List-Unsubscribe
URL cannot ride in a shared request; the `headers` object is per request. (django-anymail puts
`headers` into versions and Brevo accepts the request, but nothing shows the header is applied;
a List-Unsubscribe that silently falls back to another recipient's, or to none, is the one
failure a newsletter must not have.) So each recipient is one request, `max_batch = 1`, and the
sender runs `connections` of them in parallel; Brevo allows 1,000 requests a second.

Every request carries an `idempotencyKey` (a UUID derived from the issue and the Message-ID):
Brevo processes a key once within 30 minutes, so a retried request is not sent twice (Brevo
answers `duplicate_parameter`, recorded as uncertain: it was very probably sent).

What Brevo cannot carry, refused rather than dropped:
- embedded (`cid:`) images: Brevo's API has no inline attachments (django-anymail: "confirmed
  with Brevo support"); set `base_url` so images are published;
- header values that are not ASCII: Brevo sends them as raw 8-bit, which breaks the message;
- names longer than 70 characters: Brevo's limit; a subscriber's display name is shortened
  (the address is what matters), the sender's name must fit.

Not switchable per email: open/click tracking (a Brevo account setting; keep it off or links
are rewritten). Brevo adds its own List-Unsubscribe to transactional mail; this transport always
gives the newsletter's own in `headers`. Sandbox: `X-Sib-Sandbox: drop` (validated, not sent).

Suppressions: `GET /v3/smtp/blockedContacts` (hard bounces, spam complaints, unsubscribes and
admin blocks of transactional mail) feeds `subscribers sync brevo`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn

from ...config import TransportSettings
from ...errors import (
    DeliveryError,
    RecipientRejectedError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from ..content import Mailbox, MessageContent
from ..message import Personalisation
from ._http import HttpProviderTransport, ProviderResponse, parse_retry_after, personalisation
from ._jsonpieces import EncodedText, encoded_bodies, json_bytes, json_string
from .base import BatchItem, BatchResult, Suppression, SuppressionKind

__all__ = [
    "IDEMPOTENCY_NAMESPACE",
    "MAX_NAME",
    "BrevoSuppressions",
    "BrevoTransport",
    "email_payload",
    "idempotency_key",
    "message_id_of",
]

MAX_NAME = 70  # characters, for sender.name and to[].name (Brevo's spec)
# Namespace of the idempotency UUIDs (uuid5): fixed, so a retry computes the same key.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d3b0e-6a57-5c1f-9a43-2d8c1b7e4f20")
# Error codes that mean the account cannot send at all (not this recipient).
_ACCOUNT_CODES = {"not_enough_credits", "account_under_validation", "permission_denied",
                  "unauthorized"}  # fmt: skip
_DUPLICATE_CODES = {"duplicate_parameter", "duplicate_request"}


def idempotency_key(fingerprint: str, message_id: str) -> str:
    """A UUID (Brevo requires one) that is the same for the same message of the same issue."""
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{fingerprint}\n{message_id}"))


def _person(mailbox: Mailbox) -> dict[str, str]:
    person = {"email": mailbox.email}
    if mailbox.name:
        name = mailbox.name
        if len(name) > MAX_NAME:
            name = name[: MAX_NAME - 1].rstrip() + "…"
        person["name"] = name
    return person


def email_payload(
    content: MessageContent, *, issue: str, idempotency: str, sandbox: bool = False
) -> dict[str, Any]:
    """The `sendSmtpEmail` body for one recipient.

    Raises `TransportUnavailableError` for what Brevo cannot carry (see the module docstring):
    it comes from the issue or the configuration, so the run stops before anything is sent.
    """
    if content.images:
        raise TransportUnavailableError(
            "brevo cannot send embedded images (Brevo's API has no inline attachments)",
            hint="Set base_url in newsletter.toml so images are published and linked.",
        )
    if len(content.sender.name) > MAX_NAME:
        raise TransportUnavailableError(
            f"brevo: the sender name {content.sender.name!r} is longer than {MAX_NAME} "
            "characters, Brevo's limit",
            hint="Shorten the name in 'from' in newsletter.toml.",
        )
    headers = _headers(content.headers, idempotency, sandbox)
    body: dict[str, Any] = {
        "sender": _person(content.sender),
        "to": [_person(content.to)],
        "subject": content.subject,
        "htmlContent": content.html,
        "textContent": content.text,
        "headers": headers,
        "tags": [issue],
    }
    if content.reply_to is not None:
        body["replyTo"] = _person(content.reply_to)
    return body


def _headers(fields: Sequence[tuple[str, str]], idempotency: str, sandbox: bool) -> dict[str, str]:
    """The message's `headers` object; `TransportUnavailableError` for a non-ASCII value."""
    headers = dict(fields)
    for name, value in headers.items():
        if not value.isascii():
            raise TransportUnavailableError(
                f"brevo: the {name} header is not ASCII ({value!r}); Brevo would send it unencoded",
                hint="Use ASCII in [unsubscribe] url/mailto and list_id in newsletter.toml.",
            )
    headers["idempotencyKey"] = idempotency
    if sandbox:
        headers["X-Sib-Sandbox"] = "drop"
    return headers


@dataclass(frozen=True)
class _SharedPieces:
    head: bytes  # `{"sender":{…}`
    html: EncodedText
    text: EncodedText
    tail: bytes  # `,"tags":[…],"replyTo":{…}}`


def message_id_of(answer: object) -> str:
    """The Brevo message id in a 201 answer (`messageId`, or the one of `messageIds`)."""
    if isinstance(answer, dict):
        found = answer.get("messageId")
        if isinstance(found, str) and found:
            return found
        several = answer.get("messageIds")
        if isinstance(several, list) and len(several) == 1 and isinstance(several[0], str):
            return several[0] or _no_id(answer)
    return _no_id(answer)


def _no_id(answer: object) -> NoReturn:
    raise UncertainDeliveryError(
        f"brevo: answer without a messageId ({json.dumps(answer, default=str)[:120]}); "
        "the email may have been accepted"
    )


class BrevoTransport(HttpProviderTransport):
    """Brevo's transactional email API, one recipient a request."""

    name = "brevo"
    max_batch = 1
    default_api_url = "https://api.brevo.com"
    default_key_env = "BREVO_API_KEY"
    check_path = "/v3/account"

    def __init__(self, settings: TransportSettings, *, api_key: str, **kwargs: Any) -> None:
        super().__init__(settings, api_key=api_key, **kwargs)
        # Per (issue fingerprint, test): the JSON pieces that are the same for every recipient.
        self._pieces: dict[tuple[str, bool], _SharedPieces] = {}

    def auth_headers(self) -> Mapping[str, str]:
        return {"api-key": self.api_key}

    def suppression_source(self) -> BrevoSuppressions:
        return BrevoSuppressions(self)

    def rate_limit_delay(self, response: ProviderResponse) -> float | None:
        """Retry-After, else `x-sib-ratelimit-reset` (seconds until Brevo's window resets)."""
        now = self.clock()
        for header in ("retry-after", "x-sib-ratelimit-reset"):
            delay = parse_retry_after(response.headers.get(header), now)
            if delay is not None:
                return delay
        return None

    def deliver(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        return [self._send_one(item) for item in items]

    def _send_one(self, item: BatchItem) -> BatchResult:
        response = self.post_json("/v3/smtp/email", self.encoded_payload(item))
        return self.accepted(item, message_id_of(response.json()))

    def encoded_payload(self, item: BatchItem) -> bytes:
        """`email_payload` of the item's message as JSON bytes, spliced from pieces encoded
        once per issue (see `_jsonpieces`): the bodies are never built as strings, nor
        encoded whole per recipient. Parses to exactly `email_payload(found.content(), ...)`
        (tests/test_transport_brevo.py); raises what it raises."""
        found = personalisation(item)
        key = (found.template.fingerprint, found.test)
        shared = self._pieces.get(key)
        if shared is None:
            shared = self._pieces[key] = self._shared(found)
        envelope, values = found.envelope_and_values()
        headers = _headers(
            envelope.headers,
            idempotency_key(found.template.fingerprint, envelope.message_id),
            self.sandbox,
        )
        parts = [
            shared.head,
            b',"to":[',
            json_bytes(_person(envelope.to)),
            b'],"subject":',
            json_string(found.subject()),
            b',"htmlContent":"',
        ]
        shared.html.fill(values, parts)
        parts.append(b'","textContent":"')
        shared.text.fill(values, parts)
        parts += (b'","headers":', json_bytes(headers), shared.tail)
        return b"".join(parts)

    def _shared(self, found: Personalisation) -> _SharedPieces:
        """The issue's encoded pieces; what Brevo cannot carry raises as `email_payload` does."""
        content = found.content()  # once per issue: checked whole, sender and reply-to
        email_payload(content, issue=found.template.issue, idempotency="", sandbox=self.sandbox)
        html, text = encoded_bodies(found)
        tail: dict[str, Any] = {"tags": [found.template.issue]}
        if content.reply_to is not None:
            tail["replyTo"] = _person(content.reply_to)
        return _SharedPieces(
            b'{"sender":' + json_bytes(_person(content.sender)),
            html,
            text,
            b"," + json_bytes(tail)[1:-1] + b"}",
        )

    def client_error(
        self, response: ProviderResponse, items: Sequence[BatchItem]
    ) -> list[BatchResult]:
        """Brevo's `{"code", "message"}`: account problems stop the run; a repeated key is
        uncertain; anything else refuses this one recipient."""
        code = _error_code(response)
        message = self.error_message(response)
        if code in _ACCOUNT_CODES or response.status == 402:
            raise TransportUnavailableError(
                f"brevo cannot send: {message} ({code or f'HTTP {response.status}'})",
                hint="Check the Brevo account: credits, validation, API key permissions.",
                reply=response.text[:300],
            )
        if code in _DUPLICATE_CODES:
            raise UncertainDeliveryError(
                f"brevo: this email was already requested in the last 30 minutes ({message}); "
                "it was probably sent and is not sent again",
                reply=response.text[:300],
            )
        return [
            BatchResult(
                item.key,
                error=RecipientRejectedError(
                    f"brevo refused {item.message.recipient}: {message}"
                    + (f" ({code})" if code else ""),
                    reply=response.text[:300],
                ),
            )
            for item in items
        ]

    def check(self) -> None:
        """The key works (`GET /v3/account`)."""
        try:
            self.get(self.check_path or "/v3/account")
        except TransportUnavailableError:
            raise
        except DeliveryError as err:
            raise TransportUnavailableError(
                f"brevo: cannot reach {self.api_url}: {err.message}",
                hint="Check [transport] api_url and the network.",
            ) from err


def _error_code(response: ProviderResponse) -> str:
    try:
        data = json.loads(response.body) if response.body.strip() else None
    except ValueError:
        return ""
    return str(data.get("code") or "") if isinstance(data, dict) else ""


class BrevoSuppressions:
    """Brevo's blocked transactional contacts (`GET /v3/smtp/blockedContacts`), page by page.

    Reason codes: `hardBounce` → bounce, `contactFlaggedAsSpam` → complaint; the unsubscribes
    (`unsubscribedViaEmail`, `…ViaApi`, `…ViaMA`) and `adminBlocked` → unsubscribe, so the
    address is not mailed again. `since` becomes `startDate` (with `endDate` today, as the API
    wants both); pages are read oldest first (`sort=asc`), so new entries do not shift them.
    """

    name = "brevo"
    page = 100  # the API's maximum `limit`
    kinds: ClassVar[dict[str, SuppressionKind]] = {
        "hardBounce": SuppressionKind.BOUNCE,
        "contactFlaggedAsSpam": SuppressionKind.COMPLAINT,
    }

    def __init__(self, transport: BrevoTransport) -> None:
        self.transport = transport

    def fetch(self, since: datetime | None = None) -> Iterator[Suppression]:
        offset = 0
        while True:
            params: dict[str, str | int] = {"limit": self.page, "offset": offset, "sort": "asc"}
            if since is not None:
                today = datetime.fromtimestamp(self.transport.clock(), UTC).date()
                params["startDate"] = since.astimezone(UTC).date().isoformat()
                params["endDate"] = max(today, since.astimezone(UTC).date()).isoformat()
            answer = self.transport.get("/v3/smtp/blockedContacts", params=params).json()
            contacts = answer.get("contacts") if isinstance(answer, dict) else None
            if contacts is None and isinstance(answer, dict) and not answer.get("count"):
                return  # Brevo leaves `contacts` out when there are none
            if not isinstance(contacts, list):
                raise UncertainDeliveryError(
                    f"brevo: blockedContacts did not answer a list "
                    f"({json.dumps(answer, default=str)[:120]})"
                )
            for contact in contacts:
                found = self._suppression(contact)
                if found is not None:
                    yield found
            offset += len(contacts)
            total = answer.get("count") if isinstance(answer, dict) else None
            if len(contacts) < self.page or (isinstance(total, int) and offset >= total):
                return

    def _suppression(self, contact: object) -> Suppression | None:
        if not isinstance(contact, dict) or not isinstance(contact.get("email"), str):
            return None
        found_reason = contact.get("reason")
        reason: dict[str, Any] = found_reason if isinstance(found_reason, dict) else {}
        code = str(reason.get("code") or "")
        kind = self.kinds.get(code, SuppressionKind.UNSUBSCRIBE)
        at = None
        blocked = contact.get("blockedAt")
        if isinstance(blocked, str):
            try:
                at = datetime.fromisoformat(blocked.replace("Z", "+00:00"))
            except ValueError:
                at = None
        return Suppression(contact["email"], kind, at, code or str(reason.get("message") or ""))
