"""What identifies the installed SpamAssassin: the program and its configuration and rules.

Its own module so that the check-report cache (`checks.reuse`) can key on it without loading the
spam check itself.
"""

from __future__ import annotations

import os

__all__ = ["SPAMASSASSIN_PATHS", "file_signatures", "spamassassin_identity"]

# What besides the program decides a score: the site configuration (local.cf, *.pre), the rules
# the package ships and those sa-update installs.
SPAMASSASSIN_PATHS = ("/etc/spamassassin", "/usr/share/spamassassin", "/var/lib/spamassassin")


def spamassassin_identity(executable: str, extra: tuple[str, ...] = SPAMASSASSIN_PATHS) -> str:
    """Path, size and modification time of the program and of every file in its configuration
    and rule folders: an upgrade, a rule update (sa-update) or an edited local.cf gives another
    identity. A few hundred stat calls (milliseconds), no process started."""
    parts: list[str] = []
    for name in (executable, *extra):
        try:
            info = os.stat(name)
        except OSError:
            continue
        parts.append(f"{name}:{info.st_size}:{info.st_mtime_ns}")
        parts.extend(f"{name}/{path}:{size}:{mtime}" for path, size, mtime in file_signatures(name))
    return "\n".join(parts)


def file_signatures(folder: str | os.PathLike[str]) -> list[tuple[str, int, int]]:
    """Path (relative to `folder`), size and modification time of every file under `folder`,
    in a fixed order; none when it is not a folder."""
    found = []
    for parent, folders, names in os.walk(folder):
        folders.sort()
        for name in sorted(names):
            path = os.path.join(parent, name)
            try:
                info = os.stat(path)
            except OSError:
                continue
            found.append((os.path.relpath(path, folder), info.st_size, info.st_mtime_ns))
    return found
