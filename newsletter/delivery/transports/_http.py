"""The shared base of the provider transports: one httpx client, timeouts, status → typed errors.

A provider module (see docs/adding-a-provider.md) subclasses `HttpProviderTransport`, sets a few
class attributes, and implements `deliver(items)`: build the payload from each item's
`Personalisation`, `post_json`/`post_form` it, and turn the answer into one `BatchResult` per item.
Everything else is here, the same for every provider:

- the client: TLS verification on (`ca_file` trusted when set), a connection pool of
  `connections`, `timeout`, the `api_url` override, a User-Agent;
- what a failure means (DESIGN rule 7: the ledger moves forward only after a confirmed send):
  nothing reached the server (connect error or timeout, write error) → `TransientDeliveryError`;
  the request was sent but no complete answer came (read timeout, connection dropped) →
  `UncertainDeliveryError`; 2xx with a body that cannot be read → `UncertainDeliveryError` (the
  provider may well have accepted it); 429 → `TransientDeliveryError` with `retry_after`;
  5xx / 408 → `TransientDeliveryError`; 401 / 403 → `TransportUnavailableError`; other 4xx →
  `client_error(...)`, by default `PermanentDeliveryError` for every item of the request.

About 700 lines, kept in one module: it is the one place that turns what happened on the
wire into the typed errors above, and every provider leans on all of it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import json
import math
import os
import re
import select
import socket
import ssl
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx

from ... import __version__
from ...config import TransportSettings
from ...errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    Problem,
    RecipientRejectedError,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from ...providers import PROVIDERS, setting_problems
from ..content import ProviderTemplate, SlotContext
from ..message import Personalisation
from .base import (
    BatchItem,
    BatchResult,
    DeliveryReceipt,
    SentLookup,
    SuppressionSource,
    handover,
)

__all__ = [
    "USER_AGENT",
    "HttpProviderTransport",
    "ProviderRequestError",
    "ProviderResponse",
    "RejectedItems",
    "RequestTarget",
    "parse_retry_after",
    "personalisation",
    "require_env",
]

USER_AGENT = f"newsletter/{__version__} (+httpx)"
_MESSAGE_MAX = 300  # characters of a provider's error text kept in messages and the ledger


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value: delay-seconds or an HTTP date (RFC 9110).

    None when absent or unreadable; never negative.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is always GMT
            return None
        seconds = when.timestamp() - now
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def personalisation(item: BatchItem) -> Personalisation:
    """The `Personalisation` the sender put in `item.content` (a bug if it is missing)."""
    content = item.content
    if not isinstance(content, Personalisation):
        raise TypeError(f"batch item {item.key!r} carries no Personalisation in .content")
    return content


@dataclass(frozen=True)
class ProviderResponse:
    """A complete HTTP answer from the provider (already read; the connection is free)."""

    provider: str
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON.

        On a 2xx answer a missing or malformed body is `UncertainDeliveryError`: the provider
        probably accepted the request, so it must not be sent again blindly.
        """
        try:
            return json.loads(self.body)
        except ValueError as err:
            what = "an empty body" if not self.body.strip() else "malformed JSON"
            raise UncertainDeliveryError(
                f"{self.provider}: HTTP {self.status} with {what}; the request may have been "
                "accepted",
                reply=self.text[:_MESSAGE_MAX],
            ) from err


class ProviderRequestError(PermanentDeliveryError):
    """The provider refused a request with a 4xx answer (not 401/403/408/429).

    Inside `send_batch` it goes to the provider's `client_error` hook, which may narrow it
    down to the items at fault; elsewhere (checks, suppression lists) it is what it says.
    """

    def __init__(self, message: str, response: ProviderResponse) -> None:
        super().__init__(message, reply=response.text[:_MESSAGE_MAX])
        self.response = response


class RejectedItems(Exception):
    """The provider refused the whole request because of some items; nothing was sent.

    Raised by a provider's `deliver`/`client_error` when it can tell which items were at fault
    (e.g. SendGrid's `personalizations.3.to.0.email`). `send_batch` records `errors` for those
    items (index into the items given to `deliver` → error) and sends the others again.
    """

    def __init__(self, errors: Mapping[int, PermanentDeliveryError]) -> None:
        super().__init__(f"{len(errors)} item(s) refused")
        self.errors = dict(errors)


class HttpProviderTransport:
    """Base of every provider transport; implements the `Transport` protocol (base.py).

    Subclasses set `name`, `max_batch`, `default_api_url`, `default_key_env` (and, if the
    provider has a cheap authenticated GET, `check_path`), and implement `deliver`. Providers
    that authenticate other than with one key in a header override `auth_headers` or `auth`
    (an `httpx.Auth`, e.g. SigV4) and `from_settings`.

    Convention for constructors: `<Name>Transport(settings, *, api_key=..., client=None)`;
    `client` lets a test hand in its own `httpx.Client` (the transport then does not close it).
    """

    name: str = "http"
    max_batch: int = 1
    default_api_url: ClassVar[str] = ""
    default_key_env: ClassVar[str] = ""
    check_path: ClassVar[str | None] = None
    # The sender builds each recipient's MIME message (`BatchItem.message.data`) only for
    # transports that send raw MIME; the others get the envelope with empty `data` and take what
    # they need from `personalisation(item)` (a MIME message costs ~0.1 ms a recipient).
    needs_mime: ClassVar[bool] = False
    # Providers sign with their own DKIM keys (and may rebuild headers): ours is never added.
    delivers_mime_as_is: ClassVar[bool] = False
    # `request` calls base.handover() just before a request is written (see base.py).
    signals_handover: ClassVar[bool] = True
    hands_over_each: ClassVar[bool] = False

    def __init__(
        self,
        settings: TransportSettings,
        *,
        api_key: str = "",
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.api_key = api_key
        self.api_url = self.api_url_for(settings)
        self.connections = max(1, settings.connections)
        self.sandbox = settings.sandbox
        self.clock = clock
        self._owns_client = client is None
        self._client = client
        self._client_lock = threading.Lock()
        self._direct: _Direct | None = None
        self._transport: httpx.BaseTransport | None = None
        self._timeout = httpx.Timeout(settings.timeout)
        self._templates: dict[tuple[str, bool], ProviderTemplate] = {}

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}({self.api_url!r}, sandbox={self.sandbox})"

    # --- construction from the configuration ------------------------------------------------

    @classmethod
    def key_env(cls, settings: TransportSettings) -> str:
        return settings.api_key_env or cls.default_key_env

    @classmethod
    def from_settings(
        cls,
        settings: TransportSettings,
        environ: Mapping[str, str] = os.environ,
        *,
        config_path: Path | None = None,
    ) -> Self:
        """The transport with its key from the environment; `ConfigError` naming the variable."""
        cls.check_settings(settings, config_path)
        variable = cls.key_env(settings)
        return cls(settings, api_key=require_env(environ, variable, cls.name, config_path))

    @classmethod
    def check_settings(cls, settings: TransportSettings, config_path: Path | None = None) -> None:
        """`ConfigError` for what the provider registry refuses in `settings`.

        The config checks the same when `newsletter.toml` is loaded; this covers settings made
        in code (and the suppression source of another provider than the one sending).
        """
        provider = PROVIDERS.get(cls.name)
        if provider is None:
            return
        found = setting_problems(
            provider,
            region=settings.region,
            domain=settings.domain,
            sandbox=settings.sandbox,
            api_key_env=settings.api_key_env,
        )
        if found:
            raise ConfigError(
                [Problem(p.message, file=config_path, key=f"transport.{p.key}") for p in found]
            )

    @classmethod
    def api_url_for(cls, settings: TransportSettings) -> str:
        """The base URL: `api_url` when set, else the provider's (override for regions)."""
        return (settings.api_url or cls.default_api_url).rstrip("/")

    @classmethod
    def describe_settings(cls, settings: TransportSettings) -> str:
        """A one-line description for the send summary (never the key)."""
        sandbox = " (sandbox: nothing is delivered)" if settings.sandbox else ""
        return f"{cls.name} {cls.api_url_for(settings)}{sandbox}"

    # --- hooks a provider module may override -----------------------------------------------

    def auth_headers(self) -> Mapping[str, str]:
        """Headers that authenticate every request (none by default)."""
        return {}

    def auth(self) -> httpx.Auth | None:
        """An `httpx.Auth` for providers that sign each request (e.g. SigV4)."""
        return None

    def suppression_source(self) -> SuppressionSource | None:
        """The provider's bounce/complaint/unsubscribe list, if this module can read it."""
        return None

    def sent_lookup(self) -> SentLookup | None:
        """The provider's searchable record of accepted messages, if its API has one that can
        answer per recipient (for `newsletter reconcile`)."""
        return None

    def inspect_check(self, response: ProviderResponse) -> None:
        """Look at the answer of `check_path` (e.g. the key's permissions); fine by default."""

    def deliver(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        """Send `items` (at most `max_batch`) in one request: one result per item, in order."""
        raise NotImplementedError

    def rate_limit_delay(self, response: ProviderResponse) -> float | None:
        """Seconds to wait after a 429 (Retry-After by default; providers add their headers)."""
        return parse_retry_after(response.headers.get("retry-after"), self.clock())

    def error_message(self, response: ProviderResponse) -> str:
        """The provider's own words for an error answer, shortened."""
        message = ""
        try:
            data = json.loads(response.body) if response.body.strip() else None
        except ValueError:
            data = None
        message = _find_message(data) if data is not None else ""
        if not message:
            message = " ".join(response.text.split())
        return message[:_MESSAGE_MAX] or f"HTTP {response.status}"

    def client_error(
        self, response: ProviderResponse, items: Sequence[BatchItem]
    ) -> list[BatchResult]:
        """A 4xx other than 401/403/408/429: by default every item failed permanently.

        Providers that can tell which items were at fault raise `RejectedItems`, or return
        per-item results when the provider reports them.
        """
        raise ProviderRequestError(
            f"{self.name} refused the request (HTTP {response.status}): "
            f"{self.error_message(response)}",
            response,
        )

    # --- the Transport protocol -------------------------------------------------------------

    def check(self) -> None:
        """Prove the key works with `check_path` (a cheap authenticated GET), if there is one."""
        if self.check_path is None:
            return
        try:
            self.inspect_check(self.get(self.check_path))
        except TransportUnavailableError:
            raise
        except DeliveryError as err:
            raise TransportUnavailableError(
                f"{self.name}: cannot reach {self.api_url}: {err.message}",
                hint="Check [transport] api_url and the network.",
            ) from err

    def send_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        """One result per item, in order; whole-request failures are raised (see module doc)."""
        if not items:
            return []
        if len(items) > self.max_batch:
            raise ValueError(f"{self.name}: {len(items)} items; at most {self.max_batch} a request")
        done: dict[str, BatchResult] = {}
        remaining = list(items)
        while remaining:
            try:
                results = self._deliver_once(remaining)
            except RejectedItems as rejected:
                if not rejected.errors:
                    raise TypeError(f"{self.name}: RejectedItems without items") from rejected
                for index, error in rejected.errors.items():
                    item = remaining[index]
                    done[item.key] = BatchResult(item.key, error=error)
                remaining = [x for n, x in enumerate(remaining) if n not in rejected.errors]
                continue
            except DeliveryError as err:
                if not done:
                    raise
                # Some items were refused already; the rest share this request's fate.
                for item in remaining:
                    done[item.key] = BatchResult(item.key, error=err)
                break
            if [result.key for result in results] != [item.key for item in remaining]:
                raise UncertainDeliveryError(
                    f"{self.name}: {len(results)} results for {len(remaining)} messages; "
                    "the request may have been accepted"
                )
            for result in results:
                done[result.key] = result
            break
        return [done[item.key] for item in items]

    def _deliver_once(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        try:
            return self.deliver(items)
        except ProviderRequestError as err:
            return self.client_error(err.response, items)

    def close(self) -> None:
        """Close the connections (a client handed in by the caller is left open)."""
        if not self._owns_client:
            return
        with self._client_lock:
            client, self._client, self._direct = self._client, None, None
        if client is not None:
            client.close()

    # --- helpers for provider modules -------------------------------------------------------

    def accepted(self, item: BatchItem, provider_id: str) -> BatchResult:
        """A per-item success; `provider_id` goes into the ledger as the reply.

        In sandbox mode the reply starts with `sandbox:`: nothing was delivered, and the
        ledger says so.
        """
        reply = f"sandbox:{provider_id}" if self.sandbox else provider_id
        return BatchResult(item.key, DeliveryReceipt(item.message.recipient, reply))

    def refused(self, item: BatchItem, message: str) -> BatchResult:
        """A per-item permanent failure (the provider refused this recipient)."""
        return BatchResult(
            item.key,
            error=RecipientRejectedError(
                f"{self.name} refused {item.message.recipient}: {message}"
            ),
        )

    def deliver_in_parts(
        self,
        items: Sequence[BatchItem],
        size_of: Callable[[BatchItem], int],
        limit: int,
        send_part: Callable[[Sequence[BatchItem]], list[BatchResult]],
    ) -> list[BatchResult]:
        """Send `items` in as few requests as fit `limit` bytes (by `size_of`), in order.

        With one request this is `send_part(items)`. With several, a request's failure becomes
        per-item errors: a permanent one only for its own items (the next requests still go);
        anything else stops the run here, and the items not sent get a transient error.
        """
        parts: list[list[BatchItem]] = [[]]
        used = 0
        for item in items:
            size = size_of(item)
            if parts[-1] and used + size > limit:
                parts.append([])
                used = 0
            parts[-1].append(item)
            used += size
        if len(parts) == 1:
            return send_part(parts[0])
        results: list[BatchResult] = []
        stopped: DeliveryError | None = None
        for part in parts:
            if stopped is not None:
                results += [BatchResult(item.key, error=stopped) for item in part]
                continue
            try:
                results += self._deliver_once_part(part, send_part)
            except PermanentDeliveryError as err:
                results += [BatchResult(item.key, error=err) for item in part]
            except DeliveryError as err:
                results += [BatchResult(item.key, error=err) for item in part]
                stopped = TransientDeliveryError(
                    f"{self.name}: not sent after an earlier request failed: {err.message}",
                    retry_after=getattr(err, "retry_after", None),
                )
        return results

    def _deliver_once_part(
        self,
        part: Sequence[BatchItem],
        send_part: Callable[[Sequence[BatchItem]], list[BatchResult]],
    ) -> list[BatchResult]:
        try:
            try:
                return send_part(part)
            except ProviderRequestError as err:
                return self.client_error(err.response, part)
        except RejectedItems as rejected:
            # Indices are into `part`: record those, send the rest of the part again.
            bad = rejected.errors
            rest = [item for n, item in enumerate(part) if n not in bad]
            again = iter(self._deliver_once_part(rest, send_part) if rest else [])
            return [
                BatchResult(item.key, error=bad[n]) if n in bad else next(again)
                for n, item in enumerate(part)
            ]

    def shared_template(
        self, item: BatchItem, placeholder: Callable[[int, SlotContext], str]
    ) -> ProviderTemplate:
        """The provider template of the item's issue, built once per transport and issue."""
        found = personalisation(item)
        key = (found.template.fingerprint, found.test)
        cached = self._templates.get(key)
        if cached is None:
            cached = found.provider_template(placeholder)
            with self._client_lock:
                self._templates[key] = cached
        return cached

    def post_json(
        self, path: str, body: object, *, headers: Mapping[str, str] | None = None
    ) -> ProviderResponse:
        """POST `body` as JSON; a 2xx answer is returned, anything else raised as typed errors.

        `body` may also be JSON already encoded (bytes), e.g. spliced from pre-encoded parts.
        """
        if isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        extra = {"Content-Type": "application/json", **(headers or {})}
        return self.request("POST", path, content=data, headers=extra)

    def post_form(
        self,
        path: str,
        fields: Sequence[tuple[str, str]],
        *,
        files: Sequence[tuple[str, tuple[str, bytes, str]]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ProviderResponse:
        """POST form fields (repeated names allowed); multipart when `files` are given."""
        if files:
            return self.request(
                "POST", path, data=_grouped(fields), files=list(files), headers=headers
            )
        return self.request("POST", path, data=_grouped(fields), headers=headers)

    def get(self, path: str, *, params: Mapping[str, str | int] | None = None) -> ProviderResponse:
        """GET (checks, suppression lists); failures are raised as for POST."""
        return self.request("GET", path, params=params)

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        data: Mapping[str, Any] | None = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ProviderResponse:
        """Send one request and classify the outcome (see the module docstring)."""
        url = path if path.startswith(("http://", "https://")) else self.api_url + path
        client = self._get_client()
        direct = self._direct
        if direct is not None and (
            type(self).signature is not HttpProviderTransport.signature or self.auth() is None
        ):
            return self._request_direct(
                direct, method, url, content, data, files, params, headers or {}
            )
        try:
            request = client.build_request(
                method,
                url,
                content=content,
                data=data,
                files=files,
                params=params,
                headers={**self.auth_headers(), **(headers or {})},
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as err:
            raise self._unusable_url(url, err) from err
        handover()  # the sender marks the batch `sending` now, not before it was built
        try:
            raw = client.send(request, auth=self.auth() or httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as err:
            raise self._network_error(err) from err
        body = raw.content
        if not 200 <= raw.status_code < 300:
            # Error words end up in messages and the ledger: never with our credentials in them
            # (a proxy that echoes the request's headers would print the key; issue 15, D23).
            sent = [(n, v) for n, v in raw.request.headers.multi_items()]
            body = _redacted(body, self._secrets(sent))
        response = ProviderResponse(self.name, raw.status_code, raw.headers, body)
        self._raise_for_status(response)
        return response

    def signature(
        self, method: str, target: RequestTarget, fields: Sequence[tuple[str, str]], body: bytes
    ) -> list[tuple[str, str]]:
        """Header fields that sign this request, for providers that sign each request (SES):
        they override this (used on the direct path) as well as `auth()` (used through httpx)."""
        return []

    def _request_direct(
        self,
        direct: _Direct,
        method: str,
        url: str,
        content: bytes | None,
        data: Mapping[str, Any] | None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str],
    ) -> ProviderResponse:
        """`request` without httpx's client, request and response objects (see `_Direct`)."""
        body = content or b""
        encoding: dict[str, str] = {}
        try:
            if data is not None or files is not None or params:
                # Forms and query parameters encoded by httpx, as through the client.
                built = httpx.Request(
                    method, url, params=params, content=content, data=data, files=files
                )
                body, url = built.read(), str(built.url)
                if "content-type" in built.headers:
                    encoding["Content-Type"] = built.headers["content-type"]
            target = direct.target(url)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as err:
            raise self._unusable_url(url, err) from err
        fields = direct.fields(target, method, body, encoding, self.auth_headers(), headers)
        fields += self.signature(method, target, fields, body)
        handover()  # the sender marks the batch `sending` now, not before it was built
        try:
            answer = direct.exchange(method, target, fields, body)
        except httpx.HTTPError as err:
            raise self._network_error(err) from err
        answer_body = answer.body
        if not 200 <= answer.status < 300:
            answer_body = _redacted(answer_body, self._secrets(fields))  # as in `request`
        response = ProviderResponse(
            self.name, answer.status, httpx.Headers(answer.headers), answer_body
        )
        self._raise_for_status(response)
        return response

    def _unusable_url(self, url: str, err: Exception) -> TransportUnavailableError:
        return TransportUnavailableError(
            f"{self.name}: unusable API URL {url!r}: {err}", hint="Check [transport] api_url."
        )

    def _network_error(self, err: httpx.HTTPError) -> DeliveryError:
        """What a failure on the network means for the request (see the module docstring)."""
        if isinstance(err, httpx.ConnectTimeout | httpx.ConnectError | httpx.PoolTimeout):
            return TransientDeliveryError(
                f"{self.name}: cannot connect to {self.api_url}: {_describe(err)}"
            )
        if isinstance(err, httpx.WriteTimeout | httpx.WriteError):
            # The request was not written whole: the provider cannot act on half a body.
            return TransientDeliveryError(
                f"{self.name}: the request to {self.api_url} could not be sent: {_describe(err)}"
            )
        if isinstance(err, httpx.ReadTimeout):
            return UncertainDeliveryError(
                f"{self.name}: no answer within {self.settings.timeout:g}s after the request "
                "was sent; it may have been accepted"
            )
        if isinstance(err, httpx.UnsupportedProtocol | httpx.ProxyError):
            return TransportUnavailableError(f"{self.name}: {_describe(err)}")
        # ReadError, RemoteProtocolError, ...: the request went out, the answer did not come.
        return UncertainDeliveryError(
            f"{self.name}: the connection failed after the request was sent "
            f"({_describe(err)}); it may have been accepted"
        )

    def _secrets(self, fields: Sequence[tuple[str, str]]) -> list[bytes]:
        """The key and every credential the request carried, as they could be echoed."""
        values = [self.api_key, *self.auth_headers().values()]
        values += [v for n, v in fields if n.lower() in ("authorization", "x-amz-security-token")]
        found: set[str] = set()
        for value in values:
            found.add(value)
            for word in value.replace(",", " ").split():
                found.add(word.split("=", 1)[-1])  # SigV4: Credential=..., Signature=...
                with contextlib.suppress(ValueError, binascii.Error):
                    found.update(base64.b64decode(word, validate=True).decode().split(":"))
        # Longest first, so that a key inside a longer value is not left half-replaced.
        return sorted({v.encode() for v in found if len(v) >= 8}, key=len, reverse=True)

    def _raise_for_status(self, response: ProviderResponse) -> None:
        status = response.status
        if 200 <= status < 300:
            return
        reply = response.text[:_MESSAGE_MAX]
        if status == 429:
            retry_after = self.rate_limit_delay(response)
            wait = f"; retry after {retry_after:g}s" if retry_after is not None else ""
            raise TransientDeliveryError(
                f"{self.name}: rate limited (HTTP 429): {self.error_message(response)}{wait}",
                reply=reply,
                retry_after=retry_after,
            )
        if status in (401, 403):
            raise TransportUnavailableError(
                f"{self.name}: the API key was refused (HTTP {status}): "
                f"{self.error_message(response)}",
                hint=f"Check the key in the environment variable {self.key_env(self.settings)} "
                "and its permissions.",
                reply=reply,
            )
        if status >= 500 or status == 408:
            raise TransientDeliveryError(
                f"{self.name}: server error (HTTP {status}): {self.error_message(response)}",
                reply=reply,
                retry_after=parse_retry_after(response.headers.get("retry-after"), self.clock()),
            )
        if 400 <= status < 500:
            raise ProviderRequestError(
                f"{self.name} refused the request (HTTP {status}): {self.error_message(response)}",
                response,
            )
        raise TransportUnavailableError(
            f"{self.name}: unexpected HTTP {status} from {self.api_url}",
            hint="Check [transport] api_url (redirects are not followed).",
            reply=reply,
        )

    def _get_client(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
                if self._owns_client and not urllib.request.getproxies():
                    # Without proxies the client sends through its one transport: requests
                    # can go to it directly (see `_Direct`). With proxies in the environment,
                    # httpx picks a transport per URL, so every request goes through the client.
                    self._direct = _Direct.of(self._client, self._transport, self._timeout)
            return self._client

    def _make_client(self) -> httpx.Client:
        limits = httpx.Limits(
            max_connections=self.connections, max_keepalive_connections=self.connections
        )
        timeout = httpx.Timeout(self.settings.timeout, connect=min(self.settings.timeout, 10.0))
        verify: ssl.SSLContext | bool = True
        if self.settings.ca_file:
            verify = ssl.create_default_context(cafile=self.settings.ca_file)
        # The transport httpx would make itself; given explicitly only without proxies, since
        # a transport handed in turns httpx's environment proxies off.
        self._transport = None
        self._timeout = timeout
        if not urllib.request.getproxies():
            self._transport = _Http11(httpx.create_ssl_context(verify=verify), self.connections)
        return httpx.Client(
            timeout=timeout,
            limits=limits,
            verify=verify,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            transport=self._transport,
        )


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """Where a request goes, parsed once per URL: the pool key, the Host header, the target."""

    scheme: str
    host: str
    port: int
    authority: str  # the Host header: host, and port when not the scheme's default
    target: str  # path and query, as sent on the request line (already encoded)

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @classmethod
    def of(cls, url: httpx.URL) -> RequestTarget:
        port = url.port or (443 if url.scheme == "https" else 80)
        raw = url.raw_path.decode("ascii")
        return cls(url.scheme, url.host, port, url.netloc.decode("ascii"), raw)


@dataclass(frozen=True, slots=True)
class _Answer:
    """A complete HTTP answer off the wire: status, header fields in order, decoded body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(frozen=True)
class _Direct:
    """Requests straight to the client's transport (`_Http11`), without httpx's request and
    response objects.

    One request per recipient (SES, Mailgun, Brevo) made the client's per-request layers
    (URL merging, cookie jar, redirect and event-hook machinery, header objects) and then
    `http.client`'s header parsing (the `email` package) the largest share of all the work of a
    send. What those layers do that matters here is done the same way: the client's default
    headers, its timeouts, the provider's auth headers or signature, the body read whole, no
    redirect followed. Network failures are the same httpx exceptions, classified by `request`.
    """

    transport: _Http11
    headers: tuple[tuple[str, str], ...]  # the client's defaults
    timeout: dict[str, float | None]
    targets: dict[str, RequestTarget]
    checked: set[str] = field(default_factory=set)  # header lines found safe (see `_head`)

    @classmethod
    def of(
        cls, client: httpx.Client, transport: httpx.BaseTransport | None, timeout: httpx.Timeout
    ) -> _Direct | None:
        if not isinstance(transport, _Http11):
            return None
        defaults = {
            name.decode("latin-1").lower(): (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in client.headers.raw  # the names as written (`items()` lowers them)
        }
        # Only the codings `_decoded` undoes (httpx would also offer br with brotli installed).
        defaults["accept-encoding"] = ("Accept-Encoding", "gzip, deflate")
        return cls(transport, tuple(defaults.values()), timeout.as_dict(), {})

    def target(self, url: str) -> RequestTarget:
        """`url` parsed (httpx's parser: `InvalidURL` and `UnsupportedProtocol` as before)."""
        found = self.targets.get(url)
        if found is None:
            parsed = httpx.URL(url)
            if parsed.scheme not in ("http", "https"):
                raise httpx.UnsupportedProtocol(
                    f"Request URL has an unsupported protocol '{parsed.scheme}://'."
                )
            if not parsed.host:
                raise httpx.InvalidURL(f"no host in {url!r}")
            found = RequestTarget.of(parsed)
            if len(self.targets) < 64:  # a provider posts to a handful of paths
                self.targets[url] = found
        return found

    def fields(
        self,
        target: RequestTarget,
        method: str,
        body: bytes,
        *extra: Mapping[str, str],
    ) -> list[tuple[str, str]]:
        """The request's header fields: Host, the client's defaults, `extra` in order (a later
        name replaces an earlier one, case-insensitively), Content-Length."""
        merged = {name.lower(): (name, value) for name, value in self.headers}
        for more in extra:
            for name, value in more.items():
                merged[name.lower()] = (name, value)
        fields = [("Host", target.authority), *merged.values()]
        if body or method not in ("GET", "HEAD"):
            fields.append(("Content-Length", str(len(body))))
        return fields

    def exchange(
        self, method: str, target: RequestTarget, fields: Sequence[tuple[str, str]], body: bytes
    ) -> _Answer:
        return self.transport.exchange(
            method, target, _head(method, target.target, fields, self.checked), body, self.timeout
        )


_CHUNK = 1 << 16  # bytes a socket send is offered at a time
_JOIN_BELOW = 1 << 20  # bodies up to this size go out with the head in one buffer
_MAX_HEAD = 1 << 16  # bytes of status line and header fields accepted in an answer
_ILLEGAL = re.compile(r"[\r\n\x00]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _head(
    method: str, target: str, fields: Sequence[tuple[str, str]], checked: set[str] | None = None
) -> bytes:
    """The request line and header fields, ready to send; `ValueError` for a header that could
    split the request (a line break in a value), as `http.client.putheader` raises. `checked`:
    header lines found safe before (the caller's, filled here), not checked again."""
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in fields:
        line = f"{name}: {value}"
        if checked is None or line not in checked:
            if not _TOKEN.fullmatch(name) or _ILLEGAL.search(value):
                raise ValueError(f"Invalid header {name!r}")
            if checked is not None and len(checked) < 256:  # signatures and dates never repeat
                checked.add(line)
        lines.append(line)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")  # as http.client encodes header values


class _Connection:
    """A socket and what was read from it past the last answer."""

    __slots__ = ("buffer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def fill(self) -> None:
        data = self.sock.recv(_CHUNK)
        if not data:
            raise http.client.RemoteDisconnected("the server closed the connection mid-answer")
        self.buffer += data

    def line_block(self) -> bytes:
        """Up to the first empty line (status line and header fields), consumed."""
        start = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n", start)
            if end >= 0:
                head = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                return head
            if len(self.buffer) > _MAX_HEAD:
                raise http.client.LineTooLong("header block")
            start = max(0, len(self.buffer) - 3)
            self.fill()

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                data = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return data
            if len(self.buffer) > _MAX_HEAD:
                raise http.client.LineTooLong("chunk line")
            self.fill()

    def rest(self) -> bytes:
        """Everything until the server closes (an answer without a length)."""
        while True:
            try:
                self.fill()
            except http.client.RemoteDisconnected:
                data = bytes(self.buffer)
                self.buffer.clear()
                return data


def _read_answer(connection: _Connection, method: str) -> tuple[_Answer, bool]:
    """The answer (after any 1xx), and whether the connection may carry another request."""
    while True:
        lines = connection.line_block().split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise http.client.BadStatusLine(repr(lines[0][:80]))
        status = int(code)
        if status == 101 or not 100 <= status < 200:
            break
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and headers:  # obsolete line folding
            name, value = headers.pop()
            headers.append((name, value + b" " + line.strip()))
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise http.client.HTTPException(f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    if status == 101:
        raise http.client.HTTPException("the server switched protocols")
    length: int | None = None
    chunked = False
    close = version == b"HTTP/1.0"
    coding = b""
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            if not value.isdigit() or (length is not None and length != int(value)):
                raise http.client.HTTPException(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif lower == b"transfer-encoding":
            chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            if not chunked:
                raise http.client.HTTPException(f"unsupported Transfer-Encoding {value[:40]!r}")
        elif lower == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            close = b"close" in tokens or (close and b"keep-alive" not in tokens)
        elif lower == b"content-encoding":
            coding = value.strip().lower()
    if method == "HEAD" or status in (204, 304):
        body = b""
    elif chunked:
        body = _chunks(connection)
    elif length is not None:
        body = connection.exactly(length)
    else:
        body, close = connection.rest(), True
    return _Answer(status, headers, _decoded(body, coding)), not close and not connection.buffer


def _chunks(connection: _Connection) -> bytes:
    parts: list[bytes] = []
    while True:
        size_text = connection.line().split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise http.client.HTTPException(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            while connection.line():  # trailer fields, up to the empty line
                pass
            return b"".join(parts)
        parts.append(connection.exactly(size))
        if connection.exactly(2) != b"\r\n":
            raise http.client.HTTPException("a chunk without its CRLF")


def _decoded(body: bytes, coding: bytes) -> bytes:
    """The body without the content coding we offered (gzip, deflate), as httpx decodes."""
    if not coding or coding == b"identity":
        return body
    try:
        if coding in (b"gzip", b"x-gzip"):
            return zlib.decompress(body, zlib.MAX_WBITS | 16)
        if coding == b"deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate, as some servers send
    except zlib.error as err:
        raise http.client.HTTPException(f"cannot decode the {coding!r} body: {err}") from err
    raise http.client.HTTPException(f"unsupported Content-Encoding {coding[:40]!r}")


class _Http11(httpx.BaseTransport):
    """HTTP/1.1 with keep-alive over plain sockets, as an httpx transport and for `_Direct`.

    httpcore and h11 (pure Python) cost about three times the CPU of `http.client` per request,
    and `http.client` parses every answer's headers with the `email` package (bench/README.md):
    the largest shares of a one-request-per-recipient send once the payload is cheap. Here a
    request is its head and body in one send where it fits, and an answer is read with a few
    `find`s (Content-Length, chunked, or until close; 1xx skipped; gzip/deflate undone). The
    contract is httpx's: the same TLS context httpx would build, the request's
    connect/write/read/pool timeouts, at most `max_connections` at once, and failures as the httpx
    exceptions `request` classifies: nothing written whole → Connect*/Write*; written, no complete
    answer → ReadTimeout, ReadError or RemoteProtocolError. An idle connection the server has
    closed (readable while idle) is never reused.
    """

    def __init__(self, context: ssl.SSLContext, max_connections: int) -> None:
        self._context = context
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._idle: list[tuple[tuple[str, str, int], _Connection]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        url = request.url
        target = RequestTarget.of(url)
        fields = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers.raw]
        head = _head(request.method, target.target, fields)
        try:
            answer = self.exchange(request.method, target, head, request.read(), timeout)
        except httpx.TransportError as err:
            err.request = request
            raise
        return httpx.Response(
            answer.status, headers=answer.headers, content=answer.body, request=request
        )

    def exchange(
        self,
        method: str,
        target: RequestTarget,
        head: bytes,
        body: bytes,
        timeout: Mapping[str, Any],
    ) -> _Answer:
        """One request on a pooled connection; the complete answer."""
        if not self._slots.acquire(timeout=timeout.get("pool")):
            raise httpx.PoolTimeout("no free connection")
        try:
            return self._exchange(method, target, head, body, timeout)
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, connection in idle:
            connection.close()

    def _exchange(
        self,
        method: str,
        target: RequestTarget,
        head: bytes,
        body: bytes,
        timeout: Mapping[str, Any],
    ) -> _Answer:
        origin = target.origin
        connection = self._reuse(origin) or self._connect(origin, timeout.get("connect"))
        sock = connection.sock
        try:
            sock.settimeout(timeout.get("write"))
            # The write timeout bounds each step of progress, as in httpcore, not the whole
            # body: a 45 MB Postmark batch on a slow uplink must not time out while moving.
            if len(body) < _JOIN_BELOW:
                pending = memoryview(head + body)
            else:
                sock.sendall(head)
                pending = memoryview(body)
            while pending:
                pending = pending[sock.send(pending[:_CHUNK]) :]
        except TimeoutError as err:
            connection.close()
            raise httpx.WriteTimeout(str(err) or "write timed out") from err
        except OSError as err:
            connection.close()
            raise httpx.WriteError(str(err) or type(err).__name__) from err
        try:
            sock.settimeout(timeout.get("read"))
            answer, reusable = _read_answer(connection, method)
        except TimeoutError as err:
            connection.close()
            raise httpx.ReadTimeout(str(err) or "read timed out") from err
        except http.client.HTTPException as err:
            connection.close()
            raise httpx.RemoteProtocolError(str(err) or type(err).__name__) from err
        except OSError as err:
            connection.close()
            raise httpx.ReadError(str(err) or type(err).__name__) from err
        if reusable:
            with self._lock:
                self._idle.append((origin, connection))
        else:
            connection.close()
        return answer

    def _reuse(self, origin: tuple[str, str, int]) -> _Connection | None:
        while True:
            with self._lock:
                found = next((n for n, (o, _) in enumerate(self._idle) if o == origin), None)
                if found is None:
                    return None
                _, connection = self._idle.pop(found)
            if not select.select([connection.sock], [], [], 0)[0]:
                return connection
            connection.close()  # closed by the server (or unexpected bytes): never reused

    def _connect(self, origin: tuple[str, str, int], timeout: float | None) -> _Connection:
        scheme, host, port = origin
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme}://'."
            )
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((host, port), timeout)
            # A request is written whole before the answer is awaited: no Nagle delay on it.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._context.wrap_socket(sock, server_hostname=host)
        except TimeoutError as err:
            if sock is not None:
                sock.close()
            raise httpx.ConnectTimeout(str(err) or "connect timed out") from err
        except OSError as err:  # refused, unreachable, unknown host, TLS handshake or certificate
            if sock is not None:
                sock.close()
            raise httpx.ConnectError(str(err) or type(err).__name__) from err
        return _Connection(sock)


def _redacted(body: bytes, secrets: Sequence[bytes]) -> bytes:
    for secret in secrets:
        body = body.replace(secret, b"[redacted]")
    return body


def require_env(
    environ: Mapping[str, str], variable: str, provider: str, config_path: Path | None
) -> str:
    """The value of `variable`; `ConfigError` naming it (never showing a value) when empty."""
    value = environ.get(variable, "").strip()
    if not value:
        raise ConfigError(
            [
                Problem(
                    f"the {provider} transport needs its API key in the environment variable "
                    f"{variable}, which is empty or not set",
                    file=config_path,
                    key="transport.api_key_env",
                )
            ]
        )
    return value


def _grouped(fields: Sequence[tuple[str, str]]) -> dict[str, str | list[str]]:
    """Form fields with repeated names as lists (httpx sends each value as its own field)."""
    grouped: dict[str, str | list[str]] = {}
    for name, value in fields:
        if name in grouped:
            previous = grouped[name]
            grouped[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            grouped[name] = value
    return grouped


def _find_message(data: Any) -> str:
    """The first error text in a provider's JSON error body (common shapes)."""
    if isinstance(data, str):
        return data
    if isinstance(data, list):
        return "; ".join(filter(None, (_find_message(x) for x in data[:3])))
    if isinstance(data, dict):
        for key in ("message", "Message", "error", "ErrorMessage", "detail", "errors", "Errors"):
            if data.get(key):
                return _find_message(data[key])
    return ""


def _describe(err: Exception) -> str:
    return str(err) or type(err).__name__
