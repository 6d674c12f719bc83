"""The preview's web app: the page, the email frame, images, state and Server-Sent Events.

The page itself (HTML, CSS, JavaScript) is package data beside this module: `page.html` with
`page.css` and `page.js` inlined into it once, at import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import html as html_lib
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .hub import Hub, State
from .model import EventCallback, PreviewBuild, PreviewSample, Rebuild
from .texts import page_language, page_texts
from .watch import DEFAULT_DEBOUNCE_MS

__all__ = ["LOCAL_HOSTS", "create_app", "make_app"]

# Host headers the preview answers: a web page elsewhere cannot reach it by DNS rebinding.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_KEEPALIVE_SECONDS = 15.0
_NO_STORE = {"Cache-Control": "no-store"}
# The email is the editor's own, but it carries sample subscriber data: no scripts, ever.
_EMAIL_CSP = (
    "default-src 'none'; img-src 'self' data: https: http:; style-src 'unsafe-inline' https:; "
    "font-src data: https:; script-src 'none'; base-uri 'none'; form-action 'none'"
)


def _resource(name: str) -> str:
    return resources.files(__name__.rpartition(".")[0]).joinpath(name).read_text("utf-8")


_PAGE = (
    _resource("page.html")
    .replace("__CSS__", _resource("page.css"))
    .replace("__JS__", _resource("page.js"))
)
_NO_EMAIL = _resource("no-email.html")


def create_app(
    rebuild: Rebuild,
    watch_paths: Sequence[Path],
    *,
    display_root: Path | None = None,
    on_event: EventCallback | None = None,
    debounce_ms: int = DEFAULT_DEBOUNCE_MS,
    allowed_hosts: Sequence[str] = LOCAL_HOSTS,
) -> Starlette:
    """The preview as a Starlette app; its lifespan builds once, then watches `watch_paths`.

    Requests naming another host than `allowed_hosts` (`"*"` allows any) are refused.
    """
    hub = Hub(
        rebuild, watch_paths, display_root=display_root, on_event=on_event, debounce_ms=debounce_ms
    )
    return make_app(hub, allowed_hosts=allowed_hosts)


def make_app(
    hub: Hub, *, allowed_hosts: Sequence[str], on_ready: Callable[[], None] | None = None
) -> Starlette:
    """The app serving `hub`; `on_ready` is called once the first build is done."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await hub.stop()

    async def page(request: Request) -> Response:
        state_json = json.dumps(_state_payload(hub)).replace("<", "\\u003c")
        title = hub.state.build.issue_name if hub.state.build else "newsletter"
        language = hub.state.build.language if hub.state.build else "en"
        body = _PAGE.replace("__LANG__", page_language(language))
        for key, text in page_texts(language).items():
            body = body.replace(f"__T_{key}__", html_lib.escape(text))
        body = body.replace("__TITLE__", html_lib.escape(title)).replace("__STATE__", state_json)
        return HTMLResponse(body, headers=_NO_STORE)

    async def email(request: Request) -> Response:
        build = hub.state.build
        if build is None:
            return HTMLResponse(_NO_EMAIL, status_code=503, headers=_email_headers())
        sample = _sample(build, request)
        if sample is None:
            return Response("no such sample", status_code=404, media_type="text/plain")
        if request.path_params["part"] == "txt":
            return Response(
                sample.text, media_type="text/plain; charset=utf-8", headers=_email_headers()
            )
        return HTMLResponse(_links_open_outside(sample.html), headers=_email_headers())

    async def image(request: Request) -> Response:
        build = hub.state.build
        found = build.image(request.path_params["filename"]) if build else None
        if found is None:
            return Response("no such image", status_code=404, media_type="text/plain")
        # Images rarely change between rebuilds: let the browser revalidate instead of refetch.
        etag = f'"{hashlib.sha256(found.data).hexdigest()[:20]}"'
        cache = "max-age=31536000, immutable" if found.immutable else "no-cache"
        headers = {"Cache-Control": cache, "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(found.data, media_type=found.content_type, headers=headers)

    async def state(request: Request) -> Response:
        return JSONResponse(_state_payload(hub), headers=_NO_STORE)

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            yield "retry: 1000\n\n"
            seen = -1
            while not hub.closing:
                current = hub.state
                if current.version != seen:
                    seen = current.version
                    yield f"data: {json.dumps(_state_payload(hub, current))}\n\n"
                    continue
                await hub.wait_for_change(seen, _KEEPALIVE_SECONDS)
                if hub.state.version == seen and not hub.closing:
                    yield ": keep-alive\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={**_NO_STORE, "X-Accel-Buffering": "no"},
        )

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/email.{part:str}", email),
            Route("/images/{filename:str}", image),
            Route("/state.json", state),
            Route("/events", events),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))],
        lifespan=lifespan,
    )
    app.state.preview = hub
    return app


def _email_headers() -> dict[str, str]:
    return {**_NO_STORE, "Content-Security-Policy": _EMAIL_CSP}


def _sample(build: PreviewBuild, request: Request) -> PreviewSample | None:
    if request.path_params["part"] not in ("html", "txt"):
        return None
    try:
        index = int(request.query_params.get("sample", "0"))
    except ValueError:
        return None
    return build.samples[index] if 0 <= index < len(build.samples) else None


_HEAD = re.compile(r"<head\b[^>]*>", re.I)


def _links_open_outside(html: str) -> str:
    """Links in the previewed email open in a new tab instead of replacing the email frame."""
    base = '<base target="_blank">'
    match = _HEAD.search(html)
    if match is None:
        return base + html
    return html[: match.end()] + base + html[match.end() :]


def _state_payload(hub: Hub, state: State | None = None) -> dict[str, Any]:
    state = state or hub.state
    build = state.build
    failure = state.failure
    return {
        "instance": hub.instance,
        "version": state.version,
        "build": state.build_number,
        "building": state.building,
        "issue": build.issue_name if build else None,
        "sender": {"name": build.sender_name, "address": build.sender_address} if build else None,
        "preheader": build.preheader if build else "",
        "samples": [
            {
                "label": sample.label,
                "subject": sample.subject,
                "email": sample.subscriber.get("email", ""),
            }
            for sample in (build.samples if build else ())
        ],
        "notes": list(build.notes) if build else [],
        "failure": dataclasses.asdict(failure) if failure else None,
        "builtAt": round(state.built_at * 1000) if state.built_at else None,
        "seconds": state.seconds,
        "ui": dict(page_texts(build.language if build else "en")),
    }
