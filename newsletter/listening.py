"""The listening socket of a local web server (`serve`, `preview`), taken before it starts.

Binding first means a busy port is reported before anything else happens, and port 0 (a free
port, in tests) is known before the first request.
"""

from __future__ import annotations

import errno
import socket

from .errors import NewsletterError

__all__ = ["PREVIEW_PORT", "http_url", "listen"]

# The preview's port on 127.0.0.1; here, not in preview/, so that the CLI can show it as the
# default of `--port` without importing the preview server (Starlette, uvicorn).
PREVIEW_PORT = 8025


def listen(
    host: str, port: int, *, backlog: int, error: type[NewsletterError], busy_hint: str
) -> socket.socket:
    """A TCP socket bound to (host, port) and listening; `error` (with `busy_hint` when the port
    is taken) if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio switches Nagle off only on accepted sockets whose
    # proto says TCP. With proto 0 every response waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise error(f"port {port} on {host} is already in use", hint=busy_hint) from err
        raise error(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    return sock


def http_url(host: str, port: int, path: str = "/") -> str:
    """`http://host:port/path`, with an IPv6 host in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}"
