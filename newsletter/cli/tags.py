"""`newsletter subscribers tag` / `untag`, and reading `--audience` for the commands that take it.

Registered on the `subscribers` group by `cli.commands`; errors are `NewsletterError`s, printed
once by `cli.commands.run`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import AudienceError
from ..segment import EVERYONE, Segment, SegmentSyntaxError, parse_audience
from ._output import plain_console as console
from ._output import visible
from .subscribers import open_store

__all__ = ["audience_option", "tag", "untag"]


def audience_option(text: str | None, tags: list[str] | None = None) -> Segment:
    """`--audience EXPR` and `--tag TAG` (any of) as one segment; AudienceError naming the
    option. Both together narrow: the expression's people who also have one of the tags."""
    try:
        segment = EVERYONE if text is None else parse_audience(text)
    except SegmentSyntaxError as err:
        raise AudienceError(f"--audience {text!r}: {err.message}", hint=err.hint) from err
    if not tags:
        return segment
    try:
        wanted = Segment.of(tags=tags)
    except SegmentSyntaxError as err:
        raise AudienceError(f"--tag: {err.message}", hint=err.hint) from err
    if segment.tags:
        # "Any of --audience's tags" and "any of --tag's" are two conditions: only an
        # expression can say both, so ask for one.
        raise AudienceError(
            "give the tags either with --tag or in --audience, not both",
            hint=f"For example: --audience '{_joined(segment, wanted)}'",
        )
    return Segment.of(
        wanted.tags, segment.exclude, [(c.key, v) for c in segment.where for v in c.values]
    )


def _joined(segment: Segment, wanted: Segment) -> str:
    return ",".join([f"tag:{t}" for t in wanted.tags] + [segment.expression])


def _checked(tags: list[str]) -> None:
    """Every tag checked before the store is opened: the error names the tag."""
    try:
        Segment.of(tags=tags)
    except SegmentSyntaxError as err:
        raise AudienceError(err.message, hint=err.hint) from err


def tag(
    email: Annotated[str, typer.Argument(help="The subscriber's address.")],
    tags: Annotated[list[str], typer.Argument(help="One or more tags, e.g. members board.")],
) -> None:
    """Give a subscriber one or more tags (letters, digits, - _ .; case does not matter).

    Tags choose who gets an issue: `audience:` in issue.md, or `send --audience`.

    Examples:

        newsletter subscribers tag ann@example.org members board

        newsletter subscribers tag ann@example.org "Board Members"   # tagged board-members
    """
    _checked(tags)
    with open_store() as store:
        change = store.tag(email, tags)
    who = visible(change.email)
    if change.changed:
        console.print(f"Tagged {who}: {', '.join(change.changed)}", markup=False)
    if change.unchanged:
        console.print(f"{who} already had: {', '.join(change.unchanged)}", markup=False)
    console.print(f"Tags of {who}: {', '.join(change.tags)}", markup=False)


def untag(
    email: Annotated[str, typer.Argument(help="The subscriber's address.")],
    tags: Annotated[list[str], typer.Argument(help="One or more tags to take away.")],
) -> None:
    """Take one or more tags from a subscriber.

    Example:

        newsletter subscribers untag ann@example.org press
    """
    _checked(tags)
    with open_store() as store:
        change = store.untag(email, tags)
    who = visible(change.email)
    if change.changed:
        console.print(f"Untagged {who}: {', '.join(change.changed)}", markup=False)
    if change.unchanged:
        console.print(f"{who} did not have: {', '.join(change.unchanged)}", markup=False)
    console.print(f"Tags of {who}: {', '.join(change.tags) or '(none)'}", markup=False)
