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
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from .errors import Problem

__all__ = [
    "LINKS_KEYS",
    "LinkTagging",
    "parse_links_table",
    "slugify",
    "tag_links",
    "tag_text",
    "tag_url",
    "text_urls",
]

LINKS_KEYS = ("domains", "utm_source", "utm_medium", "utm_campaign")
DEFAULT_MEDIUM = "email"

# The per-recipient slot marker of render/engine.py: such a URL differs per recipient.
_SLOT_MARKER = re.compile(r"NLSLOT\d+X")
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
# `<a ...>` start tags, and the href attribute inside one (double, single or no quotes).
_A_TAG = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(
    r"""(?P<lead>\shref\s*=\s*)(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s"'=<>`]+))""",
    re.IGNORECASE,
)
# URLs in plain text; trailing punctuation is trimmed afterwards.
_TEXT_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)


@dataclass(frozen=True)
class LinkTagging:
    """What to append to links to `domains` (and their subdomains).

    `campaign` None means: the issue's name, decided when the issue is tagged.
    """

    domains: tuple[str, ...]
    source: str
    medium: str = DEFAULT_MEDIUM
    campaign: str | None = None

    def parameters(self, issue_name: str) -> tuple[tuple[str, str], ...]:
        return (
            ("utm_source", self.source),
            ("utm_medium", self.medium),
            ("utm_campaign", self.campaign or issue_name),
        )

    def matches(self, host: str) -> bool:
        """True when `host` is one of the domains or a subdomain of one."""
        name = _normal_host(host)
        return any(name == domain or name.endswith("." + domain) for domain in self.domains)


def slugify(text: str) -> str:
    """`Riverside Roots` → `riverside-roots`: lower case ASCII letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "newsletter"


def parse_links_table(
    mapping: Mapping[str, Any] | None, *, newsletter_name: str = ""
) -> tuple[LinkTagging | None, list[Problem]]:
    """The `[links]` table as a `LinkTagging` (None when absent), and every problem in it.

    Problems carry `key` (e.g. `links.domains`) but no file or line: config.py adds those.
    """
    problems: list[Problem] = []
    if mapping is None or not mapping:
        return None, problems

    def problem(key: str, message: str) -> None:
        problems.append(Problem(message, key=f"links.{key}"))

    for key in mapping:
        if key not in LINKS_KEYS:
            suggestion = difflib.get_close_matches(str(key), LINKS_KEYS, n=1)
            hint = f"; did you mean '{suggestion[0]}'?" if suggestion else ""
            # An error, not a warning: a misspelt key would silently tag every link wrongly.
            problem(str(key), f"unknown key{hint} (known keys: {', '.join(LINKS_KEYS)})")

    def text(key: str) -> str | None:
        value = mapping.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            problem(key, f"must be a string, not {type(value).__name__}")
            return None
        value = value.strip()
        if not value:
            problem(key, "must not be empty (leave the key out to use the default)")
            return None
        if any(ord(char) < 0x20 or char == "\x7f" for char in value):
            problem(key, "must be on one line, without control characters")
            return None
        return value

    source = text("utm_source")
    medium = text("utm_medium")
    campaign = text("utm_campaign")

    domains: list[str] = []
    raw_domains = mapping.get("domains")
    if raw_domains is None:
        problem(
            "domains",
            "is required: the host names whose links get UTM parameters, "
            'e.g. domains = ["riverside-garden.example.org"]',
        )
    elif not isinstance(raw_domains, list) or not raw_domains:
        problem("domains", "must be a non-empty list of host names")
    else:
        for index, entry in enumerate(raw_domains, start=1):
            domain = (
                entry.strip().lower().removeprefix("*.").lstrip(".")
                if isinstance(entry, str)
                else None
            )
            if domain is None:
                problem("domains", f"entry {index} ({entry!r}) is not a string")
            elif "://" in domain or "/" in domain:
                problem(
                    "domains",
                    f"entry {index} ({entry!r}) must be a host name like "
                    "'riverside-garden.example.org', not a URL",
                )
            elif not _HOST_NAME.match(_normal_host(domain)):
                problem("domains", f"entry {index} ({entry!r}) is not a host name")
            else:
                domains.append(_normal_host(domain))
    if problems:
        return None, problems
    return (
        LinkTagging(
            domains=tuple(dict.fromkeys(domains)),
            source=source or slugify(newsletter_name),
            medium=medium or DEFAULT_MEDIUM,
            campaign=campaign,
        ),
        problems,
    )


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


def _normal_host(host: str) -> str:
    """Lower case and, for international names, the ASCII (punycode) form."""
    name = host.strip().rstrip(".").lower()
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name
