"""What `newsletter status ISSUE` shows of click counts (`[links] count_clicks`)."""

from __future__ import annotations

from itertools import groupby

from ..clicks import LinkCount, link_counts
from ..store import Store
from ._output import plain_console

OUTSIDE_ITEMS = "Outside the items (masthead, footer)"


def show_click_counts(store: Store, issue: str) -> None:
    """Clicks per link, under the title of the item each link is in; nothing when the issue has
    no counted links (click counting off, or not sent yet)."""
    counts = link_counts(store, issue)
    if not counts:
        return
    total = sum(count.clicks for count in counts)
    plain_console.print(
        f"Clicks on links in {issue}: {total} (counted per link, never per person)",
        markup=False,
    )
    # Items first, in the order of their first link; links outside the items last.
    ordered = sorted(counts, key=lambda count: (not count.link.item, count.link.number))
    for item, group in groupby(ordered, key=lambda count: count.link.item):
        links = list(group)
        clicks = sum(count.clicks for count in links)
        plain_console.print(f"  {item or OUTSIDE_ITEMS}: {clicks}", markup=False)
        for count in links:
            plain_console.print(f"    {_line(count)}", markup=False)


def _line(count: LinkCount) -> str:
    link = count.link
    label = f"{link.label} " if link.label else ""
    return f"{count.clicks:>6}  #{link.number} {label}→ {link.target}"
