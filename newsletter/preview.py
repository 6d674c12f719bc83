"""The live preview: a local web page showing an issue as a subscriber gets it, rebuilt on save.

The server knows nothing of Markdown or templates: it is given a `rebuild` callable returning a
`PreviewBuild` and the paths to watch. When a watched file changes it runs `rebuild` in a thread,
swaps the new build in whole (or keeps the last good one and shows the problems), and tells the
page over Server-Sent Events, which reloads the email frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import html as html_lib
import ipaddress
import json
import mimetypes
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from watchfiles import Change, DefaultFilter, awatch

from .errors import NewsletterError, Problem, ProblemsError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8025
# Host headers the preview answers: a web page elsewhere cannot reach it by DNS rebinding.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# watchfiles waits this long for more changes before reporting a batch (editors write in bursts).
DEFAULT_DEBOUNCE_MS = 50
_KEEPALIVE_SECONDS = 15.0
_NO_STORE = {"Cache-Control": "no-store"}
# The email is the editor's own, but it carries sample subscriber data: no scripts, ever.
_EMAIL_CSP = (
    "default-src 'none'; img-src 'self' data: https: http:; style-src 'unsafe-inline' https:; "
    "font-src data: https:; script-src 'none'; base-uri 'none'; form-action 'none'"
)

NO_NAME_SAMPLE: Mapping[str, str] = {
    "email": "reader@example.org",
    "name": "",
    "first_name": "",
    "last_name": "",
}
HOSTILE_SAMPLE: Mapping[str, str] = {
    "email": "soren@example.org",
    "name": 'Søren "Evil" <x@y> <script>alert(1)</script> Kierkegaard-Østergaard-Vandenberghe',
    "first_name": 'Søren "Evil" <x@y> <script>',
    "last_name": "Kierkegaard-Østergaard-Vandenberghe",
}


class PreviewError(NewsletterError):
    """The preview server cannot start (the port is taken, the address is not local...)."""


@dataclass(frozen=True)
class PreviewSample:
    """The email as one sample subscriber gets it: every slot already filled in."""

    label: str
    subscriber: Mapping[str, str]
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class PreviewImage:
    """An image the email shows, served at `/images/<filename>`."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class PreviewBuild:
    """Everything the preview page shows of one successful rebuild."""

    issue_name: str
    sender_name: str
    sender_address: str
    preheader: str
    samples: tuple[PreviewSample, ...]
    images: tuple[PreviewImage, ...] = ()
    notes: tuple[str, ...] = ()

    def image(self, filename: str) -> PreviewImage | None:
        return next((image for image in self.images if image.filename == filename), None)


@dataclass(frozen=True)
class PreviewFailure:
    """Why the last rebuild failed: a title and every problem as `file:line: message`."""

    title: str
    problems: tuple[str, ...]
    hint: str | None = None


@dataclass(frozen=True)
class PreviewEvent:
    """What the server reports to its caller after each rebuild (the CLI prints it)."""

    kind: Literal["built", "failed"]
    version: int
    seconds: float
    changed: tuple[Path, ...] = ()
    failure: PreviewFailure | None = None


@dataclass(frozen=True)
class _State:
    """What the page sees; replaced whole, never changed in place."""

    version: int = 0
    build_number: int = 0
    build: PreviewBuild | None = None
    failure: PreviewFailure | None = None
    building: bool = True
    built_at: float | None = None
    seconds: float | None = None


Rebuild = Callable[[], PreviewBuild]
EventCallback = Callable[[PreviewEvent], None]


# --- composing a rebuild from a project (the only part that knows about the renderer) ----------


def watch_paths_for(root: Path, issue_folder: Path) -> list[Path]:
    """What the preview of one issue watches: the issue, the theme overrides, config and images."""
    return [issue_folder, root / "templates", root / "newsletter.toml", root / "images"]


def make_rebuild(
    root: Path, issue_folder: Path, samples: Sequence[tuple[str, Mapping[str, str]]] | None = None
) -> Rebuild:
    """A rebuild callable for `issue_folder`: settings, content and render, read afresh each call.

    The renderer is imported here, when a project preview is composed, so the server part of this
    module never depends on it (tests drive the server with any callable).
    """
    from .build import SAMPLE_SUBSCRIBER, sample_filler
    from .checks import check_issue
    from .config import load_settings
    from .content import load_issue
    from .render import render_issue

    chosen = tuple(samples) if samples is not None else default_samples(SAMPLE_SUBSCRIBER)

    def rebuild() -> PreviewBuild:
        settings = load_settings(root)
        issue = load_issue(issue_folder)
        rendered = render_issue(issue, settings, preview=True)
        # The offline part of `newsletter check`, beside the email (links and the spam score
        # take seconds: `newsletter check` runs them).
        report = check_issue(issue, rendered, settings, offline=True, spamassassin=None)
        built_samples = []
        for label, subscriber in chosen:
            html = rendered.html.fill(sample_filler(rendered, settings, subscriber, html=True))
            for image in rendered.embedded_images:
                html = html.replace(f"cid:{image.cid}", f"/images/{image.filename}")
            if settings.base_url:
                # Published images are not online yet while previewing: serve them from here.
                html = html.replace(f"{settings.base_url}{rendered.name}/", "/images/")
            built_samples.append(
                PreviewSample(
                    label=label,
                    subscriber=dict(subscriber),
                    subject=rendered.subject.fill(
                        sample_filler(rendered, settings, subscriber, html=False)
                    ),
                    html=html,
                    text=rendered.text.fill(
                        sample_filler(rendered, settings, subscriber, html=False)
                    ),
                )
            )
        images = [
            PreviewImage(image.filename, image.content_type, image.data)
            for image in rendered.embedded_images
        ] + [
            PreviewImage(image.filename, _content_type(image.filename), image.data)
            for image in rendered.published_images
        ]
        notes = [
            f"{name} is a draft: marked here, left out when the issue is sent"
            for name in rendered.draft_items
        ] + [f"newsletter.toml: {warning}" for warning in settings.warnings]
        for finding in (*report.errors, *report.warnings):
            where = ""
            if finding.file is not None:
                shown = (
                    finding.file.relative_to(root)
                    if finding.file.is_relative_to(root)
                    else finding.file
                )
                where = f"{shown}:{finding.line}: " if finding.line else f"{shown}: "
            notes.append(f"check {finding.severity}: {where}{finding.message}")
        return PreviewBuild(
            issue_name=rendered.name,
            sender_name=settings.sender.display_name,
            sender_address=settings.sender.addr_spec,
            preheader=rendered.preheader,
            samples=tuple(built_samples),
            images=tuple(images),
            notes=tuple(notes),
        )

    return rebuild


def default_samples(built_in: Mapping[str, str]) -> tuple[tuple[str, Mapping[str, str]], ...]:
    """The sample subscribers offered: the built-in one, one without a name, a hostile one."""
    name = built_in.get("name") or built_in.get("email", "sample")
    return (
        (f"{name} (sample subscriber)", built_in),
        ("No name (defaults show)", NO_NAME_SAMPLE),
        ("Long hostile name", HOSTILE_SAMPLE),
    )


def _content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


# --- watching ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _WatchGroup:
    """Folders watched the same way; `wanted` filters a non-recursive group to given paths."""

    folders: tuple[Path, ...]
    recursive: bool
    wanted: frozenset[Path] = frozenset()

    def accepts(self, change: Change, path: str) -> bool:
        if self.recursive:
            return _DEFAULT_FILTER(change, path)
        changed = Path(path)
        return any(changed == want or changed in want.parents for want in self.wanted)


_DEFAULT_FILTER = DefaultFilter()


def _watch_groups(paths: Sequence[Path]) -> tuple[_WatchGroup, ...]:
    """Folders are watched recursively; files and missing folders through their nearest parent.

    Watching a file's folder (not the file) still sees editors that save by writing a new file
    and renaming it over the old one, and a missing `templates/` is noticed when it is created.
    """
    folders = sorted({path for path in paths if path.is_dir()})
    others = [path for path in paths if not path.is_dir()]
    groups = []
    if folders:
        groups.append(_WatchGroup(tuple(folders), recursive=True))
    if others:
        parents = sorted({_nearest_existing(path.parent) for path in others})
        groups.append(_WatchGroup(tuple(parents), recursive=False, wanted=frozenset(others)))
    return tuple(groups)


def _nearest_existing(path: Path) -> Path:
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


# --- the server's state and its background work --------------------------------------------------


def failure_from(error: BaseException, display_root: Path | None = None) -> PreviewFailure:
    """Every problem of a failed rebuild as `file:line: message`, paths relative to the project."""
    if isinstance(error, ProblemsError):
        title = error.message.splitlines()[0].rstrip(":")
        problems = tuple(str(_relative(problem, display_root)) for problem in error.problems)
        return PreviewFailure(title, problems, error.hint)
    if isinstance(error, NewsletterError):
        return PreviewFailure("The issue cannot be built", (error.message,), error.hint)
    return PreviewFailure(
        "Unexpected error while rebuilding",
        (f"{type(error).__name__}: {error}",),
        "This is a bug in newsletter or in a template; run 'newsletter build --debug' for details.",
    )


def _relative(problem: Problem, root: Path | None) -> Problem:
    if root is None or problem.file is None or not problem.file.is_relative_to(root):
        return problem
    return dataclasses.replace(problem, file=problem.file.relative_to(root))


class _Hub:
    """Owns the current state, the rebuild loop, the file watcher and the page notifications."""

    def __init__(
        self,
        rebuild: Rebuild,
        watch_paths: Sequence[Path],
        *,
        display_root: Path | None,
        on_event: EventCallback | None,
        debounce_ms: int,
    ) -> None:
        self._rebuild = rebuild
        self._watch_paths = [path.absolute() for path in watch_paths]
        self._display_root = display_root.absolute() if display_root else None
        self._on_event = on_event
        self._debounce_ms = debounce_ms
        self.instance = secrets.token_hex(4)
        self.state = _State()
        self.closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._dirty = asyncio.Event()
        self._stopping = asyncio.Event()
        self._round_stop = asyncio.Event()
        self._watching = asyncio.Event()
        self._force_polling = False
        self._pending: set[Path] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Watch, build once (a failure is shown, not raised), then rebuild on every change."""
        self._loop = asyncio.get_running_loop()
        # Watch first: an edit made during the first build then causes another build.
        watcher = asyncio.create_task(self._watch())
        self._tasks.append(watcher)
        watching = asyncio.create_task(self._watching.wait())
        await asyncio.wait([watcher, watching], return_when=asyncio.FIRST_COMPLETED)
        watching.cancel()
        await self._build_once(())
        self._tasks.append(asyncio.create_task(self._builder()))

    async def stop(self) -> None:
        self.close()
        self._stopping.set()
        self._round_stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def close(self) -> None:
        """End the event streams so the server can shut down (they would wait forever)."""
        self.closing = True
        self._publish(self.state)

    def close_threadsafe(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may stop between check and call
                self._loop.call_soon_threadsafe(self.close)

    def request_rebuild(self, changed: Sequence[Path] = ()) -> None:
        """Mark the build stale; the builder coalesces requests that arrive while it works."""
        self._pending.update(changed)
        self._dirty.set()
        if not self.state.building:
            self._publish(
                dataclasses.replace(self.state, version=self.state.version + 1, building=True)
            )

    async def wait_for_change(self, version: int, timeout: float) -> None:
        """Return when the state is newer than `version`, the hub closes, or `timeout` passes."""
        changed = self._changed
        if self.state.version != version or self.closing:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)

    def _publish(self, state: _State) -> None:
        self.state = state
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _builder(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            changed = tuple(sorted(self._pending))
            self._pending.clear()
            await self._build_once(changed)

    async def _build_once(self, changed: tuple[Path, ...]) -> None:
        started = time.perf_counter()
        try:
            build = await asyncio.to_thread(self._rebuild)
        except Exception as err:  # any failure is shown on the page; the server keeps running
            seconds = time.perf_counter() - started
            failure = failure_from(err, self._display_root)
            state = dataclasses.replace(
                self.state,
                version=self.state.version + 1,
                failure=failure,
                building=self._dirty.is_set(),
                seconds=seconds,
            )
            event = PreviewEvent("failed", state.version, seconds, changed, failure)
        else:
            seconds = time.perf_counter() - started
            state = _State(
                version=self.state.version + 1,
                build_number=self.state.build_number + 1,
                build=build,
                failure=None,
                building=self._dirty.is_set(),
                built_at=time.time(),
                seconds=seconds,
            )
            event = PreviewEvent("built", state.version, seconds, changed)
        self._publish(state)
        if self._on_event is not None:
            self._on_event(event)

    async def _watch(self) -> None:
        # Watchers are restarted whenever the set of existing paths changes (e.g. `templates/`
        # was created), so a new folder is then watched recursively.
        first = True
        while not self._stopping.is_set():
            groups = _watch_groups(self._watch_paths)
            if not first:
                # A change made while the watchers restarted would be missed: rebuild anyway.
                self.request_rebuild()
            first = False
            if not groups:
                self._watching.set()
                await self._stopping.wait()
                return
            self._round_stop = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                for group in groups:
                    tasks.create_task(self._watch_group(group, groups, self._round_stop))
                # Each watcher sets up its OS watches in its first step, before it first waits;
                # once they ran, no change is missed, so the server may say it is ready.
                await asyncio.sleep(0)
                self._watching.set()

    async def _watch_group(
        self, group: _WatchGroup, groups: tuple[_WatchGroup, ...], round_stop: asyncio.Event
    ) -> None:
        try:
            async for changes in awatch(
                *group.folders,
                watch_filter=group.accepts,
                recursive=group.recursive,
                step=self._debounce_ms,
                stop_event=round_stop,
                rust_timeout=1000,
                force_polling=self._force_polling or None,
            ):
                self.request_rebuild([Path(path) for _, path in changes])
                if _watch_groups(self._watch_paths) != groups:
                    round_stop.set()
        except OSError as err:
            if not isinstance(err, FileNotFoundError):
                # e.g. the system's limit of file watches is reached: polling still works.
                self._force_polling = True
            # (A watched folder may also have vanished between listing and watching.)
            await asyncio.sleep(0.2)
            round_stop.set()


# --- the web app ---------------------------------------------------------------------------------


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
    hub = _Hub(
        rebuild, watch_paths, display_root=display_root, on_event=on_event, debounce_ms=debounce_ms
    )
    return _app(hub, allowed_hosts=allowed_hosts)


def _app(
    hub: _Hub, *, allowed_hosts: Sequence[str], on_ready: Callable[[], None] | None = None
) -> Starlette:
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
        body = _PAGE.replace("__TITLE__", html_lib.escape(title)).replace("__STATE__", state_json)
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
        headers = {"Cache-Control": "no-cache", "ETag": etag}
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


def _state_payload(hub: _Hub, state: _State | None = None) -> dict[str, Any]:
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
    }


# --- running it ----------------------------------------------------------------------------------


class _Uvicorn(uvicorn.Server):
    """uvicorn, which also ends the event streams when Ctrl-C asks it to stop."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._on_exit()


class PreviewServer:
    """The preview served on `host:port` (127.0.0.1:8025 by default) until Ctrl-C or `stop()`.

    `port=0` takes a free port; `bind()` then sets `port`. `ready` is set once the first build
    is done and the files are watched.
    """

    def __init__(
        self,
        rebuild: Rebuild,
        watch_paths: Sequence[Path],
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        display_root: Path | None = None,
        on_event: EventCallback | None = None,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
    ) -> None:
        self.rebuild = rebuild
        self.watch_paths = list(watch_paths)
        self.host = host
        self.port = port
        self.display_root = display_root
        self.on_event = on_event
        self.debounce_ms = debounce_ms
        self.ready = threading.Event()
        self._socket: socket.socket | None = None
        self._server: _Uvicorn | None = None
        self._hub: _Hub | None = None

    def bind(self) -> None:
        """Take the port now, so a busy port is reported before anything else happens."""
        if self._socket is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP: asyncio switches Nagle off only on accepted sockets whose
        # protocol says TCP; with proto 0 every response waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError as err:
            sock.close()
            if err.errno == errno.EADDRINUSE:
                raise PreviewError(
                    f"port {self.port} on {self.host} is already in use",
                    hint="Another preview may be running. Stop it, or pick another port with "
                    f"--port {self.port + 1}.",
                ) from err
            raise PreviewError(
                f"cannot listen on {self.host}:{self.port}: {err.strerror or err}"
            ) from err
        self._socket = sock
        self.port = sock.getsockname()[1]

    def _allowed_hosts(self) -> Sequence[str]:
        try:
            local = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            local = self.host == "localhost"
        return LOCAL_HOSTS if local else ("*",)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def serve(self) -> None:
        """Serve until stopped; the first build runs before the first request is answered."""
        self.bind()
        assert self._socket is not None
        hub = _Hub(
            self.rebuild,
            self.watch_paths,
            display_root=self.display_root,
            on_event=self.on_event,
            debounce_ms=self.debounce_ms,
        )
        self._hub = hub
        config = uvicorn.Config(
            _app(hub, allowed_hosts=self._allowed_hosts(), on_ready=self.ready.set),
            log_level="warning",
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self._server = _Uvicorn(config, on_exit=hub.close_threadsafe)
        try:
            await self._server.serve(sockets=[self._socket])
        finally:
            self._socket.close()
            self._socket = None

    def run(self) -> None:
        """Serve in this thread until Ctrl-C (which ends it cleanly) or `stop()`."""
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.serve())

    def stop(self) -> None:
        """Ask a running server to shut down; safe from any thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._hub is not None:
            self._hub.close_threadsafe()


def serve_preview(
    root: Path,
    issue_folder: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    on_event: EventCallback | None = None,
) -> PreviewServer:
    """A bound (not yet running) preview of `issue_folder`; call `.run()` to serve it."""
    server = PreviewServer(
        make_rebuild(root, issue_folder),
        watch_paths_for(root, issue_folder),
        host=host,
        port=port,
        display_root=root,
        on_event=on_event,
    )
    server.bind()
    return server


_NO_EMAIL = """<!doctype html><meta charset="utf-8"><title>No preview yet</title>
<body style="font:16px/1.5 system-ui,sans-serif;color:#475467;display:grid;place-items:center;
min-height:90vh;margin:0;text-align:center;padding:24px">
<p><strong style="color:#1f2933">No email to show yet.</strong><br>
Fix the problems listed above; this page reloads by itself.</p></body>"""

_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Preview · __TITLE__</title>
<link rel="icon" href="data:,">
<style>
:root {
  --ink: #1f2933; --muted: #667085; --line: #e4e7ec; --bg: #eef1f4; --accent: #1b6b5a;
  --bad: #b42318; --bad-bg: #fef3f2;
  color: var(--ink); background: var(--bg); color-scheme: light;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif;
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
html, body { height: 100%; margin: 0; }
body { display: flex; flex-direction: column; }
.vh { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
  clip-path: inset(50%); white-space: nowrap; }
.bar { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px; padding: 10px 16px;
  background: #fff; border-bottom: 1px solid var(--line); }
.brand { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 12px; margin: 0 auto 0 0;
  font-size: 15px; font-weight: 600; }
#issue { color: var(--muted); font-weight: 500; }
.status { display: inline-flex; align-items: center; gap: 6px; font-size: 13px; font-weight: 400;
  color: var(--muted); }
.status::before { content: ""; width: 8px; height: 8px; border-radius: 50%; background: #12b76a; }
.status[data-state="building"]::before { background: #f79009; animation: pulse 1s infinite; }
.status[data-state="failed"]::before { background: var(--bad); }
.status[data-state="offline"]::before { background: #98a2b3; }
@keyframes pulse { 50% { opacity: .3; } }
fieldset.seg { display: inline-flex; margin: 0; padding: 3px; border: 0; border-radius: 8px;
  background: #f2f4f7; }
.seg label { position: relative; }
/* The radio covers its own label, invisible: the label text is what shows. */
.seg input { position: absolute; inset: 0; width: 100%; height: 100%; margin: 0; opacity: 0;
  cursor: pointer; }
.seg span { display: block; padding: 4px 12px; border-radius: 6px; color: var(--muted);
  user-select: none; }
.seg input:checked + span { background: #fff; color: var(--ink);
  box-shadow: 0 1px 2px rgba(16, 24, 40, .14); }
.seg input:focus-visible + span, select:focus-visible { outline: 2px solid var(--accent);
  outline-offset: 1px; }
.pick { display: inline-flex; align-items: center; gap: 8px; color: var(--muted); }
select { max-width: 280px; padding: 5px 8px; border: 1px solid var(--line); border-radius: 8px;
  background: #fff; color: var(--ink); font: inherit; }
.problems { padding: 12px 16px; background: var(--bad-bg); border-bottom: 1px solid #fecdca;
  color: #7a271a; }
.problems h2 { margin: 0 0 6px; font-size: 14px; color: var(--bad); }
.problems ul { margin: 0; padding-left: 20px; }
.problems code { font: 13px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  white-space: pre-wrap; overflow-wrap: anywhere; }
.problems p { margin: 6px 0 0; }
.notes { margin: 0; padding: 6px 16px; border-bottom: 1px solid var(--line); background: #fcfcfd;
  color: var(--muted); font-size: 13px; list-style: none; }
main { display: flex; flex: 1; justify-content: center; min-height: 0; overflow: auto;
  padding: 20px 16px 0; }
.device { display: flex; flex-direction: column; width: min(100%, 960px); min-width: 600px; }
.device[data-width="mobile"] { width: 375px; min-width: 375px; }
.inbox { display: flex; align-items: center; gap: 12px; padding: 10px 14px; background: #fff;
  border-radius: 12px 12px 0 0; box-shadow: 0 0 0 1px var(--line); }
.avatar { display: grid; flex: none; place-items: center; width: 36px; height: 36px;
  border-radius: 50%; background: var(--accent); color: #fff; font-weight: 600; }
.meta { min-width: 0; flex: 1; }
.from, .line, .subject, .pre { overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.from strong { font-weight: 600; }
.address { color: var(--muted); }
.subject { font-weight: 600; }
.pre { color: var(--muted); }
.device[data-width="desktop"] .line > span { display: inline; }
.device[data-width="mobile"] .subject, .device[data-width="mobile"] .pre { display: block; }
.device[data-width="mobile"] .sep { display: none; }
iframe { display: block; flex: 1; width: 100%; min-height: 320px; border: 0; background: #fff;
  box-shadow: 0 0 0 1px var(--line), 0 8px 24px rgba(16, 24, 40, .08); }
</style>
</head>
<body>
<header class="bar">
  <h1 class="brand">Preview <span id="issue"></span>
    <span id="status" class="status" role="status" aria-live="polite">Connecting…</span></h1>
  <fieldset class="seg">
    <legend class="vh">Width</legend>
    <label title="Desktop width: 600 px and more"><input type="radio" name="width"
      id="width-desktop" value="desktop"><span>Desktop</span></label>
    <label title="Mobile width: 375 px"><input type="radio" name="width" id="width-mobile"
      value="mobile"><span>Mobile</span></label>
  </fieldset>
  <fieldset class="seg">
    <legend class="vh">Part</legend>
    <label><input type="radio" name="part" id="part-html" value="html"><span>HTML</span></label>
    <label><input type="radio" name="part" id="part-text" value="text"><span>Plain
      text</span></label>
  </fieldset>
  <label class="pick" for="sample">Subscriber <select id="sample"></select></label>
</header>
<section id="problems" class="problems" role="alert" hidden>
  <h2 id="problems-title"></h2>
  <ul id="problems-list"></ul>
  <p id="problems-hint" hidden></p>
</section>
<ul id="notes" class="notes" aria-label="Notes" hidden></ul>
<main>
  <div id="device" class="device" data-width="desktop">
    <div class="inbox" role="group" aria-label="How the email shows in an inbox">
      <div id="avatar" class="avatar" aria-hidden="true"></div>
      <div class="meta">
        <div class="from"><span class="vh">From: </span><strong id="from-name"></strong>
          <span id="from-address" class="address"></span></div>
        <div class="line"><span class="vh">Subject: </span><span id="subject"
          class="subject"></span><span class="sep" aria-hidden="true"> — </span><span
          class="vh">Preheader: </span><span id="preheader" class="pre"></span></div>
      </div>
    </div>
    <iframe id="email" title="The email" sandbox="allow-same-origin allow-popups
      allow-popups-to-escape-sandbox"></iframe>
  </div>
</main>
<script id="initial-state" type="application/json">__STATE__</script>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const frame = $("email");
const params = new URLSearchParams(location.search);
const view = {
  width: params.get("width") === "mobile" ? "mobile" : "desktop",
  part: params.get("part") === "text" ? "text" : "html",
  sample: Math.max(0, parseInt(params.get("sample") || "0", 10) || 0),
};
let state = JSON.parse($("initial-state").textContent);
let online = false;
let restoreScroll = 0;
// Read by the tests and the benchmark: which build the frame shows, and when it loaded.
window.preview = { loads: 0, requestedBuild: 0, loadedBuild: 0, loadedAt: 0 };

function loadFrame(keepScroll) {
  restoreScroll = 0;
  if (keepScroll) {
    try { restoreScroll = frame.contentWindow.scrollY; } catch (err) { restoreScroll = 0; }
  }
  window.preview.requestedBuild = state.build;
  const ext = view.part === "text" ? "txt" : "html";
  frame.src = `/email.${ext}?sample=${view.sample}&build=${state.instance}-${state.build}`;
}

frame.addEventListener("load", () => {
  if (restoreScroll) {
    try { frame.contentWindow.scrollTo(0, restoreScroll); } catch (err) { /* not ours */ }
  }
  restoreScroll = 0;
  window.preview.loads += 1;
  window.preview.loadedBuild = window.preview.requestedBuild;
  window.preview.loadedAt = Date.now();
});

function setText(id, text) { $(id).textContent = text || ""; }

function renderSamples() {
  const select = $("sample");
  const labels = state.samples.map((s) => s.label);
  if (labels.length && view.sample >= labels.length) view.sample = 0;
  const current = Array.from(select.options).map((o) => o.textContent);
  if (labels.length && current.join("\n") !== labels.join("\n")) {
    select.replaceChildren(...labels.map((label, index) => new Option(label, String(index))));
  }
  select.value = String(view.sample);
  select.disabled = !labels.length;
}

function render() {
  $("device").dataset.width = view.width;
  $(`width-${view.width}`).checked = true;
  $(`part-${view.part}`).checked = true;
  renderSamples();
  setText("issue", state.issue || "");
  const sample = state.samples[view.sample];
  const sender = state.sender || { name: "", address: "" };
  setText("from-name", sender.name || sender.address);
  setText("from-address", sender.name ? `<${sender.address}>` : "");
  setText("avatar", (sender.name || sender.address || "?").trim().charAt(0).toUpperCase());
  setText("subject", sample ? sample.subject : "");
  setText("preheader", state.preheader);
  if (state.issue) document.title = `Preview · ${state.issue}`;

  const failure = state.failure;
  $("problems").hidden = !failure;
  if (failure) {
    const kept = state.build ? " (showing the last version that built)" : "";
    setText("problems-title", `${failure.title}${kept}`);
    $("problems-list").replaceChildren(...failure.problems.map((problem) => {
      const item = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = problem;
      item.append(code);
      return item;
    }));
    setText("problems-hint", failure.hint);
    $("problems-hint").hidden = !failure.hint;
  }
  $("notes").hidden = !state.notes.length;
  $("notes").replaceChildren(...state.notes.map((note) => {
    const item = document.createElement("li");
    item.textContent = note;
    return item;
  }));

  const status = $("status");
  if (!online) {
    status.dataset.state = "offline";
    status.textContent = "Reconnecting…";
  } else if (state.building) {
    status.dataset.state = "building";
    status.textContent = "Rebuilding…";
  } else if (failure) {
    status.dataset.state = "failed";
    status.textContent = "Build failed";
  } else {
    status.dataset.state = "live";
    const at = state.builtAt ? new Date(state.builtAt).toLocaleTimeString() : "";
    const took = state.seconds ? ` in ${Math.round(state.seconds * 1000)} ms` : "";
    status.textContent = `Live · built ${at}${took}`;
  }
}

function remember() {
  const query = new URLSearchParams({ width: view.width, part: view.part, sample: view.sample });
  history.replaceState(null, "", `?${query}`);
}

for (const input of document.querySelectorAll("input[name=width]")) {
  input.addEventListener("change", () => { view.width = input.value; remember(); render(); });
}
for (const input of document.querySelectorAll("input[name=part]")) {
  input.addEventListener("change", () => {
    view.part = input.value; remember(); render(); loadFrame(false);
  });
}
$("sample").addEventListener("change", (event) => {
  view.sample = Number(event.target.value); remember(); render(); loadFrame(true);
});

function connect() {
  const source = new EventSource("/events");
  source.onopen = () => { online = true; render(); };
  source.onerror = () => { online = false; render(); };  // EventSource reconnects by itself
  source.onmessage = (event) => {
    const next = JSON.parse(event.data);
    const changed = next.instance !== state.instance || next.build !== state.build;
    state = next;
    online = true;
    render();
    if (changed) loadFrame(true);
  };
}

render();
loadFrame(false);
connect();
</script>
</body>
</html>
"""
