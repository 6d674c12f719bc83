from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from newsletter.config_reader import TableReader
from newsletter.linktags import (
    LinkTagging,
    parse_links_table,
    slugify,
    tag_links,
    tag_text,
    tag_url,
    text_urls,
)

GOLDEN = Path(__file__).parent / "golden" / "utm"
TAGGING = LinkTagging(domains=("riverside-garden.example.org",), source="riverside-roots")
ISSUE = "2026-11"
SKIP = (
    "https://riverside-garden.example.org/newsletter/2026-11/web.html",
    "https://riverside-garden.example.org/unsubscribe",
)
TAGS = "utm_source=riverside-roots&utm_medium=email&utm_campaign=2026-11"


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") or not path.exists():
        path.write_text(actual, encoding="utf-8")
        if not os.environ.get("UPDATE_GOLDEN"):
            pytest.fail(f"golden file {path} was missing and has been written; check it in")
    assert actual == path.read_text(encoding="utf-8"), (
        f"{name} differs from its golden file; if the change is intended, "
        "run UPDATE_GOLDEN=1 pytest tests/test_linktags.py"
    )


def test_urls_match_golden() -> None:
    lines = []
    for url in (GOLDEN / "urls.txt").read_text(encoding="utf-8").splitlines():
        tagged = tag_url(url, TAGGING, ISSUE, skip=SKIP)
        lines.append(f"in:  {url!r}")
        lines.append(f"out: {tagged!r}" if tagged != url else "out: (unchanged)")
        lines.append("")
    check_golden("urls.tagged.txt", "\n".join(lines))


def test_html_matches_golden() -> None:
    source = (GOLDEN / "links.html").read_text(encoding="utf-8")
    check_golden("links.tagged.html", tag_links(source, TAGGING, ISSUE, skip=SKIP))


def test_text_matches_golden() -> None:
    source = (GOLDEN / "text.txt").read_text(encoding="utf-8")
    check_golden("text.tagged.txt", tag_text(source, TAGGING, ISSUE, skip=SKIP))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://riverside-garden.example.org/festival",
            f"https://riverside-garden.example.org/festival?{TAGS}",
        ),
        (
            "https://riverside-garden.example.org/a?x=1#frag",
            f"https://riverside-garden.example.org/a?x=1&{TAGS}#frag",
        ),
        (
            "https://riverside-garden.example.org/a?x=1&",
            f"https://riverside-garden.example.org/a?x=1&{TAGS}",
        ),
        (
            "https://Sub.RIVERSIDE-garden.example.org:8080/a%20b",
            f"https://Sub.RIVERSIDE-garden.example.org:8080/a%20b?{TAGS}",
        ),
        ("https://riverside-garden.example.org.evil.example/", None),
        ("https://xriverside-garden.example.org/", None),
        ("mailto:team@riverside-garden.example.org", None),
        ("tel:+31201234567", None),
        ("/relative", None),
        ("https://riverside-garden.example.org/u?t=NLSLOT0X", None),
        ("https://riverside-garden.example.org/unsubscribe?t=abc", None),
        ("https://riverside-garden.example.org/newsletter/2026-11/web.html", None),
    ],
)
def test_tag_url(url: str, expected: str | None) -> None:
    assert tag_url(url, TAGGING, ISSUE, skip=SKIP) == (expected or url)


def test_editor_utm_keys_are_kept_and_never_duplicated() -> None:
    url = "https://riverside-garden.example.org/?utm_source=partner&UTM_Medium=print"
    tagged = tag_url(url, TAGGING, ISSUE)
    names = [name.lower() for name, _ in parse_qsl(urlsplit(tagged).query)]
    assert sorted(names) == ["utm_campaign", "utm_medium", "utm_source"]
    assert tagged.startswith(url + "&")
    assert "utm_source=partner" in tagged and "utm_campaign=2026-11" in tagged
    assert tag_url(tagged, TAGGING, ISSUE) == tagged  # tagging twice changes nothing


def test_values_are_percent_encoded() -> None:
    tagging = LinkTagging(
        domains=("riverside-garden.example.org",), source="rr", campaign="Winter & more/2026"
    )
    tagged = tag_url("https://riverside-garden.example.org/", tagging, ISSUE)
    assert tagged.endswith("utm_campaign=Winter%20%26%20more%2F2026")
    assert dict(parse_qsl(urlsplit(tagged).query))["utm_campaign"] == "Winter & more/2026"


def test_html_ampersands_stay_escaped_and_slots_untouched() -> None:
    html = (
        '<a href="https://riverside-garden.example.org/r?a=1&amp;b=2">x</a>'
        '<a href="NLSLOT0X">Unsubscribe</a>'
    )
    tagged = tag_links(html, TAGGING, ISSUE)
    escaped_tags = TAGS.replace("&", "&amp;")
    assert f'href="https://riverside-garden.example.org/r?a=1&amp;b=2&amp;{escaped_tags}"' in tagged
    assert '<a href="NLSLOT0X">Unsubscribe</a>' in tagged
    assert "&b" not in tagged.replace("&amp;", "")


def test_text_urls_trim_punctuation() -> None:
    text = "see (https://a.example.org/x). And https://a.example.org/w_(y), or https://b.org/?q=1!"
    assert text_urls(text) == [
        "https://a.example.org/x",
        "https://a.example.org/w_(y)",
        "https://b.org/?q=1",
    ]


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Riverside Roots", "riverside-roots"),
        ("De Buurtkrant!", "de-buurtkrant"),
        ("???", "newsletter"),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_parse_links_table_defaults() -> None:
    table = TableReader(
        "links", {"domains": ["Riverside-Garden.example.org", "*.shop.example.org"]}
    )
    tagging = parse_links_table(table, newsletter_name="Riverside Roots")
    assert table.problems == []
    assert tagging == LinkTagging(
        domains=("riverside-garden.example.org", "shop.example.org"),
        source="riverside-roots",
        medium="email",
        campaign=None,
    )
    assert tagging is not None
    assert tagging.parameters("2026-11")[2] == ("utm_campaign", "2026-11")


def test_parse_links_table_absent_means_no_tagging() -> None:
    assert parse_links_table(TableReader("links", None)) is None
    assert parse_links_table(TableReader("links", {})) is None


def test_parse_links_table_explicit_values() -> None:
    table = TableReader(
        "links",
        {
            "domains": ["riverside-garden.example.org"],
            "utm_source": "rr-news",
            "utm_medium": "newsletter",
            "utm_campaign": "november",
        },
    )
    tagging = parse_links_table(table)
    assert table.problems == []
    assert tagging is not None
    assert tagging.parameters("ignored") == (
        ("utm_source", "rr-news"),
        ("utm_medium", "newsletter"),
        ("utm_campaign", "november"),
    )


@pytest.mark.parametrize(
    ("table", "key", "fragment"),
    [
        ({"utm_source": "x"}, "links.domains", "is required"),
        ({"domains": "riverside-garden.example.org"}, "links.domains", "non-empty list"),
        ({"domains": []}, "links.domains", "non-empty list"),
        ({"domains": ["https://riverside-garden.example.org/"]}, "links.domains", "not a URL"),
        ({"domains": ["bad host"]}, "links.domains", "entry 1 ('bad host') is not a host name"),
        ({"domains": [3]}, "links.domains", "entry 1 (3) is not a string"),
        ({"domains": ["a.org"], "utm_source": 7}, "links.utm_source", "must be a string"),
        ({"domains": ["a.org"], "utm_medium": "  "}, "links.utm_medium", "must not be empty"),
        ({"domains": ["a.org"], "utm_campaign": "a\nb"}, "links.utm_campaign", "on one line"),
    ],
)
def test_parse_links_table_problems(table: dict[str, object], key: str, fragment: str) -> None:
    reader = TableReader("links", table)
    assert parse_links_table(reader) is None
    assert [p.key for p in reader.problems] == [key]
    assert fragment in reader.problems[0].message


def test_an_unknown_links_key_is_a_warning_as_in_every_table() -> None:
    reader = TableReader("links", {"domains": ["a.org"], "utm_campain": "x"})
    assert parse_links_table(reader) is not None
    assert reader.problems == []
    assert reader.warnings == [
        "newsletter.toml: unknown key 'links.utm_campain' is ignored (did you mean 'utm_campaign'?)"
    ]
