"""Mailgun: `POST /v3/{domain}/messages.mime`, one fully personalised MIME message a request.

Why not the batch form (`to` × 1,000 with `recipient-variables`)? Every recipient needs their own
`List-Unsubscribe` header. Mailgun's documentation and its OpenAPI spec describe
`%recipient.x%` substitution in the body and subject only; that it also works inside `h:`
header fields is stated by a third party (django-anymail's `merge_headers`), not by Mailgun, and
cannot be verified here without a live account. A wrong guess would give every subscriber a
literal `%recipient.unsubscribe%` header, so this transport sends one request per recipient
(the sender runs `connections` of them in parallel) with the exact message the SMTP transport
would send: the same headers, Message-ID, List-Unsubscribe(-Post), List-Id and inline images.

Settings: `domain` is the Mailgun sending domain (default: the domain of the From address);
`region = "eu"` selects `https://api.eu.mailgun.net` (or set `api_url`); `sandbox = true` sends
with `o:testmode=yes` (Mailgun accepts and does not deliver, but still bills). Click and open
tracking are off for every message (`o:tracking*=no`). Mailgun's domain-level unsubscribe
tracking adds its own unsubscribe link and footer; `check()` and the first send to a domain
refuse to go on while it is active.

Answers: 200 `{"id": "<...>", "message": "Queued. Thank you."}` (the id goes to the ledger);
400 `{"message": ...}` refuses the recipient; 401/403 stop the run; 404 "Domain not found" stops
the run (wrong domain or region); 429 carries "try again after N seconds" in its message.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import SplitResult, quote, urlsplit

from ...config import TransportSettings
from ...errors import (
    ConfigError,
    DeliveryError,
    Problem,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from ...providers import usable_domain
from ._http import (
    HttpProviderTransport,
    ProviderRequestError,
    ProviderResponse,
    parse_retry_after,
)
from .base import (
    BatchItem,
    BatchResult,
    Finding,
    SentQuery,
    Suppression,
    SuppressionKind,
    Verdict,
)

US_API = "https://api.mailgun.net"
EU_API = "https://api.eu.mailgun.net"
_RETRY_IN_MESSAGE = re.compile(r"try again after (\d+(?:\.\d+)?) ?s", re.IGNORECASE)


def mime_fields(recipient: str, *, sandbox: bool) -> list[tuple[str, str]]:
    """The form fields beside the message file: the envelope recipient and the options."""
    fields = [
        ("to", recipient),
        ("o:tracking", "no"),
        ("o:tracking-clicks", "no"),
        ("o:tracking-opens", "no"),
    ]
    if sandbox:
        fields.append(("o:testmode", "yes"))
    return fields


def parse_send_answer(response: ProviderResponse) -> str:
    """The message id of a 200 answer; `UncertainDeliveryError` when it cannot be read."""
    if b"Mailgun Magnificent API" in response.body:
        # Mailgun's answer to a URL that names no endpoint: nothing was sent.
        raise TransportUnavailableError(
            "mailgun: the API URL does not lead to the messages endpoint",
            hint="Check [transport] api_url and domain.",
        )
    data = response.json()
    message_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(message_id, str) or not message_id:
        raise UncertainDeliveryError(
            f"mailgun: HTTP {response.status} without a message id; it may have been accepted",
            reply=response.text[:300],
        )
    return message_id


def retry_after_from(response: ProviderResponse, now: float) -> float | None:
    """Mailgun's 429 signal: a Retry-After header, else "try again after N seconds"."""
    header = parse_retry_after(response.headers.get("retry-after"), now)
    if header is not None:
        return header
    found = _RETRY_IN_MESSAGE.search(response.text)
    return float(found.group(1)) if found else None


class MailgunTransport(HttpProviderTransport):
    name = "mailgun"
    max_batch = 1  # one request per recipient: see the module docstring
    needs_mime = True  # sends `BatchItem.message.data` as it is
    default_api_url = US_API
    default_key_env = "MAILGUN_API_KEY"

    def __init__(self, settings: TransportSettings, *, api_key: str, **kwargs: Any) -> None:
        super().__init__(settings, api_key=api_key, **kwargs)
        self.domain = settings.domain.strip() if settings.domain else None
        self._checked_domains: set[str] = set()
        self._domain_lock = threading.Lock()
        pair = base64.b64encode(f"api:{api_key}".encode()).decode("ascii")
        self._basic = f"Basic {pair}"

    @classmethod
    def api_url_for(cls, settings: TransportSettings) -> str:
        if settings.api_url:
            return settings.api_url.rstrip("/")
        region = (settings.region or "us").strip().lower()
        return EU_API if region == "eu" else US_API

    def auth_headers(self) -> Mapping[str, str]:
        """HTTP Basic with the user `api` (as `httpx.BasicAuth` would send it)."""
        return {"Authorization": self._basic}

    # --- check ------------------------------------------------------------------------------

    def check(self) -> None:
        """The key works, the domain exists here, and its unsubscribe tracking is off."""
        if self.domain is not None:
            self._check_domain(self.domain)
            return
        try:
            self.get("/v4/domains", params={"limit": 1})
        except TransportUnavailableError:
            raise
        except DeliveryError as err:
            raise TransportUnavailableError(
                f"mailgun: cannot reach {self.api_url}: {err.message}"
            ) from err

    def _check_domain(self, domain: str) -> None:
        with self._domain_lock:
            if domain in self._checked_domains:
                return
        try:
            answer = self.get(f"/v3/domains/{quote(domain, safe='')}/tracking").json()
        except TransportUnavailableError:
            raise
        except ProviderRequestError as err:
            raise TransportUnavailableError(
                f"mailgun: domain {domain!r}: {err.message}",
                hint="Check [transport] domain, and region = 'eu' for a domain in Mailgun's EU "
                "region.",
            ) from err
        except DeliveryError as err:
            raise TransportUnavailableError(
                f"mailgun: cannot reach {self.api_url}: {err.message}"
            ) from err
        tracking = answer.get("tracking") if isinstance(answer, dict) else None
        unsubscribe = tracking.get("unsubscribe") if isinstance(tracking, dict) else None
        if isinstance(unsubscribe, dict) and unsubscribe.get("active") is True:
            raise TransportUnavailableError(
                f"mailgun: unsubscribe tracking is on for domain {domain!r}; Mailgun would add "
                "its own unsubscribe link and footer beside the newsletter's own",
                hint="Turn it off in Mailgun (Sending → Domain settings → Tracking, or "
                f"PUT /v3/domains/{domain}/tracking/unsubscribe active=false).",
            )
        with self._domain_lock:
            self._checked_domains.add(domain)

    # --- sending ----------------------------------------------------------------------------

    def domain_for(self, item: BatchItem) -> str:
        """The configured domain, else the domain of the message's From address."""
        if self.domain is not None:
            return self.domain
        domain = item.message.sender.rpartition("@")[2]
        if not usable_domain(domain):
            raise TransportUnavailableError(
                f"mailgun: cannot tell the sending domain from {item.message.sender!r}",
                hint="Set [transport] domain to the Mailgun sending domain.",
            )
        return domain

    def deliver(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        (item,) = items  # max_batch is 1
        domain = self.domain_for(item)
        self._check_domain(domain)
        message = item.message
        if not message.data:
            raise TypeError(f"mailgun: batch item {item.key!r} carries no MIME message")
        response = self.post_form(
            f"/v3/{quote(domain, safe='')}/messages.mime",
            mime_fields(message.recipient, sandbox=self.sandbox),
            files=[("message", ("message.eml", message.data, "application/octet-stream"))],
        )
        return [self.accepted(item, parse_send_answer(response))]

    def rate_limit_delay(self, response: ProviderResponse) -> float | None:
        return retry_after_from(response, self.clock())

    def client_error(
        self, response: ProviderResponse, items: Sequence[BatchItem]
    ) -> list[BatchResult]:
        """404 "Domain not found" stops the run; other 4xx refuse this one recipient."""
        message = self.error_message(response)
        if response.status == 404:
            raise TransportUnavailableError(
                f"mailgun: {message} (HTTP 404)",
                hint="Check [transport] domain, and region = 'eu' for a domain in Mailgun's EU "
                "region.",
            )
        return [self.refused(item, f"HTTP {response.status}: {message}") for item in items]

    # --- suppressions -----------------------------------------------------------------------

    def suppression_source(self) -> MailgunSuppressions:
        if self.domain is None:
            raise ConfigError(
                [
                    Problem(
                        "reading Mailgun's suppression lists needs the sending domain",
                        key="transport.domain",
                    )
                ]
            )
        return MailgunSuppressions(self, self.domain)

    def sent_lookup(self) -> MailgunSentLookup:
        return MailgunSentLookup(self)


class MailgunSentLookup:
    """`GET /v3/{domain}/events?event=accepted&message-id=…`: did Mailgun accept our message?

    A message sent as MIME keeps our Message-ID, which Mailgun's events carry as the message
    id. Events can take a while to be searchable (Mailgun advises polling no newer than half an
    hour ago) and are kept for 1 to 30 days by plan: "not found" is believed only between the
    two, taking the shortest plan's day.
    """

    name = "mailgun"
    settle_after = 1800.0
    keeps_for = 86400.0

    def __init__(self, transport: MailgunTransport) -> None:
        self.transport = transport

    def look_up(self, issue: str, query: SentQuery) -> Finding:
        message_id = (query.message_id or "").strip().strip("<>")
        if not message_id:
            return Finding(query.key, Verdict.UNKNOWN, "no Message-ID recorded for this row")
        domain = self.transport.domain or query.sender.rpartition("@")[2]
        if not usable_domain(domain):
            return Finding(query.key, Verdict.UNKNOWN, "no sending domain to search")
        params: dict[str, str | int] = {
            "event": "accepted",
            "message-id": message_id,
            "recipient": query.email,
            "begin": int(query.handed_over_at - 3600),
            "ascending": "yes",
            "limit": 300,
        }
        data = self.transport.get(f"/v3/{quote(domain, safe='')}/events", params=params).json()
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise UncertainDeliveryError("mailgun: events answered without 'items'")
        for event in items:
            if isinstance(event, dict) and _accepted(event, message_id, query.email):
                evidence = f"mailgun accepted it: event {event.get('id', '?')}"
                return Finding(query.key, Verdict.SENT, evidence)
        return Finding(query.key, Verdict.NOT_SENT, "mailgun has no 'accepted' event for it")


def _accepted(event: dict[str, Any], message_id: str, email: str) -> bool:
    message = event.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    found = headers.get("message-id") if isinstance(headers, dict) else None
    return (
        event.get("event") == "accepted"
        and str(event.get("recipient", "")).lower() == email.lower()
        and isinstance(found, str)
        and found.strip().strip("<>") == message_id
    )


class MailgunSuppressions:
    """The domain's bounces, unsubscribes and complaints (`GET /v3/{domain}/{list}`).

    Mailgun pages with `paging.next` links; they are followed only on the API's own scheme and
    host (the key goes with each request), and an empty page ends a list. The lists cannot be
    filtered by date, so `since` is applied to each entry's `created_at`.
    """

    name = "mailgun"
    page = 1000
    lists = (
        ("bounces", SuppressionKind.BOUNCE),
        ("unsubscribes", SuppressionKind.UNSUBSCRIBE),
        ("complaints", SuppressionKind.COMPLAINT),
    )

    def __init__(self, transport: MailgunTransport, domain: str) -> None:
        self.transport = transport
        self.domain = domain

    def fetch(self, since: datetime | None = None) -> Iterator[Suppression]:
        api = urlsplit(self.transport.api_url)
        for kind, reason in self.lists:
            url: str | None = f"/v3/{quote(self.domain, safe='')}/{kind}?limit={self.page}"
            seen: set[str] = set()
            while url is not None:
                data = self.transport.get(url).json()
                entries = data.get("items") if isinstance(data, dict) else None
                if not isinstance(entries, list):
                    raise UncertainDeliveryError(f"mailgun: {kind} answered without 'items'")
                if not entries:
                    break
                for entry in entries:
                    address = entry.get("address") if isinstance(entry, dict) else None
                    if not isinstance(address, str):
                        continue
                    at = _timestamp(entry.get("created_at"))
                    if since is not None and at is not None and at < since:
                        continue
                    detail = " ".join(str(entry.get(key) or "") for key in ("code", "error"))
                    yield Suppression(address, reason, at, detail.strip() or kind)
                paging = data.get("paging") if isinstance(data, dict) else None
                following = paging.get("next") if isinstance(paging, dict) else None
                url = _same_origin(following, api) if isinstance(following, str) else None
                if url is not None and url in seen:
                    break  # a page that points at itself
                if url is not None:
                    seen.add(url)


def _timestamp(value: object) -> datetime | None:
    """Mailgun's RFC 2822 dates ("Thu, 11 Dec 2025 01:49:40 UTC"), None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _same_origin(url: str, api: SplitResult) -> str:
    """`url` if it is on the API's scheme and host; the key must never go anywhere else."""
    parts = urlsplit(url)
    if (parts.scheme, parts.netloc) != (api.scheme, api.netloc):
        raise TransportUnavailableError(
            f"mailgun: a suppression list page points to another host ({parts.netloc!r}); "
            "not following it with the API key"
        )
    return url
