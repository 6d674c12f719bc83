"""UTM link tagging: campaign parameters appended to links that point at the newsletter's domains.

Configured by an optional `[links]` table in `newsletter.toml`:

    [links]
    domains = ["riverside-garden.example.org"]   # these hosts and their subdomains are tagged
    utm_source = "riverside-roots"               # default: the newsletter's name as a slug
    utm_medium = "email"                         # default: "email"
    utm_campaign = "2026-11"                     # default: the issue's name

Tagging runs once per issue at build time, on the inlined HTML (which still holds per-recipient
slot markers) and on the text part. It never touches mailto:/tel:/relative links, links to other
hosts, links holding a per-recipient value (the unsubscribe link), or the web-version URL. An
editor's own `utm_*` parameter always wins: it is kept and never duplicated.

The settings (`LinkTagging`, `parse_links_table`) live in config_tables.py, at the ground floor
where config.py reads every table; they are re-exported here.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Collection
from urllib.parse import parse_qsl, quote, urlsplit

from .config_tables import LINKS_KEYS, LinkTagging, parse_links_table, slugify

__all__ = [
    "LINKS_KEYS",
    "LinkTagging",
    "parse_links_table",
    "replace_hrefs",
    "replace_text_urls",
    "slugify",
    "tag_links",
    "tag_text",
    "tag_url",
    "text_urls",
]

# The per-recipient slot marker of render/engine.py: such a URL differs per recipient.
_SLOT_MARKER = re.compile(r"NLSLOT\d+X")
# `<a ...>` start tags, and the href attribute inside one (double, single or no quotes).
_A_TAG = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(
    r"""(?P<lead>\shref\s*=\s*)(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s"'=<>`]+))""",
    re.IGNORECASE,
)
# URLs in plain text; trailing punctuation is trimmed afterwards.
_TEXT_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)


def tag_url(url: str, tagging: LinkTagging, issue_name: str, *, skip: Collection[str] = ()) -> str:
    """`url` with the UTM parameters appended, or unchanged when it is not to be tagged.

    Existing query strings and fragments are kept byte for byte; a `utm_*` key the URL already
    has is not added again. `skip` lists URLs never to tag (the web version, the unsubscribe
    page), compared without their query string and fragment.
    """
    found = _insertion(url, tagging, issue_name, skip)
    if found is None:
        return url
    index, added = found
    return url[:index] + added + url[index:]


def _insertion(
    url: str, tagging: LinkTagging, issue_name: str, skip: Collection[str]
) -> tuple[int, str] | None:
    """Where in `url` the parameters go (just before the fragment) and the text to insert."""
    stripped = url.strip()
    if not stripped or _SLOT_MARKER.search(stripped):
        return None
    try:
        parts = urlsplit(stripped)
        host = parts.hostname
    except ValueError:  # e.g. an unbalanced IPv6 bracket: not a URL we can reason about
        return None
    if parts.scheme.lower() not in ("http", "https") or not host or not tagging.matches(host):
        return None
    if _without_query(stripped) in {_without_query(entry) for entry in skip if entry}:
        return None

    base = stripped.partition("#")[0]
    has_query = "?" in base
    query = base.partition("?")[2]
    existing = {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}
    added = [
        f"{name}={quote(value, safe='')}"
        for name, value in tagging.parameters(issue_name)
        if name not in existing
    ]
    if not added:
        return None
    joiner = "" if has_query and (not query or query.endswith("&")) else ("&" if has_query else "?")
    # Whitespace around the URL is kept where it was.
    return url.index(stripped) + len(base), joiner + "&".join(added)


def tag_links(
    html_text: str, tagging: LinkTagging, issue_name: str, *, skip: Collection[str] = ()
) -> str:
    """Tag the `href` of every `<a>` in `html_text` (entities such as `&amp;` understood).

    The attribute is changed only by inserting the parameters (as `&amp;`-escaped text), so
    whatever entities the attribute held stay as they were.
    """

    def tag_attribute(match: re.Match[str]) -> str:
        raw = match.group("dq")
        quote_char = '"'
        if raw is None:
            raw = match.group("sq")
            quote_char = "'"
        if raw is None:
            raw = match.group("bare")
            quote_char = ""
        url = html.unescape(raw)
        found = _insertion(url, tagging, issue_name, skip)
        if found is None:
            return match.group(0)
        index, added = found
        escaped_added = html.escape(added, quote=True)
        position = _raw_position(raw, url, index)
        if position is None:  # entities split where we insert: write the whole URL anew
            tagged = html.escape(url[:index] + added + url[index:], quote=True)
        else:
            tagged = raw[:position] + escaped_added + raw[position:]
        quote_char = quote_char or '"'
        return f"{match.group('lead')}{quote_char}{tagged}{quote_char}"

    def tag_element(match: re.Match[str]) -> str:
        return _HREF.sub(tag_attribute, match.group(0), count=1)

    return _A_TAG.sub(tag_element, html_text)


def replace_hrefs(html_text: str, change: Callable[[str], str | None]) -> str:
    """`html_text` with the `href` of each `<a>` replaced by `change(url)` (the URL with its
    entities decoded; the answer is escaped again), or kept where `change` gives None."""

    def replace_attribute(match: re.Match[str]) -> str:
        raw = match.group("dq")
        if raw is None:
            raw = match.group("sq")
        if raw is None:
            raw = match.group("bare")
        new = change(html.unescape(raw))
        if new is None:
            return match.group(0)
        return f'{match.group("lead")}"{html.escape(new, quote=True)}"'

    def replace_element(match: re.Match[str]) -> str:
        return _HREF.sub(replace_attribute, match.group(0), count=1)

    return _A_TAG.sub(replace_element, html_text)


def _raw_position(raw: str, url: str, index: int) -> int | None:
    """The position in the entity-escaped `raw` that corresponds to `index` in `url`."""
    candidates = [found.start() for found in re.finditer("#", raw)]
    candidates += [len(raw.rstrip()), len(raw)]
    for position in candidates:
        if (
            html.unescape(raw[:position]) == url[:index]
            and html.unescape(raw[position:]) == url[index:]
        ):
            return position
    return None


def tag_text(
    text: str, tagging: LinkTagging, issue_name: str, *, skip: Collection[str] = ()
) -> str:
    """Tag the http(s) URLs written out in plain text (the text part)."""

    def tag_match(match: re.Match[str]) -> str:
        url, trailing = _trim_trailing(match.group(0))
        return tag_url(url, tagging, issue_name, skip=skip) + trailing

    return _TEXT_URL.sub(tag_match, text)


def replace_text_urls(text: str, change: Callable[[str], str | None]) -> str:
    """`text` with each http(s) URL written out replaced by `change(url)` (None keeps it);
    sentence punctuation after a URL stays where it was."""

    def replace_match(match: re.Match[str]) -> str:
        url, trailing = _trim_trailing(match.group(0))
        new = change(url)
        return (url if new is None else new) + trailing

    return _TEXT_URL.sub(replace_match, text)


def text_urls(text: str) -> list[str]:
    """The http(s) URLs written out in plain text, without trailing punctuation."""
    return [_trim_trailing(match.group(0))[0] for match in _TEXT_URL.finditer(text)]


def _trim_trailing(candidate: str) -> tuple[str, str]:
    """Split sentence punctuation (and an unbalanced closing bracket) off the end of a URL."""
    url = candidate
    closers = {")": "(", "]": "["}
    while url:
        last = url[-1]
        unbalanced = last in closers and url.count(closers[last]) < url.count(last)
        if last not in ".,;:!?" and not unbalanced:
            break
        url = url[:-1]
    return url, candidate[len(url) :]


def _without_query(url: str) -> str:
    """`url` without query and fragment, scheme and host in lower case, for comparing."""
    bare = url.strip().split("#", 1)[0].split("?", 1)[0]
    scheme, separator, rest = bare.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}{separator}{host.lower()}{slash}{path}".rstrip("/")
