"""SmtpTransport's own MAIL/RCPT/DATA: PIPELINING (RFC 2920) where offered, lock-step otherwise.

Against aiosmtpd (tests/smtpserver.py, which offers PIPELINING unless told not to) for the reply
mapping, and against a scripted loopback server for what only the bytes on the wire show: that
MAIL, RCPT and DATA leave in one write before any reply, and what a broken server can answer.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from newsletter.config import TransportSettings
from newsletter.delivery.transports.base import OutgoingMessage, handing_over
from newsletter.delivery.transports.smtp import SmtpTransport
from newsletter.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RecipientRejectedError,
    SenderRefusedError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from tests.smtpserver import Fault, SmtpTestServer, Stage, big_message_data

SENDER = "news@example.org"
DATA = b"From: news@example.org\r\nTo: ann@example.org\r\nSubject: x\r\n\r\nHello\r\n"


def message(
    recipient: str = "ann@example.org",
    *,
    data: bytes = DATA,
    smtputf8: bool = False,
    wire_ready: bool = False,
    eight_bit: bool | None = None,
) -> OutgoingMessage:
    return OutgoingMessage(
        SENDER, recipient, f"<1.{recipient}>", data, smtputf8, wire_ready, eight_bit
    )


def transport_for(port: int, connections: int = 1, timeout: float = 5.0) -> SmtpTransport:
    settings = TransportSettings(
        kind="smtp",
        host="127.0.0.1",
        port=port,
        security="none",
        timeout=timeout,
        connections=connections,
    )
    return SmtpTransport(settings, password=None)


@pytest.fixture(params=[True, False], ids=["pipelining", "lock-step"])
def server(request: pytest.FixtureRequest) -> Iterator[SmtpTestServer]:
    with SmtpTestServer(pipelining=bool(request.param)) as running:
        yield running


@pytest.fixture
def transport(server: SmtpTestServer) -> Iterator[SmtpTransport]:
    made = transport_for(server.port)
    yield made
    made.close()


# --- the reply mapping, the same pipelined or not ---------------------------------------------


@pytest.mark.parametrize(
    ("stage", "reply", "error"),
    [
        ("mail", "550 5.1.8 Bad sender", SenderRefusedError),
        ("mail", "451 4.3.0 Later", TransientDeliveryError),
        ("rcpt", "550 5.1.1 No such user", RecipientRejectedError),
        ("rcpt", "452 4.2.2 Mailbox full", TransientDeliveryError),
        ("data", "554 5.6.0 No thanks", PermanentDeliveryError),
        ("data", "451 4.3.0 Later", TransientDeliveryError),
        ("data_end", "554 5.6.0 Rejected content", PermanentDeliveryError),
        ("data_end", "452 4.3.1 Queue full", TransientDeliveryError),
    ],
)
def test_a_refusal_at_each_stage_is_reported_and_the_session_goes_on(
    stage: Stage,
    reply: str,
    error: type[DeliveryError],
    server: SmtpTestServer,
    transport: SmtpTransport,
) -> None:
    server.add_fault(Fault(stage, reply=reply, transaction=1))
    handed: list[int] = []
    with handing_over(lambda: handed.append(1)), pytest.raises(error) as caught:
        transport.send(message("ann@example.org"))
    assert caught.value.reply == reply
    assert type(caught.value) is error
    # Refused before the body (at MAIL, RCPT or DATA): the row was never handed over.
    assert handed == ([1] if stage == "data_end" else [])
    # RSET (or the finished transaction) left the session clean: the next message uses it.
    transport.send(message("bob@example.org"))
    [received] = server.messages
    assert received.rcpt_tos == ("bob@example.org",)
    assert received.connection == 1
    assert server.connections == 1


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
def test_421_at_any_stage_is_transient_and_the_next_send_reconnects(
    stage: Stage, server: SmtpTestServer, transport: SmtpTransport
) -> None:
    reply = "421 4.3.2 Shutting down"
    server.add_fault(Fault(stage, reply=reply, close=True, transaction=1))
    with pytest.raises(TransientDeliveryError, match="is closing the connection") as caught:
        transport.send(message())
    assert caught.value.reply == reply
    transport.send(message("bob@example.org"))
    assert [m.rcpt_tos for m in server.messages] == [("bob@example.org",)]
    assert server.connections == 2


def test_a_refused_sender_is_reported_not_the_503s_that_follow_it(
    server: SmtpTestServer, transport: SmtpTransport
) -> None:
    # Pipelined, RCPT and DATA are answered "503 need MAIL": the refusal to report is MAIL's.
    server.add_fault(Fault("mail", reply="553 5.7.1 Sender not allowed", transaction=1))
    with pytest.raises(
        SenderRefusedError, match=re.escape("refused the sender news@example.org at MAIL")
    ):
        transport.send(message())
    transport.send(message())
    assert len(server.messages) == 1


def test_lost_after_data_before_the_body_is_safe_to_retry(
    server: SmtpTestServer, transport: SmtpTransport
) -> None:
    # The server goes away once it said 354: the body cannot be complete on its side. (A body
    # bigger than the socket buffers, so the client sees the write fail.)
    with (
        handing_over(server.close_connections),
        pytest.raises(TransientDeliveryError, match="safe to retry"),
    ):
        transport.send(message(data=big_message_data()))
    assert server.messages == []
    transport.send(message("bob@example.org"))
    assert [m.rcpt_tos for m in server.messages] == [("bob@example.org",)]


def test_lost_after_the_final_dot_is_uncertain(
    server: SmtpTestServer, transport: SmtpTransport
) -> None:
    server.drop_after_data(transaction=1)
    with pytest.raises(UncertainDeliveryError, match="may have been delivered"):
        transport.send(message())
    assert len(server.messages) == 1  # the server had it: reporting it sent-or-not is right


def test_a_failing_handover_sends_no_body_and_the_next_send_works(
    server: SmtpTestServer, transport: SmtpTransport
) -> None:
    class LedgerDown(Exception):
        pass

    def fail() -> None:
        raise LedgerDown

    with handing_over(fail), pytest.raises(LedgerDown):
        transport.send(message())
    assert server.messages == []
    transport.send(message("bob@example.org"))
    assert [m.rcpt_tos for m in server.messages] == [("bob@example.org",)]


def test_smtputf8_8bitmime_and_size_are_announced(
    server: SmtpTestServer, transport: SmtpTransport
) -> None:
    data = "Subject: Grüße\r\n\r\nHallo\r\n".encode()
    transport.send(message("jürgen@example.org", data=data, smtputf8=True))
    transport.send(message("ann@example.org", data=data))  # 8-bit, found by looking
    transport.send(message("bob@example.org", eight_bit=True))  # 8-bit, as the message says
    transport.send(message("cy@example.org", eight_bit=False))
    first, second, third, fourth = server.messages
    assert first.rcpt_tos == ("jürgen@example.org",)
    assert set(first.mail_options) == {"SMTPUTF8", "BODY=8BITMIME", f"SIZE={len(data)}"}
    assert set(second.mail_options) == {"BODY=8BITMIME", f"SIZE={len(data)}"}
    assert set(third.mail_options) == {"BODY=8BITMIME", f"SIZE={len(DATA)}"}
    assert set(fourth.mail_options) == {f"SIZE={len(DATA)}"}
    assert first.data == second.data == data


def test_a_wire_ready_message_is_written_as_it_is(
    server: SmtpTestServer, transport: SmtpTransport
) -> None:
    # The flag is trusted, not checked (that is its point): a message breaking its promise
    # shows it, the server un-stuffing a dot the client did not double. The template's
    # messages keep it (tests/test_message_wire.py).
    data = b"Subject: x\r\n\r\n..two dots\r\n"
    transport.send(message(data=data, wire_ready=True))
    transport.send(message(data=data))
    as_is, stuffed = server.messages
    assert as_is.data == b"Subject: x\r\n\r\n.two dots\r\n"
    assert stuffed.data == data


def test_many_messages_over_few_connections_arrive_once_each(server: SmtpTestServer) -> None:
    transport = transport_for(server.port, connections=3)
    addresses = [f"r{n}@example.org" for n in range(90)]
    try:
        threads = [
            threading.Thread(
                target=lambda part: [transport.send(message(a)) for a in part],
                args=(addresses[n::3],),
            )
            for n in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        transport.close()
    received = server.wait_for_messages(90)
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted(addresses)
    assert server.connections <= 3


# --- the bytes on the wire: a scripted server ---------------------------------------------------


class ScriptedServer:
    """One SMTP connection on 127.0.0.1 played by `script`, in a thread; it records what it
    read. `script` gets a `Wire`; an exception in it (a timeout: the client did not send what
    the script waits for) is kept in `errors`."""

    def __init__(self, script: Callable[[Wire], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self.wire: Wire | None = None
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script: Callable[[Wire], None]) -> None:
        self.listener.settimeout(5)
        try:
            connection, _ = self.listener.accept()
            with connection:
                self.wire = Wire(connection)
                script(self.wire)
        except BaseException as err:
            self.errors.append(err)
        finally:
            self.listener.close()

    def join(self) -> None:
        self.thread.join(10)
        if self.errors:
            raise self.errors[0]


class Wire:
    """The server side of one connection: read up to a marker (with a timeout), write."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.buffer = b""
        self.closed = False

    def read_until(self, marker: bytes, timeout: float = 3.0) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waited for {marker!r}, have {self.buffer!r}")
            self.connection.settimeout(left)
            chunk = self.connection.recv(65536)
            if not chunk:
                self.closed = True
                raise ConnectionError(f"closed before {marker!r}, have {self.buffer!r}")
            self.buffer += chunk
        end = self.buffer.index(marker) + len(marker)
        taken, self.buffer = self.buffer[:end], self.buffer[end:]
        return taken

    def idle(self, seconds: float) -> bytes:
        """Whatever arrives within `seconds` (b"" if nothing, or the peer closed)."""
        self.connection.settimeout(seconds)
        try:
            chunk = self.connection.recv(65536)
        except TimeoutError:
            return b""
        if not chunk:
            self.closed = True
        return chunk

    def send(self, data: bytes) -> None:
        self.connection.sendall(data)

    def greet(self, pipelining: bool) -> None:
        self.send(b"220 scripted ESMTP\r\n")
        self.read_until(b"\r\n")
        offer = b"250-PIPELINING\r\n" if pipelining else b""
        self.send(b"250-scripted\r\n" + offer + b"250-8BITMIME\r\n250 SIZE 10000000\r\n")


def test_mail_rcpt_and_data_leave_in_one_write_before_any_reply() -> None:
    seen: dict[str, bytes] = {}

    def script(wire: Wire) -> None:
        wire.greet(pipelining=True)
        # No reply until DATA has arrived: a lock-step client would wait here for ever.
        seen["commands"] = wire.read_until(b"DATA\r\n")
        wire.send(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n")
        seen["body"] = wire.read_until(b"\r\n.\r\n")
        wire.send(b"250 2.0.0 queued as S1\r\n")
        assert wire.read_until(b"\r\n").upper() == b"QUIT\r\n"
        wire.send(b"221 bye\r\n")

    scripted = ScriptedServer(script)
    transport = transport_for(scripted.port)
    receipt = transport.send(message())
    transport.close()
    scripted.join()
    assert receipt.reply == "250 2.0.0 queued as S1"
    assert seen["commands"] == (
        f"MAIL FROM:<{SENDER}> SIZE={len(DATA)}\r\nRCPT TO:<ann@example.org>\r\nDATA\r\n".encode()
    )
    assert seen["body"] == DATA + b".\r\n"


def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    seen: list[bytes] = []

    def script(wire: Wire) -> None:
        wire.greet(pipelining=False)
        for command, reply in (
            (b"MAIL", b"250 2.1.0 ok\r\n"),
            (b"RCPT", b"250 2.1.5 ok\r\n"),
            (b"DATA", b"354 go ahead\r\n"),
        ):
            line = wire.read_until(b"\r\n")
            assert line.startswith(command), line
            # Nothing else comes while this command waits for its reply.
            seen.append(wire.buffer + wire.idle(0.2))
            wire.send(reply)
        wire.read_until(b"\r\n.\r\n")
        wire.send(b"250 2.0.0 queued\r\n")

    scripted = ScriptedServer(script)
    transport = transport_for(scripted.port)
    transport.send(message())
    scripted.join()
    transport.close()
    assert seen == [b"", b"", b""]


def test_a_data_accepted_after_a_refused_sender_gets_no_body_and_the_session_is_dropped() -> None:
    after: dict[str, object] = {}

    def script(wire: Wire) -> None:
        wire.greet(pipelining=True)
        wire.read_until(b"DATA\r\n")
        # A broken server: refuses MAIL, then says 354 to DATA anyway.
        wire.send(b"550 5.7.1 No\r\n503 5.5.1 need MAIL\r\n354 go ahead\r\n")
        after["sent"] = wire.idle(1.0)
        after["closed"] = wire.closed or wire.idle(1.0) == b""

    scripted = ScriptedServer(script)
    transport = transport_for(scripted.port)
    with pytest.raises(SenderRefusedError, match=re.escape("550 5.7.1 No")):
        transport.send(message())
    scripted.join()
    transport.close()
    assert after == {"sent": b"", "closed": True}


def test_replies_lost_after_a_pipelined_refusal_still_report_the_refusal() -> None:
    def script(wire: Wire) -> None:
        wire.greet(pipelining=True)
        wire.read_until(b"DATA\r\n")
        wire.send(b"550 5.1.1 No such user\r\n")  # RCPT's and DATA's replies never come
        wire.connection.close()

    scripted = ScriptedServer(script)
    transport = transport_for(scripted.port)
    with pytest.raises(SenderRefusedError, match=re.escape("550 5.1.1 No such user")):
        transport.send(message())
    scripted.join()
    transport.close()
