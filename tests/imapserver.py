"""A real Dovecot IMAP server on 127.0.0.1 for tests, with TLS from a trustme certificate.

Not a test module: import it (`from tests.imapserver import DovecotServer, require_dovecot`).

    with DovecotServer() as server:                 # Debian's dovecot-imapd; ~0.3 s to start
        user = server.new_user()                      # each test has its own mailbox
        server.append(user, server.password, "INBOX", raw_message_bytes)
        context = server.client_context()           # ssl.SSLContext trusting the test CA
        ... imaplib.IMAP4_SSL(server.host, server.port, ssl_context=context) ...

`port` offers IMAP over TLS from the first byte (like 993); `starttls_port` plain IMAP where
login is only allowed after STARTTLS. Everything lives in a fresh folder under /tmp (its own
config, maildirs, log). Any user name logs in with `server.password` (a static passdb):
a new name is a new, empty mailbox; nothing of the system's Dovecot setup is used or started.

As root, Dovecot's login processes run as `dovenull`, its internal processes as `dovecot` (both
created by the package) and mailboxes are owned by `nobody`: Dovecot refuses to serve mail as
root. As another user everything runs as that user.

`require_dovecot()` skips the calling test when Dovecot is missing, unless
NEWSLETTER_REQUIRE_DOVECOT=1, where it fails instead (CI installs it).
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
import trustme

from tests.smtpserver import shared_ca

HOST = "127.0.0.1"
START_SECONDS = 15.0


def dovecot_binary() -> str | None:
    found = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/sbin")
    return found


def require_dovecot() -> str:
    """The path of the dovecot binary; skips (or fails in CI) when it is not installed."""
    found = dovecot_binary()
    if found is None:
        message = "Dovecot is missing: install Debian's dovecot-imapd to run the IMAP tests"
        if os.environ.get("NEWSLETTER_REQUIRE_DOVECOT") == "1":
            pytest.fail(message + " (NEWSLETTER_REQUIRE_DOVECOT=1)")
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _user_ids(name: str) -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


class DovecotServer:
    """Dovecot serving IMAP (STARTTLS) and IMAPS on free ports of 127.0.0.1."""

    def __init__(self, ca: trustme.CA | None = None) -> None:
        self.binary = require_dovecot()
        self.ca = ca or shared_ca()
        self.host = HOST
        self.port = 0
        self.starttls_port = 0
        self.folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._users = 0
        self.password = secrets.token_urlsafe(12)

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
        self.folder = folder
        folder.chmod(0o711)  # the mail processes (another user) pass through to their homes
        certificate = self.ca.issue_cert("127.0.0.1", "localhost")
        certificate.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
        certificate.private_key_pem.write_to_path(str(folder / "key.pem"))
        home = folder / "home"
        home.mkdir()
        if os.geteuid() == 0:
            mail_ids = _user_ids("nobody")
            if mail_ids is None or _user_ids("dovenull") is None or _user_ids("dovecot") is None:
                raise RuntimeError("users nobody, dovenull and dovecot are needed (dovecot-core)")
            os.chown(home, *mail_ids)
            login_user, internal_user, mail_user = "dovenull", "dovecot", "nobody"
            mail_group = "nogroup" if _group_exists("nogroup") else "nobody"
            privileged = ""
            chroot = ""
        else:
            me = pwd.getpwuid(os.geteuid()).pw_name
            login_user = internal_user = mail_user = me
            mail_group = _group_name(os.getegid())
            privileged = f"service auth {{\n  user = {me}\n}}\n"  # no root to switch from
            chroot = "  chroot =\n"
        internal_ids = _user_ids(internal_user)
        internal_group = _group_name(internal_ids[1]) if internal_ids else mail_group
        self.port = _free_port()
        self.starttls_port = _free_port()
        config = f"""
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
protocols = imap
listen = {HOST}
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
ssl = required
ssl_cert = <{folder}/cert.pem
ssl_key = <{folder}/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
# A failed login is answered at once. (Dovecot still delays later logins from the same
# address: a test that fails a login on purpose uses a server of its own.)
auth_failure_delay = 0
passdb {{
  driver = static
  args = password={self.password}
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={home}/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.starttls_port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {self.port}
    ssl = yes
  }}
{chroot}}}
{privileged}"""
        (folder / "dovecot.conf").write_text(config)
        self._process = subprocess.Popen(
            [self.binary, "-F", "-c", str(folder / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"dovecot did not start:\n{self._diagnostics()}")
            with (
                contextlib.suppress(OSError, ssl.SSLError, imaplib.IMAP4.error),
                imaplib.IMAP4_SSL(
                    HOST, self.port, ssl_context=self.client_context(), timeout=2
                ) as probe,
            ):
                probe.noop()
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not answer in time:\n{self._diagnostics()}")
            time.sleep(0.05)

    def _diagnostics(self) -> str:
        parts = []
        if self._process is not None and self._process.stderr is not None:
            with contextlib.suppress(Exception):
                if self._process.poll() is not None:
                    parts.append(self._process.stderr.read().decode("utf-8", "replace"))
        if self.folder is not None and (self.folder / "dovecot.log").exists():
            parts.append((self.folder / "dovecot.log").read_text()[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def log(self) -> str:
        assert self.folder is not None
        path = self.folder / "dovecot.log"
        return path.read_text() if path.exists() else ""

    # --- users and mail -----------------------------------------------------------------------

    def new_user(self, prefix: str = "user") -> str:
        """A login no test has used yet: a fresh, empty mailbox (password: `self.password`)."""
        with self._lock:
            self._users += 1
            return f"{prefix}{self._users}"

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()

    @contextlib.contextmanager
    def session(self, user: str, password: str) -> Iterator[imaplib.IMAP4_SSL]:
        client = imaplib.IMAP4_SSL(HOST, self.port, ssl_context=self.client_context(), timeout=10)
        try:
            client.login(user, password)
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(self, user: str, password: str, folder: str, *messages: bytes) -> None:
        """Put messages into `folder` (created if needed), in one session."""
        with self.session(user, password) as client:
            if folder != "INBOX":
                client.create(f'"{folder}"')
            for message in messages:
                status, data = client.append(f'"{folder}"', None, None, message)
                assert status == "OK", data

    def messages(self, user: str, password: str, folder: str) -> list[bytes]:
        """Every message in `folder` (empty when the folder does not exist)."""
        with self.session(user, password) as client:
            status, _ = client.select(f'"{folder}"', readonly=True)
            if status != "OK":
                return []
            status, data = client.uid("SEARCH", "ALL")
            uids = data[0].split() if data and data[0] else []
            found: list[bytes] = []
            for uid in uids:
                status, parts = client.uid("FETCH", uid, "(BODY.PEEK[])")
                for part in parts:
                    if isinstance(part, tuple):
                        found.append(part[1])
            return found

    def flags(self, user: str, password: str, folder: str) -> list[str]:
        with self.session(user, password) as client:
            client.select(f'"{folder}"', readonly=True)
            _, data = client.fetch("1:*", "(FLAGS)")
            return [item.decode() for item in data if isinstance(item, bytes)]


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name
