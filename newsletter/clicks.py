"""Click counts (`[links] count_clicks = true`): how often each link of an issue was followed.

Links in the email (HTML and text part) point at `<base_url>/c/<issue>/<n>` instead of their
target; `newsletter serve` adds one to that link's count and redirects (web/clicks.py). Counted
per link and per issue, never per person: the URL is the same for every recipient, and nothing
about the request (address, IP, cookie, browser) is stored. No open tracking (no pixel).

Not counted, left as written: links holding a per-recipient value (the unsubscribe link, any
`{{ subscriber.… }}` in a URL: one URL for everyone is the point), mailto:/tel: and other
non-web links, the web-version link, and URLs with spaces or non-ASCII characters.

The link table: render numbers each distinct target in the order it first appears (the HTML
first, then the text part), keeping the numbers already recorded for the issue, so that a
corrected issue sent to the rest never makes an old message's link 3 lead somewhere new. The
table is recorded in the store (`click_links`) when a message carrying it first leaves (a test
copy or the send): the store is what `serve` already reads, on SQLite and on a shared PostgreSQL
alike, and it outlives `dist/`, which is rebuilt at will and need not exist where `serve` runs.
`serve` redirects only to recorded targets; an unknown number is a 404.
"""

from __future__ import annotations

import contextlib
import html as html_lib
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from .errors import ProjectError
from .linktags import replace_hrefs, replace_text_urls

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "CLICK_PREFIX",
    "ClickLink",
    "CountedLinks",
    "LinkCount",
    "count_click",
    "count_links",
    "link_counts",
    "record_links",
    "recorded_numbers",
    "redirect_url",
]

CLICK_PREFIX = "c"  # the redirects' first path segment: <base_url>c/<issue>/<n>

# The per-recipient slot marker of render/engine.py: such a URL differs per recipient.
_SLOT_MARKER = re.compile(r"NLSLOT\d+X")
# A target the redirect can carry unchanged in its Location header: printable ASCII only.
_HEADER_SAFE = re.compile(r"^[\x21-\x7e]+$")
_ANCHOR = re.compile(r"<a\b([^>]*)>(.*?)</a\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_ALT = re.compile(r"""\salt\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_LABEL_LENGTH = 200
# Zero-width characters themes put in links (e.g. after a button's text), and soft hyphens.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))

_RECORD = (
    "INSERT INTO click_links (issue, number, target, item, label, clicks, recorded_at)"
    " VALUES (:issue, :number, :target, :item, :label, 0, :at)"
    " ON CONFLICT (issue, number) DO NOTHING"
)
_TARGETS = "SELECT number, target FROM click_links WHERE issue = :issue"
# One statement per click: the engine serialises the increments, so none is lost however many
# requests (or `serve` processes, on PostgreSQL) arrive at once.
_CLICK = (
    "UPDATE click_links SET clicks = clicks + 1 WHERE issue = :issue AND number = :number"
    " RETURNING target"
)
_COUNTS = (
    "SELECT number, target, item, label, clicks FROM click_links WHERE issue = :issue"
    " ORDER BY number"
)


@dataclass(frozen=True)
class ClickLink:
    """One counted link of an issue: its number in `/c/<issue>/<number>` and where it leads."""

    number: int
    target: str
    item: str = ""  # the title of the item the link is in ("" outside the items)
    label: str = ""  # the link's text (an image link: its alt text)


@dataclass(frozen=True)
class LinkCount:
    link: ClickLink
    clicks: int


@dataclass(frozen=True)
class CountedLinks:
    """The email's HTML and text with counted links pointing at the redirects, and the table."""

    html: str
    text: str
    links: tuple[ClickLink, ...]


def redirect_url(base_url: str, issue: str, number: int) -> str:
    """`<base_url>c/<issue>/<number>` (`base_url` ends with `/`, as Settings keeps it)."""
    return f"{base_url}{CLICK_PREFIX}/{quote(issue, safe='')}/{number}"


def _same_page(url: str) -> str:
    return url.strip().split("#", 1)[0].split("?", 1)[0].rstrip("/").lower()


def count_links(
    html: str,
    text: str,
    *,
    base_url: str,
    issue: str,
    items: Sequence[tuple[str, Collection[str]]] = (),
    skip: Iterable[str] = (),
    known: Mapping[str, int] | None = None,
) -> CountedLinks:
    """Point every countable link of `html` and `text` at its redirect.

    `items` gives each item's title and the URLs in it (after UTM tagging), to name the item a
    link belongs to; `skip` the URLs never counted (the web version, the unsubscribe page);
    `known` the numbers already recorded for this issue (target → number), kept as they are.
    """
    skipped = {_same_page(url) for url in skip if url}
    own_prefix = f"{base_url}{CLICK_PREFIX}/"

    def countable(url: str) -> bool:
        return (
            url.lower().startswith(("http://", "https://"))
            and bool(_HEADER_SAFE.match(url))
            and not _SLOT_MARKER.search(url)
            and not url.startswith(own_prefix)
            and _same_page(url) not in skipped
        )

    targets: dict[str, None] = {}

    def collect(url: str) -> None:
        if countable(url):
            targets.setdefault(url)
        return None

    replace_hrefs(html, collect)
    replace_text_urls(text, collect)

    numbers = dict(known or {})
    next_number = max(numbers.values(), default=0) + 1
    for target in targets:
        if target not in numbers:
            numbers[target] = next_number
            next_number += 1

    labels = _labels(html)
    links = tuple(
        sorted(
            (
                ClickLink(
                    number=numbers[target],
                    target=target,
                    item=next((title for title, urls in items if target in urls), ""),
                    label=labels.get(target, ""),
                )
                for target in targets
            ),
            key=lambda link: link.number,
        )
    )

    def redirect(url: str) -> str | None:
        return redirect_url(base_url, issue, numbers[url]) if url in targets else None

    return CountedLinks(
        html=replace_hrefs(html, redirect), text=replace_text_urls(text, redirect), links=links
    )


def _labels(html: str) -> dict[str, str]:
    """Each target's link text: the first `<a>` to it with text, else an image link's alt."""
    texts: dict[str, str] = {}
    alts: dict[str, str] = {}
    for match in _ANCHOR.finditer(html):
        hrefs: list[str] = []
        replace_hrefs(f"<a{match.group(1)}>", hrefs.append)
        if not hrefs:
            continue
        inner = match.group(2)
        words = _words(_TAG.sub(" ", inner))
        if words:
            texts.setdefault(hrefs[0], words)
        else:
            alts.setdefault(hrefs[0], _words(" ".join(a or b for a, b in _ALT.findall(inner))))
    return {**alts, **texts}


def _words(markup_text: str) -> str:
    """Entities decoded, invisible characters dropped, whitespace collapsed, cut short."""
    text = html_lib.unescape(markup_text).translate(_INVISIBLE)
    return " ".join(text.split())[:_LABEL_LENGTH]


# --- the store ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _guard(store: Store, action: str) -> Iterator[None]:
    """The engine's errors (a lock held past the busy timeout, a lost connection) as a
    StoreError naming the store and what was being done."""
    try:
        yield
    except store.errors as err:
        # Here, not at the top: a render reads `ClickLink` and must not load the store.
        from .store import StoreError  # noqa: PLC0415

        raise StoreError(f"{store.where}: cannot {action}: {err}") from err


def recorded_numbers(store: Store, issue: str) -> dict[str, int]:
    """The targets already recorded for `issue`, with their numbers."""
    with _guard(store, "read the issue's counted links"), store.read() as db:
        return {str(row[1]): int(row[0]) for row in db.execute(_TARGETS, {"issue": issue})}


def record_links(store: Store, issue: str, links: Iterable[ClickLink], *, now: float) -> None:
    """Record `issue`'s link table (numbers recorded before are kept as they were).

    ProjectError when a number is already recorded with another target: two versions of the
    issue numbered their links at the same time, and one of them must be rendered again.
    """
    links = tuple(links)
    if not links:
        return
    with _guard(store, "record the issue's counted links"), store.transaction() as db:
        db.executemany(
            _RECORD,
            [
                {
                    "issue": issue,
                    "number": link.number,
                    "target": link.target,
                    "item": link.item,
                    "label": link.label,
                    "at": now,
                }
                for link in links
            ],
        )
        stored = {int(row[0]): str(row[1]) for row in db.execute(_TARGETS, {"issue": issue})}
    clashes = [link for link in links if stored.get(link.number) != link.target]
    if clashes:
        first = clashes[0]
        raise ProjectError(
            f"link {first.number} of {issue} is recorded as {stored.get(first.number)!r}, "
            f"not {first.target!r}: its link numbers changed while it was being sent",
            hint="Run the command again: the issue is numbered anew from what is recorded.",
        )


def count_click(store: Store, issue: str, number: int) -> str | None:
    """Add one click to link `number` of `issue`; its target, or None when it is unknown.

    The engine's errors come out as they are (`store.errors`): the web app answers 503."""
    with store.read() as db:
        # fetchall: SQLite finishes (and commits) an UPDATE ... RETURNING only when every row
        # has been read.
        rows = db.execute(_CLICK, {"issue": issue, "number": number}).fetchall()
    return str(rows[0][0]) if rows else None


def link_counts(store: Store, issue: str) -> tuple[LinkCount, ...]:
    """Every recorded link of `issue` with its clicks, by number."""
    with _guard(store, "read the click counts"), store.read() as db:
        rows = db.execute(_COUNTS, {"issue": issue}).fetchall()
    return tuple(
        LinkCount(ClickLink(int(r[0]), str(r[1]), str(r[2]), str(r[3])), int(r[4])) for r in rows
    )
