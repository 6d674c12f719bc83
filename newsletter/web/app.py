"""`newsletter serve`: the one-click unsubscribe endpoint (RFC 8058), its pages, and the archive.

Routes (under `[serve] root_path` when a proxy strips a prefix):

- the path of `[unsubscribe] url` (`/unsubscribe` without one), with `?token=...`:
  - `POST` with `List-Unsubscribe=One-Click` (form-urlencoded or multipart, as RFC 8058 allows):
    unsubscribes at once and answers 200. No cookie, no login, no script, no redirect.
  - `GET`: a page that asks for one press of a button (link scanners fetch URLs; a GET never
    changes anything), or offers to subscribe again when the address is unsubscribed.
  - `POST` from that page's form: `action=unsubscribe`; or, to subscribe again, two deliberate
    steps: `action=resubscribe` shows a confirmation page (nothing changes), whose button posts
    `action=resubscribe-confirm` with a signed `step` valid for an hour. Both need the request to
    come from this site (Origin, else Referer, equal to the page's own origin: a form on another
    site cannot subscribe anyone), and neither ever subscribes a `complained` or `bounced`
    address again: they are told to write to the editors. A full double opt-in (a confirmation
    mail) comes with the public subscribe form.
  A forged, cut or altered token gets a 400 page that names neither the list nor an address.
- `/c/<issue>/<n>` with `[links] count_clicks`: counts a click and redirects (web/clicks.py).
- `/healthz`: `200 ok` (text/plain) when the subscriber store answers a read, `503` when it does
  not; for a container's or a load balancer's health check. No token, address or version in it,
  and not reported as an event.
- the archive of what was sent (`web/archive.py`): `/`, `/feed.xml`, `/<issue>/web.html` and
  the issues' hosted images, from the store; nothing from `dist/`.

Every change is written to the subscriber store at once (with its time and source) and reported
through `on_event`. Store calls run in worker threads; the store serialises them under its lock,
and SQLite's busy timeout covers other processes (a send, `inbox process`) writing meanwhile.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..archive import ArchiveStore
from ..audience import SubscriberStatus, SubscriberStore, make_token, verify_token
from ..audience.tokenbook import TokenBook, TokenLookupError
from ..config import Settings
from ..config_tables import DEFAULT_HOST, DEFAULT_PORT, ServeSettings, parse_serve_table
from ..delivery.mime import list_identifier
from ..delivery.transports import make_transport
from ..errors import AudienceError, NewsletterError
from ..signup_mail import TransportFactory
from ..tokens import ExpiredTokenError
from .archive import archive_routes
from .bodies import BodyTooLarge, drain, read_body
from .clicks import click_routes
from .pages import (
    BRAND_STYLE_PATH,
    FALLBACK_LANGUAGE,
    LOGO_PATH,
    Button,
    PageTexts,
    available_languages,
    brand_from_settings,
    content_security_policy,
    page_style,
    render_page,
    texts_for,
    texts_for_settings,
)
from .signup import SignupEvent, SignupSite

if TYPE_CHECKING:
    from ..scheduling import DueRun

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ServeError",
    "ServeSettings",
    "WebEvent",
    "create_app",
    "parse_serve_table",
    "unsubscribe_path",
]

MAX_FORM_BYTES = 16 * 1024  # an RFC 8058 body is 26 bytes; a page form a few more
STEP_SECONDS = 3600  # how long the "subscribe again?" confirmation page stays valid
_STEP_PURPOSE = "resubscribe-step"
# Not mailed and not to be mailed again from a web page: the editors decide.
_BLOCKED = (SubscriberStatus.COMPLAINED, SubscriberStatus.BOUNCED)

# Every response also gets the headers of `_SecurityHeaders` (CSP, no-referrer, nosniff, DENY).
_TOKEN_PAGE_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}

_HEALTH_HEADERS = {"Cache-Control": "no-store"}
# The logo's file types (`/_brand/logo.<ext>`, `/favicon.ico`).
_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
_FILE_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=300"}


class ServeError(NewsletterError):
    """The web app cannot start (port taken, no secret, bad settings)."""


# --- settings -----------------------------------------------------------------------------------


def unsubscribe_path(settings: Settings, root_path: str = "") -> str:
    """The path the unsubscribe URLs in messages arrive at, inside the app (minus `root_path`)."""
    path = urlsplit(settings.unsubscribe.url).path if settings.unsubscribe.url else ""
    path = path or "/unsubscribe"
    if root_path and (path == root_path or path.startswith(root_path.rstrip("/") + "/")):
        path = path[len(root_path.rstrip("/")) :] or "/"
    return path


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebEvent:
    """A request that asked to change a subscription, and what it did.

    `changed` is false for a repeated request (already so) or an unknown address (`old_status`
    None). `source` is what the store's history records: `web one-click` or `web page`.
    """

    at: float
    email: str
    action: str
    source: str
    old_status: str | None
    new_status: str | None
    changed: bool


# --- the app ------------------------------------------------------------------------------------


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """Fields of a form body: `application/x-www-form-urlencoded` or `multipart/form-data`
    (RFC 8058 allows both); anything unreadable gives no fields rather than an error."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
        parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        fields: dict[str, str] = {}
        if not parsed.is_multipart():
            return fields
        for part in parsed.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields.setdefault(name, payload.decode("utf-8", "replace").strip())
        return fields
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return {key: value.strip() for key, value in reversed(parse_qsl(text.strip()))}


class _Unsubscribe:
    """The unsubscribe endpoint's handlers, bound to one store and secret."""

    def __init__(
        self,
        settings: Settings,
        secret: bytes,
        store: Callable[[], SubscriberStore],
        on_event: Callable[[WebEvent], None] | None,
        clock: Callable[[], float],
        root_path: str = "",
    ) -> None:
        self.settings = settings
        self.root_path = root_path
        self.secret = secret
        self.store = store
        self.on_event = on_event
        self.clock = clock
        self._lock = threading.Lock()
        self.book = TokenBook(
            lambda: store().database,
            secret,
            list_identifier(settings),
            max_age_days=settings.unsubscribe.token_days,
            accept_legacy=settings.unsubscribe.legacy_tokens,
            clock=clock,
        )
        self.languages = available_languages()
        own = settings.locale.replace("-", "_").split("_")[0].lower()
        self.default_language = own if own in self.languages else FALLBACK_LANGUAGE
        # With a [signup] table, "subscribe again" is a sign-up: confirmed from the mailbox.
        self.signup: SignupSite | None = None

    def prefill(self) -> None:
        """Write the references of every subscriber's opaque token (at start, in a thread)."""
        try:
            self.book.fill()
        except Exception:  # a store closed at shutdown, or locked: a miss fills in later
            return

    def texts(self, request: Request) -> PageTexts:
        asked = request.query_params.get("lang", "")
        language = asked if asked in self.languages else self.default_language
        return texts_for_settings(self.settings, language, root_path=self.root_path)

    def language_links(self, request: Request, texts: PageTexts) -> list[tuple[str, str, str]]:
        links = []
        for code in self.languages:
            query = dict(request.query_params)
            query["lang"] = code
            links.append((code, texts_for(code).words["language_name"], "?" + urlencode(query)))
        return links

    def page(
        self,
        request: Request,
        texts: PageTexts,
        *,
        title: str,
        lead: str = "",
        note: str = "",
        button: Button | None = None,
        status: int = 200,
        name: str | None = None,
    ) -> HTMLResponse:
        query = {"token": request.query_params.get("token", "")}
        if "lang" in request.query_params:
            query["lang"] = texts.language
        body = render_page(
            texts,
            name=self.settings.name if name is None else name,
            title=title,
            lead=lead,
            note=note,
            button=button,
            # Relative: resolves against this very URL, whatever host or prefix a proxy adds.
            form_action="?" + urlencode(query),
            languages=self.language_links(request, texts) if button is not None else (),
        )
        return HTMLResponse(body, status_code=status, headers=_TOKEN_PAGE_HEADERS)

    def expired(self, request: Request, texts: PageTexts) -> HTMLResponse:
        # Genuine but too old ([unsubscribe] token_days): say how to unsubscribe anyway.
        return self.page(
            request,
            texts,
            title=texts.words["expired_title"],
            lead=texts.words["expired_lead"],
            status=410,
            name="",
        )

    def invalid(self, request: Request, texts: PageTexts) -> HTMLResponse:
        # Says nothing about the newsletter or any address: the token proves nothing.
        return self.page(
            request,
            texts,
            title=texts.words["invalid_title"],
            lead=texts.words["invalid_lead"],
            status=400,
            name="",
        )

    async def handle(self, request: Request) -> Response:
        texts = self.texts(request)
        try:
            address = await run_in_threadpool(
                self.book.recipient, request.query_params.get("token", "")
            )
        except TokenLookupError:
            if request.method == "POST":
                await drain(request, MAX_FORM_BYTES)
            return _busy()
        except AudienceError as err:
            if request.method == "POST":
                await drain(request, MAX_FORM_BYTES)
            if isinstance(err, ExpiredTokenError):
                return self.expired(request, texts)
            return self.invalid(request, texts)
        if address is None:  # a genuine token whose subscriber is no longer on the list
            if request.method == "POST":
                await drain(request, MAX_FORM_BYTES)
            return self.page(
                request,
                texts,
                title=texts.words["gone_title"],
                lead=texts.format("gone_unknown_lead", name=self.settings.name),
            )
        if request.method != "POST":
            found = await run_in_threadpool(self.store().get, address)
            return self.show(request, texts, address, None if found is None else found.status)
        try:
            body = await read_body(request, MAX_FORM_BYTES)
        except BodyTooLarge:
            return self.page(
                request, texts, title=texts.words["too_large_title"], status=413, name=""
            )
        fields = parse_form(request.headers.get("content-type", ""), body)
        one_click = fields.get("List-Unsubscribe", "").lower() == "one-click"
        action = fields.get("action", "unsubscribe")
        if one_click or action not in ("resubscribe", "resubscribe-confirm"):
            action = "unsubscribe"
        source = "web one-click" if one_click else "web page"
        if action != "unsubscribe":
            if not _same_origin(request):
                return self.page(request, texts, title=texts.words["cross_site_title"],
                                 lead=texts.words["cross_site_lead"], status=403)  # fmt: skip
            if action == "resubscribe" or not self.step_valid(fields.get("step", ""), address):
                found = await run_in_threadpool(self.store().get, address)
                status = None if found is None else str(found.status)
                return self.ask_resubscribe(
                    request, texts, address, status, expired=action != "resubscribe"
                )
            action = "resubscribe"
            if self.signup is not None:
                return await self.signup.resubscribe(address, texts.language)
        try:
            event = await run_in_threadpool(self.change, address, action, source)
        except AudienceError:
            return _busy()
        return self.result(request, texts, event)

    def step_for(self, address: str) -> str:
        """A signed, timed proof that the confirmation page was shown for `address`."""
        return make_token(self.secret, f"{int(self.clock())} {address}", purpose=_STEP_PURPOSE)

    def step_valid(self, step: str, address: str) -> bool:
        try:
            named = verify_token(self.secret, step, purpose=_STEP_PURPOSE)
        except AudienceError:
            return False
        issued, _, who = named.partition(" ")
        return (
            who == address and issued.isdigit() and 0 <= self.clock() - int(issued) <= STEP_SECONDS
        )

    def ask_resubscribe(
        self,
        request: Request,
        texts: PageTexts,
        address: str,
        status: str | None,
        *,
        expired: bool = False,
    ) -> HTMLResponse:
        """The confirmation page of the second step (or why there is nothing to confirm)."""
        if status != SubscriberStatus.UNSUBSCRIBED:
            return self.show(request, texts, address, status)
        name = self.settings.name
        return self.page(
            request,
            texts,
            title=texts.format("resubscribe_title", name=name, email=address),
            lead=texts.format("resubscribe_lead", name=name, email=address),
            note=texts.words["resubscribe_expired"] if expired else "",
            button=Button(
                "resubscribe-confirm",
                texts.words["resubscribe_confirm_button"],
                fields=(("step", self.step_for(address)),),
            ),
        )

    def blocked(self, request: Request, texts: PageTexts, address: str) -> HTMLResponse:
        """Complained or bounced: not mailed, and not to be subscribed again from here."""
        name = self.settings.name
        return self.page(
            request,
            texts,
            title=texts.format("blocked_title", name=name, email=address),
            lead=texts.format("blocked_lead", name=name, email=address),
        )

    def change(self, address: str, action: str, source: str) -> WebEvent:
        """Apply the request to the store; runs in a worker thread."""
        with self._lock:  # read and write as one step: a repeated request sees the first's result
            return self._change(address, action, source)

    def _change(self, address: str, action: str, source: str) -> WebEvent:
        store = self.store()
        wanted = (
            SubscriberStatus.SUBSCRIBED
            if action == "resubscribe"
            else SubscriberStatus.UNSUBSCRIBED
        )
        found = store.get(address)
        old = None if found is None else str(found.status)
        new = old
        changed = False
        if found is not None and old != wanted:
            if old in _BLOCKED or (action == "unsubscribe" and old != SubscriberStatus.SUBSCRIBED):
                # Bounced or complained already means "not mailed"; keep the sharper record,
                # and never mail them again on a web request.
                pass
            else:
                try:
                    updated = store.set_status(address, wanted, source=source)
                except AudienceError:
                    if store.get(address) is not None:
                        raise
                    updated = None  # removed meanwhile
                new = None if updated is None else str(updated.status)
                changed = updated is not None
        event = WebEvent(self.clock(), address, action, source, old, new, changed)
        if self.on_event is not None:
            self.on_event(event)
        return event

    def show(
        self, request: Request, texts: PageTexts, address: str, status: str | None
    ) -> HTMLResponse:
        name = self.settings.name
        if status is None:
            return self.gone(request, texts, address)
        if status in _BLOCKED:
            return self.blocked(request, texts, address)
        if status == SubscriberStatus.SUBSCRIBED:
            return self.page(
                request,
                texts,
                title=texts.format("confirm_title", name=name, email=address),
                lead=texts.format("confirm_lead", name=name, email=address),
                button=Button("unsubscribe", texts.words["confirm_button"]),
            )
        return self.page(
            request,
            texts,
            title=texts.words["already_title"],
            lead=texts.format("already_lead", name=name, email=address),
            note=texts.words["changed_mind"],
            button=Button("resubscribe", texts.words["resubscribe_button"], "secondary"),
        )

    def gone(self, request: Request, texts: PageTexts, address: str) -> HTMLResponse:
        name = self.settings.name
        return self.page(
            request,
            texts,
            title=texts.words["gone_title"],
            lead=texts.format("gone_lead", name=name, email=address),
        )

    def result(self, request: Request, texts: PageTexts, event: WebEvent) -> HTMLResponse:
        name = self.settings.name
        address = event.email
        if event.new_status is None:
            return self.gone(request, texts, address)
        if event.new_status in _BLOCKED:
            return self.blocked(request, texts, address)
        if event.new_status == SubscriberStatus.SUBSCRIBED:
            return self.page(
                request,
                texts,
                title=texts.words["resubscribed_title"],
                lead=texts.format("resubscribed_lead", name=name, email=address),
                note=texts.words["unsubscribe_again"],
                button=Button("unsubscribe", texts.words["confirm_button"], "secondary"),
            )
        return self.page(
            request,
            texts,
            title=texts.words["done_title" if event.changed else "already_title"],
            lead=texts.format(
                "done_lead" if event.changed else "already_lead", name=name, email=address
            ),
            note=texts.words["changed_mind"],
            button=Button("resubscribe", texts.words["resubscribe_button"], "secondary"),
        )


def _busy() -> Response:
    """The store stayed locked past its busy timeout: ask the mail provider (or the person) to
    try again rather than claim success."""
    return Response(
        "Busy, please try again.",
        status_code=503,
        headers={"Retry-After": "30", **_TOKEN_PAGE_HEADERS},
        media_type="text/plain",
    )


def _same_origin(request: Request) -> bool:
    """Whether the POST came from a page of this site: the browser's `Sec-Fetch-Site` says
    `same-origin`, else its Origin (else its Referer) is ours.

    Pages are sent with `Referrer-Policy: no-referrer`, under which browsers send `Origin: null`
    with a form POST; every current browser sends `Sec-Fetch-Site` (a header no page can set).
    A request with none of the three is refused."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.strip().lower() == "same-origin"
    own = f"{request.url.scheme}://{request.url.netloc}".lower()
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.strip().lower() == own
    referer = request.headers.get("referer")
    return referer is not None and (referer.strip().lower() + "/").startswith(own + "/")


def create_app(
    settings: Settings,
    *,
    secret: bytes,
    store: SubscriberStore | None = None,
    serve_settings: ServeSettings | None = None,
    on_event: Callable[[WebEvent], None] | None = None,
    on_ready: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.time,
    on_schedule: Callable[[DueRun], None] | None = None,
    signup_transport: TransportFactory | None = None,
    on_signup: Callable[[SignupEvent], None] | None = None,
) -> Starlette:
    """The ASGI app. Without `store`, the project's store is opened at startup and closed at
    shutdown. Raises ServeError when the pages have no words for the newsletter's language."""
    if not secret:
        raise ServeError("no signing secret: unsubscribe links cannot be checked")
    serve_settings = serve_settings or ServeSettings()
    root_path = serve_settings.root_path
    texts_for_settings(settings)  # fail at start (no words, a bad override file), not later
    brand = brand_from_settings(settings, root_path)
    brand_style = page_style(brand)
    holder: dict[str, SubscriberStore] = {}
    if store is not None:
        holder["store"] = store

    def current() -> SubscriberStore:
        return holder["store"]

    def readable() -> bool:
        store = holder.get("store")
        if store is None:  # not open yet, or closed at shutdown
            return False
        try:
            store.count(SubscriberStatus.SUBSCRIBED)  # an index-only count: cheap, but a real read
        except AudienceError:
            return False
        return True

    async def healthz(request: Request) -> Response:
        ok = await run_in_threadpool(readable)
        return Response(
            "ok\n" if ok else "unavailable\n",
            status_code=200 if ok else 503,
            media_type="text/plain",
            headers=_HEALTH_HEADERS,
        )

    async def style(request: Request) -> Response:
        return Response(brand_style, media_type="text/css", headers=_FILE_HEADERS)

    logos = _logo_files(settings)

    async def logo(request: Request) -> Response:
        found = logos.get(request.path_params["file"])
        if found is None:
            raise HTTPException(404)
        return FileResponse(found[0], media_type=found[1], headers=_FILE_HEADERS)

    async def favicon(request: Request) -> Response:
        # Browsers ask for it on every site: the logo, else an empty answer (not a 404 page).
        found = next(iter(logos.values()), None)
        if found is None:
            return Response(status_code=204, headers=_FILE_HEADERS)
        return FileResponse(found[0], media_type=found[1], headers=_FILE_HEADERS)

    unsubscribe = _Unsubscribe(settings, secret, current, on_event, clock, root_path)
    path = unsubscribe_path(settings, serve_settings.root_path)
    routes = [Route(path, unsubscribe.handle, methods=["GET", "POST"], name="unsubscribe")]
    # Before the archive's `/{issue}/{file}` (no issue name starts with "_").
    routes.append(Route(BRAND_STYLE_PATH, style, methods=["GET"]))
    routes.append(Route("/favicon.ico", favicon, methods=["GET"]))
    routes.append(Route(LOGO_PATH.rsplit("/", 1)[0] + "/{file}", logo, methods=["GET"]))
    # Before the archive's `/{issue}`, which would otherwise take it (so no issue is `healthz`).
    routes.append(Route("/healthz", healthz, methods=["GET"], name="healthz"))
    signup = None
    if settings.signup.enabled:
        signup = SignupSite(
            settings, secret=secret, store=current, unsubscribe_app_path=path, clock=clock,
            on_event=on_signup, transport_factory=signup_transport or make_transport,
        )  # fmt: skip
        routes += signup.routes()  # before the archive's `/{issue}`, which would take them
        unsubscribe.signup = signup
    if settings.count_clicks:
        routes += click_routes(lambda: current().database)
    # The archive's routes LAST: its `/{issue}` and `/{issue}/{file}` would take any path of one
    # or two segments. With `archive = false` only the hosted images of sent mail are served.
    routes += archive_routes(
        settings, lambda: ArchiveStore(current().database), pages=serve_settings.archive
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        opened = None
        if "store" not in holder:
            opened = await run_in_threadpool(SubscriberStore, settings.database())
            holder["store"] = opened
        runner = None
        if settings.schedule.in_serve:
            # The scheduler pulls in the send use case: only a server that sends loads it.
            from .scheduler import ScheduleRunner  # noqa: PLC0415

            runner = ScheduleRunner(settings, clock=clock, on_run=on_schedule)
            runner.start()
        # Index the tokens' references now, not in the first visitor's request (a million
        # subscribers take seconds); a miss later fills in whoever was added since.
        threading.Thread(target=unsubscribe.prefill, name="token-refs", daemon=True).start()
        if on_ready is not None:
            on_ready()
        try:
            async with signup.purging() if signup is not None else contextlib.nullcontext():
                yield
        finally:
            if runner is not None:
                await runner.stop()
            if opened is not None:
                opened.close()
                holder.pop("store", None)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        texts = texts_for_settings(settings, root_path=root_path)
        if status == 405:
            return Response(status_code=405, headers={"Allow": "GET, POST"})
        body = render_page(
            texts,
            name="",
            title=texts.words["not_found_title"],
            lead=texts.words["not_found_lead"],
        )
        return HTMLResponse(body, status_code=status, headers=_TOKEN_PAGE_HEADERS)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_found},
    )
    app.add_middleware(_SecurityHeaders, policy=content_security_policy(brand))
    return app


def _logo_files(settings: Settings) -> dict[str, tuple[Path, str]]:
    """The logo files the pages show, by the name they are served under (`logo.png`,
    `logo-dark.svg`): only files inside the project, of an image type."""
    files: dict[str, tuple[Path, str]] = {}
    root = settings.root.resolve()
    for stem, reference in (("logo", settings.logo), ("logo-dark", settings.logo_dark)):
        if not reference or reference.startswith("https://"):
            continue
        path = (settings.root / reference).resolve()
        media_type = _IMAGE_TYPES.get(path.suffix.lower())
        if media_type and path.is_relative_to(root) and path.is_file():
            files[f"{stem}{path.suffix.lower()}"] = (path, media_type)
    return files


class _SecurityHeaders:
    """Adds the strict headers to every response that does not set its own: the pages' CSP
    (no scripts, no frames, styles by hash or from this site), `Referrer-Policy: no-referrer`
    (the token in the URL never leaves in a Referer), `X-Content-Type-Options: nosniff` and
    `X-Frame-Options: DENY` (for browsers that predate frame-ancestors)."""

    def __init__(self, app: ASGIApp, policy: str) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", policy.encode("ascii")),
            (b"referrer-policy", b"no-referrer"),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in self.headers if n not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


# --- running it ---------------------------------------------------------------------------------
