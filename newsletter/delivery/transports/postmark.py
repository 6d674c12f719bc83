"""Postmark: `POST /email/batch`, up to 500 fully personalised messages a request.

Postmark substitutes values only in its own templates, so each message is rendered here
(`MessageTemplate.content`) and carries its own `Headers` (the recipient's List-Unsubscribe).
Tracking is off (`TrackOpens: false`, `TrackLinks: "None"`): links stay as written. Newsletters
go to a Broadcast message stream (`message_stream`, default "broadcast"); `check()` refuses a
stream whose unsubscribe handling is Postmark's own, which would add a second List-Unsubscribe.
Sandbox mode sends with the token `POSTMARK_API_TEST`: Postmark validates and delivers nothing.

The batch answer is HTTP 200 with one result per message, in order: `ErrorCode` 0 and a
`MessageID`, or the error for that recipient (406: inactive, i.e. suppressed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Self

from ...config import TransportSettings
from ...errors import (
    PermanentDeliveryError,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from ..content import InlineImage, MessageContent
from ..message import Personalisation
from ._http import HttpProviderTransport, ProviderResponse, personalisation, require_env
from ._jsonpieces import EncodedText, encoded_bodies, json_bytes, json_string
from .base import (
    BatchItem,
    BatchResult,
    Finding,
    SentQuery,
    Suppression,
    SuppressionKind,
    Verdict,
)

TEST_TOKEN = "POSTMARK_API_TEST"
DEFAULT_STREAM = "broadcast"
MAX_REQUEST_BYTES = 45_000_000  # Postmark allows 50 MB a batch; JSON escaping needs headroom
MAX_MESSAGE_BYTES = 10_000_000  # attachments counted after base64

# ErrorCodes that mean the account or sender cannot send at all (not this recipient).
_ACCOUNT_CODES = {10: "bad or missing server token", 400: "sender signature not found",
                  401: "sender signature not confirmed", 405: "not allowed to send",
                  412: "account pending approval", 413: "account not allowed to send"}  # fmt: skip


@dataclass(frozen=True)
class _SharedPieces:
    sender: bytes  # `"From":"…"`
    html: EncodedText
    text: EncodedText
    fixed: bytes  # the fields that are the same in every message, from `"MessageStream"` on
    attachments: bytes | None  # the `Attachments` array, or None without embedded images


class PostmarkTransport(HttpProviderTransport):
    name = "postmark"
    max_batch = 500
    default_api_url = "https://api.postmarkapp.com"
    default_key_env = "POSTMARK_SERVER_TOKEN"

    def __init__(self, settings: TransportSettings, *, api_key: str, **kwargs: Any) -> None:
        super().__init__(settings, api_key=api_key, **kwargs)
        self.stream = settings.message_stream or DEFAULT_STREAM
        # Per (issue fingerprint, test): the JSON pieces that are the same for every recipient.
        self._pieces: dict[tuple[str, bool], _SharedPieces] = {}

    @classmethod
    def from_settings(
        cls,
        settings: TransportSettings,
        environ: Mapping[str, str] = os.environ,
        *,
        config_path: Path | None = None,
    ) -> Self:
        cls.check_settings(settings, config_path)
        if settings.sandbox:  # Postmark's documented test token: validated, never delivered
            return cls(settings, api_key=TEST_TOKEN)
        return cls(
            settings,
            api_key=require_env(environ, cls.key_env(settings), cls.name, config_path),
        )

    @classmethod
    def describe_settings(cls, settings: TransportSettings) -> str:
        stream = settings.message_stream or DEFAULT_STREAM
        test = " (sandbox: test token, nothing is delivered)" if settings.sandbox else ""
        return f"postmark {cls.api_url_for(settings)}, message stream {stream!r}{test}"

    def auth_headers(self) -> Mapping[str, str]:
        return {"X-Postmark-Server-Token": self.api_key}

    # --- check ------------------------------------------------------------------------------

    def check(self) -> None:
        """The token works and the stream will not add its own unsubscribe link."""
        if self.sandbox:
            return  # the test token only sends
        try:
            answer = self.get(f"/message-streams/{self.stream}").json()
        except TransportUnavailableError:
            raise
        except PermanentDeliveryError as err:
            raise TransportUnavailableError(
                f"postmark: message stream {self.stream!r}: {err.message}",
                hint="Set [transport] message_stream to a Broadcast stream of this server.",
            ) from err
        except (TransientDeliveryError, UncertainDeliveryError) as err:
            raise TransportUnavailableError(
                f"postmark: cannot reach {self.api_url}: {err.message}"
            ) from err
        handling = (
            (answer.get("SubscriptionManagementConfiguration") or {}).get("UnsubscribeHandlingType")
            if isinstance(answer, dict)
            else None
        )
        if handling == "Postmark":
            raise TransportUnavailableError(
                f"postmark: message stream {self.stream!r} lets Postmark handle unsubscribes, "
                "which adds a second List-Unsubscribe header and link",
                hint="In Postmark, set the stream's unsubscribe handling to 'None' or 'Custom': "
                "this newsletter carries its own one-click unsubscribe.",
            )

    def suppression_source(self) -> PostmarkSuppressions:
        return PostmarkSuppressions(self)

    def sent_lookup(self) -> PostmarkSentLookup:
        return PostmarkSentLookup(self)

    # --- sending ----------------------------------------------------------------------------

    def deliver(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        encoded: dict[str, bytes] = {}
        too_big: dict[str, BatchResult] = {}
        for item in items:
            payload = self.encoded_payload(item)
            # The JSON holds the bodies and the base64 at least once: only a payload over the
            # limit can be a message over it, and only then are the bodies built to count.
            if len(payload) > MAX_MESSAGE_BYTES:
                size = message_size(personalisation(item).content())
                if size > MAX_MESSAGE_BYTES:
                    too_big[item.key] = BatchResult(
                        item.key,
                        error=PermanentDeliveryError(
                            f"postmark: the message is {size:,} bytes; Postmark takes at most "
                            f"{MAX_MESSAGE_BYTES:,} (images included)"
                        ),
                    )
                    continue
            encoded[item.key] = payload
        sendable = [item for item in items if item.key in encoded]
        sent = self.deliver_in_parts(
            sendable,
            lambda item: len(encoded[item.key]) + 1,
            MAX_REQUEST_BYTES,
            lambda part: self._post_batch(part, _array([encoded[item.key] for item in part])),
        )
        by_key = {result.key: result for result in sent} | too_big
        return [by_key[item.key] for item in items]

    def encoded_payload(self, item: BatchItem) -> bytes:
        """`payload` as JSON bytes, built from pieces encoded once per issue.

        JSON-encoding a message is most of the cost of a batch, and nearly all of it is the
        same for every recipient: the images (~150 KB of base64 a message when embedded), the
        static text of `HtmlBody` and `TextBody`, the sender and the fixed fields. Those are
        encoded once per issue; per recipient only the address, the subject, the headers, the
        metadata and the recipient's values are (JSON escaping works character by character,
        so encoded pieces can be joined), and the bodies are never built as strings. The result
        parses to exactly `payload(found.content(), item)` (tests/test_transport_postmark.py).
        """
        found = personalisation(item)
        shared = self._shared(found)
        envelope, values = found.envelope_and_values()
        headers = [{"Name": name, "Value": value} for name, value in envelope.headers]
        parts = [
            b"{",
            shared.sender,
            b',"To":',
            json_string(envelope.to.formatted()),
            b',"Subject":',
            json_string(found.subject()),
            b',"HtmlBody":"',
        ]
        shared.html.fill(values, parts)
        parts.append(b'","TextBody":"')
        shared.text.fill(values, parts)
        parts += (
            b'","Headers":',
            json_bytes(headers),
            shared.fixed,
            b',"Metadata":',
            json_bytes(_metadata(found, item.key)),
        )
        if shared.attachments is not None:
            parts += (b',"Attachments":', shared.attachments)
        parts.append(b"}")
        return b"".join(parts)

    def _shared(self, found: Personalisation) -> _SharedPieces:
        """The issue's encoded pieces (built once per issue and test flag, any thread)."""
        key = (found.template.fingerprint, found.test)
        shared = self._pieces.get(key)
        if shared is None:
            html, text = encoded_bodies(found)
            images = found.template.images
            content = found.content()  # once per issue: the sender and reply-to of every message
            fixed: dict[str, Any] = {
                "MessageStream": self.stream,
                "TrackOpens": False,
                "TrackLinks": "None",
                "Tag": found.template.issue[:1000],
            }
            if content.reply_to is not None:
                fixed["ReplyTo"] = content.reply_to.formatted()
            shared = _SharedPieces(
                b'"From":' + json_string(content.sender.formatted()),
                html,
                text,
                b"," + json_bytes(fixed)[1:-1],
                json_bytes(_attachments(images)) if images else None,
            )
            self._pieces[key] = shared
        return shared

    def payload(
        self, content: MessageContent, item: BatchItem, *, images: bool = True
    ) -> dict[str, Any]:
        """One message of the batch, in Postmark's shape (without `Attachments` if not `images`)."""
        body: dict[str, Any] = {
            "From": content.sender.formatted(),
            "To": content.to.formatted(),
            "Subject": content.subject,
            "HtmlBody": content.html,
            "TextBody": content.text,
            "Headers": [{"Name": name, "Value": value} for name, value in content.headers],
            "MessageStream": self.stream,
            "TrackOpens": False,
            "TrackLinks": "None",
            "Tag": personalisation(item).template.issue[:1000],
            "Metadata": _metadata(personalisation(item), item.key),
        }
        if content.reply_to is not None:
            body["ReplyTo"] = content.reply_to.formatted()
        if images and content.images:
            body["Attachments"] = _attachments(content.images)
        return body

    def _post_batch(self, items: Sequence[BatchItem], body: bytes) -> list[BatchResult]:
        response = self.post_json("/email/batch", body)
        answers = response.json()
        if not isinstance(answers, list) or len(answers) != len(items):
            raise UncertainDeliveryError(
                f"postmark: expected {len(items)} results, got "
                f"{len(answers) if isinstance(answers, list) else type(answers).__name__}; "
                "the messages may have been accepted"
            )
        return [self._result(item, answer) for item, answer in zip(items, answers, strict=True)]

    def _result(self, item: BatchItem, answer: object) -> BatchResult:
        if not isinstance(answer, dict):
            return BatchResult(
                item.key, error=UncertainDeliveryError(f"postmark: unreadable result {answer!r}")
            )
        code = answer.get("ErrorCode")
        message = str(answer.get("Message") or "")
        if code == 0 and answer.get("MessageID"):
            return self.accepted(item, str(answer["MessageID"]))
        if code == 0:
            return BatchResult(
                item.key, error=UncertainDeliveryError("postmark: accepted without a MessageID")
            )
        text = f"ErrorCode {code}: {message}"
        if code == 429:
            return BatchResult(
                item.key, error=TransientDeliveryError(f"postmark: rate limited ({text})")
            )
        if code == 100:  # maintenance
            return BatchResult(item.key, error=TransientDeliveryError(f"postmark: {text}"))
        if code in _ACCOUNT_CODES:
            return BatchResult(item.key, error=TransportUnavailableError(f"postmark: {text}"))
        return self.refused(item, text)

    def client_error(
        self, response: ProviderResponse, items: Sequence[BatchItem]
    ) -> list[BatchResult]:
        """HTTP 422 for the whole request: an account problem stops the run, else permanent."""
        try:
            data = response.json()
        except UncertainDeliveryError:
            data = None
        code = data.get("ErrorCode") if isinstance(data, dict) else None
        if code in _ACCOUNT_CODES:
            raise TransportUnavailableError(
                f"postmark: {self.error_message(response)} (ErrorCode {code}: "
                f"{_ACCOUNT_CODES[code]})",
                hint="Check the server token, the sender signature and the account in Postmark.",
            )
        if code == 429:
            raise TransientDeliveryError(f"postmark: rate limited: {self.error_message(response)}")
        return super().client_error(response, items)


_REASONS = {
    "HardBounce": SuppressionKind.BOUNCE,
    "SpamComplaint": SuppressionKind.COMPLAINT,
    "ManualSuppression": SuppressionKind.UNSUBSCRIBE,
}


class PostmarkSuppressions:
    """The stream's suppressions: `GET /message-streams/{stream}/suppressions/dump`.

    HardBounce → bounce, SpamComplaint → complaint, ManualSuppression (the recipient
    unsubscribed through Postmark, or someone added them) → unsubscribe.
    """

    name = "postmark"

    def __init__(self, transport: PostmarkTransport) -> None:
        self.transport = transport

    def fetch(self, since: datetime | None = None) -> Iterator[Suppression]:
        params: dict[str, str | int] = {}
        if since is not None:
            params["fromdate"] = since.date().isoformat()  # Postmark filters by day
        path = f"/message-streams/{self.transport.stream}/suppressions/dump"
        data = self.transport.get(path, params=params).json()
        entries = data.get("Suppressions") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise UncertainDeliveryError(f"postmark: {path} answered without 'Suppressions'")
        for entry in entries:
            kind = _REASONS.get(str(entry.get("SuppressionReason")))
            address = entry.get("EmailAddress")
            if kind is None or not isinstance(address, str):
                continue
            at = _timestamp(entry.get("CreatedAt"))
            if since is not None and at is not None and at < since:
                continue
            reason = f"{entry.get('SuppressionReason')} (origin: {entry.get('Origin', '?')})"
            yield Suppression(address, kind, at, reason)


def _metadata(found: Personalisation, key: str) -> dict[str, str]:
    """The issue, and for a real send the ledger key: `reconcile` tells the subscriber's
    message from a test copy sent to the same address."""
    if found.test:
        return {"issue": found.template.issue, "test": "yes"}
    return {"issue": found.template.issue, "newsletter_key": key[:80]}


class PostmarkSentLookup:
    """`GET /messages/outbound?recipient=…&tag=<issue>`: the messages Postmark accepted.

    A message of this issue to this recipient that is not a test copy (Metadata
    `newsletter_key` equal to the row's key) proves the row was sent. Postmark's search shows a
    message within seconds of the API accepting it and keeps it 45 days by default.
    """

    name = "postmark"
    settle_after = 300.0
    keeps_for = 45 * 86400.0
    page = 50

    def __init__(self, transport: PostmarkTransport) -> None:
        self.transport = transport

    def look_up(self, issue: str, query: SentQuery) -> Finding:
        params: dict[str, str | int] = {
            "recipient": query.email,
            "tag": issue[:1000],
            "count": self.page,
            "offset": 0,
        }
        unclear = False
        while True:
            data = self.transport.get("/messages/outbound", params=params).json()
            messages = data.get("Messages") if isinstance(data, dict) else None
            if not isinstance(messages, list):
                raise UncertainDeliveryError(
                    "postmark: /messages/outbound answered without 'Messages'"
                )
            for message in messages:
                match = _match(message, issue, query) if isinstance(message, dict) else None
                if match == "row":
                    evidence = f"postmark has it: MessageID {message.get('MessageID')}"
                    return Finding(query.key, Verdict.SENT, evidence)
                unclear = unclear or match == "unclear"
            total = data.get("TotalCount")
            offset = int(params["offset"]) + len(messages)
            if not messages or not isinstance(total, int) or offset >= total:
                break
            params["offset"] = offset
        if unclear:
            # Sent by a version without the key, or changed metadata: it may be this row.
            return Finding(
                query.key,
                Verdict.UNKNOWN,
                "postmark has a message of this issue to this address without our key",
            )
        return Finding(query.key, Verdict.NOT_SENT, "postmark has no such message")


def _match(message: Mapping[str, Any], issue: str, query: SentQuery) -> str | None:
    """ "row": this row's message; "test": a test copy; "unclear": of this issue to this
    address but unmarked; None: another recipient or issue."""
    recipients = message.get("Recipients") or message.get("To") or []
    if isinstance(recipients, str):
        recipients = [recipients]
    addresses = {
        str(entry.get("Email") if isinstance(entry, dict) else entry).strip().lower()
        for entry in recipients
    }
    if query.email.lower() not in addresses or message.get("Tag") != issue[:1000]:
        return None
    metadata = message.get("Metadata")
    if isinstance(metadata, dict):
        if metadata.get("newsletter_key") == query.key[:80]:
            return "row"
        if metadata.get("test") == "yes" or metadata.get("newsletter_key"):
            return "test" if metadata.get("test") == "yes" else None
    return "unclear"


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _array(encoded: Sequence[bytes]) -> bytes:
    """A JSON array of encoded values, joined once (no copy of the whole batch to bracket it)."""
    parts = [b"["]
    for value in encoded:
        parts += (value, b",")
    parts[-1] = b"]"
    return b"".join(parts)


def message_size(content: MessageContent) -> int:
    """Bytes Postmark counts against its 10 MB limit (bodies plus base64 attachments)."""
    text = len(content.html.encode()) + len(content.text.encode())
    return text + sum(len(image.base64) for image in content.images)


def _attachments(images: Sequence[InlineImage]) -> list[dict[str, str]]:
    """The embedded images as Postmark inline attachments (`ContentID: cid:...`)."""
    return [
        {
            "Name": image.filename,
            "Content": image.base64,
            "ContentType": image.content_type,
            "ContentID": f"cid:{image.cid}",
        }
        for image in images
    ]
