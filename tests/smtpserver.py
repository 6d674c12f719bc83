"""A real SMTP server on 127.0.0.1 for tests (aiosmtpd), with faults programmable per test.

Not a test module: import it from tests (`from tests.smtpserver import SmtpTestServer`).

Start and stop::

    with SmtpTestServer() as server:        # plain SMTP on a free port of 127.0.0.1
        settings = TransportSettings(kind="smtp", host=server.host, port=server.port,
                                     security="none")
        ...
        assert server.messages[0].rcpt_tos == ("ann@example.org",)

    server = SmtpTestServer(); server.start(); ...; server.stop()   # same thing by hand

Options (keyword arguments):
    starttls=True          offer STARTTLS with a trustme certificate for 127.0.0.1/localhost,
                           and refuse MAIL until the client has used it
    implicit_tls=True      TLS from the first byte, like port 465
    username=, password=   offer AUTH PLAIN and LOGIN, and refuse MAIL until authenticated
    auth_require_tls=True  offer AUTH only inside TLS (pass False to test AUTH on plain SMTP)
    smtputf8=True          advertise SMTPUTF8 (8BITMIME is always advertised)
    pipelining=True        advertise PIPELINING (RFC 2920; aiosmtpd reads pipelined commands
                           in order either way, it just does not say so by itself)
    ca=                    the trustme.CA issuing the certificate (default: one per process)
    timeout=30.0           the server's idle timeout, seconds

TLS helpers:
    server.client_context()  an ssl.SSLContext (verification on) trusting the server's CA
    server.ca_pem()          the CA certificate as PEM bytes (write it out for `ca_file`)

Recorded, thread-safe (every property returns a snapshot):
    server.messages       list[ReceivedMessage]; each has mail_from, rcpt_tos, data (the bytes
                          received, dot-unstuffed), mail_options (e.g. ("SMTPUTF8",
                          "BODY=8BITMIME")), connection (1-based number of the connection that
                          carried it), transaction (1-based MAIL number), tls, auth_user, and
                          queue_id (also in the 250 reply: "250 2.0.0 Ok: queued as <queue_id>")
    server.connections    connections opened so far (the server's own start-up probe excluded)
    server.transactions   MAIL commands received so far (all connections)
    server.quits          QUIT commands received so far
    server.wait_for_messages(n, timeout=2.0)   block until n messages are recorded

Faults. Each call returns the armed `Fault`; `fault.fired` counts how often it acted. A fault
matches a stage and optionally a transaction number (the Nth MAIL command since start, across
connections) and/or a recipient; it fires `times` times (None: every time). The first matching
fault wins. Stages: "mail", "rcpt", "data" (the DATA command itself, before 354) and
"data_end" (after the whole message was received, instead of the 250).

    server.reply_421(transaction=2)            421 at MAIL of transaction 2, then close
    server.defer("rcpt", recipient="b@x.org")  451 at that stage (reply= to change the text)
    server.reject_recipient("b@x.org")         550 at RCPT for that address, every time
    server.drop_mid_data(transaction=1)        send 354, read one line of the message, then
                                               drop the connection. The client only notices
                                               before writing its final "." if the message is
                                               bigger than the socket buffers: use
                                               big_message_data() for a deterministic test
    server.drop_after_data(transaction=1)      receive and record the whole message, then drop
                                               without a reply (the client cannot know)
    server.delay("data_end", 1.0)              wait before the normal reply at that stage
    server.add_fault(Fault(stage=..., reply=..., close=..., drop=..., delay=...))
    server.clear_faults()
    server.close_connections()                 drop every open connection (idle timeout)
    server.set_credentials(user, password)     change what AUTH accepts (auth failure)
    server.stop() / server.start()             server down (connections refused) / up again
                                               on the same port
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    _Missing,
)

Stage = Literal["mail", "rcpt", "data", "data_end"]
STAGES: tuple[Stage, ...] = ("mail", "rcpt", "data", "data_end")
HOST = "127.0.0.1"
SERVER_NAME = "smtp.test"
# What a handler hook answers: a reply line, or MISSING for aiosmtpd's own reply (its type is
# private to aiosmtpd but is what its hooks are checked against).
HookReply = str | _Missing


@dataclass
class Fault:
    """One programmed misbehaviour; mutable only in `fired`, which the server updates."""

    stage: Stage
    reply: str | None = None  # reply this instead of the normal one, e.g. "451 4.3.0 Later"
    close: bool = False  # close the connection after `reply`
    drop: bool = False  # drop the connection without a reply (see the stages above)
    delay: float = 0.0  # seconds to wait before acting (or before the normal reply)
    transaction: int | None = None  # only the Nth MAIL transaction (1-based, all connections)
    recipient: str | None = None  # only when this recipient is involved
    times: int | None = 1  # how many times to fire; None = every time
    fired: int = 0

    def matches(self, stage: Stage, transaction: int, recipients: tuple[str, ...]) -> bool:
        if stage != self.stage:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        if self.transaction is not None and self.transaction != transaction:
            return False
        if self.recipient is not None:
            wanted = self.recipient.lower()
            return any(r.lower() == wanted for r in recipients)
        return True


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server accepted (or took in before a programmed drop)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    mail_options: tuple[str, ...]
    connection: int
    transaction: int
    tls: bool
    auth_user: str | None
    queue_id: str


class _QuietDeprecation(logging.Filter):
    """aiosmtpd warns about its own use of a deprecated attribute on every AUTH; not our news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_QuietDeprecation())


@functools.cache
def shared_ca() -> trustme.CA:
    """One test CA per process: generating keys is the slow part of TLS tests."""
    return trustme.CA()


def big_message_data(size: int = 24 * 1024 * 1024) -> bytes:
    """A valid message larger than any socket buffer here (for drop-mid-DATA tests)."""
    line = b"x" * 76 + b"\r\n"
    head = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: big\r\n\r\n"
    return head + line * (size // len(line))


async def _hang() -> None:
    # Parks the session coroutine until aiosmtpd cancels it when the connection is lost.
    await asyncio.sleep(3600)


class _Session(SMTP):
    """aiosmtpd's SMTP protocol plus the hooks only a subclass can reach (DATA before 354)."""

    def __init__(self, handler: _Handler, *, owner: SmtpTestServer, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.owner = owner
        self.connection_number = owner._connection_opened()
        self.transaction_number = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.owner._live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.owner._live.discard(self)
        super().connection_lost(error)

    def drop(self) -> None:
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.abort()

    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.envelope
        if self.session is not None and self.session.host_name and envelope and envelope.rcpt_tos:
            fault = self.owner._take_fault(
                "data", self.transaction_number, tuple(envelope.rcpt_tos)
            )
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.drop:
                    await self.push("354 End data with <CR><LF>.<CR><LF>")
                    await self._reader.readuntil(b"\r\n")
                    self.drop()
                    await _hang()
                    return
                if fault.reply is not None:
                    await self.push(fault.reply)
                    if fault.close:
                        self.close_transport()
                        await _hang()
                    return
        await super().smtp_DATA(arg)

    def close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Handler:
    """aiosmtpd hooks: faults at MAIL, RCPT and end of DATA; recording; AUTH."""

    def __init__(self, owner: SmtpTestServer) -> None:
        self.owner = owner

    async def _act(self, session: _Session, fault: Fault | None) -> HookReply:
        """The reply for a fault (or MISSING for the normal one); closes or drops as asked."""
        if fault is None:
            return MISSING
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            session.drop()
            await _hang()
        return await self._reply(session, fault)

    @staticmethod
    async def _reply(session: _Session, fault: Fault) -> HookReply:
        if fault.reply is None:
            return MISSING
        if fault.close:
            # Pushed here because aiosmtpd would write the hook's reply after the close.
            await session.push(fault.reply)
            session.close_transport()
            await _hang()
        return fault.reply

    async def handle_MAIL(
        self,
        server: _Session,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> HookReply:
        owner = self.owner
        server.transaction_number = owner._next_transaction()
        if owner._credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        status = await self._act(server, owner._take_fault("mail", server.transaction_number, ()))
        if status is MISSING:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            return "250 2.1.0 Ok"
        return status

    async def handle_RCPT(
        self,
        server: _Session,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> HookReply:
        fault = self.owner._take_fault("rcpt", server.transaction_number, (address,))
        status = await self._act(server, fault)
        if status is MISSING:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            return "250 2.1.5 Ok"
        return status

    async def handle_DATA(
        self, server: _Session, session: Session, envelope: Envelope
    ) -> HookReply:
        owner = self.owner
        number = server.transaction_number
        fault = owner._take_fault("data_end", number, tuple(envelope.rcpt_tos))
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        transport = server.transport
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        received = ReceivedMessage(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            mail_options=tuple(envelope.mail_options),
            connection=server.connection_number,
            transaction=number,
            tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
            auth_user=login.decode() if isinstance(login, bytes) else None,
            queue_id=f"Q{number:06d}",
        )
        if fault is not None and fault.drop:
            owner._record(received)  # the server has it; the client will never know
            server.drop()
            await _hang()
        if fault is not None and fault.reply is not None:
            if fault.reply.startswith("2"):
                owner._record(received)
            return await self._reply(server, fault)
        owner._record(received)
        return f"250 2.0.0 Ok: queued as {received.queue_id}"

    async def handle_EHLO(
        self,
        server: _Session,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves it to a 5-argument hook
        if self.owner.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_QUIT(
        self, server: _Session, session: Session, envelope: Envelope
    ) -> HookReply:
        self.owner._count_quit()
        return MISSING

    def authenticate(
        self,
        server: _Session,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        credentials = self.owner._credentials
        ok = (
            credentials is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login, auth_data.password)
            == (credentials[0].encode(), credentials[1].encode())
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class _Controller(Controller):
    def __init__(self, owner: SmtpTestServer, handler: _Handler, port: int, **kwargs: Any) -> None:
        super().__init__(handler, hostname=HOST, port=port, **kwargs)
        self.owner = owner

    def factory(self) -> _Session:
        return _Session(self.handler, owner=self.owner, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # Bound to port 0: learn the real port before aiosmtpd probes it.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated


class SmtpTestServer:
    """A real SMTP server on 127.0.0.1; see the module docstring for the whole API."""

    host = HOST

    def __init__(
        self,
        *,
        starttls: bool = False,
        implicit_tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        auth_require_tls: bool = True,
        smtputf8: bool = True,
        pipelining: bool = True,
        ca: trustme.CA | None = None,
        timeout: float = 30.0,
    ) -> None:
        if starttls and implicit_tls:
            raise ValueError("choose starttls or implicit_tls, not both")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.auth_require_tls = auth_require_tls
        self.smtputf8 = smtputf8
        self.pipelining = pipelining
        self.timeout = timeout
        self.port = 0
        self.ca: trustme.CA | None = None
        self._server_context: ssl.SSLContext | None = None
        if starttls or implicit_tls:
            self.ca = ca or shared_ca()
            self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ca.issue_cert(HOST, "localhost").configure_cert(self._server_context)
        self._credentials = (username, password) if username and password is not None else None
        self._lock = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._faults: list[Fault] = []
        self._connections = 0
        self._transactions = 0
        self._quits = 0
        self._counting = False
        self._live: set[_Session] = set()  # touched only on the server's event loop
        self._controller: _Controller | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> SmtpTestServer:
        """Listen (on a free port the first time, on the same port after `stop`)."""
        if self._controller is not None:
            raise RuntimeError("the test SMTP server is already running")
        handler = _Handler(self)
        kwargs: dict[str, Any] = {
            "server_hostname": SERVER_NAME,
            "enable_SMTPUTF8": self.smtputf8,
            "timeout": self.timeout,
            # aiosmtpd cannot see implicit TLS, so there AUTH must not wait for STARTTLS.
            "auth_require_tls": self.auth_require_tls and not self.implicit_tls,
        }
        if self._credentials is not None:
            kwargs["authenticator"] = handler.authenticate
        if self.starttls:
            kwargs["tls_context"] = self._server_context
            kwargs["require_starttls"] = True
        controller = _Controller(
            self,
            handler,
            self.port,
            ssl_context=self._server_context if self.implicit_tls else None,
            **kwargs,
        )
        self._counting = False
        controller.start()
        self._counting = True
        self.port = controller.port
        self._controller = controller
        return self

    def stop(self) -> None:
        """Drop every connection and stop listening: new connections are refused."""
        controller = self._controller
        if controller is None:
            return
        self.close_connections()
        controller.stop()
        self._controller = None

    def __enter__(self) -> SmtpTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def close_connections(self) -> None:
        """Drop every open connection, as a server does when a client idles too long."""
        controller = self._controller
        if controller is None:
            return

        async def drop_all() -> None:
            for session in list(self._live):
                session.drop()

        asyncio.run_coroutine_threadsafe(drop_all(), controller.loop).result(timeout=5)

    # --- TLS and AUTH -------------------------------------------------------------------------

    def client_context(self) -> ssl.SSLContext:
        """A client context with verification on, trusting this server's CA."""
        if self.ca is None:
            raise RuntimeError("this server has no TLS")
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def ca_pem(self) -> bytes:
        if self.ca is None:
            raise RuntimeError("this server has no TLS")
        return bytes(self.ca.cert_pem.bytes())

    def set_credentials(self, username: str, password: str) -> None:
        """Change the accepted login; only for a server started with credentials."""
        if self._credentials is None:
            raise RuntimeError("start the server with username= and password= to use AUTH")
        self._credentials = (username, password)

    # --- faults -------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        if fault.stage not in STAGES:
            raise ValueError(f"unknown stage {fault.stage!r}; use one of {STAGES}")
        if fault.stage == "mail" and fault.recipient is not None:
            raise ValueError("the recipient is not known yet at MAIL; match a transaction")
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reply_421(
        self, *, transaction: int, reply: str = "421 4.3.2 Service shutting down"
    ) -> Fault:
        return self.add_fault(Fault("mail", reply=reply, close=True, transaction=transaction))

    def defer(
        self,
        stage: Stage,
        *,
        transaction: int | None = None,
        recipient: str | None = None,
        reply: str = "451 4.3.0 Try again later",
        times: int | None = 1,
    ) -> Fault:
        return self.add_fault(
            Fault(stage, reply=reply, transaction=transaction, recipient=recipient, times=times)
        )

    def reject_recipient(
        self, address: str, *, reply: str = "550 5.1.1 No such user here"
    ) -> Fault:
        return self.add_fault(Fault("rcpt", reply=reply, recipient=address, times=None))

    def drop_mid_data(
        self, *, transaction: int | None = None, recipient: str | None = None, times: int = 1
    ) -> Fault:
        return self.add_fault(
            Fault("data", drop=True, transaction=transaction, recipient=recipient, times=times)
        )

    def drop_after_data(
        self, *, transaction: int | None = None, recipient: str | None = None, times: int = 1
    ) -> Fault:
        return self.add_fault(
            Fault("data_end", drop=True, transaction=transaction, recipient=recipient, times=times)
        )

    def delay(
        self,
        stage: Stage,
        seconds: float,
        *,
        transaction: int | None = None,
        recipient: str | None = None,
        times: int | None = 1,
    ) -> Fault:
        return self.add_fault(
            Fault(stage, delay=seconds, transaction=transaction, recipient=recipient, times=times)
        )

    # --- what happened ------------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    @property
    def transactions(self) -> int:
        with self._lock:
            return self._transactions

    @property
    def quits(self) -> int:
        with self._lock:
            return self._quits

    def wait_for_messages(self, count: int, timeout: float = 2.0) -> list[ReceivedMessage]:
        """Block until at least `count` messages are recorded; TimeoutError otherwise."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(f"{len(self._messages)} of {count} messages after {timeout}s")
            return list(self._messages)

    # --- called from the server's thread ------------------------------------------------------

    def _connection_opened(self) -> int:
        with self._lock:
            if not self._counting:
                return 0
            self._connections += 1
            return self._connections

    def _next_transaction(self) -> int:
        with self._lock:
            self._transactions += 1
            return self._transactions

    def _count_quit(self) -> None:
        with self._lock:
            self._quits += 1

    def _take_fault(
        self, stage: Stage, transaction: int, recipients: tuple[str, ...]
    ) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(stage, transaction, recipients):
                    fault.fired += 1
                    return fault
        return None

    def _record(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._messages.append(message)
            self._lock.notify_all()
