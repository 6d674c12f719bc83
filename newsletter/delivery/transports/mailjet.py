"""Mailjet Send API v3.1: `POST /v3.1/send`, up to 50 fully personalised messages a request.

Each message is rendered here and carries its own `Headers` (the recipient's List-Unsubscribe),
`TrackOpens`/`TrackClicks` "disabled" (links stay as written) and, when the issue has embedded
images, its `InlinedAttachments` with their `ContentID`. Nothing goes into `Globals`: which of a
message's properties `Globals` really applies is not documented, and a tracking switch or an
image that silently did not apply is worse than a larger request. Requests are also split so
none exceeds 15 MB (`MAX_REQUEST_BYTES`).

No template language: `TemplateLanguage` stays off, so a `{{` in an article is text, not a
Mailjet variable.

Mailjet processes each message separately and keeps their order; a request with some refused
messages is answered with `Messages[i].Status` "success" (with the `MessageID`) or "error" (with
`Errors`), usually as HTTP 400. A refused message fails alone: `ErrorRelatedTo` says whether it
was the address (`RecipientRejectedError`) or the content; 401/403 errors (sender not allowed)
stop the run.

Authentication is HTTP Basic with the API key and the secret key, from two environment
variables: `api_key_env` (default MAILJET_API_KEY) and MAILJET_SECRET_KEY. Sandbox: the
request's `SandboxMode: true` (fully validated, nothing delivered).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from ...config import TransportSettings
from ...errors import (
    DeliveryError,
    PermanentDeliveryError,
    RecipientRejectedError,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from ..content import Mailbox, MessageContent
from ._http import HttpProviderTransport, ProviderResponse, personalisation, require_env
from .base import BatchItem, BatchResult

__all__ = [
    "MAX_MESSAGES",
    "MAX_REQUEST_BYTES",
    "SECRET_KEY_ENV",
    "MailjetTransport",
    "message_outcome",
    "message_payload",
]

MAX_MESSAGES = 50  # Mailjet's documented limit for v3.1 (100 is for the older v3)
MAX_REQUEST_BYTES = 15_000_000  # Mailjet's attachment limit per message; a safe request size
SECRET_KEY_ENV = "MAILJET_SECRET_KEY"
MAX_SUBJECT = 255
# Per-message properties that relate an error to the recipient rather than to the content.
_ADDRESS_FIELDS = {"To", "Email", "Cc", "Bcc"}


def _address(mailbox: Mailbox) -> dict[str, str]:
    found = {"Email": mailbox.email}
    if mailbox.name:
        found["Name"] = mailbox.name
    return found


def message_payload(content: MessageContent, *, issue: str) -> dict[str, Any]:
    """One element of `Messages`, in Mailjet's shape (every property explicit)."""
    if len(content.subject) > MAX_SUBJECT:
        raise PermanentDeliveryError(
            f"mailjet: the subject of {content.to.email} is {len(content.subject)} characters; "
            f"Mailjet takes at most {MAX_SUBJECT}",
        )
    message: dict[str, Any] = {
        "From": _address(content.sender),
        "To": [_address(content.to)],
        "Subject": content.subject,
        "TextPart": content.text,
        "HTMLPart": content.html,
        "Headers": dict(content.headers),
        "TrackOpens": "disabled",
        "TrackClicks": "disabled",
        "CustomCampaign": issue,
    }
    if content.reply_to is not None:
        message["ReplyTo"] = _address(content.reply_to)
    if content.images:
        message["InlinedAttachments"] = [
            {
                "ContentType": image.content_type,
                "Filename": image.filename,
                "ContentID": image.cid,
                "Base64Content": image.base64,
            }
            for image in content.images
        ]
    return message


def message_outcome(answer: object, recipient: str) -> str | DeliveryError:
    """One element of the answer's `Messages`: the MessageID, or the error for this message."""
    if not isinstance(answer, dict):
        return UncertainDeliveryError(f"mailjet: unreadable result {_short(answer)}")
    if answer.get("Status") == "success":
        for to in answer.get("To") or []:
            if isinstance(to, dict) and str(to.get("Email", "")).lower() == recipient.lower():
                found = to.get("MessageID") or to.get("MessageUUID")
                if found:
                    return str(found)
        return UncertainDeliveryError(
            f"mailjet: success without a MessageID for {recipient}; the message may have been "
            "accepted"
        )
    if answer.get("Status") != "error":
        return UncertainDeliveryError(f"mailjet: result without a status {_short(answer)}")
    errors = [e for e in answer.get("Errors") or [] if isinstance(e, dict)]
    text = (
        "; ".join(
            f"{e.get('ErrorCode', '?')}: {e.get('ErrorMessage', '')}".strip() for e in errors[:3]
        )
        or "refused"
    )
    codes = {_status(e) for e in errors}
    if codes & {401, 403}:
        return TransportUnavailableError(f"mailjet cannot send: {text}")
    if 429 in codes:
        return TransientDeliveryError(f"mailjet: rate limited: {text}")
    if any(code >= 500 for code in codes):
        return TransientDeliveryError(f"mailjet: server error: {text}")
    # `ErrorRelatedTo` names properties ("To", "Email", or a path such as "To[0].Email").
    related = {
        word
        for e in errors
        for field in e.get("ErrorRelatedTo") or []
        for word in re.findall(r"[A-Za-z]+", str(field))
    }
    if related & _ADDRESS_FIELDS:
        return RecipientRejectedError(f"mailjet refused {recipient}: {text}")
    return PermanentDeliveryError(f"mailjet refused the message to {recipient}: {text}")


def _status(error: dict[str, Any]) -> int:
    try:
        return int(error.get("StatusCode") or 400)
    except (TypeError, ValueError):
        return 400


def _short(value: object) -> str:
    return json.dumps(value, default=str)[:120]


class MailjetTransport(HttpProviderTransport):
    """Mailjet's Send API v3.1."""

    name = "mailjet"
    max_batch = MAX_MESSAGES
    default_api_url = "https://api.mailjet.com"
    default_key_env = "MAILJET_API_KEY"
    check_path = "/v3/REST/user"

    def __init__(
        self, settings: TransportSettings, *, api_key: str, secret_key: str, **kwargs: Any
    ) -> None:
        super().__init__(settings, api_key=api_key, **kwargs)
        token = base64.b64encode(f"{api_key}:{secret_key}".encode()).decode("ascii")
        self._authorization = f"Basic {token}"

    @classmethod
    def from_settings(
        cls,
        settings: TransportSettings,
        environ: Mapping[str, str] = os.environ,
        *,
        config_path: Path | None = None,
    ) -> Self:
        """Both keys from the environment; `ConfigError` naming whichever is missing."""
        cls.check_settings(settings, config_path)
        api_key = require_env(environ, cls.key_env(settings), cls.name, config_path)
        secret = require_env(environ, SECRET_KEY_ENV, cls.name, config_path)
        return cls(settings, api_key=api_key, secret_key=secret)

    def auth_headers(self) -> Mapping[str, str]:
        return {"Authorization": self._authorization}

    def check(self) -> None:
        """The keys work (`GET /v3/REST/user`)."""
        try:
            self.get(self.check_path or "/v3/REST/user")
        except TransportUnavailableError as err:
            raise TransportUnavailableError(
                err.message,
                hint=f"Check the keys in the environment variables "
                f"{self.key_env(self.settings)} and {SECRET_KEY_ENV}.",
                reply=err.reply,
            ) from err
        except DeliveryError as err:
            raise TransportUnavailableError(
                f"mailjet: cannot reach {self.api_url}: {err.message}",
                hint="Check [transport] api_url and the network.",
            ) from err

    # --- sending ----------------------------------------------------------------------------

    def deliver(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        bodies: dict[str, dict[str, Any]] = {}
        sizes: dict[str, int] = {}
        refused: dict[str, BatchResult] = {}
        for item in items:
            found = personalisation(item)
            content = found.content()
            try:
                body = message_payload(content, issue=found.template.issue)
            except PermanentDeliveryError as err:
                refused[item.key] = BatchResult(item.key, error=err)
                continue
            bodies[item.key] = body
            sizes[item.key] = _size(content)
        ready = [item for item in items if item.key in bodies]
        sent = (
            self.deliver_in_parts(
                ready,
                lambda item: sizes[item.key],
                MAX_REQUEST_BYTES,
                lambda part: self._post(part, [bodies[item.key] for item in part]),
            )
            if ready
            else []
        )
        by_key = {result.key: result for result in sent} | refused
        return [by_key[item.key] for item in items]

    def _post(
        self, items: Sequence[BatchItem], messages: list[dict[str, Any]]
    ) -> list[BatchResult]:
        response = self.post_json("/v3.1/send", {"SandboxMode": self.sandbox, "Messages": messages})
        return self._results(items, response.json())

    def _results(self, items: Sequence[BatchItem], answer: object) -> list[BatchResult]:
        results = answer.get("Messages") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(items):
            raise UncertainDeliveryError(
                f"mailjet: expected {len(items)} results, got {_short(answer)}; the messages "
                "may have been accepted"
            )
        out: list[BatchResult] = []
        for item, result in zip(items, results, strict=True):
            outcome = message_outcome(result, item.message.recipient)
            if isinstance(outcome, str):
                out.append(self.accepted(item, outcome))
            else:
                out.append(BatchResult(item.key, error=outcome))
        return out

    def client_error(
        self, response: ProviderResponse, items: Sequence[BatchItem]
    ) -> list[BatchResult]:
        """A 4xx with per-message results is a partial failure; else the whole request."""
        try:
            answer = json.loads(response.body) if response.body.strip() else None
        except ValueError:
            answer = None
        if isinstance(answer, dict) and isinstance(answer.get("Messages"), list):
            return self._results(items, answer)
        return super().client_error(response, items)


def _size(content: MessageContent) -> int:
    """Bytes a message adds to the request (bodies, images as base64, some JSON overhead)."""
    text = len(content.html.encode()) + len(content.text.encode()) + len(content.subject) * 2
    return 1024 + text + text // 8 + sum(len(image.base64) for image in content.images)
