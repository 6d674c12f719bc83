"""The consoles every command prints to: results on stdout, warnings and errors on stderr."""

from __future__ import annotations

from rich.console import Console

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

# The subscriber commands print addresses and names: no number or URL highlighting in them.
plain_console = Console(soft_wrap=True, highlight=False)
plain_err_console = Console(stderr=True, soft_wrap=True, highlight=False)
