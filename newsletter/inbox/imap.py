"""The real mailbox: one IMAP folder over verified TLS, folder names in IMAP's modified UTF-7."""

from __future__ import annotations

import base64
import contextlib
import imaplib
import re
import ssl
from collections.abc import Iterator
from typing import Any

from ..config_tables import InboxSettings
from ..errors import InboxError
from .limits import ConnectionLost, MessageTooLarge

__all__ = ["ImapMailbox", "connect", "imap_utf7", "opened"]


def imap_utf7(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 5.1.3): `Verwerkt/Ç` -> `Verwerkt/&AMc-`."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def _quoted(name: str) -> str:
    encoded = imap_utf7(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapMailbox:
    """One folder of an IMAP mailbox over TLS (IMAPS or STARTTLS, certificate verified)."""

    def __init__(
        self,
        settings: InboxSettings,
        password: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        readonly: bool = False,
    ) -> None:
        self.settings = settings
        self._password = password
        self._context = ssl_context or _default_context(settings)
        self.readonly = readonly
        self._imap: imaplib.IMAP4 | None = None
        self._capabilities: set[str] = set()
        self._created: set[str] = set()
        self.server = f"{settings.host}:{settings.port}"

    def __repr__(self) -> str:
        return f"ImapMailbox({self.settings.username}@{self.server}/{self.settings.folder})"

    def __enter__(self) -> ImapMailbox:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        settings = self.settings
        step = "connect"
        try:
            if settings.security == "tls":
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    settings.host, settings.port, ssl_context=self._context,
                    timeout=settings.timeout,
                )  # fmt: skip
            else:
                imap = imaplib.IMAP4(settings.host, settings.port, timeout=settings.timeout)
                step = "STARTTLS"
                imap.starttls(ssl_context=self._context)
            self._imap = imap
            step = "login"
            imap.login(settings.username, self._password)
            step = "CAPABILITY"
            status, data = imap.capability()
            self._capabilities = {c.upper() for c in b" ".join(data).decode().split()}
            step = f"select {settings.folder}"
            status, data = imap.select(_quoted(settings.folder), readonly=self.readonly)
            if status != "OK":
                raise InboxError(
                    f"{self.server}: the folder {settings.folder!r} cannot be opened: "
                    f"{_text(data)}",
                    hint="Check inbox.folder in newsletter.toml.",
                )
        except InboxError:
            self.close()
            raise
        except ssl.SSLCertVerificationError as err:
            self.close()
            raise InboxError(
                f"{self.server}: the server's TLS certificate is not trusted "
                f"({err.verify_message})",
                hint="Set inbox.ca_file to the CA that issued it, or fix the server's certificate.",
            ) from err
        except imaplib.IMAP4.error as err:
            self.close()
            if step == "login":
                raise InboxError(
                    f"{self.server}: login failed for {settings.username}: {err}",
                    hint=f"Check inbox.username and the environment variable "
                    f"{settings.password_env}.",
                ) from err
            raise InboxError(f"{self.server}: {step} failed: {err}") from err
        except OSError as err:
            self.close()
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise InboxError(f"{self.server}: cannot {step}: {reason}") from err

    def close(self) -> None:
        imap, self._imap = self._imap, None
        if imap is None:
            return
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            if imap.state == "SELECTED":
                imap.close()
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            imap.logout()

    def _client(self) -> imaplib.IMAP4:
        if self._imap is None:
            raise InboxError(f"{self.server}: not connected")
        return self._imap

    def _command(self, what: str, *args: str) -> list[Any]:
        try:
            status, data = self._client().uid(*args)
        except (imaplib.IMAP4.abort, OSError) as err:
            raise ConnectionLost(
                f"{self.server}: {what} failed: the connection broke ({err})"
            ) from err
        except imaplib.IMAP4.error as err:
            raise InboxError(f"{self.server}: {what} failed: {err}") from err
        if status != "OK":
            raise InboxError(f"{self.server}: {what} failed: {_text(data)}")
        return list(data)

    def uids(self) -> list[int]:
        data = self._command("listing the messages", "SEARCH", "ALL")
        return [int(uid) for uid in (data[0] or b"").split()] if data else []

    def fetch(self, uid: int, max_bytes: int | None = None) -> bytes:
        """The message's bytes; MessageTooLarge (nothing downloaded past `max_bytes`) when the
        server says it is larger."""
        # PEEK: a message left for a person stays unread. A partial fetch (<0.N>) bounds what
        # a huge message costs; RFC822.SIZE says whether it was cut.
        body = "BODY.PEEK[]" if max_bytes is None else f"BODY.PEEK[]<0.{max_bytes}>"
        data = self._command(f"reading message {uid}", "FETCH", str(uid), f"(RFC822.SIZE {body})")
        found = _SIZE.search(" ".join(_text(i[0] if isinstance(i, tuple) else i) for i in data))
        size = int(found.group(1)) if found else None
        if size is None and max_bytes is not None:
            # A server that did not say: a full window means the message may go on.
            got = max((len(i[1]) for i in data if isinstance(i, tuple) and len(i) == 2), default=0)
            size = got + 1 if got >= max_bytes else None
        if max_bytes is not None and size is not None and size > max_bytes:
            raise MessageTooLarge(
                f"message {uid} is {size:,} bytes, more than inbox.max_message_bytes "
                f"({max_bytes:,})",
                size=size,
            )
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                return item[1]
        raise InboxError(f"{self.server}: message {uid} has gone from {self.settings.folder}")

    def ensure_folder(self, folder: str) -> None:
        if folder in self._created:
            return
        try:
            status, data = self._client().create(_quoted(folder))
        except (imaplib.IMAP4.abort, OSError) as err:
            raise ConnectionLost(
                f"{self.server}: cannot create the folder {folder!r}: {err}"
            ) from err
        except imaplib.IMAP4.error as err:
            raise InboxError(f"{self.server}: cannot create the folder {folder!r}: {err}") from err
        if status != "OK" and b"ALREADYEXISTS" not in b" ".join(
            d for d in data if isinstance(d, bytes)
        ) and "exists" not in _text(data).lower():  # fmt: skip
            raise InboxError(f"{self.server}: cannot create the folder {folder!r}: {_text(data)}")
        self._created.add(folder)

    def move(self, uid: int, folder: str) -> None:
        if self.readonly:
            raise InboxError("a dry run moves nothing")
        self.ensure_folder(folder)
        if "MOVE" in self._capabilities:
            self._command(f"moving message {uid} to {folder}", "MOVE", str(uid), _quoted(folder))
            return
        if "UIDPLUS" not in self._capabilities:
            raise InboxError(
                f"{self.server} supports neither MOVE nor UIDPLUS; messages cannot be moved "
                "without risking other deleted messages"
            )
        # COPY, then flag and expunge only this UID: the message is never lost.
        self._command(f"copying message {uid} to {folder}", "COPY", str(uid), _quoted(folder))
        self._command(f"flagging message {uid}", "STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
        self._command(f"expunging message {uid}", "EXPUNGE", str(uid))


_SIZE = re.compile(r"RFC822\.SIZE (\d+)", re.IGNORECASE)


def _text(data: Any) -> str:
    if isinstance(data, list | tuple):
        return " ".join(_text(d) for d in data if d is not None)
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def _default_context(settings: InboxSettings) -> ssl.SSLContext:
    context = (
        ssl.create_default_context(cafile=settings.ca_file)
        if settings.ca_file
        else (ssl.create_default_context())
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def connect(
    settings: InboxSettings,
    password: str | None,
    *,
    readonly: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> ImapMailbox:
    """An open mailbox; InboxError naming what is missing when there is no password."""
    if not password:
        raise InboxError(
            f"no password for {settings.username} at {settings.host}",
            hint=f"Set the environment variable {settings.password_env}.",
        )
    mailbox = ImapMailbox(settings, password, ssl_context=ssl_context, readonly=readonly)
    mailbox.open()
    return mailbox


@contextlib.contextmanager
def opened(settings: InboxSettings, password: str | None, **options: Any) -> Iterator[ImapMailbox]:
    mailbox = connect(settings, password, **options)
    try:
        yield mailbox
    finally:
        mailbox.close()
