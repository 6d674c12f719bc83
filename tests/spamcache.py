"""SpamAssassin with a memory: a `spamassassin` for PATH that runs the real one once per message.

Not a test module: the `cached_spamassassin` fixture in conftest.py puts it first on PATH.

`newsletter send` runs the pre-send check, and its spam score costs SpamAssassin 2-5 s a call.
Tests about something else (passwords, failures, dry runs) reuse the report of an identical
message instead: the first call for a message still runs the real SpamAssassin, later ones get
its report back byte for byte. The tests about the spam score (test_checks_spam.py) never use it.

The key is the message without its Date header (it changes every second; the sample has no
Received headers for SpamAssassin's date rules to compare it with) and the arguments without the
per-call --prefspath folder. Every call is logged as `hit` or `miss`, so a test can tell that
the real SpamAssassin ran.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_WRAPPER = """\
#!{python}
# Written by tests/spamcache.py: runs {real} once per message, then replays its report.
import hashlib, os, re, subprocess, sys

CACHE = {cache!r}
REAL = {real!r}


def key(args, message):
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--prefspath":
            skip = True
        else:
            kept.append(arg)
    dateless = re.sub(rb"(?im)^Date:[^\\n]*\\n", b"", message, count=1)
    return hashlib.sha256("\\0".join(kept).encode() + b"\\0\\0" + dateless).hexdigest()


def log(what):
    with open(os.path.join(CACHE, "calls.log"), "a", encoding="ascii") as out:
        out.write(what + "\\n")


message = sys.stdin.buffer.read()
entry = os.path.join(CACHE, key(sys.argv[1:], message) + ".report")
if os.path.exists(entry):
    with open(entry, "rb") as cached:
        sys.stdout.buffer.write(cached.read())
    log("hit")
    sys.exit(0)
done = subprocess.run([REAL, *sys.argv[1:]], input=message, capture_output=True)
sys.stdout.buffer.write(done.stdout)
sys.stderr.buffer.write(done.stderr)
if done.returncode == 0 and b"Content analysis details" in done.stdout:
    partial = f"{{entry}}.{{os.getpid()}}"
    with open(partial, "wb") as out:
        out.write(done.stdout)
    os.replace(partial, entry)  # a parallel reader sees the whole report or none
log("miss")
sys.exit(done.returncode)
"""


class SpamAssassinCache:
    """A folder with a caching `spamassassin` in `bin/` and the reports it has kept."""

    def __init__(self, folder: Path, real: str) -> None:
        self.folder = folder
        self.bin = folder / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        wrapper = self.bin / "spamassassin"
        wrapper.write_text(
            _WRAPPER.format(python=sys.executable, real=real, cache=str(folder)), encoding="utf-8"
        )
        wrapper.chmod(0o755)

    def search_path(self, path: str | None) -> str:
        """`path` (a PATH value) with the caching `spamassassin` first."""
        return f"{self.bin}{os.pathsep}{path}" if path else str(self.bin)

    def calls(self) -> list[str]:
        """One `hit` (report reused) or `miss` (the real SpamAssassin ran) per call, in order."""
        log = self.folder / "calls.log"
        return log.read_text(encoding="ascii").split() if log.exists() else []
