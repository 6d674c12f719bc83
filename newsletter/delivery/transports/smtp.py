"""SMTP transport: a small pool of persistent connections, every reply mapped to a typed error.

The hard part is telling a failure that is safe to retry from one that is not. A connection
lost before the terminating "." of DATA was written means the server cannot have a complete
message; lost after it, the server may have accepted it. `smtplib.sendmail` hides that moment,
so MAIL, RCPT and DATA are written here (smtplib only connects, greets, authenticates and reads
replies) and the body is written to the socket directly.

Per message the client does little: MAIL, RCPT and DATA go in one write when the server offers
PIPELINING (RFC 2920; else one by one), and a message the template built (`wire_ready`: CRLF
line ends, no line starting with ".") is written as it is, with no scan, copy or dot-stuffing.
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
from collections.abc import Sequence

from ...config import TransportSettings
from ...errors import (
    DeliveryError,
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
    handover,
    send_one_by_one,
)

SECURITY_MODES = ("starttls", "tls", "none")

_LINE_END = re.compile(rb"\r\n|\r|\n")
# An enhanced status code 5.7.x: security or policy (RFC 3463), about us or the message.
_POLICY = re.compile(r"^5\.7\.\d{1,3}\b")
# Replies that mean the session itself is refused, whichever command they answer.
_AUTH_CODES = (530, 535)
_END_OF_DATA = b".\r\n"


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

    __slots__ = ("eight_bit", "pipelining", "size", "smtp", "smtputf8", "used")

    def __init__(self, smtp: smtplib.SMTP) -> None:
        self.smtp = smtp
        self.used = 0
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

    Thread-safe: each `send` takes a connection from the pool (opening one if none is idle and
    the pool is not full), runs one transaction on it and puts it back. As a `Transport` it is a
    batch of one: the sender runs `settings.connections` batches at a time.
    """

    name = "smtp"
    max_batch = 1
    needs_mime = True
    delivers_mime_as_is = True
    signals_handover = True  # base.handover() after the 354 to DATA, before the body

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
        _check_addresses(message)
        self._slots.get()
        try:
            connection = self._take()
            try:
                return self._transaction(connection, message)
            except DeliveryError:
                raise
            except BaseException:
                connection.drop()  # interrupted somewhere unknown: the session cannot be trusted
                raise
            finally:
                self._put_back(connection)
        finally:
            self._slots.put(None)

    def send_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        """One transaction per item (the sender passes one); errors raise for the batch."""
        return send_one_by_one(self.send, items)

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

    # --- one transaction ----------------------------------------------------------------------

    def _transaction(self, connection: _Connection, message: OutgoingMessage) -> DeliveryReceipt:
        smtp = connection.smtp
        extra = self._mail_options(connection, message)
        connection.used += 1
        # Written here, not by smtplib's mail()/rcpt(), which parse every address again: ours
        # were checked (`_check_addresses`: no controls, spaces or angle brackets).
        commands = (
            f"MAIL FROM:<{message.sender}>{extra}\r\nRCPT TO:<{message.recipient}>\r\n"
        ).encode("utf-8" if message.smtputf8 else "ascii")
        body = message.data if message.wire_ready else smtp_body(message.data)
        try:
            sock = smtp.sock
            if sock is None:
                raise smtplib.SMTPServerDisconnected("not connected")
            if connection.pipelining:
                # RFC 2920: MAIL, RCPT and DATA in one write, then their three replies.
                sock.sendall(commands + b"DATA\r\n")
                self._pipelined_replies(connection, message)
            else:
                sock.sendall(commands[: commands.index(b"\r\n") + 2])
                code, text = smtp.getreply()
                self._expect(connection, message, "MAIL", code, text, 250)
                sock.sendall(commands[commands.index(b"\r\n") + 2 :])
                code, text = smtp.getreply()
                self._expect(connection, message, "RCPT", code, text, 250, 251)
                sock.sendall(b"DATA\r\n")
                code, text = smtp.getreply()
                self._expect(connection, message, "DATA", code, text, 354)
            # The server waits for the body: from its first byte on it could have the message.
            handover()
            # One write: a separate small write of the terminator would wait for the server's
            # delayed ACK (Nagle), ~40 ms a message. It either writes it all, "." included, or
            # raises, in which case the server cannot have the end of the data.
            _write_data(sock, body)
        except (smtplib.SMTPException, OSError) as err:
            # Nothing, or not all, of the message reached the server: safe to send again.
            connection.drop()
            raise TransientDeliveryError(
                f"{message.recipient}: connection to {self._server} lost before the message was "
                f"complete ({_reason(err)}); safe to retry"
            ) from err
        # From here on the server has the whole message and only its answer is missing.
        try:
            code, text = _reply(smtp)
        except (smtplib.SMTPException, OSError) as err:
            connection.drop()
            raise UncertainDeliveryError(
                f"{message.recipient}: connection to {self._server} lost after the message was "
                f"sent, before the server confirmed it ({_reason(err)}); it may have been "
                "delivered",
                hint="Check the server's log before sending to this recipient again.",
            ) from err
        if 200 <= code < 300:
            return DeliveryReceipt(message.recipient, f"{code} {_reply_text(text)}".strip())
        if not 400 <= code < 600:
            # Neither yes nor no, and the server has the whole message: do not guess.
            connection.drop()
            raise UncertainDeliveryError(
                f"{message.recipient}: {self._server} gave an unexpected reply after the message "
                f"was sent: {code} {_reply_text(text)}; it may have been delivered",
                hint="Check the server's log before sending to this recipient again.",
                reply=f"{code} {_reply_text(text)}".strip(),
            )
        # The transaction is over either way, so the session is clean without RSET.
        raise self._refused(connection, message, "end of DATA", code, text, reset=False)

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
        elif message.eight_bit or (message.eight_bit is None and not message.data.isascii()):
            if not connection.eight_bit:
                raise PermanentDeliveryError(
                    f"{message.recipient}: the message has 8-bit content and {self._server} "
                    "does not support 8BITMIME"
                )
            options = " BODY=8BITMIME"
        if connection.size:
            # Lets the server refuse an oversized message before the body is sent.
            options += f" SIZE={len(message.data)}"
        return options

    def _pipelined_replies(self, connection: _Connection, message: OutgoingMessage) -> None:
        """Read the replies to a pipelined MAIL, RCPT and DATA; raise for the first refusal.

        The first refusal is the one reported (after a refused MAIL the server answers RCPT and
        DATA with 503: those say nothing). The replies after it are read so the session stays
        in step, then RSET as in lock-step; a DATA that was accepted anyway (354) leaves the
        server waiting for a body, so that session is dropped instead (nothing was sent).
        """
        smtp = connection.smtp
        stages = (("MAIL", (250,)), ("RCPT", (250, 251)), ("DATA", (354,)))
        for number, (stage, accepted) in enumerate(stages):
            code, text = _reply(smtp)
            if code in accepted:
                continue
            if code == 421 or not 400 <= code < 600:
                raise self._refused(connection, message, stage, code, text, reset=False)
            clean = _read_replies(smtp, len(stages) - number - 1)
            if not clean:
                connection.drop()
            raise self._refused(connection, message, stage, code, text, reset=clean)

    def _expect(
        self,
        connection: _Connection,
        message: OutgoingMessage,
        stage: str,
        code: int,
        text: bytes,
        *accepted: int,
    ) -> None:
        if code not in accepted:
            raise self._refused(connection, message, stage, code, text, reset=True)

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


def _reply(smtp: smtplib.SMTP) -> tuple[int, bytes]:
    """The server's next reply, as `smtplib.SMTP.getreply` gives it (the code, -1 when it is
    not a number; the text of its lines joined by "\\n"), with the same errors (the connection
    is closed first), minus its debug checks per line: four replies are read per message."""
    file = smtp.file
    if file is None:
        return smtp.getreply()
    texts: list[bytes] = []
    while True:
        try:
            line = file.readline(_MAX_LINE + 1)
        except OSError as err:
            smtp.close()
            raise smtplib.SMTPServerDisconnected(f"Connection unexpectedly closed: {err}") from err
        if not line:
            smtp.close()
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        if len(line) > _MAX_LINE:
            smtp.close()
            raise smtplib.SMTPResponseException(500, "Line too long.")
        texts.append(line[4:].strip(b" \t\r\n"))
        try:
            code = int(line[:3])
        except ValueError:
            return -1, b"\n".join(texts)
        if line[3:4] != b"-":
            return code, texts[0] if len(texts) == 1 else b"\n".join(texts)


def _read_replies(smtp: smtplib.SMTP, count: int) -> bool:
    """Read `count` replies to pipelined commands after a refusal; False when the session
    cannot be reset (a DATA accepted with 354, a 421, or the connection lost)."""
    try:
        for _ in range(count):
            code, _text = smtp.getreply()
            if code in (354, 421) or not 200 <= code < 600:
                return False
    except (smtplib.SMTPException, OSError):
        return False
    return True


def _write_data(sock: socket.socket, body: bytes) -> None:
    """`body` and the terminating ".", in one write and without joining them (a copy of the
    whole message) where the socket can gather (not TLS)."""
    if isinstance(sock, ssl.SSLSocket):
        sock.sendall(body + _END_OF_DATA)
        return
    sent = sock.sendmsg((body, _END_OF_DATA))
    if sent == len(body) + len(_END_OF_DATA):
        return  # the usual case: a blocking socket takes it all at once
    parts = [memoryview(body), memoryview(_END_OF_DATA)]
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
