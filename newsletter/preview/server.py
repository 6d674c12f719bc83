"""Serving the preview on a local port with uvicorn, until Ctrl-C or `stop()`."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import uvicorn

from ..errors import NewsletterError
from ..listening import PREVIEW_PORT, http_url, listen
from .app import LOCAL_HOSTS, make_app
from .hub import Hub
from .model import EventCallback, Rebuild
from .watch import DEFAULT_DEBOUNCE_MS

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "PreviewError", "PreviewServer", "serve_preview"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = PREVIEW_PORT


class PreviewError(NewsletterError):
    """The preview server cannot start (the port is taken, the address is not local...)."""


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
        self._hub: Hub | None = None

    def bind(self) -> None:
        """Take the port now, so a busy port is reported before anything else happens."""
        if self._socket is not None:
            return
        sock = listen(
            self.host,
            self.port,
            backlog=128,
            error=PreviewError,
            busy_hint="Another preview may be running. Stop it, or pick another port with "
            f"--port {self.port + 1}.",
        )
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
        return http_url(self.host, self.port)

    async def serve(self) -> None:
        """Serve until stopped; the first build runs before the first request is answered."""
        self.bind()
        assert self._socket is not None
        hub = Hub(
            self.rebuild,
            self.watch_paths,
            display_root=self.display_root,
            on_event=self.on_event,
            debounce_ms=self.debounce_ms,
        )
        self._hub = hub
        config = uvicorn.Config(
            make_app(hub, allowed_hosts=self._allowed_hosts(), on_ready=self.ready.set),
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
    rebuild: Rebuild,
    watch_paths: Sequence[Path],
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    display_root: Path | None = None,
    on_event: EventCallback | None = None,
) -> PreviewServer:
    """A bound (not yet running) preview; call `.run()` to serve it."""
    server = PreviewServer(
        rebuild, watch_paths, host=host, port=port, display_root=display_root, on_event=on_event
    )
    server.bind()
    return server
