"""A real HTTP server on 127.0.0.1 that plays a mail provider, for the provider transport tests.

A provider test gives `ProviderFake` a handler: it gets every request as a `FakeRequest`
(method, path, query, headers, raw body, `json()`, `form()`), checks it (path, auth header, body
against the provider's own spec schema, batch limits) and answers with a `FakeResponse`. Checks
that fail are recorded in `fake.problems` (and answered 400), so a test asserts
`fake.problems == []` at the end. Faults are queued per test with `fake.fail_next(...)`:

    fake.fail_next(FakeResponse.json({"message": "slow down"}, status=429,
                                     headers={"Retry-After": "7"}))
    fake.fail_next(HANG)                  # no answer until the client gives up (its timeout)
    fake.fail_next(FakeResponse(200, b"{oops"))   # malformed JSON
    fake.fail_next(FakeResponse(200, b""))        # empty body
    fake.fail_next(DROP)                  # the request is read, the connection closed unanswered

`fake.accept(email, provider_id)` records a recipient the provider "sent" (thread-safe), so a
full-send test compares the ledger with `fake.accepted` (a Counter: sends per address).

Spec validation: `spec_validator(path, pointer, flavour)` loads a spec copied into tests/specs/
(OpenAPI 3.0 / 3.1, Swagger 2.0, JSON Schema 2020-12) and returns a function giving the error
messages for a body, `[]` when it is valid.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import socket
import ssl
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

SPECS = Path(__file__).resolve().parent / "specs"


@dataclass(frozen=True)
class FakeRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        """Form fields (urlencoded or multipart/form-data); repeated names give several values."""
        content_type = self.header("content-type") or ""
        if content_type.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + self.body
            )
            fields: dict[str, list[str]] = {}
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if part.get_filename() is not None:
                    value = f"<file {part.get_filename()}>"
                else:
                    payload = part.get_payload(decode=True)
                    value = payload.decode("utf-8") if isinstance(payload, bytes) else ""
                fields.setdefault(str(name), []).append(value)
            return fields
        return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)


@dataclass(frozen=True)
class FakeResponse:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls, data: object, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> FakeResponse:
        return cls(
            status,
            json.dumps(data).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )


class _Hang:
    """Answer nothing until the client gives up (or the fake stops)."""

    def __repr__(self) -> str:
        return "HANG"


class _Drop:
    """Read the request, then close the connection without a word."""

    def __repr__(self) -> str:
        return "DROP"


HANG = _Hang()
DROP = _Drop()
Handler = Callable[[FakeRequest], FakeResponse]
Fault = FakeResponse | _Hang | _Drop


class ProviderFake:
    """The server; use as a context manager. `handler` may be replaced at any time."""

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        hang_seconds: float = 5.0,
    ) -> None:
        self.handler: Handler = handler or (lambda request: FakeResponse(404))
        self.requests: list[FakeRequest] = []
        self.problems: list[str] = []
        self.accepted: Counter[str] = Counter()
        self.ids: dict[str, list[str]] = {}
        self.record_requests = True
        self.connections = 0  # connections accepted (keep-alive reuse shows as fewer)
        self.hang_seconds = hang_seconds
        self._faults: list[tuple[Fault, Callable[[FakeRequest], bool] | None]] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._ssl = ssl_context
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle --------------------------------------------------------------------------

    def __enter__(self) -> ProviderFake:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        fake = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real providers
            # Headers and body leave in one write (the buffer is flushed after each request),
            # and Nagle is off: otherwise the body waits for the client's delayed ACK of the
            # headers, ~40 ms an answer, which made one-request-per-recipient tests crawl.
            wbufsize = 1 << 20

            def setup(self) -> None:
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with fake._lock:
                    fake.connections += 1
                super().setup()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def do_PUT(self) -> None:
                self._handle()

            def do_DELETE(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if len(body) < length:  # the client went away mid-request (e.g. killed)
                    self.close_connection = True
                    return
                parts = urlsplit(self.path)
                request = FakeRequest(
                    self.command,
                    parts.path,
                    parse_qs(parts.query, keep_blank_values=True),
                    {name.lower(): value for name, value in self.headers.items()},
                    body,
                )
                answer = fake._answer(request)
                if isinstance(answer, _Hang):
                    fake._release.wait(fake.hang_seconds)
                    self.close_connection = True
                    return
                if isinstance(answer, _Drop):
                    self.close_connection = True
                    return
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    # The client gave up (timeout) or was killed: like a real provider, the
                    # request was processed all the same.
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                error = sys.exc_info()[1]
                if not isinstance(error, ConnectionError | ssl.SSLError | TimeoutError):
                    super().handle_error(request, client_address)

        server = Server(("127.0.0.1", 0), RequestHandler)
        if self._ssl is not None:
            server.socket = self._ssl.wrap_socket(server.socket, server_side=True)
        self._release.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the fake is not running"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl is not None else "http"
        host = "localhost" if self._ssl is not None else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}"

    # --- what tests use ----------------------------------------------------------------------

    def fail_next(
        self,
        fault: Fault,
        *,
        times: int = 1,
        when: Callable[[FakeRequest], bool] | None = None,
    ) -> None:
        """Answer the next `times` requests (matching `when`) with `fault`, not the handler."""
        with self._lock:
            self._faults.extend([(fault, when)] * times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def problem(self, message: str) -> FakeResponse:
        """Record a failed check and answer 400 with it."""
        with self._lock:
            self.problems.append(message)
        return FakeResponse.json({"message": f"fake: {message}"}, status=400)

    def accept(self, address: str, provider_id: str) -> None:
        with self._lock:
            key = address.lower()
            self.accepted[key] += 1
            self.ids.setdefault(key, []).append(provider_id)

    def accept_many(self, addresses: Sequence[str], provider_id: str) -> None:
        """`accept` of each of `addresses` (already lower-cased), all under one provider id, in
        one hold of the lock: a batch fake's bookkeeping per request, not per recipient."""
        with self._lock:
            self.accepted.update(addresses)
            ids = self.ids
            for key in addresses:
                ids.setdefault(key, []).append(provider_id)

    def posts(self, path: str | None = None) -> list[FakeRequest]:
        with self._lock:
            return [
                r for r in self.requests if r.method == "POST" and (path is None or r.path == path)
            ]

    def _answer(self, request: FakeRequest) -> Fault:
        with self._lock:
            if self.record_requests:
                self.requests.append(request)
            for index, (fault, when) in enumerate(self._faults):
                if when is None or when(request):
                    del self._faults[index]
                    return fault
        try:
            return self.handler(request)
        except Exception as err:  # a bug in a handler must show in the test, not hang it
            with self._lock:
                self.problems.append(f"handler raised {type(err).__name__}: {err}")
            return FakeResponse.json({"message": "fake handler error"}, status=500)


# --- spec validation ------------------------------------------------------------------------

Flavour = Literal["oas30", "oas31", "swagger2", "jsonschema"]


@cache
def _document(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yml", ".yaml"):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


def spec_validator(
    path: Path | str,
    pointer: str = "",
    flavour: Flavour = "jsonschema",
    *,
    patch: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Callable[[object], list[str]]:
    """A function returning the schema errors of a body (`[]` when valid).

    `path` is relative to tests/specs/ (or absolute); `pointer` is the JSON pointer of the
    request-body schema inside the document (see tests/specs/SOURCES.md); `patch` may wrap the
    referenced schema, e.g. to add a documented `maxItems` the spec lacks.
    """
    from jsonschema import Draft4Validator, Draft202012Validator
    from openapi_schema_validator import OAS30Validator, OAS31Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4, DRAFT202012

    file = Path(path) if Path(path).is_absolute() else SPECS / path
    document = _document(file)
    specification = DRAFT4 if flavour in ("oas30", "swagger2") else DRAFT202012
    registry: Registry[Any] = Registry().with_resource(
        "urn:spec", Resource.from_contents(document, default_specification=specification)
    )
    schema: dict[str, Any] = {"$ref": f"urn:spec#{pointer}"}
    if patch is not None:
        schema = patch(schema)
    classes = {
        "oas30": OAS30Validator,
        "oas31": OAS31Validator,
        "swagger2": Draft4Validator,
        "jsonschema": Draft202012Validator,
    }
    validator = classes[flavour](schema, registry=registry)

    def errors(body: object) -> list[str]:
        found = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        return [f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}" for e in found]

    return errors


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- a sending child process for crash tests --------------------------------------------------


def crash_command(kind: str, api_url: str, project: Path, database: Path, count: int) -> list[str]:
    """The command line of a child that sends the example issue to `count` people via `kind`.

    The child reads its keys from its environment, as `newsletter send` does; a test passes
    them in `env=` and kills the child with SIGKILL part-way.
    """

    return [
        sys.executable, "-m", "tests.providerfake",
        kind, api_url, str(project), str(database), str(count),
    ]  # fmt: skip


def crash_and_resume(
    fake: ProviderFake,
    kind: str,
    project: Path,
    database: Path,
    *,
    count: int,
    env: Mapping[str, str],
    kills: int = 3,
    seed: int = 20261126,
) -> None:
    """SIGKILL a sending child `kills` times mid-run, resume to the end, check exactly-once.

    Every subscriber ends `sent` or `uncertain` in the ledger; the provider accepted each `sent`
    one exactly once (with the id the ledger holds) and each `uncertain` one at most once.
    """
    import os
    import random
    import signal
    import subprocess
    import time

    from newsletter.delivery.ledger import Ledger, State
    from tests.sendkit import people

    repo = Path(__file__).resolve().parent.parent
    command = crash_command(kind, fake.url, project, database, count)
    child_env = {**os.environ, **env, "PYTHONPATH": str(repo)}
    rng = random.Random(seed)
    killed = 0
    for _ in range(kills):
        before = sum(fake.accepted.values())
        child = subprocess.Popen(command, cwd=repo, env=child_env)
        deadline = time.monotonic() + 60
        while sum(fake.accepted.values()) <= before and child.poll() is None:
            assert time.monotonic() < deadline, "the child made no progress"
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.3))
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            killed += 1
        child.wait()
    assert killed >= 1, "every child finished before it could be killed"
    subprocess.run(command, cwd=repo, env=child_env, check=True, timeout=120)

    with Ledger(database) as ledger:
        issue = ledger.issue("2026-11")
        counts = issue.counts()
        uncertain = {row.email for row in issue.uncertain()}
        replies = {row.email: row.reply for row in issue.rows(State.SENT)}
    everyone = {person.email for person in people(count)}
    assert counts.get(State.PENDING, 0) == 0 and counts.get(State.DEFERRED, 0) == 0
    assert set(replies) | uncertain == everyone, "nobody is lost"
    for address, reply in replies.items():
        assert fake.accepted[address] == 1, address
        assert fake.ids[address] == [reply], address
    for address in uncertain:
        assert fake.accepted[address] <= 1, address
    assert set(fake.accepted) <= everyone
    assert fake.problems == []


def _child(kind: str, api_url: str, project: str, database: str, count: str) -> None:
    import os

    from newsletter.config import TransportSettings
    from newsletter.delivery.ledger import Ledger
    from newsletter.delivery.ratelimit import Backoff
    from newsletter.delivery.sender import SendOptions, send_issue
    from newsletter.delivery.transports import provider_class
    from tests.sendkit import ListAudience, example_template, people

    settings = TransportSettings(kind=kind, api_url=api_url, timeout=10.0, connections=2)
    transport = provider_class(kind).from_settings(settings, os.environ)
    with Ledger(Path(database)) as ledger:
        send_issue(
            example_template(Path(project)),
            ListAudience(people(int(count))),
            transport=transport,
            ledger=ledger,
            backoff=Backoff(base=0.05, cap=0.1),
            options=SendOptions(concurrency=2),
        )


if __name__ == "__main__":
    _child(*sys.argv[1:6])
