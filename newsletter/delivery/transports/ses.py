"""Amazon SES v2: `SendEmail` with `Content.Raw`, one exact MIME message a request, signed SigV4.

Why not `SendBulkEmail` (50 destinations a call, per-entry `ReplacementHeaders`)? It needs an
SES template: the body would be rebuilt by SES from an inline `TemplateContent` with SES's own
substitution rules (escaping of values and of literal `{{` in the issue are not specified for
inline templates), our Message-ID, List-Id and inline images would be SES's to rebuild, and it
gains nothing against SES's limits: sending quotas and the maximum send rate count recipients,
not requests (AWS "Service quotas in Amazon SES"). `SendEmail` with Raw content sends the very
message the SMTP transport would (headers, per-recipient List-Unsubscribe and
List-Unsubscribe-Post, images) and needs no template management. The sender runs
`connections` requests in parallel. `ListManagementOptions` is never sent, so SES's
subscription management adds no List-Unsubscribe of its own.

Credentials and region: see `_sigv4` (environment variables, shared credentials/config files;
`[transport] region` first). `api_url` overrides `https://email.{region}.amazonaws.com`.

Sandbox: SES has no test flag. `sandbox = true` sends every message to the SES mailbox
simulator (`success@simulator.amazonses.com`) instead of the subscriber: SES checks the
credentials, the verified sender and the message, and delivers nothing to anyone (the sends
count against the account's quota). The message itself is unchanged.

SES does not support SMTPUTF8: a message that needs it is refused for that recipient.
Errors (type in the `x-amzn-ErrorType` header, text in `message`): throttling → retry; account
or sender problems (suspended, paused, unverified domain, quota, bad credentials) stop the run;
`MessageRejected` and other validation errors refuse the recipient.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx

from ...config import TransportSettings
from ...errors import (
    ConfigError,
    Problem,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from ..ratelimit import RateLimiter
from ._http import HttpProviderTransport, ProviderResponse, RequestTarget
from ._sigv4 import AwsCredentials, SigV4Auth, load_credentials, resolve_region
from .base import BatchItem, BatchResult, Suppression, SuppressionKind

SIMULATOR = "success@simulator.amazonses.com"
MAX_MESSAGE_BYTES = 40 * 1024 * 1024  # SES v2, counted after base64 (AWS "Service quotas")
SEND_PATH = "/v2/email/outbound-emails"
SERVICE = "ses"

# Error types that say the account, sender or credentials cannot send now: stop the run.
_STOP = {
    "AccountSuspendedException": "the account may not send",
    "SendingPausedException": "sending is paused for the account or configuration set",
    "MailFromDomainNotVerifiedException": "the sending domain is not verified",
    "LimitExceededException": "an account limit (e.g. the daily sending quota) is reached",
    "NotFoundException": "a resource named in the request does not exist",
    "AccessDeniedException": "the credentials may not send email",
    "UnrecognizedClientException": "the access key is not known",
    "InvalidSignatureException": "the request signature was refused",
    "IncompleteSignatureException": "the request signature was refused",
    "SignatureDoesNotMatch": "the request signature was refused",
    "ExpiredTokenException": "the session token has expired",
    "InvalidClientTokenId": "the access key is not known",
}
_THROTTLED = {"TooManyRequestsException", "ThrottlingException", "Throttling"}


def send_email_body(data: bytes, sender: str, destination: str) -> dict[str, Any]:
    """The SendEmail request for one raw message (`data` is the whole RFC 5322 message)."""
    return {
        "FromEmailAddress": sender,
        "Destination": {"ToAddresses": [destination]},
        "Content": {"Raw": {"Data": base64.b64encode(data).decode("ascii")}},
    }


def send_email_json(data: bytes, sender: str, destination: str) -> bytes:
    """`send_email_body` encoded as JSON, without JSON-encoding the base64.

    Base64 is plain ASCII that JSON never escapes, so it goes between the quotes as it is;
    `json.dumps` would scan and copy the ~50-250 KB string once more for every recipient.
    Only the addresses are JSON-encoded.
    """
    return b"".join(
        (
            b'{"FromEmailAddress":',
            encode_basestring(sender).encode("utf-8"),
            b',"Destination":{"ToAddresses":[',
            encode_basestring(destination).encode("utf-8"),
            b']},"Content":{"Raw":{"Data":"',
            base64.b64encode(data),
            b'"}}}',
        )
    )


def error_type(response: ProviderResponse) -> str:
    """The AWS error type: `x-amzn-ErrorType` (before any `:`), else `__type`/`code` in the body."""
    header = str(response.headers.get("x-amzn-errortype", ""))
    if header:
        return header.split(":", 1)[0].strip()
    try:
        data = response.json()
    except UncertainDeliveryError:
        return ""
    if isinstance(data, dict):
        for key in ("__type", "code", "Code"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return str(value).rsplit("#", 1)[-1]
    return ""


class SesTransport(HttpProviderTransport):
    name = "ses"
    max_batch = 1  # one Raw message per request: see the module docstring
    needs_mime = True  # sends `BatchItem.message.data` as it is
    default_key_env = "AWS_ACCESS_KEY_ID"
    check_path = "/v2/email/account"

    def __init__(
        self,
        settings: TransportSettings,
        *,
        credentials: AwsCredentials,
        region: str,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings, client=client, clock=clock)
        self.credentials = credentials
        self.region = region
        self.api_url = self.endpoint(settings, region)
        self._auth = SigV4Auth(credentials, region, SERVICE, clock=clock)
        # The account's MaxSendRate, read by `check()`: requests are spaced to it across
        # threads, so more connections never means throttled requests (see `inspect_check`).
        self.pace = RateLimiter()

    def __repr__(self) -> str:  # never the secret
        return f"SesTransport({self.api_url!r}, {self.region!r}, sandbox={self.sandbox})"

    @staticmethod
    def endpoint(settings: TransportSettings, region: str) -> str:
        if settings.api_url:
            return settings.api_url.rstrip("/")
        return f"https://email.{region}.amazonaws.com"

    @classmethod
    def api_url_for(cls, settings: TransportSettings) -> str:
        region = resolve_region(settings.region) or "<region>"
        return cls.endpoint(settings, region)

    @classmethod
    def describe_settings(cls, settings: TransportSettings) -> str:
        where = cls.api_url_for(settings)
        if settings.sandbox:
            return f"ses {where} (sandbox: every message goes to the SES mailbox simulator)"
        return f"ses {where}"

    @classmethod
    def from_settings(
        cls,
        settings: TransportSettings,
        environ: Mapping[str, str] = os.environ,
        *,
        config_path: Path | None = None,
    ) -> Self:
        """Credentials and region from the AWS places; `ConfigError` names what is missing."""
        home = Path(environ["HOME"]) if environ.get("HOME") else None
        region = resolve_region(settings.region, environ, home=home)
        # The registry's rules (api_key_env refused, a region name), on the region in effect.
        cls.check_settings(replace(settings, region=region), config_path)
        if region is None:
            message = "the ses transport needs an AWS region: set it here, or AWS_REGION"
            raise ConfigError([Problem(message, file=config_path, key="transport.region")])
        credentials = load_credentials(environ, home=home, config_path=config_path)
        return cls(settings, credentials=credentials, region=region)

    def auth(self) -> httpx.Auth | None:
        return self._auth

    def signature(
        self, method: str, target: RequestTarget, fields: Sequence[tuple[str, str]], body: bytes
    ) -> list[tuple[str, str]]:
        return self._auth.fields(method, target.target, fields, body)

    # --- check ------------------------------------------------------------------------------

    def inspect_check(self, response: ProviderResponse) -> None:
        """GetAccount: sending must be enabled and the account not shut down; the account's
        maximum send rate (recipients a second: 1 in the SES sandbox, 14 and up in production)
        paces the requests, as AWS asks ("Service quotas in Amazon SES"): with one request per
        recipient, `connections` requests at once would otherwise run into throttling."""
        data = response.json()
        if not isinstance(data, dict):
            return
        quota = data.get("SendQuota")
        rate = quota.get("MaxSendRate") if isinstance(quota, dict) else None
        if isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0:
            self.pace = RateLimiter(per_second=float(rate))
        if data.get("SendingEnabled") is False:
            raise TransportUnavailableError(
                f"ses: sending is disabled for this account in {self.region}",
                hint="Re-enable sending in the SES console (Account dashboard).",
            )
        if data.get("EnforcementStatus") == "SHUTDOWN":
            raise TransportUnavailableError(
                f"ses: the account is shut down for sending in {self.region}",
                hint="See the SES console's reputation dashboard.",
            )

    # --- sending ----------------------------------------------------------------------------

    def deliver(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        (item,) = items  # max_batch is 1
        message = item.message
        if not message.data:
            raise TypeError(f"ses: batch item {item.key!r} carries no MIME message")
        if message.smtputf8 or not message.recipient.isascii() or not message.sender.isascii():
            return [
                self.refused(
                    item,
                    "SES does not support internationalised addresses (SMTPUTF8); this message "
                    "needs it",
                )
            ]
        encoded_size = (len(message.data) + 2) // 3 * 4
        if encoded_size > MAX_MESSAGE_BYTES:
            return [
                self.refused(
                    item,
                    f"the message is {encoded_size:,} bytes after base64; SES takes at most "
                    f"{MAX_MESSAGE_BYTES:,}",
                )
            ]
        destination = SIMULATOR if self.sandbox else message.recipient
        self.pace.acquire()
        response = self.post_json(
            SEND_PATH, send_email_json(message.data, message.sender, destination)
        )
        data = response.json()
        message_id = data.get("MessageId") if isinstance(data, dict) else None
        if not isinstance(message_id, str) or not message_id:
            raise UncertainDeliveryError(
                f"ses: HTTP {response.status} without a MessageId; it may have been accepted",
                reply=response.text[:300],
            )
        return [self.accepted(item, message_id)]

    def request(self, method: str, path: str, **kwargs: Any) -> ProviderResponse:
        """As the base, with a hint about AWS credentials (not an API key) for 401/403."""
        try:
            return super().request(method, path, **kwargs)
        except TransportUnavailableError as err:
            if "(HTTP 401)" not in err.message and "(HTTP 403)" not in err.message:
                raise
            raise TransportUnavailableError(
                err.message.replace("the API key was refused", "the AWS credentials were refused"),
                hint=f"Check the AWS credentials (from {self.credentials.source}), the region "
                f"({self.region}) and the IAM permissions ses:SendEmail and ses:GetAccount.",
                reply=err.reply,
            ) from err

    def error_message(self, response: ProviderResponse) -> str:
        kind = error_type(response)
        message = super().error_message(response)
        return f"{kind}: {message}" if kind and kind not in message else message

    def client_error(
        self, response: ProviderResponse, items: Sequence[BatchItem]
    ) -> list[BatchResult]:
        """Account problems stop the run; throttling is retried; the rest refuse the recipient."""
        kind = error_type(response)
        message = self.error_message(response)
        if kind in _THROTTLED:
            raise TransientDeliveryError(f"ses: throttled (HTTP {response.status}): {message}")
        not_verified = kind == "MessageRejected" and "not verified" in message.lower()
        if kind in _STOP or not_verified:
            why = _STOP.get(kind, "an address is not verified (is the account in the SES sandbox?)")
            raise TransportUnavailableError(
                f"ses: {why} (HTTP {response.status}): {message}",
                hint=f"Check the SES account in {self.region}: verified sender identity, "
                "production access and sending quota.",
            )
        return [self.refused(item, f"HTTP {response.status}: {message}") for item in items]

    # --- suppressions -----------------------------------------------------------------------

    def suppression_source(self) -> SesSuppressions:
        return SesSuppressions(self)


class SesSuppressions:
    """The account-level suppression list: `GET /v2/email/suppression/addresses`.

    BOUNCE → bounce, COMPLAINT → complaint; `since` becomes `StartDate`; pages follow
    `NextToken`.
    """

    name = "ses"
    page = 100

    def __init__(self, transport: SesTransport) -> None:
        self.transport = transport

    def fetch(self, since: datetime | None = None) -> Iterator[Suppression]:
        token: str | None = None
        while True:
            params = [("PageSize", str(self.page))]
            if since is not None:
                params.append(("StartDate", since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")))
            if token:
                params.append(("NextToken", token))
            # Encoded here, the AWS way, so the signed query is exactly the one sent.
            query = "&".join(f"{k}={quote(v, safe='-_.~')}" for k, v in params)
            data = self.transport.get(f"/v2/email/suppression/addresses?{query}").json()
            if not isinstance(data, dict):
                raise UncertainDeliveryError("ses: the suppression list answer is not an object")
            entries = data.get("SuppressedDestinationSummaries") or []
            for entry in entries if isinstance(entries, list) else []:
                address = entry.get("EmailAddress") if isinstance(entry, dict) else None
                reason = entry.get("Reason") if isinstance(entry, dict) else None
                if not isinstance(address, str) or reason not in ("BOUNCE", "COMPLAINT"):
                    continue
                kind = SuppressionKind.BOUNCE if reason == "BOUNCE" else SuppressionKind.COMPLAINT
                yield Suppression(address, kind, _timestamp(entry.get("LastUpdateTime")), reason)
            following = data.get("NextToken")
            if not isinstance(following, str) or not following or following == token:
                return
            token = following


def _timestamp(value: object) -> datetime | None:
    """rest-json timestamps: epoch seconds (the default) or ISO 8601."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return None
