"""A real HTTP server on 127.0.0.1 for link-check tests, in a background thread.

Routes (any other path is 404):
- `/good`: 200 text/html; `/missing`: 404; `/error`: 500
- `/chain/N`: redirects to `/chain/N-1` ... `/chain/0` answers 200 (so `/chain/3` is 3 hops)
- `/elsewhere`: redirects to `http://localhost:<port>/good`, another host name than 127.0.0.1
- `/loop`: redirects to itself
- `/slow?seconds=S`: answers 200 after S seconds (default 1)
- `/hang`: never answers (until the server stops)
- `/head-not-allowed`: HEAD gives 405, GET gives 200
- `/image.png?kb=K`: a PNG-typed body of K KB (default 1); `/page-as-image`: text/html

Every request is recorded (method, path, host), and the highest number of requests in progress
at once is kept per host name, to test concurrency limits. With `tls=True` the server speaks
HTTPS with a certificate from a throwaway CA (trustme) that clients do not trust unless given
`ca_file`.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import trustme


@dataclass
class Recorded:
    method: str
    path: str
    host: str


@dataclass
class LinkServer:
    """What a test needs of the running server."""

    port: int
    scheme: str = "http"
    requests: list[Recorded] = field(default_factory=list)
    max_in_flight: Counter[str] = field(default_factory=Counter)
    ca_file: Path | None = None
    _in_flight: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def paths(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    def _enter(self, record: Recorded) -> None:
        with self._lock:
            self.requests.append(record)
            self._in_flight[record.host] += 1
            self.max_in_flight[record.host] = max(
                self.max_in_flight[record.host], self._in_flight[record.host]
            )

    def _leave(self, host: str) -> None:
        with self._lock:
            self._in_flight[host] -= 1


def _handler(server: LinkServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            return

        def do_HEAD(self) -> None:
            self._serve("HEAD")

        def do_GET(self) -> None:
            self._serve("GET")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            server._enter(Recorded(method, parts.path, host))
            try:
                self._route(method, parts.path, query)
            finally:
                server._leave(host)

        def _route(self, method: str, path: str, query: dict[str, list[str]]) -> None:
            if path == "/good":
                self._answer(method, 200, b"<p>good</p>")
            elif path == "/missing":
                self._answer(method, 404, b"not found")
            elif path == "/error":
                self._answer(method, 500, b"broken")
            elif path.startswith("/chain/"):
                hops = int(path.rsplit("/", 1)[1])
                if hops <= 0:
                    self._answer(method, 200, b"end of chain")
                else:
                    self._redirect(f"/chain/{hops - 1}")
            elif path == "/elsewhere":
                self._redirect(server.url("/good", host="localhost"))
            elif path == "/loop":
                self._redirect("/loop")
            elif path == "/slow":
                seconds = float(query.get("seconds", ["1"])[0])
                server._stopping.wait(seconds)
                self._answer(method, 200, b"slow but fine")
            elif path == "/hang":
                server._stopping.wait()  # never answers while the server runs
                self.close_connection = True
            elif path == "/head-not-allowed":
                if method == "HEAD":
                    self._answer(method, 405, b"")
                else:
                    self._answer(method, 200, b"GET works")
            elif path == "/image.png":
                size = int(float(query.get("kb", ["1"])[0]) * 1024)
                self._answer(method, 200, b"\x89PNG" + b"\0" * (size - 4), "image/png")
            elif path == "/page-as-image":
                self._answer(method, 200, b"<p>not an image</p>")
            else:
                self._answer(method, 404, b"no such route")

        def _answer(
            self, method: str, status: int, body: bytes, content_type: str = "text/html"
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

        def _redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextmanager
def serve_links(*, tls: bool = False, folder: Path | None = None) -> Iterator[LinkServer]:
    """Run the link server on 127.0.0.1 (an ephemeral port) for the `with` block."""
    state = LinkServer(port=0, scheme="https" if tls else "http")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    if tls:
        authority = trustme.CA()
        certificate = authority.issue_cert("127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        if folder is not None:
            state.ca_file = folder / "link-server-ca.pem"
            authority.cert_pem.write_to_path(str(state.ca_file))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        state._stopping.set()  # lets /hang and /slow handlers finish
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline and any(state._in_flight.values()):
            time.sleep(0.01)
