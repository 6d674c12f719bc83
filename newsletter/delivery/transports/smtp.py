"""SMTP transport: a small pool of persistent connections, every reply mapped to a typed error.

The hard part is telling a failure that is safe to retry from one that is not. A connection
lost before the terminating "." of DATA was written means the server cannot have a complete
message; lost after it, the server may have accepted it. `smtplib.sendmail` hides that moment,
so MAIL, RCPT and DATA are written here (smtplib only connects, greets, authenticates and reads
replies) and the body is written to the socket directly.

Per message the client does little: MAIL, RCPT and DATA go in one write when the server offers
PIPELINING (RFC 2920; else one by one), and a message the template built (`wire_ready`: CRLF
line ends, no line starting with ".") is written as it is, in the pieces it was spliced from
(one gathering write), with no scan, copy or dot-stuffing. One thread carries a whole batch
over all the connections it can hold, waiting on all of them at once (poll), and says which
messages are about to reach the server as their 354s arrive (`base.handover_each`), so the
sender marks them `sending` together, in one commit. When fewer messages are left to begin than
it has connections, and none has failed, it asks the sender for more (`base.more_items`): the
connections go on instead of waiting at each batch's end.
"""

from __future__ import annotations

import collections
import ipaddress
import queue
import re
import select
import smtplib
import socket
import ssl
import time
from collections.abc import Iterable, Sequence

from ...config import TransportSettings
from ...errors import (
    DeliveryError,
    NotStartedError,
    PermanentDeliveryError,
    RecipientRejectedError,
    SenderRefusedError,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from .base import (
    BatchItem,
    BatchResult,
    DeliveryReceipt,
    OutgoingMessage,
    handover_each,
    more_items,
    stopping,
)

SECURITY_MODES = ("starttls", "tls", "none")

_LINE_END = re.compile(rb"\r\n|\r|\n")
# An enhanced status code 5.7.x: security or policy (RFC 3463), about us or the message.
_POLICY = re.compile(r"^5\.7\.\d{1,3}\b")
# Replies that mean the session itself is refused, whichever command they answer.
_AUTH_CODES = (530, 535)
_END_OF_DATA = b".\r\n"
_PER_CONNECTION = 8


def is_loopback_host(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1: hosts a password may be sent to in plain text.

    Names are not resolved: only the literal `localhost` counts, so no DNS answer can turn a
    remote host into a "local" one.
    """
    name = host.strip().rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def smtp_body(data: bytes) -> bytes:
    """The message as it goes on the wire after DATA: CRLF line ends, leading dots doubled.

    Ends with CRLF, so only the terminating ".\\r\\n" is left to write.
    """
    crlf = data.count(b"\r\n")
    # Counting is cheap; the regular expressions only run when something needs fixing.
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        data = _LINE_END.sub(b"\r\n", data)
    # Line ends are CRLF by now, so every line after the first starts after "\n": a plain
    # replace doubles leading dots several times faster than a regular expression.
    if b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


class _Connection:
    """One open SMTP session and the number of transactions it has carried (mutable on purpose).

    `pipelining`, `size`, `eight_bit`, `smtputf8`: the server offers PIPELINING (RFC 2920),
    SIZE, 8BITMIME and SMTPUTF8 after the last EHLO (read once, not per message).
    """

    __slots__ = ("eight_bit", "pipelining", "size", "smtp", "smtputf8", "unread", "used")

    def __init__(self, smtp: smtplib.SMTP) -> None:
        self.smtp = smtp
        self.used = 0
        self.unread = b""  # bytes read from the socket and not yet taken as replies
        self.pipelining = bool(smtp.has_extn("pipelining"))
        self.size = bool(smtp.has_extn("size"))
        self.eight_bit = bool(smtp.has_extn("8bitmime"))
        self.smtputf8 = bool(smtp.has_extn("smtputf8"))

    @property
    def is_open(self) -> bool:
        return self.smtp.sock is not None

    def looks_alive(self) -> bool:
        """False when the server has spoken or hung up while the connection sat idle.

        An idle SMTP connection never has anything to read; a 421 timeout notice or an EOF
        there means the session is over. Dropping it costs one reconnect; using it would cost
        the message a failed attempt.
        """
        sock = self.smtp.sock
        if sock is None:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                return not poller.poll(0)
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def drop(self) -> None:
        """Close the socket without QUIT: used when the session is in an unknown state."""
        self.smtp.close()

    def quit(self) -> None:
        """Say goodbye politely; the server may already be gone."""
        try:
            if self.is_open:
                self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            self.smtp.close()


def _reply_text(text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(text.split())


def _reason(err: BaseException) -> str:
    """A short reason for a socket-level failure (never contains credentials)."""
    inner = err.__context__
    if isinstance(err, TimeoutError) or isinstance(inner, TimeoutError):
        return "timed out"
    if isinstance(err, smtplib.SMTPServerDisconnected):
        if isinstance(inner, OSError) and inner.strerror:
            return f"connection closed: {inner.strerror}"
        return "connection closed by the server"
    if isinstance(err, OSError) and isinstance(err.strerror, str):
        return err.strerror
    return str(err) or type(err).__name__


class SmtpTransport:
    """Sends over SMTP with up to `settings.connections` persistent connections.

    `send_batch` runs its items' transactions side by side, one per connection, in the calling
    thread: it takes as many pool slots as are free (at least one; opening connections as
    needed) and gives them back with their connections when the batch is done. `send` is a
    batch of one. Thread-safe: several threads share the pool's slots and idle connections.
    """

    name = "smtp"
    needs_mime = True
    delivers_mime_as_is = True
    signals_handover = True  # after the 354 to DATA, before the body
    hands_over_each = True  # a batch's messages go over several connections at once

    def __init__(
        self,
        settings: TransportSettings,
        *,
        password: str | None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if settings.security not in SECURITY_MODES:
            raise TransportUnavailableError(
                f"transport.security: unknown mode '{settings.security}'; "
                f"use one of {', '.join(SECURITY_MODES)}"
            )
        self._settings = settings
        self._server = _server_name(settings.host, settings.port)
        # Enough messages per connection that each stays busy through a batch.
        self.max_batch = max(1, settings.connections) * _PER_CONNECTION
        if settings.username is not None:
            if settings.security == "none" and not is_loopback_host(settings.host):
                # Checked before any connection exists, so the password never leaves in clear.
                raise TransportUnavailableError(
                    f"refusing to send the password for {settings.username} to {self._server} "
                    'without encryption (transport.security = "none")',
                    hint='Set transport.security to "starttls" or "tls"; "none" allows AUTH '
                    "only to a server on this machine (127.0.0.1, ::1, localhost).",
                )
            if not password:
                raise TransportUnavailableError(
                    f"no password for {settings.username} at {self._server}",
                    hint=f"Set the environment variable {settings.password_env}.",
                )
        self._password = password
        self._context: ssl.SSLContext | None = None
        if settings.security != "none":
            self._context = ssl_context if ssl_context is not None else _default_context(settings)
        # A token per connection allowed, and the idle connections (most recent last). Both
        # are C structures whose operations are atomic: taking and giving back a connection,
        # twice a message, costs no Python-level lock or condition (a BoundedSemaphore is one).
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(settings.connections):
            self._slots.put(None)
        self._idle: collections.deque[_Connection] = collections.deque()

    def __repr__(self) -> str:
        user = f", username={self._settings.username!r}" if self._settings.username else ""
        return f"SmtpTransport({self._server}, security={self._settings.security!r}{user})"

    # --- the Transport protocol ---------------------------------------------------------------

    def check(self) -> None:
        """Connect, say EHLO, STARTTLS and AUTH as configured, NOOP; keep the connection."""
        self._slots.get()
        try:
            connection = self._take()
            try:
                code, text = connection.smtp.noop()
            except (smtplib.SMTPException, OSError) as err:
                connection.drop()
                raise TransportUnavailableError(
                    f"{self._server} closed the connection ({_reason(err)})"
                ) from err
            if code != 250:
                connection.drop()
                raise TransportUnavailableError(
                    f"{self._server} answered NOOP with {code} {_reply_text(text)}"
                )
            self._put_back(connection)
        finally:
            self._slots.put(None)

    def send(self, message: OutgoingMessage) -> DeliveryReceipt:
        """Run one SMTP transaction for `message`; raise a typed error on any failure."""
        (result,) = self._carry([("", message)])
        if result.error is not None:
            raise result.error
        assert result.receipt is not None
        return result.receipt

    def send_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        """Every item over up to `settings.connections` connections at once, in this thread;
        one result per item, in order (an item's error is its result, not raised)."""
        return self._carry([(item.key, item.message) for item in items])

    def close(self) -> None:
        """QUIT every idle connection; the transport reconnects if it is used again."""
        while self._idle:
            try:
                connection = self._idle.pop()
            except IndexError:  # another thread took the last one
                break
            connection.quit()

    # --- the pool -----------------------------------------------------------------------------

    def _take(self) -> _Connection:
        """An idle live connection, else a new one (the caller holds a pool slot)."""
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                return self._open()
            if connection.looks_alive():
                return connection
            connection.drop()

    def _put_back(self, connection: _Connection) -> None:
        if not connection.is_open:
            return
        if connection.used >= self._settings.max_messages_per_connection:
            connection.quit()
            return
        self._idle.append(connection)

    def _open(self) -> _Connection:
        """Connect and prepare a session; every failure is a TransportUnavailableError."""
        settings = self._settings
        server = self._server
        smtp: smtplib.SMTP | None = None
        step = "connect"
        try:
            if settings.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    settings.host,
                    settings.port,
                    local_hostname=settings.local_hostname,
                    timeout=settings.timeout,
                    context=self._context,
                )
            else:
                smtp = smtplib.SMTP(
                    settings.host,
                    settings.port,
                    local_hostname=settings.local_hostname,
                    timeout=settings.timeout,
                )
            step = "EHLO"
            _hello(smtp, server)
            if settings.security == "starttls":
                step = "STARTTLS"
                if not smtp.has_extn("starttls"):
                    raise TransportUnavailableError(
                        f"{server} does not offer STARTTLS; refusing to continue without "
                        "encryption",
                        hint='Use transport.security = "tls" if the server expects TLS from '
                        'the start (usually port 465); "none" only for a local test server.',
                    )
                smtp.starttls(context=self._context)
                step = "EHLO"
                _hello(smtp, server)
            if settings.username is not None:
                step = "AUTH"
                self._login(smtp)
        except TransportUnavailableError:
            if smtp is not None:
                smtp.close()
            raise
        except (smtplib.SMTPException, OSError) as err:
            if smtp is not None:
                smtp.close()
            raise _unavailable(err, server, step, settings) from err
        return _Connection(smtp)

    def _login(self, smtp: smtplib.SMTP) -> None:
        username = self._settings.username
        assert username is not None and self._password is not None
        try:
            smtp.login(username, self._password)
        except smtplib.SMTPAuthenticationError as err:
            raise TransportUnavailableError(
                f"authentication failed for {username} at {self._server}: "
                f"{err.smtp_code} {_reply_text(err.smtp_error)}",
                hint=f"Check transport.username and the environment variable "
                f"{self._settings.password_env}.",
            ) from err
        except smtplib.SMTPNotSupportedError as err:
            raise TransportUnavailableError(
                f"{self._server} does not offer AUTH on this connection",
                hint="Servers usually offer AUTH only after STARTTLS; check transport.security.",
            ) from err

    # --- the transactions of a batch ----------------------------------------------------------
    #
    # One thread drives a transaction on each connection it holds: it writes what a connection
    # can take next, waits (poll) until any of them has a reply, and reads it. Sending threads
    # that each waited on their own connection cost about twice the CPU per message (the GIL
    # and the wake-ups passed between them, bench/README.md); here a wait serves every
    # connection, and the messages whose 354 arrived together are handed over together: one
    # ledger commit marks them all `sending` (`handover_each`).

    def _carry(self, jobs: Sequence[tuple[str, OutgoingMessage]]) -> list[BatchResult]:
        """The result of each (key, message) of `jobs`, in order, sent over the pool."""
        lanes = self._hold_slots(len(jobs))
        batch = _Batch(jobs)
        try:
            while True:
                self._start(lanes, batch)
                if batch.grows and len(batch.todo) < len(lanes) and not stopping():
                    # Few left to begin: the next items are made now, while the servers work
                    # on the messages under way, not when every connection has gone idle.
                    more = more_items()
                    batch.grows = bool(more)
                    batch.add((item.key, item.message) for item in more)
                    self._start(lanes, batch)
                busy = [lane for lane in lanes if lane.exchange is not None]
                if not busy:
                    break
                ready: list[_Exchange] = []
                for lane, readable in self._wait(busy):
                    exchange = lane.exchange
                    if exchange is not None and self._advance(exchange, batch, readable):
                        ready.append(exchange)
                if ready:
                    # Replies that came in meanwhile are read too: more messages to a commit.
                    others = [lane for lane in busy if lane.exchange not in ready and lane.exchange]
                    for lane, readable in self._wait(others, at_once=True) if others else ():
                        exchange = lane.exchange
                        if exchange is not None and self._advance(exchange, batch, readable):
                            ready.append(exchange)
                    accepted, batch.accepted = batch.accepted, []
                    handover_each([batch.keys[exchange.index] for exchange in ready], accepted)
                    for exchange in ready:
                        self._write_body(exchange, batch)
        except BaseException:
            # Interrupted (the ledger could not mark a handover, a bug, a signal): no session
            # with a transaction under way can be trusted, and no body may follow.
            for lane in lanes:
                if lane.exchange is not None:
                    lane.exchange.connection.drop()
                    lane.exchange = None
            raise
        finally:
            for lane in lanes:
                if lane.connection is not None:
                    self._put_back(lane.connection)
                self._slots.put(None)
        missing = [index for index, result in enumerate(batch.results) if result is None]
        assert not missing, f"no result for items {missing}"
        return [result for result in batch.results if result is not None]

    def _hold_slots(self, wanted: int) -> list[_Lane]:
        """A lane per pool slot this batch may use: one (waiting for it), and more while free."""
        self._slots.get()
        lanes = [_Lane()]
        while len(lanes) < min(wanted, self._settings.connections):
            try:
                self._slots.get_nowait()
            except queue.Empty:
                break
            lanes.append(_Lane())
        return lanes

    def _start(self, lanes: list[_Lane], batch: _Batch) -> None:
        """Begin the next items' transactions on every lane that is free."""
        for lane in lanes:
            while lane.exchange is None and lane.usable and batch.todo:
                if batch.stopped is not None:
                    batch.fail_rest(batch.stopped)
                    return
                if stopping():
                    batch.fail_rest(
                        NotStartedError("not begun: the send is stopping; sent by the next run")
                    )
                    return
                index, message = batch.todo.popleft()
                try:
                    _check_addresses(message)
                    if lane.connection is not None and not lane.connection.is_open:
                        lane.connection = None
                    if (
                        lane.connection is not None
                        and lane.connection.used >= self._settings.max_messages_per_connection
                    ):
                        lane.connection.quit()
                        lane.connection = None
                    if lane.connection is None:
                        lane.connection = self._opened(lanes, lane)
                    lane.exchange = self._begin(lane.connection, index, message)
                    lane.exchange.lane = lane
                except _NoConnection as gone:
                    # This lane could not connect; others still can carry the item.
                    lane.usable = False
                    batch.todo.appendleft((index, message))
                    if not any(other.usable for other in lanes):
                        batch.fail_rest(gone.error)
                        return
                except DeliveryError as err:
                    batch.finish(index, error=err)
                    if isinstance(err, TransportUnavailableError):
                        batch.stopped = err  # refused us, not the recipient: try no more

    def _opened(self, lanes: list[_Lane], lane: _Lane) -> _Connection:
        """A connection for `lane`. When none can be opened: `_NoConnection` while another lane
        still has an open one (the batch goes on without this lane), else the error itself."""
        try:
            return self._take()
        except TransportUnavailableError as err:
            if any(
                other is not lane and other.connection and other.connection.is_open
                for other in lanes
            ):
                raise _NoConnection(err) from err
            raise

    def _begin(self, connection: _Connection, index: int, message: OutgoingMessage) -> _Exchange:
        """Write MAIL, RCPT and DATA (or MAIL alone, lock-step) for `message`."""
        extra = self._mail_options(connection, message)
        connection.used += 1
        # Written here, not by smtplib's mail()/rcpt(), which parse every address again: ours
        # were checked (`_check_addresses`: no controls, spaces or angle brackets).
        encoding = "utf-8" if message.smtputf8 else "ascii"
        mail = f"MAIL FROM:<{message.sender}>{extra}\r\n".encode(encoding)
        rcpt = f"RCPT TO:<{message.recipient}>\r\n".encode(encoding)
        exchange = _Exchange(connection, index, message, self._settings.timeout)
        if connection.pipelining:
            # RFC 2920: MAIL, RCPT and DATA in one write, then their three replies.
            exchange.waiting = [_MAIL, _RCPT, _DATA]
            self._write(exchange, mail + rcpt + _DATA_COMMAND)
        else:
            exchange.waiting = [_MAIL]
            exchange.later = [rcpt, _DATA_COMMAND]
            self._write(exchange, mail)
        return exchange

    def _write(self, exchange: _Exchange, data: bytes) -> None:
        sock = exchange.connection.smtp.sock
        try:
            if sock is None:
                raise smtplib.SMTPServerDisconnected("not connected")
            sock.sendall(data)
        except (smtplib.SMTPException, OSError) as err:
            raise self._lost_before(exchange, err) from err
        exchange.deadline = time.monotonic() + self._settings.timeout

    def _wait(self, busy: list[_Lane], *, at_once: bool = False) -> list[tuple[_Lane, bool]]:
        """Wait until a busy lane's server has said something, or a lane's time is up:
        (lane, True) for each with something to read, else (lane, False) for each timed out.
        `at_once`: no wait, only the lanes with something to read now."""
        fds: dict[int, _Lane] = {}
        for lane in busy:
            assert lane.exchange is not None
            sock = lane.exchange.connection.smtp.sock
            if sock is None or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                return [(lane, True)]  # its read fails at once, or TLS holds a decrypted reply
            fds[sock.fileno()] = lane
        deadline = min(lane.exchange.deadline for lane in busy if lane.exchange is not None)
        wait = 0.0 if at_once else max(0.0, deadline - time.monotonic())
        if hasattr(select, "poll"):
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            ready = [fds[fd] for fd, _ in poller.poll(wait * 1000)]
        else:
            readable, _, _ = select.select(list(fds), [], [], wait)
            ready = [fds[fd] for fd in readable]
        if ready or at_once:
            return [(lane, True) for lane in ready]
        now = time.monotonic()
        return [(lane, False) for lane in busy if lane.exchange and lane.exchange.deadline <= now]

    def _advance(self, exchange: _Exchange, batch: _Batch, readable: bool) -> bool:
        """Read what `exchange`'s server said and act on each reply (`readable` False: its
        time is up). True when its MAIL, RCPT and DATA were accepted: the body comes next."""
        connection = exchange.connection
        try:
            if not readable:
                raise TimeoutError("timed out")
            sock = connection.smtp.sock
            if sock is None:
                raise smtplib.SMTPServerDisconnected("not connected")
            chunk = sock.recv(_READ_SIZE)
            connection.unread += chunk
            while exchange.waiting:
                reply = _take_reply(connection, at_end=not chunk)
                if reply is None:
                    break
                if self._on_reply(exchange, batch, *reply):
                    return True
            if not chunk and exchange.waiting:
                connection.drop()
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        except DeliveryError as err:
            self._finish(exchange, batch, error=err)
        except (smtplib.SMTPException, OSError) as err:
            self._finish(exchange, batch, error=self._lost(exchange, err))
        return False

    def _on_reply(self, exchange: _Exchange, batch: _Batch, code: int, text: bytes) -> bool:
        """Act on one reply; True when the body may follow (DATA accepted)."""
        connection, message = exchange.connection, exchange.message
        step = exchange.waiting.pop(0)
        stage, accepted = step
        if exchange.refusal is not None:
            # Replies after a pipelined refusal say nothing (503s); read so the session stays
            # in step. A 354 leaves the server waiting for a body, a 421 or junk ends it.
            if code in (354, 421) or not 200 <= code < 600:
                exchange.clean = False
            if not exchange.waiting or not exchange.clean:
                self._finish(exchange, batch, error=self._refusal(exchange))
            return False
        if step is _END:
            receipt, error = self._final(exchange, code, text)
            self._finish(exchange, batch, receipt=receipt, error=error)
            return False
        if code in accepted:
            if step is _DATA:
                return True
            if exchange.later:
                exchange.waiting.append(_RCPT if step is _MAIL else _DATA)
                self._write(exchange, exchange.later.pop(0))
            return False
        if not connection.pipelining:
            clean = not connection.unread
            if not clean:
                connection.drop()  # more than the one reply it owed: out of step
            error = self._refused(connection, message, stage, code, text, reset=clean)
            self._finish(exchange, batch, error=error)
        elif code == 421 or not 400 <= code < 600:
            error = self._refused(connection, message, stage, code, text, reset=False)
            self._finish(exchange, batch, error=error)
        else:
            # The first refusal is the one reported (after a refused MAIL the server answers
            # RCPT and DATA with 503: those say nothing); the replies after it are read first.
            exchange.refusal = (stage, code, text)
            if not exchange.waiting:
                self._finish(exchange, batch, error=self._refusal(exchange))
        return False

    def _refusal(self, exchange: _Exchange) -> DeliveryError:
        """The error of a pipelined refusal, once the replies after it were read (or could
        not be): RSET when the session is clean, else it is dropped."""
        assert exchange.refusal is not None
        stage, code, text = exchange.refusal
        clean = exchange.clean and not exchange.connection.unread
        if not clean:
            exchange.connection.drop()
        return self._refused(exchange.connection, exchange.message, stage, code, text, reset=clean)

    def _write_body(self, exchange: _Exchange, batch: _Batch) -> None:
        """Write the body and the terminating "." (the server waits for it after its 354)."""
        sock = exchange.connection.smtp.sock
        message = exchange.message
        body = message.pieces if message.wire_ready else (smtp_body(message.data),)
        try:
            if sock is None:
                raise smtplib.SMTPServerDisconnected("not connected")
            # One write: a separate small write of the terminator would wait for the server's
            # delayed ACK (Nagle), ~40 ms a message. It either writes it all, "." included, or
            # raises, in which case the server cannot have the end of the data.
            _write_data(sock, body)
        except (smtplib.SMTPException, OSError) as err:
            self._finish(exchange, batch, error=self._lost_before(exchange, err))
            return
        # From here on the server has the whole message and only its answer is missing.
        exchange.body_sent = True
        exchange.waiting = [_END]
        exchange.deadline = time.monotonic() + self._settings.timeout

    def _final(
        self, exchange: _Exchange, code: int, text: bytes
    ) -> tuple[DeliveryReceipt | None, DeliveryError | None]:
        """The outcome of the reply to the end of data: a receipt or an error."""
        connection, message = exchange.connection, exchange.message
        if 200 <= code < 300:
            return DeliveryReceipt(message.recipient, f"{code} {_reply_text(text)}".strip()), None
        if not 400 <= code < 600:
            # Neither yes nor no, and the server has the whole message: do not guess.
            connection.drop()
            return None, UncertainDeliveryError(
                f"{message.recipient}: {self._server} gave an unexpected reply after the "
                f"message was sent: {code} {_reply_text(text)}; it may have been delivered",
                hint="Check the server's log before sending to this recipient again.",
                reply=f"{code} {_reply_text(text)}".strip(),
            )
        # The transaction is over either way, so the session is clean without RSET.
        return None, self._refused(connection, message, "end of DATA", code, text, reset=False)

    def _lost(self, exchange: _Exchange, err: BaseException) -> DeliveryError:
        """What a connection lost (or silent past the timeout) means at this point."""
        exchange.connection.drop()
        if exchange.refusal is not None:
            exchange.clean = False
            return self._refusal(exchange)
        if not exchange.body_sent:
            return self._lost_before(exchange, err)
        return UncertainDeliveryError(
            f"{exchange.message.recipient}: connection to {self._server} lost after the message "
            f"was sent, before the server confirmed it ({_reason(err)}); it may have been "
            "delivered",
            hint="Check the server's log before sending to this recipient again.",
        )

    def _lost_before(self, exchange: _Exchange, err: BaseException) -> DeliveryError:
        # Nothing, or not all, of the message reached the server: safe to send again.
        exchange.connection.drop()
        return TransientDeliveryError(
            f"{exchange.message.recipient}: connection to {self._server} lost before the "
            f"message was complete ({_reason(err)}); safe to retry"
        )

    def _finish(
        self,
        exchange: _Exchange,
        batch: _Batch,
        *,
        receipt: DeliveryReceipt | None = None,
        error: DeliveryError | None = None,
    ) -> None:
        """Record the outcome of `exchange`; its lane is free for the next item."""
        exchange.waiting = []
        exchange.lane_free()
        if exchange.connection.unread:
            exchange.connection.drop()  # bytes nobody asked for: the session is out of step
        batch.finish(exchange.index, receipt=receipt, error=error)
        if isinstance(error, TransportUnavailableError):
            batch.stopped = error

    def _mail_options(self, connection: _Connection, message: OutgoingMessage) -> str:
        """The MAIL FROM parameters for `message` on `connection` (each after a space)."""
        options = ""
        if message.smtputf8:
            if not (connection.smtputf8 and connection.eight_bit):
                address = message.recipient
                if address.isascii() and not message.sender.isascii():
                    address = message.sender
                raise PermanentDeliveryError(
                    f"{address} is an internationalised address and {self._server} does not "
                    "support SMTPUTF8",
                    hint="Send through a server that supports SMTPUTF8, or ask the subscriber "
                    "for an ASCII address.",
                )
            options = " SMTPUTF8 BODY=8BITMIME"
        elif message.eight_bit or (
            message.eight_bit is None and not all(piece.isascii() for piece in message.pieces)
        ):
            if not connection.eight_bit:
                raise PermanentDeliveryError(
                    f"{message.recipient}: the message has 8-bit content and {self._server} "
                    "does not support 8BITMIME"
                )
            options = " BODY=8BITMIME"
        if connection.size:
            # Lets the server refuse an oversized message before the body is sent.
            options += f" SIZE={message.size}"
        return options

    def _refused(
        self,
        connection: _Connection,
        message: OutgoingMessage,
        stage: str,
        code: int,
        text: bytes | str,
        *,
        reset: bool,
    ) -> DeliveryError:
        """Map a refusal to its error and leave the connection clean (RSET) or dropped."""
        reply = f"{code} {_reply_text(text)}".strip()
        who = f"{message.recipient}: {self._server}"
        if code == 421 or code < 400 or code >= 600:
            # 421: the server is closing the session. Anything else unexpected: its state is
            # unknown. Either way nothing was accepted, so a retry on a new connection is safe.
            connection.drop()
            what = "is closing the connection" if code == 421 else "gave an unexpected reply"
            return TransientDeliveryError(
                f"{who} {what} at {stage}: {reply}; try again later", reply=reply
            )
        if reset:
            _reset(connection)
        if code in _AUTH_CODES or (code >= 500 and stage == "MAIL"):
            return SenderRefusedError(
                f"{self._server} refused the sender {message.sender} at {stage}: {reply}",
                hint="Check the sender address, transport.username and its password; nobody "
                "was failed for this. Run the same command to resume.",
                reply=reply,
            )
        if code >= 500 and stage != "RCPT" and _POLICY.match(_reply_text(text)):
            return SenderRefusedError(
                f"{self._server} refused the message by policy at {stage}: {reply}",
                hint="The server will not take this message from us (authentication, SPF, "
                "DKIM, DMARC, content policy); nobody was failed for it. Fix the cause and "
                "run the same command to resume.",
                reply=reply,
            )
        if code < 500:
            return TransientDeliveryError(
                f"{who} deferred the message at {stage}: {reply}", reply=reply
            )
        if stage == "RCPT":
            return RecipientRejectedError(f"{who} refused the recipient: {reply}", reply=reply)
        if stage == "MAIL":
            return PermanentDeliveryError(
                f"{who} refused the sender {message.sender}: {reply}", reply=reply
            )
        return PermanentDeliveryError(f"{who} refused the message at {stage}: {reply}", reply=reply)


def _server_name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _default_context(settings: TransportSettings) -> ssl.SSLContext:
    """Certificate and host name verification on; `ca_file` (if set) is the trusted CA."""
    if settings.ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or str(err)
        raise TransportUnavailableError(
            f"transport.ca_file: cannot load CA certificates from {settings.ca_file}: {reason}"
        ) from err


def _hello(smtp: smtplib.SMTP, server: str) -> None:
    code, text = smtp.ehlo()
    if not 200 <= code < 300:
        code, text = smtp.helo()
        if not 200 <= code < 300:
            raise TransportUnavailableError(
                f"{server} refused the greeting: {code} {_reply_text(text)}"
            )


_MAX_LINE = 8192  # smtplib's limit for a reply line
# Fewer pieces than one write may gather (IOV_MAX, 1,024 on Linux); a message in more is joined.
_GATHER_LIMIT = 1000


def _take_reply(connection: _Connection, *, at_end: bool = False) -> tuple[int, bytes] | None:
    """The next whole reply in `connection.unread`, taken out of it, as smtplib's `getreply`
    gives it (the code, -1 when it is not a number; the text of its lines joined by "\\n");
    None until the reply is complete. `at_end`: nothing more will come, so a last line without
    its line end counts, as smtplib reads it. A line over 8,192 bytes raises smtplib's error."""
    buffer = connection.unread
    texts: list[bytes] = []
    start = 0
    while True:
        end = buffer.find(b"\n", start)
        if end < 0:
            if len(buffer) - start > _MAX_LINE:
                raise smtplib.SMTPResponseException(500, "Line too long.")
            if not at_end or start == len(buffer):
                return None
            end = len(buffer) - 1
        line = buffer[start : end + 1]
        if len(line) > _MAX_LINE:
            raise smtplib.SMTPResponseException(500, "Line too long.")
        start = end + 1
        texts.append(line[4:].strip(b" \t\r\n"))
        try:
            code = int(line[:3])
        except ValueError:
            code = -1
        if code == -1 or line[3:4] != b"-":
            connection.unread = buffer[start:]
            return code, texts[0] if len(texts) == 1 else b"\n".join(texts)


def _write_data(sock: socket.socket, body: tuple[bytes, ...]) -> None:
    """The pieces of `body` and the terminating ".", in one write and without joining them (a
    copy of the whole message) where the socket can gather (not TLS)."""
    if isinstance(sock, ssl.SSLSocket):
        sock.sendall(b"".join((*body, _END_OF_DATA)))
        return
    if len(body) >= _GATHER_LIMIT:
        body = (b"".join(body),)
    parts: list[memoryview] | tuple[bytes, ...] = (*body, _END_OF_DATA)
    total = sum(map(len, parts))
    sent = sock.sendmsg(parts)
    if sent == total:
        return  # the usual case: a blocking socket takes it all at once
    parts = [memoryview(part) for part in parts if part]
    while True:
        while parts and sent >= len(parts[0]):
            sent -= len(parts[0])
            parts.pop(0)
        if not parts:
            return
        if sent:
            parts[0] = parts[0][sent:]
        sent = sock.sendmsg(parts)


def _reset(connection: _Connection) -> None:
    """RSET after a refused command; a session that cannot reset is dropped."""
    try:
        code, _ = connection.smtp.rset()
    except (smtplib.SMTPException, OSError):
        connection.drop()
        return
    if code != 250:
        connection.drop()


def _check_addresses(message: OutgoingMessage) -> None:
    """Refuse an address that cannot go between the angle brackets of MAIL or RCPT as it is.

    The commands are written with the addresses as they are (no re-parsing): a line break
    would smuggle extra SMTP commands into the session, a space or an angle bracket would
    change what the server reads as the address or its parameters. Addresses from the list
    never have these (`mime.mailbox_address`); this is the last line of defence.
    """
    for address in (message.sender, message.recipient):
        if (
            not address
            or not address.isprintable()
            or " " in address
            or "<" in address
            or ">" in address
        ):
            raise PermanentDeliveryError(
                f"{address!r} is not a usable address (empty, or containing a line break, "
                "a control character, a space or an angle bracket)"
            )
        if not message.smtputf8 and not address.isascii():
            raise PermanentDeliveryError(
                f"{address} is an internationalised address but the message was not marked "
                "for SMTPUTF8"
            )


def _unavailable(
    err: BaseException, server: str, step: str, settings: TransportSettings
) -> TransportUnavailableError:
    """Why a connection could not be set up, in words a user can act on."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return TransportUnavailableError(
            f"TLS certificate of {server} could not be verified: "
            f"{err.verify_message or err.reason}",
            hint="If the server uses a private CA, set transport.ca_file to its certificate.",
        )
    if isinstance(err, ssl.SSLError):
        return TransportUnavailableError(f"TLS with {server} failed: {err.reason or err}")
    if isinstance(err, socket.gaierror):
        return TransportUnavailableError(
            f"cannot resolve {settings.host}: {err.strerror or err}",
            hint="Check transport.host.",
        )
    if isinstance(err, ConnectionRefusedError):
        return TransportUnavailableError(
            f"connection to {server} refused: is the SMTP server running?",
            hint="Check transport.host and transport.port.",
        )
    if isinstance(err, TimeoutError):
        return TransportUnavailableError(
            f"{server} did not answer within {settings.timeout:g} s ({step})"
        )
    if isinstance(err, smtplib.SMTPResponseException):
        return TransportUnavailableError(
            f"{server} refused {step}: {err.smtp_code} {_reply_text(err.smtp_error)}"
        )
    if isinstance(err, smtplib.SMTPServerDisconnected):
        return TransportUnavailableError(
            f"{server} closed the connection during {step} ({_reason(err)})"
        )
    return TransportUnavailableError(f"cannot connect to {server} ({step}): {_reason(err)}")


# --- the state of a batch in flight (mutable on purpose; one thread) -----------------------------

_Stage = tuple[str, tuple[int, ...]]  # a command's name in messages, and the codes it accepts
_MAIL: _Stage = ("MAIL", (250,))
_RCPT: _Stage = ("RCPT", (250, 251))
_DATA: _Stage = ("DATA", (354,))
_END: _Stage = ("end of DATA", ())
_DATA_COMMAND = b"DATA\r\n"
_READ_SIZE = 65536


class _NoConnection(Exception):
    """A lane could not connect while other lanes of the batch still have connections."""

    def __init__(self, error: TransportUnavailableError) -> None:
        super().__init__(error.message)
        self.error = error


class _Lane:
    """One pool slot a batch holds: its connection and the transaction on it, if any."""

    __slots__ = ("connection", "exchange", "usable")

    def __init__(self) -> None:
        self.connection: _Connection | None = None
        self.exchange: _Exchange | None = None
        self.usable = True


class _Exchange:
    """One transaction on one connection: the replies it waits for, in order."""

    __slots__ = (
        "body_sent",
        "clean",
        "connection",
        "deadline",
        "index",
        "lane",
        "later",
        "message",
        "refusal",
        "waiting",
    )

    def __init__(
        self, connection: _Connection, index: int, message: OutgoingMessage, timeout: float
    ) -> None:
        self.connection = connection
        self.index = index
        self.message = message
        self.deadline = time.monotonic() + timeout
        self.waiting: list[_Stage] = []
        self.later: list[bytes] = []  # lock-step: the commands still to write, in order
        self.refusal: tuple[str, int, bytes] | None = None  # pipelined: the first refusal
        self.clean = True  # pipelined: the replies after a refusal left the session usable
        self.body_sent = False
        self.lane: _Lane | None = None

    def lane_free(self) -> None:
        if self.lane is not None and self.lane.exchange is self:
            self.lane.exchange = None


class _Batch:
    """The items of one `send_batch`: which are still to start, and the results so far.

    A message is held only until its transaction ends (in `todo`, then by its `_Exchange`),
    so a batch that grows (`more_items`) keeps no more than a few messages' bytes."""

    __slots__ = ("accepted", "grows", "keys", "results", "stopped", "todo")

    def __init__(self, jobs: Sequence[tuple[str, OutgoingMessage]]) -> None:
        self.keys: list[str] = []
        self.results: list[BatchResult | None] = []
        self.todo: collections.deque[tuple[int, OutgoingMessage]] = collections.deque()
        self.accepted: list[BatchResult] = []  # since the last handover
        self.stopped: TransportUnavailableError | None = None
        self.grows = True  # may ask for more items: none has failed, the sender had more
        self.add(jobs)

    def add(self, jobs: Iterable[tuple[str, OutgoingMessage]]) -> None:
        for key, message in jobs:
            self.todo.append((len(self.keys), message))
            self.keys.append(key)
            self.results.append(None)

    def finish(
        self,
        index: int,
        *,
        receipt: DeliveryReceipt | None = None,
        error: DeliveryError | None = None,
    ) -> None:
        result = BatchResult(self.keys[index], receipt=receipt, error=error)
        self.results[index] = result
        if receipt is not None:
            self.accepted.append(result)
        else:
            self.grows = False  # the sender decides about failures between batches

    def fail_rest(self, error: DeliveryError) -> None:
        """Items not started get `error` (the transport cannot carry them now, or the send is
        stopping)."""
        while self.todo:
            self.finish(self.todo.popleft()[0], error=error)
