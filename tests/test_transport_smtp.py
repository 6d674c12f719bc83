"""SmtpTransport against a real SMTP server on 127.0.0.1 (tests/smtpserver.py)."""

from __future__ import annotations

import dataclasses
import itertools
import smtplib
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypedDict, Unpack

import pytest
import trustme

from newsletter.config import TransportSettings
from newsletter.delivery.transports.base import DeliveryReceipt, OutgoingMessage
from newsletter.delivery.transports.smtp import (
    SmtpTransport,
    _Connection,
    _take_reply,
    _write_data,
    is_loopback_host,
    smtp_body,
)
from newsletter.errors import (
    PermanentDeliveryError,
    RecipientRejectedError,
    SenderRefusedError,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from tests.smtpserver import SmtpTestServer, Stage, big_message_data

SENDER = "news@example.org"
PASSWORD = "s3cret-Pa55word"


class SettingChanges(TypedDict, total=False):
    """The transport settings a test may change from the server's defaults."""

    security: str
    timeout: float
    connections: int
    max_messages_per_connection: int
    username: str | None
    ca_file: str | None


class MakeTransport(Protocol):
    def __call__(
        self,
        server: SmtpTestServer,
        *,
        password: str | None = None,
        ssl_context: ssl.SSLContext | str | None = "server",
        **changes: Unpack[SettingChanges],
    ) -> SmtpTransport: ...


def message(
    recipient: str = "ann@example.org",
    *,
    data: bytes | None = None,
    smtputf8: bool = False,
    sender: str = SENDER,
) -> OutgoingMessage:
    if data is None:
        data = (
            f"From: {sender}\r\nTo: {recipient}\r\nSubject: Issue 1\r\n"
            f"Message-ID: <1.{recipient}>\r\n\r\nHello\r\n.starts with a dot\r\n"
        ).encode()
    return OutgoingMessage(sender, recipient, f"<1.{recipient}>", data, smtputf8)


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as running:
        yield running


@pytest.fixture
def make_transport() -> Iterator[MakeTransport]:
    """Builds a transport for a test server (security from the server's options); closes it."""
    made: list[SmtpTransport] = []

    def make(
        server: SmtpTestServer,
        *,
        password: str | None = None,
        ssl_context: ssl.SSLContext | str | None = "server",
        **changes: Unpack[SettingChanges],
    ) -> SmtpTransport:
        security = "tls" if server.implicit_tls else "starttls" if server.starttls else "none"
        settings = TransportSettings(
            kind="smtp", host=server.host, port=server.port, security=security, timeout=5.0
        )
        context: ssl.SSLContext | None
        if ssl_context == "server":
            context = server.client_context() if server.ca is not None else None
        else:
            assert not isinstance(ssl_context, str)
            context = ssl_context
        transport = SmtpTransport(
            dataclasses.replace(settings, **changes), password=password, ssl_context=context
        )
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


# --- plain delivery -------------------------------------------------------------------------


def test_delivers_the_exact_bytes_with_the_envelope(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    sent = message("ann@example.org")

    receipt = make_transport(server).send(sent)

    assert receipt == DeliveryReceipt("ann@example.org", "250 2.0.0 Ok: queued as Q000001")
    [received] = server.messages
    assert received.mail_from == SENDER
    assert received.rcpt_tos == ("ann@example.org",)
    assert received.data == sent.data  # the dot-stuffed line came back unstuffed
    assert received.tls is False
    assert f"SIZE={len(sent.data)}" in received.mail_options


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\rb\r\n", b"a\r\nb\r\n"),
        (b"a\r\nb", b"a\r\nb\r\n"),
        (b".a\r\n..b\r\nc.\r\n.\r\n", b"..a\r\n...b\r\nc.\r\n..\r\n"),
        (b"x\n.\ny", b"x\r\n..\r\ny\r\n"),
    ],
)
def test_smtp_body_fixes_line_ends_and_stuffs_dots(data: bytes, wire: bytes) -> None:
    assert smtp_body(data) == wire


def test_a_message_that_is_only_a_dot_line_survives(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    data = b"Subject: x\r\n\r\n.\r\n..\r\n"
    make_transport(server).send(message(data=data))
    assert server.messages[0].data == data


def test_eight_bit_body_is_announced(server: SmtpTestServer, make_transport: MakeTransport) -> None:
    data = "Subject: x\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCafé\r\n".encode()
    make_transport(server).send(message(data=data))
    assert "BODY=8BITMIME" in server.messages[0].mail_options
    assert server.messages[0].data == data


# --- TLS --------------------------------------------------------------------------------------


def test_starttls_with_verification(make_transport: MakeTransport) -> None:
    with SmtpTestServer(starttls=True) as server:
        make_transport(server).send(message())
        assert server.messages[0].tls is True


@pytest.mark.parametrize("trust", ["system store", "another CA"])
def test_starttls_fails_when_the_ca_is_not_trusted(
    trust: str, make_transport: MakeTransport
) -> None:
    context: ssl.SSLContext | None = None
    if trust == "another CA":
        context = ssl.create_default_context()
        trustme.CA().configure_trust(context)
    with SmtpTestServer(starttls=True) as server:
        transport = make_transport(server, ssl_context=context)
        with pytest.raises(TransportUnavailableError) as caught:
            transport.check()
        assert str(caught.value).startswith(
            f"TLS certificate of 127.0.0.1:{server.port} could not be verified"
        )
        assert "ca_file" in (caught.value.hint or "")
        assert server.transactions == 0


def test_ca_file_setting_is_trusted(tmp_path: Path, make_transport: MakeTransport) -> None:
    with SmtpTestServer(starttls=True) as server:
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(server.ca_pem())
        make_transport(server, ssl_context=None, ca_file=str(ca_file)).send(message())
        assert server.messages[0].tls is True


def test_unreadable_ca_file_is_reported_with_its_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    settings = TransportSettings(kind="smtp", security="starttls", ca_file=str(missing))
    with pytest.raises(TransportUnavailableError) as caught:
        SmtpTransport(settings, password=None)
    assert str(caught.value).startswith(
        f"transport.ca_file: cannot load CA certificates from {missing}"
    )


def test_starttls_required_but_not_offered_never_falls_back(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(
        server, security="starttls", ssl_context=ssl.create_default_context()
    )
    with pytest.raises(TransportUnavailableError) as caught:
        transport.send(message())
    assert str(caught.value) == (
        f"127.0.0.1:{server.port} does not offer STARTTLS; refusing to continue without encryption"
    )
    assert server.transactions == 0 and server.messages == []


def test_implicit_tls(make_transport: MakeTransport) -> None:
    with SmtpTestServer(implicit_tls=True) as server:
        transport = make_transport(server)
        transport.send(message())
        assert server.messages[0].tls is True


# --- AUTH -------------------------------------------------------------------------------------


def test_auth_success_inside_starttls(make_transport: MakeTransport) -> None:
    with SmtpTestServer(starttls=True, username="alice", password=PASSWORD) as server:
        make_transport(server, username="alice", password=PASSWORD).send(message())
        assert server.messages[0].auth_user == "alice"


def test_auth_failure_names_user_and_server_but_not_the_password(
    make_transport: MakeTransport,
) -> None:
    with SmtpTestServer(starttls=True, username="alice", password="other") as server:
        transport = make_transport(server, username="alice", password=PASSWORD)
        with pytest.raises(TransportUnavailableError) as caught:
            transport.check()
        error = caught.value
        assert str(error).startswith(f"authentication failed for alice at 127.0.0.1:{server.port}")
        assert "535" in str(error)
        for text in (str(error), error.hint or "", repr(transport), repr(error.__cause__)):
            assert PASSWORD not in text
        assert server.messages == []


def test_auth_in_plain_text_is_allowed_on_loopback(make_transport: MakeTransport) -> None:
    with SmtpTestServer(username="alice", password=PASSWORD, auth_require_tls=False) as server:
        make_transport(server, username="alice", password=PASSWORD).send(message())
        assert server.messages[0].auth_user == "alice"
        assert server.messages[0].tls is False


@pytest.mark.parametrize(
    "host",
    ["mail.example.org", "10.0.0.1", "2001:db8::1", "localhost.example.org", "127.0.0.1.nip.io"],
)
def test_auth_without_tls_to_a_remote_host_is_refused_before_connecting(host: str) -> None:
    settings = TransportSettings(kind="smtp", host=host, port=25, security="none", username="alice")
    with pytest.raises(TransportUnavailableError) as caught:
        SmtpTransport(settings, password=PASSWORD)
    server = f"[{host}]:25" if ":" in host else f"{host}:25"
    assert str(caught.value) == (
        f"refusing to send the password for alice to {server} without encryption "
        '(transport.security = "none")'
    )
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("128.0.0.1", False),
        ("localhost.example.org", False),
        ("example.org", False),
        ("::2", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_username_without_password_names_the_environment_variable() -> None:
    settings = TransportSettings(
        kind="smtp", host="127.0.0.1", security="none", username="alice", password_env="MY_PW"
    )
    with pytest.raises(TransportUnavailableError) as caught:
        SmtpTransport(settings, password=None)
    assert str(caught.value) == "no password for alice at 127.0.0.1:587"
    assert caught.value.hint == "Set the environment variable MY_PW."


# --- replies and dropped connections ----------------------------------------------------------


def test_421_is_transient_and_the_next_send_reconnects(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server)
    fault = server.reply_421(transaction=2)
    transport.send(message("a@example.org"))

    with pytest.raises(TransientDeliveryError) as caught:
        transport.send(message("b@example.org"))
    assert caught.value.reply == "421 4.3.2 Service shutting down"
    assert "b@example.org" in str(caught.value)

    transport.send(message("c@example.org"))
    assert fault.fired == 1
    assert [m.rcpt_tos for m in server.messages] == [("a@example.org",), ("c@example.org",)]
    assert [m.connection for m in server.messages] == [1, 2]


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data", "data_end"])
def test_451_is_transient_and_the_connection_stays_usable(
    stage: Stage, server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server)
    server.defer(stage, transaction=1)

    with pytest.raises(TransientDeliveryError) as caught:
        transport.send(message("a@example.org"))
    assert caught.value.reply == "451 4.3.0 Try again later"
    assert str(caught.value).startswith(f"a@example.org: 127.0.0.1:{server.port} deferred")

    transport.send(message("a@example.org"))
    assert len(server.messages) == 1
    assert server.connections == 1


def test_550_rejects_one_recipient_and_the_next_uses_the_same_connection(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server)
    server.reject_recipient("gone@example.org")

    with pytest.raises(RecipientRejectedError) as caught:
        transport.send(message("gone@example.org"))
    assert caught.value.reply == "550 5.1.1 No such user here"
    assert str(caught.value) == (
        f"gone@example.org: 127.0.0.1:{server.port} refused the recipient: "
        "550 5.1.1 No such user here"
    )

    transport.send(message("here@example.org"))
    assert [m.rcpt_tos for m in server.messages] == [("here@example.org",)]
    assert server.connections == 1


@pytest.mark.parametrize("stage", ["data", "data_end"])
def test_5xx_outside_rcpt_is_permanent_for_the_message(
    stage: Stage, server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server)
    server.defer(stage, reply="554 5.6.0 Message content rejected")

    with pytest.raises(PermanentDeliveryError) as caught:
        transport.send(message())
    assert not isinstance(caught.value, RecipientRejectedError)
    assert caught.value.reply == "554 5.6.0 Message content rejected"

    transport.send(message())
    assert server.connections == 1


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("mail", "554 5.7.1 Rejected"),
        ("mail", "553 5.1.8 Sender address rejected"),
        ("rcpt", "530 5.7.0 Authentication required"),
        ("data", "554 5.7.1 Rejected"),
        ("data_end", "554 5.7.1 Rejected"),
    ],
)
def test_a_refusal_of_the_sender_or_by_policy_is_a_sender_refusal(
    stage: Stage, reply: str, server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    """Not about the recipient: the sender pauses the run instead of failing everyone (D4)."""
    transport = make_transport(server)
    server.defer(stage, reply=reply)

    with pytest.raises(SenderRefusedError) as caught:
        transport.send(message())
    assert isinstance(caught.value, TransportUnavailableError)
    assert caught.value.reply == reply

    transport.send(message())
    assert server.connections == 1


def test_drop_mid_data_is_transient(server: SmtpTestServer, make_transport: MakeTransport) -> None:
    transport = make_transport(server)
    fault = server.drop_mid_data(transaction=1)

    with pytest.raises(TransientDeliveryError) as caught:
        transport.send(message(data=big_message_data()))
    assert not isinstance(caught.value, UncertainDeliveryError)
    assert "lost before the message was complete" in str(caught.value)
    assert fault.fired == 1 and server.messages == []

    transport.send(message())
    assert len(server.messages) == 1


def test_drop_after_the_data_is_uncertain(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server)
    server.drop_after_data(transaction=1)

    with pytest.raises(UncertainDeliveryError) as caught:
        transport.send(message("a@example.org"))
    assert str(caught.value).startswith(
        f"a@example.org: connection to 127.0.0.1:{server.port} lost after the message was sent"
    )
    assert len(server.messages) == 1  # it did arrive: exactly why this must not be retried blindly

    transport.send(message("b@example.org"))
    assert [m.connection for m in server.messages] == [1, 2]


def test_timeout_waiting_for_the_final_reply_is_uncertain(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server, timeout=0.2)
    server.delay("data_end", 5.0)
    with pytest.raises(UncertainDeliveryError) as caught:
        transport.send(message())
    assert "(timed out)" in str(caught.value)


def test_timeout_before_the_data_is_transient(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server, timeout=0.2)
    server.delay("rcpt", 5.0)
    with pytest.raises(TransientDeliveryError) as caught:
        transport.send(message())
    assert not isinstance(caught.value, UncertainDeliveryError)
    assert "(timed out)" in str(caught.value)


def test_server_down_is_transport_unavailable(make_transport: MakeTransport) -> None:
    server = SmtpTestServer().start()
    transport = make_transport(server)
    transport.send(message("a@example.org"))
    server.stop()

    for attempt in (transport.check, lambda: transport.send(message("b@example.org"))):
        with pytest.raises(TransportUnavailableError) as caught:
            attempt()
        assert str(caught.value) == (
            f"connection to 127.0.0.1:{server.port} refused: is the SMTP server running?"
        )

    server.start()  # back on the same port
    try:
        transport.send(message("c@example.org"))
        assert [m.rcpt_tos for m in server.messages] == [("a@example.org",), ("c@example.org",)]
    finally:
        server.stop()


def test_an_idle_connection_the_server_closed_is_replaced_without_an_error(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server)
    transport.send(message("a@example.org"))
    server.close_connections()

    transport.send(message("b@example.org"))
    assert [m.connection for m in server.messages] == [1, 2]


# --- SMTPUTF8 ---------------------------------------------------------------------------------

UTF8_RECIPIENT = "jürgen@bücher.example"


def test_smtputf8_when_the_server_offers_it(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    data = f"From: {SENDER}\r\nTo: {UTF8_RECIPIENT}\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()
    make_transport(server).send(message(UTF8_RECIPIENT, data=data, smtputf8=True))

    [received] = server.messages
    assert received.rcpt_tos == (UTF8_RECIPIENT,)
    assert "SMTPUTF8" in received.mail_options
    assert received.data == data


def test_smtputf8_refused_when_the_server_lacks_it(make_transport: MakeTransport) -> None:
    with SmtpTestServer(smtputf8=False) as server:
        transport = make_transport(server)
        with pytest.raises(PermanentDeliveryError) as caught:
            transport.send(message(UTF8_RECIPIENT, smtputf8=True))
        assert str(caught.value) == (
            f"{UTF8_RECIPIENT} is an internationalised address and 127.0.0.1:{server.port} "
            "does not support SMTPUTF8"
        )
        assert server.transactions == 0

        transport.send(message("ann@example.org"))  # the connection was left clean
        assert server.connections == 1 and len(server.messages) == 1


def test_non_ascii_address_not_marked_smtputf8_never_reaches_the_server(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        make_transport(server).send(message(UTF8_RECIPIENT, smtputf8=False))
    assert str(caught.value).startswith(f"{UTF8_RECIPIENT} is an internationalised address")
    assert server.connections == 0


# --- the pool ---------------------------------------------------------------------------------


def test_connections_are_reused_up_to_the_cap(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server, connections=1, max_messages_per_connection=3)
    for number in range(7):
        transport.send(message(f"r{number}@example.org"))

    assert [m.connection for m in server.messages] == [1, 1, 1, 2, 2, 2, 3]
    assert server.quits == 2  # the full connections were closed politely


def test_check_keeps_its_connection_for_the_first_send(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server)
    transport.check()
    transport.send(message())
    assert server.connections == 1


def test_close_quits_and_the_transport_can_be_used_again(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server)
    transport.send(message("a@example.org"))
    transport.close()
    assert server.quits == 1

    transport.send(message("b@example.org"))
    assert [m.connection for m in server.messages] == [1, 2]


def _send_in_threads(
    transport: SmtpTransport, recipients: list[str], threads: int
) -> list[DeliveryReceipt]:
    receipts: list[DeliveryReceipt] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(share: list[str]) -> None:
        try:
            for recipient in share:
                receipt = transport.send(message(recipient))
                with lock:
                    receipts.append(receipt)
        except BaseException as err:  # surfaced in the main thread below
            with lock:
                errors.append(err)

    workers = [
        threading.Thread(target=worker, args=(recipients[index::threads],))
        for index in range(threads)
    ]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=30)
    assert errors == []
    return receipts


def test_three_threads_send_300_messages_each_received_once(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server, connections=3)
    recipients = [f"reader{number}@example.org" for number in range(300)]

    receipts = _send_in_threads(transport, recipients, threads=3)

    received = Counter(r for m in server.messages for r in m.rcpt_tos)
    assert received == Counter(recipients)
    assert len({receipt.reply for receipt in receipts}) == 300  # one queue id each
    assert 1 <= server.connections <= 3


def test_more_threads_than_connections_share_the_pool(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server, connections=2)
    recipients = [f"reader{number}@example.org" for number in range(60)]

    _send_in_threads(transport, recipients, threads=6)

    assert sorted(r for m in server.messages for r in m.rcpt_tos) == sorted(recipients)
    assert server.connections <= 2


def test_an_odd_reply_after_the_data_is_uncertain(
    server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server)
    server.defer("data_end", reply="354 What?")
    with pytest.raises(UncertainDeliveryError) as caught:
        transport.send(message())
    assert caught.value.reply == "354 What?"


@pytest.mark.parametrize(
    "recipient",
    [
        "evil@example.org>\r\nRCPT TO:<other@example.org",
        "a\n@example.org",
        "a\r@example.org",
        "a\x00@example.org",
        " ",
        "",
        "<a@example.org>",
        "a@example.org> SIZE=1",
        "a b@example.org",
        "a@example.org\u2028",
    ],
)
def test_addresses_that_could_inject_commands_never_reach_the_server(
    recipient: str, server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    # The transport writes MAIL and RCPT itself: what goes between <> is the address as given.
    with pytest.raises(PermanentDeliveryError) as caught:
        make_transport(server).send(message(recipient, data=b"Subject: x\r\n\r\nx\r\n"))
    assert str(caught.value) == (
        f"{recipient!r} is not a usable address (empty, or containing a line break, a control "
        "character, a space or an angle bracket)"
    )
    assert server.connections == 0


@pytest.mark.parametrize("sender", ["news@example.org>\r\nRSET", "<news@example.org>", "n s@x.org"])
def test_a_sender_that_could_inject_commands_never_reaches_the_server(
    sender: str, server: SmtpTestServer, make_transport: MakeTransport
) -> None:
    with pytest.raises(PermanentDeliveryError, match="is not a usable address"):
        make_transport(server).send(message(sender=sender, data=b"Subject: x\r\n\r\nx\r\n"))
    assert server.connections == 0


@pytest.mark.parametrize("step", [1_500, 397], ids=["~700 pieces", "~2,600 pieces"])
def test_write_data_finishes_a_body_the_socket_takes_in_parts(step: int) -> None:
    """A socket with a timeout and a small send buffer takes a large body in several writes
    (back-pressure from a slow server): every byte arrives once, in order, then the ".".
    The body comes in pieces of uneven sizes, some empty, as a spliced message is written:
    fewer than one write can gather, and more (joined first).
    """
    sender, receiver = socket.socketpair()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sender.settimeout(5)
    body = bytes(range(256)) * 4096 + b"\r\n"  # 1 MB, far more than the buffers hold
    cuts = sorted({0, len(body), *range(0, len(body), step), *range(5, len(body), 100_003)})
    pieces = (*(body[a:b] for a, b in itertools.pairwise(cuts)), b"")
    assert len(pieces) > 500 and b"".join(pieces) == body
    received = bytearray()

    def read_slowly() -> None:
        while chunk := receiver.recv(8192):
            received.extend(chunk)
            if received.endswith(b"\r\n.\r\n"):
                return

    reader = threading.Thread(target=read_slowly)
    reader.start()
    try:
        _write_data(sender, pieces)
    finally:
        reader.join(10)
        sender.close()
        receiver.close()
    assert bytes(received) == body + b".\r\n"


@pytest.mark.parametrize(
    "stream",
    [
        b"250 2.0.0 queued as 4F\r\n",
        b"250-first line\r\n250-second\r\n250 last\r\n",
        b"554 5.7.1 refused  \t\r\n",
        b"xyz not a reply\r\n",
        b"250 no line end",
        b"",
        b"250 " + b"x" * 9000 + b"\r\n",
    ],
)
def test_reply_reads_what_smtplib_getreply_reads(stream: bytes) -> None:
    """The transport's own reply parser gives smtplib's code and text, or its error, for the
    same bytes followed by the end of the connection."""

    def smtplib_reads() -> object:
        ours, theirs = socket.socketpair()
        theirs.sendall(stream)
        theirs.close()
        smtp = smtplib.SMTP()
        smtp.sock = ours
        smtp.file = ours.makefile("rb")
        try:
            return smtp.getreply()
        except smtplib.SMTPServerDisconnected:
            return "disconnected"
        except smtplib.SMTPException as err:
            return type(err), str(err)
        finally:
            ours.close()

    def we_read() -> object:
        connection = _Connection.__new__(_Connection)
        connection.unread = b""
        # The bytes arrive in pieces, then the connection ends: a reply is taken only whole.
        for number in range(0, len(stream), 7):
            connection.unread += stream[number : number + 7]
            try:
                found = _take_reply(connection)
            except smtplib.SMTPException as err:
                return type(err), str(err)
            if found is not None:
                return found
        try:
            found = _take_reply(connection, at_end=True)
        except smtplib.SMTPException as err:
            return type(err), str(err)
        return "disconnected" if found is None else found

    assert we_read() == smtplib_reads()
