"""SparkPost: `POST /api/v1/transmissions`, one inline template and up to 1,000 recipients.

The issue's subject, html and text go once, with a SparkPost expression in every per-recipient
hole; each recipient carries its values in `substitution_data` (already escaped for their
context by `MessageTemplate.slot_values`). SparkPost's template language works in headers too,
so the recipient's own `List-Unsubscribe` rides in `content.headers` as an expression.

Template language details that matter (SparkPost "Template Language" docs):
- every expression is triple-curly, `{{{v0h}}}`: double curlies HTML-escape values in html
  and URL-encode them inside links (html and text); our values are escaped already;
- static text may contain braces (CSS in the html): a brace next to another brace, or at either
  end of a static run, is written as `{{{lb}}}` / `{{{rb}}}` (transmission-level substitution
  data), so no `{{` or `}}` of the issue is ever read as an expression.

Options: `transactional: true` (SparkPost adds its own List-Unsubscribe to non-transactional
mail), open and click tracking off. `region = "eu"` selects `https://api.eu.sparkpost.com`
(or set `api_url`). Sandbox: SparkPost's `options.sandbox` is not a test mode (it sends the
stored template `my-first-email` from sparkpostbox.com, 5 messages per account lifetime;
transmissions API docs, "The Sandbox Domain"), so `sandbox = true` is a configuration error.

Answers: 200 `{"results": {"id", "total_accepted_recipients", "total_rejected_recipients",
"rcpt_to_errors"}}`; the transmission id goes to the ledger of every accepted recipient. When
some recipients are rejected, they are failed if the errors name them; otherwise nobody can
tell who was accepted and the whole batch is uncertain. 420 (sending limit: nothing sent) and
an unverified sending domain stop the run; other 4xx fail the batch's recipients.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, cast
from urllib.parse import SplitResult, urlsplit

from ...config import TransportSettings
from ...errors import (
    PermanentDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from ..content import Envelope, SlotContext
from ._http import HttpProviderTransport, ProviderResponse, personalisation
from .base import BatchItem, BatchResult, Suppression, SuppressionKind

US_API = "https://api.sparkpost.com/api/v1"
EU_API = "https://api.eu.sparkpost.com/api/v1"
BRACES = {"lb": "{", "rb": "}"}
_SENTINEL = "\x00"
MAX_CONTENT_BYTES = 20 * 1024 * 1024  # text + html + attachments + inline images (API docs)
_SEARCH_TIME = "%Y-%m-%dT%H:%M:%S+0000"
_ACCOUNT_CODES = {"7001": "the sending domain is not configured or verified"}


def variable(index: int, context: SlotContext) -> str:
    """The substitution key of a slot value: `v<index><h|t|s>` (letters, digits: a valid key)."""
    return f"v{index}{context[0]}"


def expression(key: str) -> str:
    return "{{{" + key + "}}}"


def escape_static(text: str) -> str:
    """`text` with every brace that could form `{{`/`}}` written as `{{{lb}}}`/`{{{rb}}}`.

    A brace is escaped when a brace is next to it, or when it is the first or last character
    (an expression may follow or precede the run). Lone braces inside text (CSS) stay as they
    are, which keeps the html short.
    """
    if "{" not in text and "}" not in text:
        return text
    out: list[str] = []
    last = len(text) - 1
    for index, char in enumerate(text):
        if char in "{}" and (
            index in (0, last) or text[index - 1] in "{}" or text[index + 1] in "{}"
        ):
            out.append(expression("lb" if char == "{" else "rb"))
        else:
            out.append(char)
    return "".join(out)


def fill(text_with_holes: str) -> tuple[str, bool]:
    """Turn sentinel-marked holes (`\\0index:context\\0`) into expressions; escape the rest.

    Returns the template text and whether any brace was escaped (then `lb`/`rb` must be sent).
    """
    pieces = text_with_holes.split(_SENTINEL)
    if len(pieces) % 2 == 0:
        raise ValueError("unbalanced placeholder markers in the provider template")
    escaped = False
    out: list[str] = []
    for number, piece in enumerate(pieces):
        if number % 2:  # a hole
            index, _, context = piece.partition(":")
            out.append(expression(variable(int(index), cast(SlotContext, context))))
        else:
            static = escape_static(piece)
            escaped = escaped or static != piece
            out.append(static)
    return "".join(out), escaped


class _Template:
    """The issue's subject, html and text in SparkPost syntax, built once per issue."""

    def __init__(self, subject: str, html: str, text: str, braces: bool) -> None:
        self.subject = subject
        self.html = html
        self.text = text
        self.braces = braces


class SparkPostTransport(HttpProviderTransport):
    name = "sparkpost"
    max_batch = 1000
    default_api_url = US_API
    default_key_env = "SPARKPOST_API_KEY"

    def __init__(self, settings: TransportSettings, *, api_key: str, **kwargs: Any) -> None:
        super().__init__(settings, api_key=api_key, **kwargs)
        self._sparkpost_templates: dict[tuple[str, bool], _Template] = {}
        self._template_lock = threading.Lock()

    @classmethod
    def api_url_for(cls, settings: TransportSettings) -> str:
        if settings.api_url:
            return settings.api_url.rstrip("/")
        return EU_API if (settings.region or "").strip().lower() == "eu" else US_API

    def auth_headers(self) -> Mapping[str, str]:
        return {"Authorization": self.api_key}  # SparkPost takes the bare key

    # --- sending ----------------------------------------------------------------------------

    def template_for(self, item: BatchItem) -> _Template:
        """The issue's template in SparkPost syntax (cached per issue and test flag)."""
        found = personalisation(item)
        key = (found.template.fingerprint, found.test)
        with self._template_lock:
            cached = self._sparkpost_templates.get(key)
        if cached is not None:
            return cached
        marked = found.provider_template(
            lambda index, context: f"{_SENTINEL}{index}:{context}{_SENTINEL}"
        )
        subject, in_subject = fill(marked.subject)
        html, in_html = fill(marked.html)
        text, in_text = fill(marked.text)
        made = _Template(subject, html, text, in_subject or in_html or in_text)
        with self._template_lock:
            self._sparkpost_templates[key] = made
        return made

    def payload(self, items: Sequence[BatchItem]) -> dict[str, Any]:
        """The transmission for `items` (all of one issue)."""
        template = self.template_for(items[0])
        envelopes: list[Envelope] = []
        values: list[dict[str, str]] = []
        for item in items:
            envelope, slot_values = personalisation(item).envelope_and_values()
            envelopes.append(envelope)
            values.append({variable(*key): value for key, value in slot_values.items()})
        names = [name for name, _ in envelopes[0].headers]
        headers: dict[str, str] = {}
        braces = template.braces
        for number, name in enumerate(names):
            seen = {_header(envelope, number, name) for envelope in envelopes}
            if len(seen) == 1:
                value = seen.pop()
                headers[name] = escape_static(value)
                braces = braces or headers[name] != value
                continue
            key = f"h{number}"
            headers[name] = expression(key)
            for envelope, data in zip(envelopes, values, strict=True):
                data[key] = envelope.headers[number][1]
        first = personalisation(items[0]).template
        content: dict[str, Any] = {
            "from": _address(first.from_mailbox.email, first.from_mailbox.name),
            "subject": template.subject,
            "html": template.html,
            "text": template.text,
            "headers": headers,
        }
        if first.reply_to is not None:
            content["reply_to"] = first.reply_to.formatted()
        if first.images:
            content["inline_images"] = [
                {"name": image.cid, "type": image.content_type, "data": image.base64}
                for image in first.images
            ]
        body: dict[str, Any] = {
            "options": {"transactional": True, "open_tracking": False, "click_tracking": False},
            "campaign_id": first.issue.encode("utf-8")[:64].decode("utf-8", "ignore"),
            "recipients": [
                {
                    "address": _address(envelope.to.email, envelope.to.name),
                    "substitution_data": data,
                }
                for envelope, data in zip(envelopes, values, strict=True)
            ],
            "content": content,
        }
        if braces:
            body["substitution_data"] = dict(BRACES)
        return body

    def deliver(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        template = self.template_for(items[0])
        images = personalisation(items[0]).template.images
        size = len(template.html.encode()) + len(template.text.encode())
        size += sum(len(image.base64) for image in images)
        if size > MAX_CONTENT_BYTES:
            raise PermanentDeliveryError(
                f"sparkpost: the content is {size:,} bytes with its images; SparkPost takes at "
                f"most {MAX_CONTENT_BYTES:,} a transmission"
            )
        response = self.post_json(
            f"/transmissions?num_rcpt_errors={len(items)}", self.payload(items)
        )
        return self.results(items, response)

    def results(self, items: Sequence[BatchItem], response: ProviderResponse) -> list[BatchResult]:
        """Per-recipient outcomes from the transmission answer (see the module docstring)."""
        data = response.json()
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, dict) or not results.get("id"):
            raise UncertainDeliveryError(
                f"sparkpost: HTTP {response.status} without a transmission id; the messages "
                "may have been accepted",
                reply=response.text[:300],
            )
        transmission = str(results["id"])
        accepted = results.get("total_accepted_recipients")
        rejected = results.get("total_rejected_recipients") or 0
        if accepted == len(items) and not rejected:
            return [self.accepted(item, transmission) for item in items]
        errors = results.get("rcpt_to_errors")
        named = _rejected_by_address(items, errors if isinstance(errors, list) else [])
        if (
            isinstance(accepted, int)
            and isinstance(rejected, int)
            and accepted + rejected == len(items)
            and len(named) == rejected
        ):
            return [
                self.refused(item, named[item.key])
                if item.key in named
                else self.accepted(item, transmission)
                for item in items
            ]
        reason = (
            f"sparkpost: transmission {transmission} accepted {accepted} of {len(items)} "
            "recipients without saying which were rejected"
        )
        return [BatchResult(item.key, error=UncertainDeliveryError(reason)) for item in items]

    def client_error(
        self, response: ProviderResponse, items: Sequence[BatchItem]
    ) -> list[BatchResult]:
        """420 and an unusable sending domain stop the run; other 4xx fail these recipients."""
        message = self.error_message(response)
        if response.status == 420:
            raise TransportUnavailableError(
                f"sparkpost: sending limit reached (HTTP 420), nothing of this batch was sent: "
                f"{message}",
                hint="Wait for the limit to reset (see the SparkPost dashboard), then resume.",
            )
        codes = _error_codes(response)
        account = next((code for code in codes if code in _ACCOUNT_CODES), None)
        if account is not None:
            raise TransportUnavailableError(
                f"sparkpost: {_ACCOUNT_CODES[account]} (HTTP {response.status}): {message}",
                hint="Check the sending domain of the From address in SparkPost.",
            )
        return super().client_error(response, items)

    def suppression_source(self) -> SparkPostSuppressions:
        return SparkPostSuppressions(self)

    def error_message(self, response: ProviderResponse) -> str:
        """`message: description` of SparkPost's first error, else the base's reading."""
        try:
            data = response.json()
        except UncertainDeliveryError:
            data = None
        errors = data.get("errors") if isinstance(data, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            parts = [str(first.get(key)) for key in ("message", "description") if first.get(key)]
            if parts:
                return ": ".join(parts)[:300]
        return super().error_message(response)


class SparkPostSuppressions:
    """The account's suppression list (`GET /suppression-list`, cursor paging), both types.

    Sources: Bounce Rule and Compliance → bounce; Spam Complaint → complaint; List
    Unsubscribe, Unsubscribe Link and Manually Added → unsubscribe. Both transactional and
    non-transactional entries are read: this transport sends as transactional, so SparkPost
    itself only checks the transactional list, and the store must learn of the others.
    """

    name = "sparkpost"
    page = 1000
    kinds: ClassVar[dict[str, SuppressionKind]] = {
        "bounce rule": SuppressionKind.BOUNCE,
        "compliance": SuppressionKind.BOUNCE,
        "spam complaint": SuppressionKind.COMPLAINT,
        "list unsubscribe": SuppressionKind.UNSUBSCRIBE,
        "unsubscribe link": SuppressionKind.UNSUBSCRIBE,
        "manually added": SuppressionKind.UNSUBSCRIBE,
    }

    def __init__(self, transport: SparkPostTransport) -> None:
        self.transport = transport

    def fetch(self, since: datetime | None = None) -> Iterator[Suppression]:
        api = urlsplit(self.transport.api_url)
        params: dict[str, str | int] | None = {"cursor": "initial", "per_page": self.page}
        if since is not None:
            params = {**(params or {}), "from": since.astimezone(UTC).strftime(_SEARCH_TIME)}
        path: str | None = "/suppression-list"
        seen: set[str] = set()
        while path is not None:
            data = self.transport.get(path, params=params).json()
            entries = data.get("results") if isinstance(data, dict) else None
            if not isinstance(entries, list):
                raise UncertainDeliveryError("sparkpost: the suppression list has no 'results'")
            for entry in entries:
                found = self._suppression(entry)
                if found is not None:
                    yield found
            following = _next_link(data, api) if entries else None
            if following is None or following in seen:
                return
            seen.add(following)
            path, params = following, None

    def _suppression(self, entry: object) -> Suppression | None:
        if not isinstance(entry, dict) or not isinstance(entry.get("recipient"), str):
            return None
        source = str(entry.get("source") or "")
        kind = self.kinds.get(source.lower(), SuppressionKind.UNSUBSCRIBE)
        reason = ": ".join(x for x in (source, str(entry.get("description") or "")) if x)
        return Suppression(entry["recipient"], kind, _timestamp(entry.get("updated")), reason)


def _next_link(data: dict[str, Any], api: SplitResult) -> str | None:
    """The `rel: next` link as a full URL on the API's own host (the key goes with it)."""
    links = data.get("links")
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict) or link.get("rel") != "next":
            continue
        href = str(link.get("href") or "")
        parts = urlsplit(href)
        if not parts.scheme:
            return f"{api.scheme}://{api.netloc}{href if href.startswith('/') else '/' + href}"
        if (parts.scheme, parts.netloc) != (api.scheme, api.netloc):
            raise TransportUnavailableError(
                f"sparkpost: a suppression list page points to another host ({parts.netloc!r}); "
                "not following it with the API key"
            )
        return href
    return None


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _address(email: str, name: str) -> dict[str, str]:
    return {"email": email, "name": name} if name else {"email": email}


def _header(envelope: Envelope, number: int, name: str) -> str:
    found_name, value = envelope.headers[number]
    if found_name != name:  # one template gives every recipient the same header names
        raise ValueError(f"sparkpost: header {number} is {found_name!r}, expected {name!r}")
    return value


def _rejected_by_address(items: Sequence[BatchItem], errors: list[Any]) -> dict[str, str]:
    """Item key → error text, for rcpt_to_errors that name exactly one item's address."""
    named: dict[str, str] = {}
    for error in errors:
        if not isinstance(error, dict):
            continue
        text = " ".join(str(error.get(key) or "") for key in ("message", "description")).strip()
        matches = [item for item in items if _mentions(text, item.message.recipient)]
        if len(matches) == 1:
            named[matches[0].key] = f"{text} (code {error.get('code')})"
    return named


def _mentions(text: str, address: str) -> bool:
    """`address` appears in `text` as a whole address (not inside a longer one)."""
    pattern = r"(?<![\w.+-])" + re.escape(address) + r"(?![\w.-])"
    return re.search(pattern, text, re.IGNORECASE) is not None


def _error_codes(response: ProviderResponse) -> list[str]:
    try:
        data = response.json()
    except UncertainDeliveryError:
        return []
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return []
    return [str(error.get("code")) for error in errors if isinstance(error, dict)]
