"""SendGrid v3 Mail Send: one `POST /v3/mail/send` carries up to 1,000 recipients.

The issue's subject, html and text go once per request with a placeholder (`[[nl:0:h]]`) in each
hole; every recipient is one personalization with its own `to`, `substitutions` (the values,
escaped for their context by `MessageTemplate.slot_values`), `headers` (its List-Unsubscribe)
and `custom_args` (the ledger key, so webhook events can be matched). SendGrid's own
subscription tracking, click and open tracking are turned off: they would add a second
unsubscribe link or rewrite links. Sandbox mode is `mail_settings.sandbox_mode`.

SendGrid answers 202 with an empty body and an `X-Message-Id` header for the whole request;
per-recipient outcomes come later through its Event Webhook. A 400 names the offending field
(`personalizations.3.to.0.email`): those recipients fail, the rest are sent again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ...errors import (
    PermanentDeliveryError,
    RecipientRejectedError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from ..content import HTML, SlotContext
from ._http import (
    HttpProviderTransport,
    ProviderResponse,
    RejectedItems,
    parse_retry_after,
    personalisation,
)
from .base import BatchItem, BatchResult, Suppression, SuppressionKind

MAX_SUBSTITUTION_BYTES = 10_000  # per personalization (SendGrid's documented limit)
_MARK = "[[nl:"
_FIELD = re.compile(r"^personalizations\.(\d+)\b")


def placeholder(index: int, context: SlotContext) -> str:
    """The substitution tag of slot `index` in `context` (`[[nl:0:h]]`, `[[nl:0:t]]`, ...)."""
    return f"{_MARK}{index}:{context[0]}]]"


class SendGridTransport(HttpProviderTransport):
    name = "sendgrid"
    max_batch = 1000
    default_api_url = "https://api.sendgrid.com"
    default_key_env = "SENDGRID_API_KEY"
    check_path = "/v3/scopes"

    def auth_headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def inspect_check(self, response: ProviderResponse) -> None:
        """The key may send mail: `GET /v3/scopes` lists `mail.send`."""
        try:
            scopes = response.json().get("scopes")
        except (UncertainDeliveryError, AttributeError):
            return  # the key works; sending will tell the rest
        if isinstance(scopes, list) and "mail.send" not in scopes:
            raise TransportUnavailableError(
                "sendgrid: the API key may not send mail (no 'mail.send' scope)",
                hint=f"Give the key in {self.key_env(self.settings)} the Mail Send permission.",
            )

    def suppression_source(self) -> SendGridSuppressions:
        return SendGridSuppressions(self)

    def rate_limit_delay(self, response: ProviderResponse) -> float | None:
        """Retry-After if present, else until `X-RateLimit-Reset` (epoch seconds)."""
        found = super().rate_limit_delay(response)
        if found is not None:
            return found
        reset = response.headers.get("x-ratelimit-reset")
        try:
            return max(0.0, float(reset) - self.clock()) if reset else None
        except ValueError:
            return parse_retry_after(reset, self.clock())

    # --- sending ----------------------------------------------------------------------------

    def deliver(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        shared = self.shared_template(items[0], placeholder)
        for text in (shared.subject, shared.html, shared.text):
            if text.count(_MARK) != _count_tags(shared.keys, text):
                raise PermanentDeliveryError(
                    f"sendgrid: the issue itself contains '{_MARK}', SendGrid's substitution "
                    "marker here; it cannot be sent through SendGrid as it is"
                )
        personalizations: list[dict[str, Any]] = []
        refused: dict[int, PermanentDeliveryError] = {}
        for index, item in enumerate(items):
            try:
                personalizations.append(self.personalization(item, shared.keys))
            except PermanentDeliveryError as err:
                refused[index] = err
        if refused:
            raise RejectedItems(refused)
        content = personalisation(items[0]).content()  # sender, reply-to, images, List-Id
        body: dict[str, Any] = {
            "personalizations": personalizations,
            "from": _address(content.sender.email, content.sender.name),
            "subject": shared.subject,
            "content": [
                {"type": "text/plain", "value": shared.text},
                {"type": "text/html", "value": shared.html},
            ],
            "headers": {"List-Id": content.header("List-Id") or ""},
            "categories": [personalisation(items[0]).template.issue[:255]],
            "mail_settings": {"sandbox_mode": {"enable": self.sandbox}},
            "tracking_settings": {
                "click_tracking": {"enable": False, "enable_text": False},
                "open_tracking": {"enable": False},
                "subscription_tracking": {"enable": False},
                "ganalytics": {"enable": False},
            },
        }
        if content.reply_to is not None:
            body["reply_to"] = _address(content.reply_to.email, content.reply_to.name)
        if content.images:
            body["attachments"] = [
                {
                    "content": image.base64,
                    "type": image.content_type,
                    "filename": image.filename,
                    "disposition": "inline",
                    "content_id": image.cid,
                }
                for image in content.images
            ]
        response = self.post_json("/v3/mail/send", body)
        expected = 200 if self.sandbox else 202
        if response.status != expected:
            raise UncertainDeliveryError(
                f"sendgrid: HTTP {response.status} where {expected} was expected; "
                "the request may have been accepted",
                reply=response.text[:300],
            )
        reply = response.headers.get("x-message-id") or "accepted"
        return [self.accepted(item, reply) for item in items]

    def personalization(
        self, item: BatchItem, keys: Sequence[tuple[int, SlotContext]]
    ) -> dict[str, Any]:
        """One recipient's envelope: to, substitutions, headers, custom_args."""
        found = personalisation(item)
        envelope, values = found.envelope_and_values()
        substitutions: dict[str, str] = {}
        for key in keys:
            value = values[key]
            if _MARK in value:
                if key[1] != HTML:
                    raise RecipientRejectedError(
                        f"sendgrid: a value for {item.message.recipient} contains '{_MARK}', "
                        "SendGrid's substitution marker here"
                    )
                value = value.replace("[", "&#91;")  # same text on screen, no marker
            substitutions[placeholder(*key)] = value
        size = sum(len(k.encode()) + len(v.encode()) for k, v in substitutions.items())
        if size > MAX_SUBSTITUTION_BYTES:
            raise RecipientRejectedError(
                f"sendgrid: {item.message.recipient}'s values take {size:,} bytes; SendGrid "
                f"takes at most {MAX_SUBSTITUTION_BYTES:,} per recipient"
            )
        headers = {name: value for name, value in envelope.headers if name != "List-Id"}
        return {
            "to": [_address(envelope.to.email, envelope.to.name)],
            "substitutions": substitutions,
            "headers": headers,
            "custom_args": {"newsletter_key": item.key, "issue": found.template.issue},
        }

    def client_error(
        self, response: ProviderResponse, items: Sequence[BatchItem]
    ) -> list[BatchResult]:
        """A 400 that names personalizations fails those recipients; the rest go again."""
        if response.status == 400:
            try:
                data = response.json()
            except UncertainDeliveryError:
                data = None
            errors = data.get("errors") if isinstance(data, dict) else None
            at_fault: dict[int, PermanentDeliveryError] = {}
            for error in errors if isinstance(errors, list) else []:
                found = _FIELD.match(str((error or {}).get("field") or ""))
                if found is None or int(found.group(1)) >= len(items):
                    at_fault = {}
                    break
                index = int(found.group(1))
                at_fault[index] = RecipientRejectedError(
                    f"sendgrid refused {items[index].message.recipient}: "
                    f"{error.get('message')} ({error.get('field')})"
                )
            if at_fault:
                raise RejectedItems(at_fault)
        return super().client_error(response, items)


class SendGridSuppressions:
    """Bounces, invalid addresses, spam reports and global unsubscribes (`/v3/suppression/*`).

    Read page by page (`limit`/`offset`); `since` becomes `start_time`. Blocks are left out:
    SendGrid lists temporary refusals there too. ASM group unsubscribes are left out as well:
    this newsletter does not use SendGrid's groups.
    """

    name = "sendgrid"
    page = 500
    lists = (
        ("/v3/suppression/bounces", SuppressionKind.BOUNCE),
        ("/v3/suppression/invalid_emails", SuppressionKind.BOUNCE),
        ("/v3/suppression/spam_reports", SuppressionKind.COMPLAINT),
        ("/v3/suppression/unsubscribes", SuppressionKind.UNSUBSCRIBE),
    )

    def __init__(self, transport: SendGridTransport) -> None:
        self.transport = transport

    def fetch(self, since: datetime | None = None) -> Iterator[Suppression]:
        for path, kind in self.lists:
            offset = 0
            while True:
                params: dict[str, str | int] = {"limit": self.page, "offset": offset}
                if since is not None:
                    params["start_time"] = int(since.timestamp())
                entries = self.transport.get(path, params=params).json()
                if not isinstance(entries, list):
                    raise UncertainDeliveryError(f"sendgrid: {path} did not answer a list")
                for entry in entries:
                    address = entry.get("email") if isinstance(entry, dict) else None
                    if not isinstance(address, str):
                        continue
                    created = entry.get("created")
                    at = (
                        datetime.fromtimestamp(created, UTC)
                        if isinstance(created, int | float)
                        else None
                    )
                    reason = str(entry.get("reason") or path.rsplit("/", 1)[1])
                    yield Suppression(address, kind, at, reason)
                if len(entries) < self.page:
                    break
                offset += len(entries)


def _address(email: str, name: str) -> dict[str, str]:
    return {"email": email, "name": name} if name else {"email": email}


def _count_tags(keys: Sequence[tuple[int, SlotContext]], text: str) -> int:
    return sum(text.count(placeholder(*key)) for key in keys)
