"""The `newsletter` command (the app itself is in `commands`).

`main` answers `newsletter --version` before Typer, rich and the library are imported (about a
second of imports on a busy machine, for one line of output); everything else goes to the app.
"""

from __future__ import annotations

import sys

from .. import __version__


def main() -> None:
    """Entry point of the `newsletter` script."""
    if sys.argv[1:] == ["--version"]:
        print(f"newsletter {__version__}")
        return
    # Typer, rich and the command modules, only when a command runs.
    from .commands import run  # noqa: PLC0415 (heavy, only a command (not --version) needs it)

    run()
