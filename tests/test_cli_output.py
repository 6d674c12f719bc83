"""The consoles every command prints to (newsletter/cli/_output.py)."""

from __future__ import annotations

from newsletter.cli._output import console, err_console, plain_console, plain_err_console


def test_emoji_codes_are_printed_as_written() -> None:
    # A subject, a finding or a subscriber's name is data: ` :smile: ` stays those characters.
    for out in (console, err_console, plain_console, plain_err_console):
        with out.capture() as captured:
            out.print("Subject: Tea :coffee: and cake :smile:", markup=False)
        assert captured.get() == "Subject: Tea :coffee: and cake :smile:\n"
