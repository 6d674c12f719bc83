"""The shared HTTP base of the provider transports (`transports/_http.py`) on its own.

A minimal provider (`EchoTransport`: POST /send, one id a recipient) runs against real
loopback servers: `ProviderFake` for answers and faults, a TLS one with a trustme CA, and plain
sockets that never accept or never read, for the timeouts before a request is sent. What the
module promises (see its docstring): nothing sent → transient; sent but unanswered → uncertain;
429/5xx/408 → transient with the wait the server asked for; 401/403 → the transport is unusable;
other 4xx → permanent, unless the provider narrows it down to some items.
"""

from __future__ import annotations

import base64
import email.utils
import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from newsletter.config import TransportSettings
from newsletter.delivery.message import MessageTemplate, Personalisation
from newsletter.delivery.transports._http import (
    USER_AGENT,
    HttpProviderTransport,
    ProviderRequestError,
    ProviderResponse,
    RejectedItems,
    parse_retry_after,
    require_env,
)
from newsletter.delivery.transports.base import BatchItem, BatchResult
from newsletter.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from tests.conftest import copy_example_project
from tests.providerfake import DROP, HANG, FakeRequest, FakeResponse, ProviderFake
from tests.sendkit import Person, example_template

KEY = "echo-secret-key"
NOW = 1_800_000_000.0


class EchoTransport(HttpProviderTransport):
    """The smallest provider: a bearer key, POST /send with the addresses, ids back."""

    name = "echo"
    max_batch = 3
    default_api_url = "https://api.echo.invalid"
    default_key_env = "ECHO_API_KEY"
    check_path = "/check"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def deliver(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        answer = self.post_json("/send", {"to": [i.message.recipient for i in items]}).json()
        return [
            self.accepted(item, str(id_)) for item, id_ in zip(items, answer["ids"], strict=False)
        ]


def echo(request: FakeRequest) -> FakeResponse:
    """The fake provider: checks the key, answers /check and /send."""
    if request.header("authorization") != f"Bearer {KEY}":
        return FakeResponse.json({"message": "bad key"}, 401)
    if request.path == "/check":
        return FakeResponse.json({"ok": True})
    addresses = request.json()["to"]
    return FakeResponse.json({"ids": [f"id-{a}" for a in addresses]})


def item(template: MessageTemplate, address: str) -> BatchItem:
    """A batch item as the sender makes it (the base never reads its content)."""
    person = Person(address)
    return BatchItem(address, template.personalise(person), Personalisation(template, person))


def items(template: MessageTemplate, count: int) -> list[BatchItem]:
    return [item(template, f"r{n}@example.org") for n in range(count)]


def transport_for(url: str, *, key: str = KEY, **changes: Any) -> EchoTransport:
    # A generous timeout, so that a loaded machine does not turn answers into timeouts; the
    # tests about timeouts set a short one.
    values: dict[str, Any] = {"kind": "echo", "api_url": url, "timeout": 5.0, "connections": 2}
    values.update(changes)
    return EchoTransport(TransportSettings(**values), api_key=key, clock=lambda: NOW)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    return example_template(copy_example_project(tmp_path_factory.mktemp("project")))


@pytest.fixture
def server() -> Iterator[ProviderFake]:
    with ProviderFake(echo, hang_seconds=3) as running:
        yield running


@pytest.fixture
def transport(server: ProviderFake) -> Iterator[EchoTransport]:
    made = transport_for(server.url)
    yield made
    made.close()


# --- a request that works ---------------------------------------------------------------------


def test_a_batch_is_one_request_with_our_headers(
    template: MessageTemplate, server: ProviderFake, transport: EchoTransport
) -> None:
    results = transport.send_batch(items(template, 3))
    assert [r.receipt.reply for r in results if r.receipt] == [
        "id-r0@example.org", "id-r1@example.org", "id-r2@example.org"
    ]  # fmt: skip
    (request,) = server.requests
    assert request.header("user-agent") == USER_AGENT and USER_AGENT.startswith("newsletter/")
    assert request.header("accept") == "application/json"
    assert request.header("content-type") == "application/json"
    assert request.body == b'{"to":["r0@example.org","r1@example.org","r2@example.org"]}'
    assert transport.send_batch([]) == [] and len(server.requests) == 1
    with pytest.raises(ValueError, match="at most 3"):
        transport.send_batch(items(template, 4))


def test_sandbox_replies_say_so(template: MessageTemplate, server: ProviderFake) -> None:
    (result,) = transport_for(server.url, sandbox=True).send_batch(items(template, 1))
    assert result.receipt is not None and result.receipt.reply == "sandbox:id-r0@example.org"


def test_forms_keep_repeated_names_and_carry_files(
    server: ProviderFake, transport: EchoTransport
) -> None:
    server.handler = lambda request: FakeResponse.json({"form": request.form()})
    fields = [("to", "a@example.org"), ("to", "b@example.org"), ("o:tag", "x")]
    plain = transport.post_form("/form", fields).json()["form"]
    assert plain == {"to": ["a@example.org", "b@example.org"], "o:tag": ["x"]}
    files = [("message", ("message.mime", b"Subject: hi\r\n\r\nbody", "message/rfc822"))]
    multipart = transport.post_form("/form", fields, files=files).json()["form"]
    assert multipart["to"] == ["a@example.org", "b@example.org"]
    assert multipart["message"] == ["<file message.mime>"]
    assert (server.requests[-1].header("content-type") or "").startswith("multipart/form-data")


# --- status → typed errors --------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_an_answer(server: ProviderFake, transport: EchoTransport, status: int) -> None:
    server.fail_next(FakeResponse(status, b"" if status == 204 else b"{}"))
    assert transport.get("/anything").status == status


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (429, {}, None),
        (429, {"Retry-After": "7"}, 7.0),
        (429, {"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        (429, {"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        (429, {"Retry-After": "whenever"}, None),
        (500, {}, None),
        (502, {"Retry-After": "12"}, 12.0),
        (503, {"Retry-After": email.utils.formatdate(NOW + 90, usegmt=True)}, 90.0),
        (408, {}, None),
    ],
    ids=["429", "429-seconds", "429-date", "429-date-past", "429-garbage", "500",
         "502-seconds", "503-date", "408"],
)  # fmt: skip
def test_transient_statuses_carry_the_wait_the_server_asked_for(
    template: MessageTemplate,
    server: ProviderFake,
    transport: EchoTransport,
    status: int,
    headers: dict[str, str],
    retry_after: float | None,
) -> None:
    server.fail_next(FakeResponse.json({"message": "not now"}, status, headers))
    with pytest.raises(TransientDeliveryError) as caught:
        transport.send_batch(items(template, 2))
    assert type(caught.value) is TransientDeliveryError
    assert caught.value.retry_after == retry_after
    assert f"HTTP {status}" in str(caught.value) and "not now" in str(caught.value)
    if retry_after is not None and status == 429:
        assert f"retry after {retry_after:g}s" in str(caught.value)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_makes_the_transport_unusable(
    template: MessageTemplate, server: ProviderFake, status: int
) -> None:
    server.fail_next(FakeResponse.json({"message": "key revoked"}, status))
    transport = transport_for(server.url, api_key_env="MY_ECHO_KEY")
    with pytest.raises(TransportUnavailableError) as caught:
        transport.send_batch(items(template, 1))
    assert f"HTTP {status}" in str(caught.value) and "key revoked" in str(caught.value)
    assert "MY_ECHO_KEY" in (caught.value.hint or "")
    assert KEY not in str(caught.value) and KEY not in repr(transport)


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_other_4xx_fail_the_request_permanently(
    template: MessageTemplate, server: ProviderFake, transport: EchoTransport, status: int
) -> None:
    server.fail_next(FakeResponse.json({"errors": [{"message": "no such thing"}]}, status))
    with pytest.raises(ProviderRequestError) as caught:
        transport.send_batch(items(template, 2))
    assert isinstance(caught.value, PermanentDeliveryError)
    assert caught.value.response.status == status
    assert f"echo refused the request (HTTP {status}): no such thing" in str(caught.value)


def test_a_redirect_is_not_followed(
    template: MessageTemplate, server: ProviderFake, transport: EchoTransport
) -> None:
    server.fail_next(FakeResponse(302, b"", {"Location": f"{server.url}/elsewhere"}))
    with pytest.raises(TransportUnavailableError, match="unexpected HTTP 302") as caught:
        transport.send_batch(items(template, 1))
    assert "redirects are not followed" in (caught.value.hint or "")
    assert [r.path for r in server.requests] == ["/send"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"message": "plain"}', "plain"),
        (b'{"Message": "capital"}', "capital"),
        (b'{"ErrorMessage": "mailjet style"}', "mailjet style"),
        (b'{"errors": [{"message": "first"}, {"message": "second"}]}', "first; second"),
        (b'{"error": {"detail": "nested"}}', "nested"),
        (b"<html>\n  <b>Bad</b>   request\n</html>", "<html> <b>Bad</b> request </html>"),
        (b"", "HTTP 400"),
    ],
    ids=["message", "Message", "ErrorMessage", "errors", "nested", "html", "empty"],
)  # fmt: skip
def test_error_words_are_found_in_common_shapes(
    template: MessageTemplate,
    server: ProviderFake,
    transport: EchoTransport,
    body: bytes,
    words: str,
) -> None:
    server.fail_next(FakeResponse(400, body))
    with pytest.raises(ProviderRequestError) as caught:
        transport.send_batch(items(template, 1))
    assert str(caught.value).endswith(f"(HTTP 400): {words}")


def test_error_bodies_are_truncated(
    template: MessageTemplate, server: ProviderFake, transport: EchoTransport
) -> None:
    long = "x" * 5000
    server.fail_next(FakeResponse.json({"message": long}, 400))
    with pytest.raises(ProviderRequestError) as caught:
        transport.send_batch(items(template, 1))
    assert "x" * 300 in str(caught.value) and "x" * 301 not in str(caught.value)
    assert caught.value.reply is not None and len(caught.value.reply) == 300
    server.fail_next(FakeResponse(503, b"y" * 5000))
    with pytest.raises(TransientDeliveryError) as transient:
        transport.send_batch(items(template, 1))
    assert transient.value.reply == "y" * 300


@pytest.mark.parametrize(
    ("body", "what"), [(b'{"ids": ["a"', "malformed JSON"), (b"  \n", "an empty body")]
)
def test_an_unreadable_2xx_body_is_uncertain(
    template: MessageTemplate,
    server: ProviderFake,
    transport: EchoTransport,
    body: bytes,
    what: str,
) -> None:
    server.fail_next(FakeResponse(200, body))
    with pytest.raises(UncertainDeliveryError, match=f"HTTP 200 with {what}"):
        transport.send_batch(items(template, 1))


def test_a_wrong_number_of_results_is_uncertain(
    template: MessageTemplate, server: ProviderFake, transport: EchoTransport
) -> None:
    server.fail_next(FakeResponse.json({"ids": ["only-one"]}))
    with pytest.raises(UncertainDeliveryError, match="1 results for 2 messages"):
        transport.send_batch(items(template, 2))


# --- timeouts and broken connections ----------------------------------------------------------


def test_no_answer_after_the_request_was_sent_is_uncertain(
    template: MessageTemplate, server: ProviderFake
) -> None:
    server.fail_next(HANG)
    with pytest.raises(UncertainDeliveryError, match=r"no answer within 0\.4s"):
        transport_for(server.url, timeout=0.4).send_batch(items(template, 1))
    assert len(server.requests) == 1  # it did arrive


def test_a_dropped_connection_after_the_request_is_uncertain(
    template: MessageTemplate, server: ProviderFake, transport: EchoTransport
) -> None:
    server.fail_next(DROP)
    with pytest.raises(UncertainDeliveryError, match="after the request was sent"):
        transport.send_batch(items(template, 1))
    # The next request gets a new connection and goes through.
    assert transport.send_batch(items(template, 1))[0].receipt is not None
    assert server.connections == 2


def test_nobody_listening_is_transient(template: MessageTemplate) -> None:
    with ProviderFake() as gone:
        url = gone.url
    with pytest.raises(TransientDeliveryError, match="cannot connect"):
        transport_for(url).send_batch(items(template, 1))


@pytest.fixture
def full_backlog() -> Iterator[str]:
    """A port whose listener never accepts and whose queue is full: a SYN gets no answer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):  # Linux queues backlog + 1; the rest wait for their SYN-ACK forever
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}"
    for filler in fillers:
        filler.close()
    listener.close()


def test_a_connect_timeout_is_transient(template: MessageTemplate, full_backlog: str) -> None:
    with pytest.raises(TransientDeliveryError, match="cannot connect"):
        transport_for(full_backlog, timeout=0.3).send_batch(items(template, 1))


@pytest.fixture
def deaf_server() -> Iterator[str]:
    """Accepts connections and never reads: a big request cannot be written."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_request_that_cannot_be_written_is_transient(deaf_server: str) -> None:
    transport = transport_for(deaf_server, timeout=0.3)
    with pytest.raises(TransientDeliveryError, match="could not be sent"):
        transport.post_json("/send", b"[" + b"0," * 16_000_000 + b"0]")


def test_an_unusable_url_makes_the_transport_unusable(template: MessageTemplate) -> None:
    with pytest.raises(TransportUnavailableError, match="unusable API URL") as caught:
        transport_for("http://[::1").send_batch(items(template, 1))
    assert "api_url" in (caught.value.hint or "")
    with pytest.raises(TransportUnavailableError, match="unsupported protocol"):
        transport_for("ftp://files.example.org").send_batch(items(template, 1))


# --- TLS ----------------------------------------------------------------------------------------


def test_tls_is_verified_and_a_ca_file_is_trusted(
    template: MessageTemplate, tmp_path: Path
) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with ProviderFake(echo, ssl_context=context) as secure:
        assert secure.url.startswith("https://localhost:")
        with pytest.raises(TransientDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            transport_for(secure.url).send_batch(items(template, 1))
        assert secure.requests == []
        (result,) = transport_for(secure.url, ca_file=str(ca_file)).send_batch(items(template, 1))
        assert result.receipt is not None and len(secure.requests) == 1


# --- connections --------------------------------------------------------------------------------


def test_connections_are_kept_alive_and_reopened_after_close(
    template: MessageTemplate, server: ProviderFake, transport: EchoTransport
) -> None:
    for _ in range(5):
        transport.send_batch(items(template, 2))
    assert server.connections == 1
    transport.close()
    transport.send_batch(items(template, 1))  # usable again after close
    assert server.connections == 2


def test_a_server_that_closes_after_answering_gets_a_new_connection(
    template: MessageTemplate, server: ProviderFake, transport: EchoTransport
) -> None:
    server.fail_next(FakeResponse.json({"ids": ["x"]}, headers={"Connection": "close"}))
    transport.send_batch(items(template, 1))
    transport.send_batch(items(template, 1))
    assert server.connections == 2


def test_a_client_handed_in_is_used_and_left_open(
    template: MessageTemplate, server: ProviderFake
) -> None:
    client = httpx.Client()
    settings = TransportSettings(kind="echo", api_url=server.url)
    transport = EchoTransport(settings, api_key=KEY, client=client)
    transport.send_batch(items(template, 1))
    transport.close()
    assert not client.is_closed
    assert server.requests[0].header("user-agent") != USER_AGENT  # the caller's client, as is
    client.close()


# --- what providers build on ------------------------------------------------------------------


class PickyTransport(EchoTransport):
    """Refuses the addresses at bad.example (by index), like SendGrid's field errors."""

    def client_error(
        self, response: ProviderResponse, items: Sequence[BatchItem]
    ) -> list[BatchResult]:
        bad = {
            n: PermanentDeliveryError(f"refused {x.key}")
            for n, x in enumerate(items)
            if x.key.endswith("@bad.example")
        }
        if bad:
            raise RejectedItems(bad)
        return super().client_error(response, items)


def refuse_bad(request: FakeRequest) -> FakeResponse:
    if any(a.endswith("@bad.example") for a in request.json()["to"]):
        return FakeResponse.json({"message": "bad addresses"}, 400)
    return echo(request)


def test_refused_items_fail_alone_and_the_rest_are_sent_again(
    template: MessageTemplate, server: ProviderFake
) -> None:
    server.handler = refuse_bad
    transport = PickyTransport(TransportSettings(kind="echo", api_url=server.url), api_key=KEY)
    batch = [
        item(template, "a@example.org"),
        item(template, "b@bad.example"),
        item(template, "c@example.org"),
    ]
    results = transport.send_batch(batch)
    assert [r.key for r in results] == ["a@example.org", "b@bad.example", "c@example.org"]
    assert results[0].receipt is not None and results[2].receipt is not None
    assert isinstance(results[1].error, PermanentDeliveryError)
    assert [r.json()["to"] for r in server.posts()] == [
        ["a@example.org", "b@bad.example", "c@example.org"],
        ["a@example.org", "c@example.org"],
    ]

    # When the second request fails as a whole, the rest share its fate (no exception).
    def second(request: FakeRequest) -> bool:
        return len(request.json()["to"]) == 2

    server.fail_next(FakeResponse(503, b"busy", {"Retry-After": "4"}), when=second)
    again = transport.send_batch(batch)
    assert isinstance(again[1].error, PermanentDeliveryError)
    assert isinstance(again[0].error, TransientDeliveryError)
    assert again[0].error.retry_after == 4.0 and again[2].error is again[0].error


def test_deliver_in_parts_stops_after_a_transient_part(
    template: MessageTemplate, server: ProviderFake
) -> None:
    transport = transport_for(server.url)
    batch = items(template, 3)

    def send_part(part: Sequence[BatchItem]) -> list[BatchResult]:
        return transport.deliver(part)

    # One item a part. The first part is refused (permanent: only its item), the second is
    # rate limited (transient: its item, and the third is not even tried).
    server.fail_next(FakeResponse.json({"message": "no"}, 422))
    server.fail_next(FakeResponse.json({"message": "slow"}, 429, {"Retry-After": "9"}))
    results = transport.deliver_in_parts(batch, lambda x: 10, 10, send_part)
    assert isinstance(results[0].error, ProviderRequestError)
    assert isinstance(results[1].error, TransientDeliveryError)
    assert isinstance(results[2].error, TransientDeliveryError)
    assert results[2].error.retry_after == 9.0
    assert "not sent after an earlier request failed" in str(results[2].error)
    assert len(server.posts()) == 2
    # Everything in one part when it fits.
    fitted = transport.deliver_in_parts(batch, lambda x: 10, 30, send_part)
    assert all(r.receipt is not None for r in fitted) and len(server.posts()) == 3


def test_check(server: ProviderFake) -> None:
    transport_for(server.url).check()
    assert server.requests[-1].path == "/check"
    with pytest.raises(TransportUnavailableError, match="HTTP 401"):
        transport_for(server.url, key="wrong").check()
    server.fail_next(FakeResponse(500, b"down"))
    with pytest.raises(TransportUnavailableError, match="cannot reach") as caught:
        transport_for(server.url).check()
    assert "api_url" in (caught.value.hint or "")


# --- small pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None), ("", None), ("  ", None), ("7", 7.0), (" 1.5 ", 1.5), ("-3", 0.0),
        ("nan", None), ("inf", None), ("soon", None),
        (email.utils.formatdate(NOW + 61, usegmt=True), 61.0),
        (email.utils.formatdate(NOW - 61, usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00 -0000", None),  # not GMT: not an HTTP date
    ],
)  # fmt: skip
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_require_env_names_the_variable_never_the_value(tmp_path: Path) -> None:
    assert require_env({"ECHO_API_KEY": " k "}, "ECHO_API_KEY", "echo", None) == "k"
    with pytest.raises(ConfigError) as caught:
        require_env({"ECHO_API_KEY": "   "}, "ECHO_API_KEY", "echo", tmp_path / "newsletter.toml")
    assert "ECHO_API_KEY" in str(caught.value) and "transport.api_key_env" in str(caught.value)
    made = EchoTransport.from_settings(TransportSettings(kind="echo"), {"ECHO_API_KEY": KEY})
    assert made.api_url == "https://api.echo.invalid" and KEY not in repr(made)
    assert EchoTransport.describe_settings(TransportSettings(kind="echo", sandbox=True)) == (
        "echo https://api.echo.invalid (sandbox: nothing is delivered)"
    )


@pytest.mark.parametrize("status", [400, 401, 502])
def test_an_error_body_that_echoes_the_key_is_redacted(
    template: MessageTemplate, server: ProviderFake, transport: EchoTransport, status: int
) -> None:
    """Issue 15, D23: a proxy that echoes our request headers must not print the key."""
    body = json.dumps(
        {"message": f"bad gateway; request had Authorization: Bearer {KEY}", "key": KEY}
    ).encode()
    server.fail_next(FakeResponse(status, body, {"Content-Type": "application/json"}))
    with pytest.raises(DeliveryError) as caught:
        transport.send_batch(items(template, 1))
    error = caught.value
    for text in (str(error), error.reply or "", error.hint or ""):
        assert KEY not in text, text
    assert "[redacted]" in str(error) + (error.reply or "")


def test_a_proxy_in_the_environment_is_used(
    template: MessageTemplate, server: ProviderFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests skip httpx.Client's layers only without proxies: with HTTP_PROXY set, httpx
    routes them through the proxy as before (the fake plays the proxy; the API host does not
    exist, so only the proxy can have answered)."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.setenv("http_proxy", server.url)
    made = transport_for("http://api.echo.invalid")
    results = made.send_batch(items(template, 2))
    made.close()
    assert [r.receipt.reply for r in results if r.receipt] == [
        "id-r0@example.org",
        "id-r1@example.org",
    ]
    assert [r.path for r in server.posts()] == ["/send"]


def test_requests_carry_the_client_headers_and_the_auth(
    template: MessageTemplate, server: ProviderFake, transport: EchoTransport
) -> None:
    """What the client would add (User-Agent, Accept, Host, Content-Length) is on every
    request, with the provider's auth header, also on the path that skips the client."""
    transport.send_batch(items(template, 2))
    transport.send_batch(items(template, 1))
    for request in server.posts("/send"):
        assert request.header("user-agent") == USER_AGENT
        assert request.header("accept") == "application/json"
        assert request.header("authorization") == f"Bearer {KEY}"
        assert request.header("content-type") == "application/json"
        assert request.header("host") == f"127.0.0.1:{server.port}"
        assert int(request.header("content-length") or 0) == len(request.body)
    assert server.connections == 1  # one kept-alive connection served both


def test_a_slow_but_steady_upload_is_not_a_timeout() -> None:
    """The write timeout bounds each step of progress, not the whole body (as httpx does): a
    big batch to a server that reads slowly but steadily is sent, however long it takes."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    size = 16_000_000

    def serve() -> None:
        connection = listener.accept()[0]
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                data += connection.recv(65536)
            received = len(data.split(b"\r\n\r\n", 1)[1])
            while received < size:
                if received < size - 8_000_000:  # slowly for 8 MB (~3 MB/s: seconds), then
                    time.sleep(0.02)  # at once, so what the kernels buffer is answered quickly
                received += len(connection.recv(65536))
            answer = b'{"ids": ["x"]}'
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
            )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    transport = transport_for(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=1.0)
    started = time.monotonic()
    response = transport.post_json("/send", b"[" + b"0," * (size // 2 - 1) + b"0]")
    assert time.monotonic() - started > 1.0  # longer than the timeout, and no timeout
    assert response.json() == {"ids": ["x"]}
    transport.close()
    thread.join(5)
    listener.close()


# --- reading answers off the wire (the direct path's own HTTP/1.1) ----------------------------


class ScriptedServer:
    """A loopback server that answers each request with the next bytes of `answers` as they
    are; `None` after an answer closes the connection. Counts connections."""

    def __init__(self, answers: Sequence[bytes | None]) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.requests: list[bytes] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        self.listener.settimeout(0.1)
        while self.answers:
            try:
                connection = self.listener.accept()[0]
            except TimeoutError:
                continue  # look at `answers` again (emptied: stop)
            except OSError:
                return  # closed
            connection.settimeout(None)
            self.connections += 1
            with connection:
                data = b""
                while self.answers:
                    while b"\r\n\r\n" not in data:
                        more = connection.recv(65536)
                        if not more:
                            break
                        data += more
                    if b"\r\n\r\n" not in data:
                        break  # the client closed this connection
                    head, _, data = data.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(data) < length:
                        data += connection.recv(65536)
                    self.requests.append(head + b"\r\n\r\n" + data[:length])
                    data = data[length:]
                    connection.sendall(self.answers.pop(0) or b"")
                    if self.answers and self.answers[0] is None:
                        self.answers.pop(0)
                        break

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def test_answers_framed_every_way_http_allows_are_read(template: MessageTemplate) -> None:
    """Chunked with trailers and gzip after a 100 Continue, a length with obsolete folding,
    and a body until the server closes: each read whole, the connection kept exactly while
    the answer allows."""
    packed = gzip.compress(b'{"ids": ["c-r0@example.org"]}')
    chunked = b"".join(
        b"%x;ext=1\r\n%s\r\n" % (len(piece), piece) for piece in (packed[:7], packed[7:])
    )
    server = ScriptedServer(
        [
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
            + chunked
            + b"0\r\nX-Trailer: yes\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 29\r\nX-Folded: a\r\n b\r\n\r\n"
            b'{"ids": ["l-r0@example.org"]}',
            b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"ids": ["e-r0@example.org"]}',
            None,
            b'HTTP/1.0 200 OK\r\nContent-Length: 29\r\n\r\n{"ids": ["z-r0@example.org"]}',
        ]
    )
    transport = transport_for(server.url)
    replies = [
        result.receipt.reply
        for _ in range(4)
        for result in transport.send_batch(items(template, 1))
        if result.receipt is not None
    ]
    transport.close()
    server.close()
    assert replies == [
        "c-r0@example.org",
        "l-r0@example.org",
        "e-r0@example.org",
        "z-r0@example.org",
    ]
    assert server.connections == 2  # kept alive after chunked and length; not after close
    assert all(b"Accept-Encoding: gzip, deflate" in request for request in server.requests)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Encoding: gzip\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nBad header line\r\nContent-Length: 2\r\n\r\n{}",
    ],
    ids=["status-line", "short-body", "chunk-size", "bad-gzip", "header-line"],
)
def test_a_broken_answer_is_uncertain(template: MessageTemplate, answer: bytes) -> None:
    server = ScriptedServer([answer, None])
    transport = transport_for(server.url)
    with pytest.raises(UncertainDeliveryError, match="after the request was sent"):
        transport.send_batch(items(template, 1))
    transport.close()
    server.close()
    assert len(server.requests) == 1


def test_a_line_break_in_a_header_value_sends_nothing(template: MessageTemplate) -> None:
    """A key with a line break could add headers of its own: refused before anything is sent."""
    server = ScriptedServer([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", None])
    transport = transport_for(server.url, key="key\r\nX-Injected: yes")
    with pytest.raises(ValueError, match="Invalid header"):
        transport.send_batch(items(template, 1))
    transport.close()
    server.answers.clear()
    server.close()
    assert server.requests == []


class AuthFlowTransport(EchoTransport):
    """A provider that authenticates with an `httpx.Auth` (no direct signature): its requests
    go through the httpx client, whose transport is the same HTTP/1.1 code."""

    def auth_headers(self) -> dict[str, str]:
        return {}

    def auth(self) -> httpx.Auth | None:
        return httpx.BasicAuth("api", self.api_key)


def test_requests_with_an_auth_flow_go_through_the_client(
    template: MessageTemplate, server: ProviderFake
) -> None:
    seen: list[str | None] = []

    def basic(request: FakeRequest) -> FakeResponse:
        seen.append(request.header("authorization"))
        return FakeResponse.json({"ids": [f"id-{a}" for a in request.json()["to"]]})

    server.handler = basic
    transport = AuthFlowTransport(
        TransportSettings(kind="echo", api_url=server.url, timeout=5.0), api_key=KEY
    )
    results = transport.send_batch(items(template, 2))
    assert [r.receipt.reply for r in results if r.receipt] == [
        "id-r0@example.org",
        "id-r1@example.org",
    ]
    assert seen == ["Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()]
    server.fail_next(DROP)
    with pytest.raises(UncertainDeliveryError, match="after the request was sent"):
        transport.send_batch(items(template, 1))
    transport.close()
