"""The consoles every command prints to: results on stdout, warnings and errors on stderr."""

from __future__ import annotations

import re

from rich.console import Console

# No emoji codes: a finding, subject or name with ` :smile: ` in it is shown as written, and
# rich's table of codes (its biggest module) is not loaded before a send's first message.
console = Console(soft_wrap=True, emoji=False)
err_console = Console(stderr=True, soft_wrap=True, emoji=False)

# The subscriber commands print addresses and names: no number or URL highlighting in them.
plain_console = Console(soft_wrap=True, highlight=False, emoji=False)
plain_err_console = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)


# C0 and C1 controls, DEL, and the bidi overrides and isolates that reorder what a terminal shows.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` with control characters as visible escapes (`\\x1b`, `\\u202e`): a name from a
    subscriber list must not move the cursor, retitle the terminal or reverse the line."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _INVISIBLE.sub(escape, text)
