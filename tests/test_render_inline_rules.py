"""Inlining with premailer's stored rules (render/inline_rules.py): the same output as premailer
on every variant of the theme and on documents built to differ, and premailer again wherever
the stored rules could be wrong (another stylesheet, a torn entry, what needs cssutils)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml.cssselect import CSSSelector

from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.render import inline as inline_module
from newsletter.render import inline_rules
from newsletter.render.inline import inline_css
from newsletter.render.issue import render_issue
from tests.conftest import EXAMPLE_ISSUE, copy_example_project
from tests.variants import VARIANTS, apply_variant


@pytest.fixture(autouse=True)
def no_books_in_memory() -> Iterator[None]:
    """Each test starts with no rule book in this process."""
    inline_rules._books.clear()
    yield
    inline_rules._books.clear()


def counts() -> tuple[int, int]:
    return inline_module.work.premailer, inline_module.work.known


def premailer_then_known(html: str, css: str, rules_dir: Path | None = None) -> tuple[str, str]:
    """`html` inlined by premailer (no book yet), then with the book it left."""
    before = counts()
    first = inline_css(html, css, rules_dir=rules_dir)
    middle = counts()
    second = inline_css(html, css, rules_dir=rules_dir)
    after = counts()
    assert middle == (before[0] + 1, before[1]), "the first inlining must run premailer"
    assert after == (middle[0], middle[1] + 1), "the second must use the stored rules"
    return first, second


PAGE = (
    "<!doctype html><html><head><title>t</title>"
    "<style>@media (max-width: 480px) { .p { margin: 0 !important; } }</style></head>"
    '<body><table class="card" width="600"><tr><td class="cell" bgcolor="#000">'
    '<div class="prose"><h3>Heading</h3><p>One <a href="https://example.org/?a=1&amp;b=2">'
    'link</a></p><ul><li>first</li><li>second</li></ul><img src="cid:x" height="40"></div>'
    '<p class="note" style="color: green; margin: 0">kept</p>'
    "</td></tr></table><!--[if mso]><table><tr><td><![endif]-->tail</body></html>"
)
CSS = """
h3 { margin: 20px 0 4px; font-size: 18px; }
.prose p { margin: 0 0 14px; color: #333; }
.prose a { color: #0a58ca !important; text-decoration: underline; }
.prose li:first-child { font-weight: bold; }
.prose li { margin: 0 0 6px; }
td.cell { background-color: #abc; text-align: left; vertical-align: top; width: 300px; }
.prose img { max-width: 100%; height: auto; }
.note { font-size: 12px; }
"""


def test_same_output_as_premailer_on_a_built_document() -> None:
    first, second = premailer_then_known(PAGE, CSS)
    assert second == first
    # What premailer writes, so the comparison is not of two empty results.
    assert 'bgcolor="#aabbcc"' in second and 'align="left"' in second
    assert 'width="300"' in second and 'height="40"' in second  # height stays disabled
    assert "font-weight:bold" in second and "!important" in second


def test_same_output_as_premailer_on_every_variant_of_the_theme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in VARIANTS:
        project = copy_example_project(tmp_path / name)
        apply_variant(project, name)
        settings = load_settings(project)
        issue = load_issue(project / "issues" / EXAMPLE_ISSUE)
        with monkeypatch.context() as patch:
            patch.setattr(inline_rules, "find_book", lambda key, folder: None)  # premailer only
            before = counts()
            by_premailer = render_issue(issue, settings)
            assert counts() == (before[0] + 2, before[1]), name  # the email and the web version
        assert list((settings.cache_dir / "inline").iterdir()), name
        inline_rules._books.clear()  # as in a new process: the book is read from its file
        middle = counts()
        known = render_issue(issue, settings)
        assert counts() == (middle[0], middle[1] + 2), name
        assert known.html == by_premailer.html, name
        assert known.web_html == by_premailer.web_html, name
        assert known.fingerprint == by_premailer.fingerprint, name


def test_an_edited_item_is_inlined_as_premailer_would(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(project)
    folder = project / "issues" / EXAMPLE_ISSUE
    render_issue(load_issue(folder), settings)  # the book for the theme's stylesheet
    item = sorted(folder.glob("0*.md"))[0]
    item.write_text(
        item.read_text(encoding="utf-8")
        + "\n## A new heading\n\n> A quote with a [link](https://example.org/).\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n`code` and **bold**\n\n"
        "![A compost bay](compost.jpg)\n\n1. first\n2. second\n",
        encoding="utf-8",
    )
    issue = load_issue(folder)
    before = counts()
    known = render_issue(issue, settings)
    assert counts() == (before[0], before[1] + 2)
    monkeypatch.setattr(inline_rules, "find_book", lambda key, folder: None)  # premailer only
    by_premailer = render_issue(issue, settings)
    assert by_premailer.html == known.html
    assert by_premailer.web_html == known.web_html
    html = "".join(str(part) for part in known.html.parts)
    assert "A new heading" in html and 'alt="A compost bay"' in html


def test_another_stylesheet_does_not_use_the_first_ones_rules(tmp_path: Path) -> None:
    premailer_then_known(PAGE, CSS, tmp_path)
    other = CSS.replace("#333", "#444")
    before = counts()
    result = inline_css(PAGE, other, rules_dir=tmp_path)
    assert counts()[0] == before[0] + 1
    assert "color:#444" in result and "color:#333" not in result
    assert len(list(tmp_path.iterdir())) == 2


def test_a_torn_or_foreign_book_is_not_used(tmp_path: Path) -> None:
    first, _ = premailer_then_known(PAGE, CSS, tmp_path)
    (entry,) = tmp_path.iterdir()
    good = entry.read_text(encoding="ascii")
    for broken in (
        good[: len(good) // 2],  # torn
        good.replace('"key": "', '"key": "0'),  # another key's
        json.dumps({"format": "1", "key": entry.stem, "usable": True, "rules": [[1, 2, 3]]}),
    ):
        entry.write_text(broken, encoding="ascii")
        inline_rules._books.clear()
        before = counts()
        assert inline_css(PAGE, CSS, rules_dir=tmp_path) == first
        assert counts()[0] == before[0] + 1
    # premailer wrote a good book again
    inline_rules._books.clear()
    before = counts()
    assert inline_css(PAGE, CSS, rules_dir=tmp_path) == first
    assert counts()[1] == before[1] + 1


def test_a_book_that_cannot_be_written_costs_only_premailer(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    first = inline_css(PAGE, CSS, rules_dir=blocked / "inline")
    inline_rules._books.clear()
    before = counts()
    assert inline_css(PAGE, CSS, rules_dir=blocked / "inline") == first
    assert counts()[0] == before[0] + 1


@pytest.mark.parametrize(
    ("html", "css"),
    [
        # An element whose own style stayed in place (unquoted): premailer merges it via cssutils.
        (PAGE.replace("<h3>", "<h3 style=color:red>"), CSS),
        # Rules premailer leaves in a <style> block.
        (PAGE, CSS + "@media (max-width: 400px) { .prose p { margin: 0; } }"),
        (PAGE, CSS + ".prose a:hover { color: red; }"),
        # Floated images need premailer's `align` pass.
        (PAGE, CSS + ".prose img { float: right; }"),
    ],
)
def test_what_needs_premailer_gets_premailer(html: str, css: str) -> None:
    inline_css(html, css)  # premailer, and a book if the stylesheet allows one
    before = counts()
    again = inline_css(html, css)
    assert counts() == (before[0] + 1, before[1])
    inline_rules._books.clear()
    assert again == inline_css(html, css)


def test_a_document_without_a_head_as_premailer_would() -> None:
    page = PAGE.replace("<head><title>t</title>", "").replace("</head>", "")
    first, second = premailer_then_known(page, CSS)
    assert second == first


def test_the_xpaths_of_head_and_style_are_lxml_cssselects() -> None:
    assert CSSSelector("head").path == inline_rules.HEAD
    assert CSSSelector("style").path == inline_rules.STYLE
