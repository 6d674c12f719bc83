"""The run lock: one run at a time sends an issue, and the next run learns what a dead one left.

An `fcntl.flock` on `<db>.<issue>.lock` beside the database: the kernel drops it when its holder
dies, even by SIGKILL, so a dead run's lock is simply taken over. The file records who holds it
(pid, host, start) for the refusal message. The file is emptied, never deleted, on release:
deleting would let two processes lock two different files of the same name.

With several workers on a shared database (issue 10), this becomes a lease in the database; the
ledger only needs `hold` to say who held the lock before and to run its recovery under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..errors import LedgerError

__all__ = ["LockInfo", "RunLock", "hold", "is_locked", "lock_path"]


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or last held) an issue's send lock."""

    pid: int
    host: str
    started_at: float

    @property
    def started(self) -> str:
        """The start time, local, to the second."""
        return datetime.fromtimestamp(self.started_at).astimezone().isoformat(timespec="seconds")

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} (started at {self.started})"


@dataclass(frozen=True)
class RunLock:
    """Held while a run sends an issue; tells what the previous, interrupted run left."""

    issue: str
    info: LockInfo
    recovered_uncertain: int
    previous: LockInfo | None


def _lock_name(issue: str) -> str:
    """A file-name-safe form of the issue name; a hash keeps distinct names distinct."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", issue)
    if safe != issue or not safe.strip("."):
        safe = f"{safe}-{hashlib.sha256(issue.encode()).hexdigest()[:10]}"
    return safe


def lock_path(database: Path, issue: str) -> Path:
    """The lock file of `issue`, beside the database file."""
    return database.with_name(f"{database.name}.{_lock_name(issue)}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _read_lock_info(fd: int) -> LockInfo | None:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw) if raw.strip() else None
        if not isinstance(data, dict):
            return None
        return LockInfo(int(data["pid"]), str(data["host"]), float(data["started_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # being written right now, or not ours: the caller says "another process"


def _refusal(issue: str, holder: LockInfo | None) -> LedgerError:
    hint = "wait for that run to finish or stop it; a run that dies releases the lock itself"
    if holder is None:
        who = "another process"
    elif holder.pid == os.getpid() and holder.host == socket.gethostname():
        who = f"this process ({holder.pid}, started at {holder.started})"
    elif holder.host == socket.gethostname() and not _pid_alive(holder.pid):
        who = f"a child of {holder.describe()}, which has ended"
    else:
        who = holder.describe()
    return LedgerError(f"issue '{issue}' is already being sent by {who}", hint=hint)


@contextlib.contextmanager
def hold(
    path: Path,
    issue: str,
    *,
    clock: Callable[[], float],
    recover: Callable[[LockInfo | None], int],
) -> Iterator[RunLock]:
    """Hold the lock file at `path` for a run of `issue`, across processes.

    LedgerError naming the holder if a live run has it. Once taken, `recover(previous holder)`
    runs (the ledger turns a dead run's `sending` rows into `uncertain`) and its count is
    reported in the RunLock.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise LedgerError(f"{path}: cannot open the send lock: {err}") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(issue, _read_lock_info(fd)) from None
        previous = _read_lock_info(fd)
        info = LockInfo(pid=os.getpid(), host=socket.gethostname(), started_at=clock())
        data = json.dumps({"pid": info.pid, "host": info.host, "started_at": info.started_at})
        os.ftruncate(fd, 0)
        os.pwrite(fd, data.encode(), 0)
        try:
            recovered = recover(previous)
            yield RunLock(issue, info, recovered, previous)
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    """Whether a live run holds the lock file at `path` (this process's own run counts)."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a probe lock we got
    return False
