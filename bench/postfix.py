"""A private Postfix instance on 127.0.0.1 that accepts mail and discards it, for benchmarks.

    with PrivatePostfix() as postfix:          # needs root and Debian's postfix package
        print(postfix.describe())              # "postfix 3.7.11 on 127.0.0.1:40123 (discard)"
        ... send to postfix.host, postfix.port ...
        postfix.wait_discarded(5000)           # until Postfix has processed what it accepted

Everything lives in one temporary directory (config, queue, data, log); the system's own
/etc/postfix/main.cf is neither read nor needed. The instance listens on 127.0.0.1 only, relays
for 127.0.0.0/8 only, has no local domains and hands every message to the `discard` transport,
so nothing can leave the machine. `stop()` (or leaving the `with`) stops it and removes the
directory. Also runnable on its own to try it out: `python bench/postfix.py [PORT]`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"

# Only the services a discarding MTA needs, none chrooted (a chroot would need copies of
# /etc/hosts and friends inside the temporary queue directory).
_MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
pickup    unix  n  -  n  60     1  pickup
cleanup   unix  n  -  n  -      0  cleanup
qmgr      unix  n  -  n  300    1  qmgr
rewrite   unix  -  -  n  -      -  trivial-rewrite
bounce    unix  -  -  n  -      0  bounce
defer     unix  -  -  n  -      0  bounce
trace     unix  -  -  n  -      0  bounce
verify    unix  -  -  n  -      1  verify
flush     unix  n  -  n  1000?  0  flush
proxymap  unix  -  -  n  -      -  proxymap
showq     unix  n  -  n  -      -  showq
error     unix  -  -  n  -      -  error
retry     unix  -  -  n  -      -  error
discard   unix  -  -  n  -      -  discard
anvil     unix  -  -  n  -      1  anvil
scache    unix  -  -  n  -      1  scache
postlog   unix-dgram n  -  n  -  1  postlogd
"""

_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydomain = localdomain
myorigin = $myhostname
# No local delivery, no relaying anywhere: every recipient goes to the discard transport.
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
default_transport = discard
relay_transport = discard
local_transport = discard
virtual_transport = discard
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
# No DNS: the discard transport never looks anything up, and neither should anything else.
smtp_dns_support_level = disabled
smtp_host_lookup = native
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
biff = no
"""

_DISCARDED = re.compile(rb"postfix/discard\[\d+\]: \w+: to=<[^>]*>.* status=sent")


class PostfixError(RuntimeError):
    """Postfix is missing, cannot run here, or failed to start or stop."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def postfix_version() -> str:
    """The installed Postfix version, e.g. "3.7.11"; raise PostfixError if there is none."""
    binary = shutil.which("postconf") or "/usr/sbin/postconf"
    try:
        found = subprocess.run(
            [binary, "-d", "-h", "mail_version"], capture_output=True, text=True, timeout=10
        )
    except OSError as err:
        raise PostfixError(
            "Postfix is not installed (apt-get install postfix, 'No configuration')"
        ) from err
    if found.returncode != 0 or not found.stdout.strip():
        raise PostfixError(f"postconf -d mail_version failed: {found.stderr.strip()}")
    return found.stdout.strip()


class PrivatePostfix:
    """One Postfix instance with its own config directory, on 127.0.0.1:`port`, discarding."""

    host = HOST

    def __init__(self, port: int | None = None, parent: Path | None = None) -> None:
        self.port = port or free_port()
        self._parent = parent
        self.root: Path | None = None
        self.version = ""

    @property
    def maillog(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "maillog"

    def describe(self) -> str:
        major_minor = ".".join(self.version.split(".")[:2])
        return f"postfix {major_minor} on {self.host}:{self.port} (discard)"

    def start(self) -> PrivatePostfix:
        """Write the configuration, start the instance and wait until it accepts connections."""
        if os.geteuid() != 0:
            raise PostfixError("starting a private Postfix needs root (it drops to 'postfix')")
        self.version = postfix_version()
        try:
            owner = pwd.getpwnam("postfix")
        except KeyError as err:
            raise PostfixError("no 'postfix' user: is the postfix package installed?") from err
        root = Path(tempfile.mkdtemp(prefix="bench-postfix-", dir=self._parent))
        self.root = root
        # Postfix's daemons run as 'postfix' and must reach the queue through this directory.
        root.chmod(0o755)
        for name in ("conf", "queue", "data"):
            (root / name).mkdir()
        os.chown(root / "data", owner.pw_uid, owner.pw_gid)
        values = {"root": root, "host": self.host, "port": self.port}
        (root / "conf" / "main.cf").write_text(_MAIN_CF.format(**values))
        (root / "conf" / "master.cf").write_text(_MASTER_CF.format(**values))
        try:
            self._postfix("start")
            self._wait_listening(timeout=15.0)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the instance (if it runs) and remove its directory."""
        root = self.root
        if root is None:
            return
        pid = self._master_pid()
        if pid is not None:
            with contextlib.suppress(PostfixError):
                self._postfix("stop")
            deadline = time.monotonic() + 15.0
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                # The master we started did not stop: end it (and its children with it).
                os.kill(pid, 15)
        shutil.rmtree(root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PrivatePostfix:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def discarded(self) -> int:
        """Messages the discard transport has processed so far (counted in the instance's log)."""
        try:
            return len(_DISCARDED.findall(self.maillog.read_bytes()))
        except FileNotFoundError:
            return 0

    def wait_discarded(self, count: int, timeout: float = 120.0) -> int:
        """Wait until `count` messages went through the discard transport; return the count."""
        deadline = time.monotonic() + timeout
        seen = self.discarded()
        while seen < count and time.monotonic() < deadline:
            time.sleep(0.2)
            seen = self.discarded()
        return seen

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by this instance's processes, all of them.

        Postfix's master starts a session of its own; every daemon is in it. Live processes count
        with their own time, exited ones through the master's children totals.
        """
        pid = self._master_pid()
        if pid is None:
            return 0.0
        session = _stat(pid)
        if session is None:
            return 0.0
        sid = session[3]
        ticks = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            fields = _stat(int(entry.name))
            if fields is None or fields[3] != sid:
                continue
            ticks += fields[11] + fields[12]  # utime, stime
            if int(entry.name) == pid:
                ticks += fields[13] + fields[14]  # cutime, cstime: reaped daemons
        return ticks / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # --- internals ----------------------------------------------------------------------------

    def _postfix(self, command: str) -> None:
        assert self.root is not None
        binary = shutil.which("postfix") or "/usr/sbin/postfix"
        done = subprocess.run(
            [binary, "-c", str(self.root / "conf"), command],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            # Without a terminal Postfix reports to its log, not to stderr.
            raise PostfixError(
                f"postfix {command} failed ({done.returncode}): "
                f"{done.stderr.strip()}\n{self.log_tail()}"
            )

    def _master_pid(self) -> int | None:
        assert self.root is not None
        try:
            return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
                    banner = sock.recv(512)
                    sock.sendall(b"QUIT\r\n")
                if banner.startswith(b"220"):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise PostfixError(
                    f"Postfix did not answer on {self.host}:{self.port}\n{self.log_tail()}"
                )
            time.sleep(0.1)


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of one process so far; 0.0 if it is gone."""
    fields = _stat(pid)
    return 0.0 if fields is None else (fields[11] + fields[12]) / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[int] | None:
    """The numeric fields of /proc/PID/stat after the command name (index 3 = session id)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return [0, *(int(value) for value in rest[1:])]  # the state letter becomes 0


def _alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (an init that does not reap) counts as gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


if __name__ == "__main__":
    import smtplib
    import sys

    with PrivatePostfix(int(sys.argv[1]) if len(sys.argv) > 1 else None) as postfix:
        print(postfix.describe(), "in", postfix.root)
        with smtplib.SMTP(postfix.host, postfix.port) as client:
            client.sendmail("a@example.org", ["b@example.com"], b"Subject: hi\r\n\r\nhi\r\n")
        print("discarded:", postfix.wait_discarded(1, timeout=10.0))
        print(f"postfix CPU so far: {postfix.cpu_seconds():.2f} s")
