"""Resend: `POST /emails/batch`, up to 100 fully personalised emails a request.

Resend substitutes nothing in inline html, so each email is rendered here and carries its own
`headers` (the recipient's List-Unsubscribe). Batches are sent in Resend's *permissive*
validation mode (`x-batch-validation: permissive`): an email Resend cannot create is reported
by its index in `errors` and the others are still sent, so one bad address fails alone.

Embedded (`cid:`) images: the batch endpoint takes no attachments (Resend's batch docs; the
OpenAPI schema does not say so), but the single `POST /emails` does, with `content_id` for
inline images (`Attachment.content_id` in resend.yaml). An issue with embedded images is
therefore sent one email per request, each with its images; set `base_url` so images are
published and the issue goes in batches of 100 (Resend's default limit is a few requests a
second, so this matters: ~5 emails/s against ~500).

Retries never send twice: every request carries an `Idempotency-Key` derived from the issue
and the Message-IDs it carries, so the same request repeated within Resend's 24 hours is
answered from Resend's record instead of being sent again.

Open and click tracking cannot be switched per email (Resend sets it per domain): keep it off
for the sending domain, or Resend rewrites links. Resend runs no unsubscribe handling of its own
for these emails, so the newsletter's List-Unsubscribe is the only one.

Sandbox: Resend has no test flag; it has test addresses. With `sandbox = true` every email goes
to `delivered+<hash>@resend.dev` instead of the subscriber (Resend accepts and "delivers" it to
nowhere), everything else unchanged: a full dry run through the real API.

Suppressions: `GET /suppressions` (bounces, complaints, manual) feeds `subscribers sync resend`
(it needs a full-access key; a sending-only key is refused with a hint).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.headerregistry import Address
from typing import Any, ClassVar

from ...config import TransportSettings
from ...errors import (
    DeliveryError,
    RecipientRejectedError,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from ..content import Mailbox, MessageContent
from ._http import HttpProviderTransport, ProviderResponse, parse_retry_after, personalisation
from .base import BatchItem, BatchResult, Suppression, SuppressionKind

__all__ = [
    "MAX_BATCH",
    "SANDBOX_DOMAIN",
    "Refusal",
    "ResendSuppressions",
    "ResendTransport",
    "batch_idempotency_key",
    "batch_outcomes",
    "email_payload",
    "sandbox_address",
]

MAX_BATCH = 100  # Resend's documented batch limit (not in the OpenAPI schema)
SANDBOX_DOMAIN = "resend.dev"
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_QUOTA = ("daily_quota_exceeded", "monthly_quota_exceeded")
_QP_UTF8 = Charset("utf-8")
_QP_UTF8.header_encoding = QP


def sandbox_address(email: str) -> str:
    """The Resend test address that stands in for `email` in sandbox mode.

    A `+label` keeps each subscriber's email apart in Resend's logs without revealing the
    address; the label is a hash, so it is plain ASCII whatever the address is.
    """
    label = hashlib.sha256(email.lower().encode("utf-8")).hexdigest()[:16]
    return f"delivered+{label}@{SANDBOX_DOMAIN}"


def _recipient(mailbox: Mailbox) -> str:
    """`mailbox` as Resend takes it in `to` / `reply_to`.

    Resend refuses a display name in double quotes (any name with a comma, `<`, ...), so such
    a name goes as an RFC 2047 encoded word, which needs no quotes and still reads the same.
    """
    formatted = mailbox.formatted()
    if not formatted.startswith('"'):
        return formatted
    local, _, domain = mailbox.email.rpartition("@")
    encoded = _QP_UTF8.header_encode(mailbox.name)
    return str(Address(display_name=encoded, username=local, domain=domain))


def _tag(value: str) -> str:
    """A Resend tag name or value: ASCII letters, digits, `_` and `-`, at most 256."""
    return _TAG_UNSAFE.sub("_", value)[:256] or "_"


def email_payload(
    content: MessageContent, *, issue: str, sandbox: bool = False, attachments: bool = False
) -> dict[str, Any]:
    """One email in Resend's shape (`SendEmailRequest`).

    `attachments=True` carries the embedded images as inline attachments (`content_id`), which
    only the single `/emails` endpoint takes. The sender's `from` keeps a non-ASCII name as it
    is: Resend refuses encoded words there.
    """
    to = content.to
    if sandbox:
        to = Mailbox(sandbox_address(to.email), to.name)
    body: dict[str, Any] = {
        "from": content.sender.formatted(),
        "to": [_recipient(to)],
        "subject": content.subject,
        "html": content.html,
        "text": content.text,
        "headers": dict(content.headers),
        "tags": [{"name": "issue", "value": _tag(issue)}],
    }
    if content.reply_to is not None:
        body["reply_to"] = [_recipient(content.reply_to)]
    if attachments and content.images:
        body["attachments"] = [
            {
                "content": image.base64,
                "filename": image.filename,
                "content_type": image.content_type,
                "content_id": image.cid,
            }
            for image in content.images
        ]
    return body


def batch_idempotency_key(fingerprint: str, message_ids: Sequence[str]) -> str:
    """The `Idempotency-Key` of a request: the same emails of the same issue, the same key.

    A Message-ID is derived from the issue and the address (random for test sends), so a
    retried request gets the key of the first attempt and a different batch another key.
    """
    digest = hashlib.sha256(fingerprint.encode("ascii", "replace"))
    for message_id in message_ids:
        digest.update(b"\n" + message_id.encode("utf-8"))
    return f"newsletter-{digest.hexdigest()[:48]}"


class Refusal(str):
    """Resend's message for one email it refused (a `str`, told apart from an id by type)."""


def batch_outcomes(answer: object, count: int) -> list[str | Refusal]:
    """Per email of a batch, in order: its Resend id, or a `Refusal` with Resend's message.

    Permissive mode answers `{"data": [{"id"}...], "errors": [{"index", "message"}...]}`:
    `data` lists the created emails in request order, without the refused ones. Anything that
    does not add up is `UncertainDeliveryError`: Resend may have queued some of them.
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise UncertainDeliveryError(
            f"resend: unreadable batch answer {_short(answer)}; the emails may have been queued"
        )
    errors = answer.get("errors") or []
    refused: dict[int, Refusal] = {}
    if not isinstance(errors, list):
        errors = []
    for error in errors:
        index = error.get("index") if isinstance(error, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            raise UncertainDeliveryError(
                f"resend: batch error for an unknown email {_short(error)}; the others may have "
                "been queued"
            )
        refused[index] = Refusal(str(error.get("message") or "refused"))
    ids = [entry.get("id") if isinstance(entry, dict) else None for entry in answer["data"]]
    if len(ids) + len(refused) != count or not all(isinstance(x, str) and x for x in ids):
        raise UncertainDeliveryError(
            f"resend: {len(ids)} ids and {len(refused)} errors for {count} emails; the emails "
            "may have been queued"
        )
    created: Iterator[str] = iter(str(x) for x in ids)
    return [refused[n] if n in refused else next(created) for n in range(count)]


def _short(value: object) -> str:
    return json.dumps(value, default=str)[:120]


class ResendTransport(HttpProviderTransport):
    """Resend's batch endpoint (single sends when the issue has embedded images)."""

    name = "resend"
    max_batch = MAX_BATCH
    default_api_url = "https://api.resend.com"
    default_key_env = "RESEND_API_KEY"

    def auth_headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @classmethod
    def describe_settings(cls, settings: TransportSettings) -> str:
        sandbox = (
            f" (sandbox: every email goes to delivered+…@{SANDBOX_DOMAIN})"
            if settings.sandbox
            else ""
        )
        return f"{cls.name} {cls.api_url_for(settings)}{sandbox}"

    def suppression_source(self) -> ResendSuppressions:
        return ResendSuppressions(self)

    def rate_limit_delay(self, response: ProviderResponse) -> float | None:
        """Retry-After, else `ratelimit-reset` (seconds until Resend's window resets)."""
        now = self.clock()
        for header in ("retry-after", "ratelimit-reset"):
            delay = parse_retry_after(response.headers.get(header), now)
            if delay is not None:
                return delay
        return None

    # --- check ------------------------------------------------------------------------------

    def check(self) -> None:
        """The key is known to Resend.

        `GET /domains` needs a full-access key; a sending-only key (the one to use) is answered
        401 `restricted_api_key`, which proves the key is valid all the same.
        """
        try:
            self.get("/domains")
        except TransportUnavailableError as err:
            if "restricted_api_key" in (err.reply or ""):
                return
            raise
        except DeliveryError as err:
            raise TransportUnavailableError(
                f"resend: cannot reach {self.api_url}: {err.message}",
                hint="Check [transport] api_url and the network.",
            ) from err

    # --- sending ----------------------------------------------------------------------------

    def deliver(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        contents: list[tuple[BatchItem, MessageContent]] = []
        refused: dict[str, BatchResult] = {}
        for item in items:
            content = personalisation(item).content()
            if not content.sender.email.isascii():
                raise TransportUnavailableError(
                    f"resend cannot send from the internationalised address {content.sender.email}",
                    hint="Use an ASCII sender address with Resend.",
                )
            if not self.sandbox and not content.to.email.isascii():
                # Resend takes no internationalised mailbox (EAI): an error, never a drop.
                refused[item.key] = BatchResult(
                    item.key,
                    error=RecipientRejectedError(
                        f"resend cannot send to the internationalised address {content.to.email}"
                    ),
                )
                continue
            contents.append((item, content))
        if not contents:
            return [refused[item.key] for item in items]
        if any(content.images for _, content in contents):
            by_key = dict((item.key, content) for item, content in contents)
            sent = self.deliver_in_parts(
                [item for item, _ in contents],
                lambda item: 1,
                1,
                lambda part: self._post_single(part[0], by_key[part[0].key]),
            )
        else:
            sent = self._post_batch(contents)
        by_result = {result.key: result for result in sent} | refused
        return [by_result[item.key] for item in items]

    def _post_batch(self, contents: list[tuple[BatchItem, MessageContent]]) -> list[BatchResult]:
        first = personalisation(contents[0][0]).template
        bodies = [
            email_payload(content, issue=first.issue, sandbox=self.sandbox)
            for _, content in contents
        ]
        key = batch_idempotency_key(first.fingerprint, [c.message_id for _, c in contents])
        response = self._post(
            "/emails/batch",
            bodies,
            {"Idempotency-Key": key, "x-batch-validation": "permissive"},
        )
        outcomes = batch_outcomes(response.json(), len(contents))
        return [
            self.refused(item, outcome) if isinstance(outcome, Refusal)
            else self.accepted(item, outcome)
            for (item, _), outcome in zip(contents, outcomes, strict=True)
        ]  # fmt: skip

    def _post_single(self, item: BatchItem, content: MessageContent) -> list[BatchResult]:
        template = personalisation(item).template
        body = email_payload(content, issue=template.issue, sandbox=self.sandbox, attachments=True)
        key = batch_idempotency_key(template.fingerprint, [content.message_id])
        answer = self._post("/emails", body, {"Idempotency-Key": key}).json()
        email_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(email_id, str) or not email_id:
            raise UncertainDeliveryError(
                f"resend: answer without an id {_short(answer)}; the email may have been queued"
            )
        return [self.accepted(item, email_id)]

    def _post(self, path: str, body: object, headers: Mapping[str, str]) -> ProviderResponse:
        try:
            return self.post_json(path, body, headers=headers)
        except TransientDeliveryError as err:
            # A used-up daily or monthly quota is no short wait: stop, resume after the reset.
            if any(name in (err.reply or "") for name in _QUOTA):
                raise TransportUnavailableError(
                    f"resend: sending quota used up: {err.message}",
                    hint="Resume the send (`newsletter send` again) after Resend's quota resets, "
                    "or raise the quota.",
                    reply=err.reply,
                ) from err
            raise

    def client_error(
        self, response: ProviderResponse, items: Sequence[BatchItem]
    ) -> list[BatchResult]:
        """Idempotency conflicts (409) need care; other 4xx refuse the whole request."""
        name = _error_name(response)
        if name == "concurrent_idempotent_requests":
            raise TransientDeliveryError(
                f"resend: the same request is still being processed: "
                f"{self.error_message(response)}",
                retry_after=1.0,
            )
        if name == "invalid_idempotent_request" or response.status == 409:
            # The key was used for a request with other content: that earlier request may
            # have sent these emails. Never send them again blindly.
            raise UncertainDeliveryError(
                f"resend: {self.error_message(response)} (HTTP {response.status}); an earlier "
                "request with the same emails may have been sent",
                reply=response.text[:300],
            )
        return super().client_error(response, items)


def _error_name(response: ProviderResponse) -> str:
    try:
        data = json.loads(response.body) if response.body.strip() else None
    except ValueError:
        return ""
    return str(data.get("name") or "") if isinstance(data, dict) else ""


class ResendSuppressions:
    """Resend's suppression list (`GET /suppressions`), read with its cursor (`after`).

    Origins: `bounce` and `complaint` as they say; `manual` (added by someone in the Resend
    account) counts as an unsubscribe, so that address is never mailed again either. `since`
    is applied to `created_at` here: the API has no date filter.
    """

    name = "resend"
    page = 100  # the API's maximum `limit`
    kinds: ClassVar[dict[str, SuppressionKind]] = {
        "bounce": SuppressionKind.BOUNCE,
        "complaint": SuppressionKind.COMPLAINT,
        "manual": SuppressionKind.UNSUBSCRIBE,
    }

    def __init__(self, transport: ResendTransport) -> None:
        self.transport = transport

    def fetch(self, since: datetime | None = None) -> Iterator[Suppression]:
        after: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": self.page}
            if after is not None:
                params["after"] = after
            try:
                answer = self.transport.get("/suppressions", params=params).json()
            except TransportUnavailableError as err:
                if "restricted_api_key" in (err.reply or ""):
                    raise TransportUnavailableError(
                        "resend: this API key may only send; reading suppressions needs a "
                        "full-access key",
                        hint="Run the sync with a full-access key in RESEND_API_KEY (or the "
                        "variable api_key_env names).",
                        reply=err.reply,
                    ) from err
                raise
            entries = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(entries, list):
                raise UncertainDeliveryError(
                    f"resend: /suppressions did not answer a list: {_short(answer)}"
                )
            for entry in entries:
                found = self._suppression(entry)
                if found is not None and (since is None or found.at is None or found.at >= since):
                    yield found
            last = entries[-1].get("id") if entries and isinstance(entries[-1], dict) else None
            if not (isinstance(answer, dict) and answer.get("has_more")) or not last:
                return
            after = str(last)

    def _suppression(self, entry: object) -> Suppression | None:
        if not isinstance(entry, dict) or not isinstance(entry.get("email"), str):
            return None
        origin = str(entry.get("origin") or "manual")
        kind = self.kinds.get(origin, SuppressionKind.UNSUBSCRIBE)
        return Suppression(entry["email"], kind, _resend_time(entry.get("created_at")), origin)


def _resend_time(value: object) -> datetime | None:
    """Resend's `created_at` (`2023-10-06 23:47:56.678+00`) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace(" ", "T", 1)
    if text.endswith(("+00", "-00")):
        text += ":00"
    try:
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)
