"""The public sign-up of `newsletter serve` (double opt-in), when `[signup]` is in the config.

Routes (inside `[serve] root_path`):

- `GET /subscribe`: the form (email, optional name, the configured extra fields, the consent
  text with its version, a honeypot field hidden from people).
- `POST /subscribe`: from that form, from a form embedded on one of `[signup] allowed_origins`,
  or as JSON (`{"email": ..., "consent": true}`) from a script on such an origin. CORS headers
  go only to those origins (preflight `OPTIONS` answered for them, refused for others).
  The answer is the same, byte for byte, whatever the address's standing: new, waiting for
  confirmation, subscribed, unsubscribed, bounced, complained, or limited (no enumeration).
  The confirmation mail leaves after the answer, so its time tells nothing either.
- `GET /confirm?token=...`: one button (link scanners fetch every link in a mail, and a GET
  never changes anything); its `POST` subscribes the person and sends the welcome message.

Limits: a body over `MAX_BODY_BYTES` gets 413; a client (its address as uvicorn sees it, so
behind a proxy set `[serve] proxy_headers`) gets `per_client_per_hour` requests an hour in this
process; an address gets at most one confirmation mail an hour, counted in the store (so it holds
across workers and servers sharing a PostgreSQL store).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import jinja2
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..audience import SubscriberStore
from ..audience.addresses import check_name, normalise_address
from ..audience.consent import (
    ConfirmOutcome,
    ConsentStore,
    SignupOutcome,
    SignupRequest,
)
from ..audience.model import Subscriber
from ..config import Settings
from ..delivery.transports import make_transport
from ..errors import AudienceError, NewsletterError
from ..signup_mail import (
    SignupMail,
    TransportFactory,
    confirmation_mail,
    send_signup_mail,
    welcome_mail,
)
from ..signup_words import SignupWords, signup_words
from ..tokens import make_token, verify_token
from .bodies import BodyTooLarge, drain, read_body
from .pages import CSP, Button, render_page, texts_for

__all__ = [
    "CONFIRM_PURPOSE",
    "MAX_BODY_BYTES",
    "PURGE_EVERY",
    "SignupEvent",
    "SignupSite",
    "client_hash",
    "public_prefix",
]

MAX_BODY_BYTES = 8 * 1024  # a filled-in form is a few hundred bytes
PURGE_EVERY = 3600.0  # seconds between purges of expired requests while serving
CONFIRM_PURPOSE = "signup-confirm"
_DAY = 86400.0
_MAX_FIELD = 200  # characters of a name or an extra field
_log = logging.getLogger("newsletter.signup")

_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    # same-origin, as the unsubscribe pages: with no-referrer a browser sends `Origin: null` on
    # the form's POST; the token of /confirm still never leaves this site.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
# The confirmation page carries the token in its URL: keep it off other sites' logs.
_CONFIRM_HEADERS = {**_HEADERS, "X-Robots-Tag": "noindex"}

_FORM = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
).from_string(
    """<form method="post" action="{{ action }}">
{% if errors %}
<div class="error" role="alert">
{% for field, e in errors.items() %}<p id="error-{{ field }}">{{ e }}</p>{% endfor %}
</div>
{% endif %}
<label for="email">{{ w.email_label }}</label>
<input type="email" id="email" name="email" value="{{ values.get("email", "") }}" required
 autocomplete="email" maxlength="254"
{%- if "email" in errors %} aria-invalid="true" aria-describedby="error-email"{% endif %}>
<label for="name">{{ w.name_label }}</label>
<input type="text" id="name" name="name" value="{{ values.get("name", "") }}" autocomplete="name"
 maxlength="200"
{%- if "name" in errors %} aria-invalid="true" aria-describedby="error-name"{% endif %}>
{% for f in fields %}
<label for="f-{{ f.name }}">{{ f.label }}{% if not f.required %} {{ w.optional }}{% endif %}</label>
<input type="text" id="f-{{ f.name }}" name="{{ f.name }}" value="{{ values.get(f.name, '') }}"
 maxlength="200"{% if f.required %} required{% endif %}
{%- if f.name in errors %} aria-invalid="true" aria-describedby="error-{{ f.name }}"{% endif %}>
{% endfor %}
<div class="hp" aria-hidden="true"><label for="website">{{ w.honeypot_label }}</label>
<input type="text" id="website" name="website" tabindex="-1" autocomplete="off"></div>
<label class="check"><input type="checkbox" name="consent" value="{{ version }}" required
{% if values.get("consent") %} checked{% endif %}> <span>{{ consent }}</span></label>
<input type="hidden" name="lang" value="{{ language }}">
<button type="submit">{{ w.button }}</button>
</form>
"""
)


def public_prefix(settings: Settings, unsubscribe_app_path: str) -> str | None:
    """The public address of the app's root (no trailing slash), from `[unsubscribe] url`:
    where confirmation links point. Never from a request's Host header, which a client sets."""
    url = settings.unsubscribe.url
    if not url:
        return None
    parts = urlsplit(url)
    path = parts.path or "/"
    if not path.endswith(unsubscribe_app_path):
        return None
    return f"{parts.scheme}://{parts.netloc}{path[: len(path) - len(unsubscribe_app_path)]}"


def client_hash(key: bytes, client: str) -> str:
    """A keyed hash of a client address: the same client gives the same value, yet it cannot
    be turned back into the address without the key (a plain hash of an IPv4 address can)."""
    return hmac.new(key, client.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class SignupEvent:
    """A sign-up (`action` "signup"), a confirmation ("confirm") or a mail sent ("confirm" or
    "welcome" mail), and its outcome; for the serve command's output (no token in it)."""

    at: float
    email: str
    action: str
    outcome: str


class _ClientLimit:
    """At most `limit` requests per client per hour, in this process (a sliding window)."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit, self.clock = limit, clock
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        client = _client_key(client)
        now = self.clock()
        with self._lock:
            if len(self._seen) > 10000:  # forget idle clients so memory stays bounded
                for name in [c for c, q in self._seen.items() if not q or now - q[-1] > 3600]:
                    del self._seen[name]
            times = self._seen.setdefault(client, deque())
            while times and now - times[0] > 3600:
                times.popleft()
            if len(times) >= self.limit:
                return False
            times.append(now)
            return True


def _client_key(host: str) -> str:
    """The client as rate limits count it: an IPv4 address, or the /64 of an IPv6 one (one
    household or server gets a whole /64, and could otherwise take a new address per request)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class SignupSite:
    """The sign-up routes, bound to one project, secret and store."""

    def __init__(
        self,
        settings: Settings,
        *,
        secret: bytes,
        store: Callable[[], SubscriberStore],
        unsubscribe_app_path: str,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] = os.environ,
        transport_factory: TransportFactory = make_transport,
        on_event: Callable[[SignupEvent], None] | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.signup
        self.secret = secret
        self.store = store
        self.clock = clock
        self.environ = environ
        self.transport_factory = transport_factory
        self.on_event = on_event
        self.limit = _ClientLimit(self.config.per_client_per_hour, clock)
        prefix = public_prefix(settings, unsubscribe_app_path)
        if prefix is None:
            raise NewsletterError(
                "[signup] needs [unsubscribe] url: confirmation links point to the public "
                "address of `newsletter serve`, taken from that URL",
                hint='Set url = "https://news.example.org/unsubscribe" under [unsubscribe].',
            )
        self.prefix = prefix
        self.hash_key: bytes | None = None
        if self.config.store_client_address:
            key = environ.get(self.config.client_hash_env, "")
            if len(key) < 16:
                raise NewsletterError(
                    f"[signup] store_client_address is on, so the environment variable "
                    f"{self.config.client_hash_env} must hold a key of at least 16 characters "
                    "(client addresses are kept only as a keyed hash)"
                )
            self.hash_key = key.encode("utf-8")
        self.max_age = self.config.expire_days * _DAY
        texts_for(settings.locale)  # the pages' own words: fail at start, not at a request

    # --- plumbing -------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/subscribe", self.subscribe, methods=["GET", "POST", "OPTIONS"]),
            Route("/confirm", self.confirm, methods=["GET", "POST"]),
        ]

    @contextlib.asynccontextmanager
    async def purging(self) -> AsyncIterator[None]:
        """Purge expired requests now and every `PURGE_EVERY` seconds while serving."""

        async def loop() -> None:
            while True:
                try:
                    await run_in_threadpool(self.purge)
                except AudienceError as err:  # a locked store: try again next round
                    _log.warning("purging expired sign-ups failed: %s", err.message)
                await asyncio.sleep(PURGE_EVERY)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def purge(self) -> int:
        return ConsentStore(self.store()).purge(now=self.clock(), max_age=self.max_age)

    def words(self, asked: str) -> SignupWords:
        """The words of the asked language (the project's register when it is the project's
        language), else the project's."""
        own = self.settings.locale
        own_language = own.replace("-", "_").split("_")[0].lower()
        if asked and asked.isalpha() and asked.lower() != own_language:
            found = signup_words(asked.lower())
            if found.language == asked.lower():
                return found
        return signup_words(own)

    def _event(self, email: str, action: str, outcome: str) -> None:
        if self.on_event is not None:
            self.on_event(SignupEvent(self.clock(), email, action, outcome))

    def _cors(self, request: Request) -> dict[str, str]:
        origin = request.headers.get("origin", "").strip().rstrip("/").lower()
        if origin and origin in self.config.allowed_origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {"Vary": "Origin"}

    def _origin_kind(self, request: Request) -> str | None:
        """`form page` (this site, or no Origin), `embedded form` (an allowed origin), or None
        (another site: refused)."""
        origin = request.headers.get("origin")
        if origin is None or origin.strip() == "null":
            # No Origin (a script, an old browser) or a hidden one (a page with no-referrer):
            # such a post could come from anywhere, as any direct POST can. What stops abuse is
            # the double opt-in and the limits; this check only keeps other sites' pages out.
            return "form page"
        origin = origin.strip().rstrip("/").lower()
        own = f"{request.url.scheme}://{request.url.netloc}".lower()
        public = urlsplit(self.prefix)
        if origin in (own, f"{public.scheme}://{public.netloc}".lower()):
            return "form page"
        if origin in self.config.allowed_origins:
            return "embedded form"
        return None

    # --- pages ----------------------------------------------------------------------------------

    def consent_text(self, words: SignupWords) -> str:
        return self.config.consent_text or words.sub("consent_default", name=self.settings.name)

    def form_page(
        self,
        words: SignupWords,
        *,
        values: Mapping[str, str] | None = None,
        errors: Mapping[str, str] | None = None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        name = self.settings.name
        body = _FORM.render(
            action="subscribe?" + urlencode({"lang": words.language}),
            w=words.subscribe,
            values=dict(values or {}),
            errors=dict(errors or {}),
            fields=self.config.fields,
            version=self.config.consent_version,
            consent=self.consent_text(words),
            language=words.language,
        )
        page = render_page(
            texts_for(words.language),
            name=name,
            title=words.sub("fix_title") if errors else words.sub("title", name=name),
            lead=words.sub("lead"),
            body=body,
        )
        return HTMLResponse(page, status_code=status, headers={**_HEADERS, **(headers or {})})

    def message_page(
        self,
        words: SignupWords,
        title: str,
        lead: str = "",
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        page = render_page(texts_for(words.language), name=self.settings.name, title=title,
                           lead=lead)  # fmt: skip
        return HTMLResponse(page, status_code=status, headers={**_HEADERS, **(headers or {})})

    # --- /subscribe -----------------------------------------------------------------------------

    async def subscribe(self, request: Request) -> Response:
        cors = self._cors(request)
        if request.method == "OPTIONS":
            if "Access-Control-Allow-Origin" not in cors:
                return Response(status_code=403, headers={"Vary": "Origin"})
            return Response(
                status_code=204,
                headers={
                    **cors,
                    "Access-Control-Allow-Methods": "POST",
                    "Access-Control-Allow-Headers": "Content-Type",
                    "Access-Control-Max-Age": "600",
                },
            )
        words = self.words(request.query_params.get("lang", ""))
        if request.method == "GET":
            return self.form_page(words)
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        as_json = kind == "application/json"
        source = self._origin_kind(request)
        if source is None:
            # A page on a site not listed in allowed_origins: no CORS headers, no change.
            await drain(request, MAX_BODY_BYTES)
            return self._answer(as_json, words, 403, words.sub("fix_title"), {}, cors)
        if as_json:
            source = "embedded form"
        try:
            raw = await read_body(request, MAX_BODY_BYTES)
        except BodyTooLarge:
            return self._answer(as_json, words, 413, words.sub("too_large_title"), {}, cors)
        client = request.client.host if request.client else "unknown"
        if not self.limit.allow(client):
            return self._answer(
                as_json, words, 429, words.sub("too_many_title"), {}, {**cors, "Retry-After": "600"}
            )
        fields = _fields(request.headers.get("content-type", ""), raw)
        if fields.get("lang"):
            words = self.words(fields["lang"])
        values, errors = self._check(fields, words)
        if errors:
            if as_json:
                return JSONResponse({"ok": False, "errors": errors}, 400, headers=cors)
            return self.form_page(words, values=values, errors=errors, status=400, headers=cors)
        answer = self._sent(as_json, words, values["email"], cors)
        if fields.get("website"):
            return answer  # the honeypot: a bot filled in the field people never see
        request_ = SignupRequest(
            email=values["email"],
            source=source,
            consent_version=self.config.consent_version,
            name=values.get("name", ""),
            attributes={f.name: values[f.name] for f in self.config.fields if values.get(f.name)},
            client_hash=client_hash(self.hash_key, client) if self.hash_key else None,
        )
        try:
            answer.background = await self.begin(request_, words)
        except AudienceError as err:
            _log.warning("a sign-up could not be recorded: %s", err.message)
            return Response("Busy, please try again.", 503, media_type="text/plain",
                            headers={"Retry-After": "30", **cors})  # fmt: skip
        return answer

    async def resubscribe(self, email: str, language: str) -> Response:
        """The unsubscribe page's "subscribe again", confirmed there: a sign-up like the form's
        (issue 15, D9), so the person is back on the list only after the link in the mail.
        Bounced and complained addresses get the same answer and no mail."""
        words = self.words(language)
        request = SignupRequest(
            email=email, source="unsubscribe page", consent_version=self.config.consent_version
        )
        answer = self._sent(False, words, email, {})
        try:
            answer.background = await self.begin(request, words)
        except AudienceError as err:
            _log.warning("a sign-up could not be recorded: %s", err.message)
            return Response("Busy, please try again.", 503, media_type="text/plain",
                            headers={"Retry-After": "30"})  # fmt: skip
        return answer

    async def begin(self, request: SignupRequest, words: SignupWords) -> BackgroundTask | None:
        """Record a request to be on the list; the task that mails its confirmation link (to
        run after the answer is sent), or None when no mail is due. Any other page that lets
        someone subscribe (the unsubscribe page's "subscribe again") goes through here too, so
        nobody is on the list without confirming from their mailbox. Raises AudienceError."""
        result = await run_in_threadpool(
            ConsentStore(self.store()).request, request, now=self.clock()
        )
        self._event(result.email, "signup", result.outcome)
        if result.outcome != SignupOutcome.MAIL or result.nonce is None:
            return None
        return BackgroundTask(self._mail_link, result.email, result.nonce, words)

    def _check(
        self, fields: Mapping[str, str], words: SignupWords
    ) -> tuple[dict[str, str], dict[str, str]]:
        values = {
            "email": fields.get("email", "")[:320],
            "name": fields.get("name", "")[:_MAX_FIELD],
        }
        errors: dict[str, str] = {}
        try:
            values["email"] = normalise_address(values["email"])
        except AudienceError:
            errors["email"] = words.sub("invalid_email")
        try:
            values["name"] = check_name(values["name"])
        except AudienceError:
            errors["name"] = words.sub("invalid_name")
            values["name"] = " ".join(values["name"].split())
        for field in self.config.fields:
            value = " ".join(fields.get(field.name, "").split())[:_MAX_FIELD]
            values[field.name] = value
            if field.required and not value:
                errors[field.name] = words.sub("field_required", label=field.label)
        consent = fields.get("consent", "")
        if consent.lower() not in ("true", "on", "yes", "1", self.config.consent_version.lower()):
            errors["consent"] = words.sub("consent_required")
        else:
            values["consent"] = "on"
        return values, errors

    def _sent(
        self, as_json: bool, words: SignupWords, email: str, cors: Mapping[str, str]
    ) -> Response:
        title = words.sub("sent_title")
        lead = words.sub("sent_lead", email=email, name=self.settings.name,
                         days=self.config.expire_days)  # fmt: skip
        if as_json:
            return JSONResponse({"ok": True, "message": f"{title}. {lead}"}, headers=dict(cors))
        return self.message_page(words, title, lead, headers=cors)

    def _answer(
        self,
        as_json: bool,
        words: SignupWords,
        status: int,
        title: str,
        errors: Mapping[str, str],
        headers: Mapping[str, str],
    ) -> Response:
        if as_json:
            return JSONResponse({"ok": False, "message": title}, status, headers=dict(headers))
        return self.message_page(words, title, status=status, headers=headers)

    def _mail_link(self, email: str, nonce: str, words: SignupWords) -> None:
        """Send the confirmation mail (after the answer went out; runs in a worker thread)."""
        token = make_token(self.secret, nonce, purpose=CONFIRM_PURPOSE)
        link = f"{self.prefix}/confirm?" + urlencode({"token": token, "lang": words.language})
        mail = confirmation_mail(
            self.settings, words, email=email, link=link, days=self.config.expire_days
        )
        self._send(mail, Subscriber(email))

    def _send(self, mail: SignupMail, to: Subscriber) -> None:
        try:
            send_signup_mail(
                self.settings, mail, to, secret=self.secret, environ=self.environ,
                transport_factory=self.transport_factory,
            )  # fmt: skip
        except NewsletterError as err:
            # Nobody is waiting for this answer: the log is where the editor sees it.
            _log.warning("the %s mail to %s was not sent: %s", mail.kind, to.email, err.message)
            self._event(to.email, mail.kind, "not sent")
        else:
            self._event(to.email, mail.kind, "sent")

    # --- /confirm -------------------------------------------------------------------------------

    async def confirm(self, request: Request) -> Response:
        words = self.words(request.query_params.get("lang", ""))
        name = self.settings.name
        try:
            nonce = verify_token(
                self.secret, request.query_params.get("token", ""), purpose=CONFIRM_PURPOSE
            )
        except AudienceError:
            nonce = ""
        if request.method == "POST":
            await drain(request, MAX_BODY_BYTES)
        invalid = self.message_page(
            words, words.conf("invalid_title"), words.conf("invalid_lead"), status=400,
            headers=_CONFIRM_HEADERS,
        )  # fmt: skip
        if not nonce:
            return invalid
        if request.method == "GET":
            page = render_page(
                texts_for(words.language),
                name=name,
                title=words.conf("title", name=name),
                lead=words.conf("lead", name=name),
                button=_button(words.conf("button")),
                form_action="?" + urlencode(dict(request.query_params)),
            )
            return HTMLResponse(page, headers=_CONFIRM_HEADERS)
        try:
            done = await run_in_threadpool(
                ConsentStore(self.store()).confirm,
                nonce,
                now=self.clock(),
                max_age=self.max_age,
                source="web sign-up",
            )
        except AudienceError as err:
            _log.warning("a confirmation could not be recorded: %s", err.message)
            return Response("Busy, please try again.", 503, media_type="text/plain",
                            headers={"Retry-After": "30"})  # fmt: skip
        if done.outcome == ConfirmOutcome.INVALID:
            return invalid
        if done.outcome == ConfirmOutcome.BLOCKED:
            return self.message_page(words, words.conf("blocked_title"),
                                     words.conf("blocked_lead", name=name),
                                     headers=_CONFIRM_HEADERS)  # fmt: skip
        assert done.subscriber is not None
        self._event(done.subscriber.email, "confirm", done.outcome)
        answer = self.message_page(
            words, words.conf("done_title"), words.conf("done_lead", name=name),
            headers=_CONFIRM_HEADERS,
        )  # fmt: skip
        if done.outcome == ConfirmOutcome.CONFIRMED:
            try:
                welcome = welcome_mail(self.settings, words)
            except (OSError, UnicodeDecodeError) as err:
                # They are subscribed; a broken welcome file is the editor's to fix.
                _log.warning("the welcome message cannot be read: %s", err)
                welcome = None
            if welcome is not None:
                answer.background = BackgroundTask(self._send, welcome, done.subscriber)
        return answer


def _button(label: str) -> Button:
    return Button("confirm", label)


def _fields(content_type: str, raw: bytes) -> dict[str, str]:
    """The submitted fields of a form or JSON body (strings only); nothing from a bad body."""
    from .app import parse_form  # noqa: PLC0415 (app imports this module: no cycle at load)

    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        return parse_form(content_type, raw)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    found: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, bool):
            found[key] = "true" if value else ""
        elif isinstance(value, str):
            found[key] = value.strip()
    return found
