"""What identifies the installed SpamAssassin: the program and its configuration and rules.

Its own module so that the check-report cache (`checks.reuse`) can key on it without loading the
spam check itself.
"""

from __future__ import annotations

import os

__all__ = ["SPAMASSASSIN_PATHS", "spamassassin_identity"]

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
        for folder, subfolders, files in os.walk(name):
            subfolders.sort()
            for file in sorted(files):
                path = os.path.join(folder, file)
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                parts.append(f"{path}:{info.st_size}:{info.st_mtime_ns}")
    return "\n".join(parts)
