"""Serving the app of `app.py` with uvicorn: the listening socket, the header timeout, workers.

`serve()` returns a bound `WebServer` (a busy port is reported before anything else happens);
`.run()` serves until Ctrl-C or `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..audience import SubscriberStore
from ..config import Settings
from ..config_tables import ServeSettings
from ..listening import http_url, listen
from ..signup_mail import TransportFactory
from .app import ServeError, WebEvent, create_app
from .signup import SignupEvent

if TYPE_CHECKING:
    from ..scheduling import DueRun

HEADER_TIMEOUT = 10.0  # seconds a client has to send a request's line and headers


def _header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request line and headers are not all
    in within `seconds` (uvicorn has no such limit: a slowloris client trickling a header a
    byte at a time held a connection for ever; issue 15, D23)."""

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self._header_timer is None:
                    self._arm()  # a new request began on a kept-alive connection
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


class WebServer:
    """The app served by uvicorn on `host:port` until Ctrl-C or `stop()`.

    `port=0` takes a free port; `bind()` then sets `port`. `ready` is set once the store is open.
    A client gets `header_timeout` seconds to send a request's line and headers.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        secret: bytes,
        serve_settings: ServeSettings | None = None,
        store: SubscriberStore | None = None,
        on_event: Callable[[WebEvent], None] | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        clock: Callable[[], float] = time.time,
        on_schedule: Callable[[DueRun], None] | None = None,
        signup_transport: TransportFactory | None = None,
        on_signup: Callable[[SignupEvent], None] | None = None,
    ) -> None:
        self.header_timeout = header_timeout
        self.serve_settings = serve_settings or ServeSettings()
        self.host = self.serve_settings.host
        self.port = self.serve_settings.port
        self.ready = threading.Event()
        self.app = create_app(
            settings,
            secret=secret,
            store=store,
            serve_settings=self.serve_settings,
            on_event=on_event,
            on_ready=self.ready.set,
            clock=clock,
            on_schedule=on_schedule,
            signup_transport=signup_transport,
            on_signup=on_signup,
        )
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None

    def bind(self) -> None:
        """Take the port now, so a busy port is reported before anything else happens."""
        if self._socket is not None:
            return
        sock = listen(
            self.host,
            self.port,
            backlog=1024,
            error=ServeError,
            busy_hint=f"Stop the other server, or pick another port with --port {self.port + 1}.",
        )
        self._socket = sock
        self.port = sock.getsockname()[1]

    @property
    def url(self) -> str:
        return http_url(self.host, self.port, f"{self.serve_settings.root_path}/")

    async def serve(self) -> None:
        self.bind()
        assert self._socket is not None
        settings = self.serve_settings
        config = uvicorn.Config(
            self.app,
            proxy_headers=settings.proxy_headers,
            forwarded_allow_ips=list(settings.forwarded_allow_ips),
            root_path=settings.root_path,
            log_level="warning",
            log_config=None,
            # The access log would write every token into the log; changes go to on_event.
            access_log=False,
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=5,
            backlog=1024,
            http=_header_timeout_protocol(self.header_timeout),
            h11_max_incomplete_event_size=16 * 1024,  # request line + headers, bytes
        )
        self._server = uvicorn.Server(config)
        try:
            await self._server.serve(sockets=[self._socket])
        finally:
            self._socket.close()
            self._socket = None

    def run(self) -> None:
        """Serve in this thread until Ctrl-C (which ends it cleanly) or `stop()`."""
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.serve())

    def run_workers(self, count: int) -> int:
        """Serve from `count` processes sharing the listening socket (pre-fork), until Ctrl-C
        or SIGTERM, which each worker answers by finishing its requests. Each worker opens its
        own connection to the store at its start, so every unsubscribe is one transaction of
        one process. Returns the exit status (non-zero if a worker died on its own)."""
        self.bind()
        children: list[int] = []
        for _ in range(count):
            pid = os.fork()
            if pid == 0:  # the worker: serve, then leave without running the parent's cleanup
                code = 0
                try:
                    self.run()
                except BaseException:
                    code = 1
                os._exit(code)
            children.append(pid)
        if self._socket is not None:
            self._socket.close()  # the workers hold it
            self._socket = None
        status = 0
        stopping = False

        def forward(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGTERM)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while children:
                try:
                    pid, code = os.wait()
                except ChildProcessError:
                    break
                if pid in children:
                    children.remove(pid)
                    # uvicorn ends by raising the signal it was stopped with again.
                    asked = stopping and os.WIFSIGNALED(code)
                    if code != 0 and not asked and status == 0:
                        status = 1
                        forward(signal.SIGTERM, None)  # one failed: stop them all
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return status

    def stop(self) -> None:
        """Ask a running server to shut down; safe from any thread."""
        if self._server is not None:
            self._server.should_exit = True


def serve(
    settings: Settings,
    *,
    secret: bytes | None,
    serve_settings: ServeSettings | None = None,
    on_event: Callable[[WebEvent], None] | None = None,
    on_schedule: Callable[[DueRun], None] | None = None,
    on_signup: Callable[[SignupEvent], None] | None = None,
) -> WebServer:
    """A bound (not yet running) server for the project; call `.run()` to serve."""
    if not secret:
        raise ServeError(
            f"no signing secret: set the environment variable {settings.unsubscribe.secret_env} "
            "(the same secret the messages were signed with), or put it in .newsletter-secret"
        )
    server = WebServer(
        settings,
        secret=secret,
        serve_settings=serve_settings,
        on_event=on_event,
        on_schedule=on_schedule,
        on_signup=on_signup,
    )
    server.bind()
    return server
