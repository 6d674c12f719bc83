"""The default theme's layouts and masthead variants: a golden file each, and what tells them
apart checked in the HTML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.errors import ContentError
from newsletter.render import render_issue
from newsletter.render.model import RenderedIssue
from tests.conftest import copy_example_project
from tests.test_render import check_golden, filled_html
from tests.variants import VARIANTS, apply_variant


def render_variant(project: Path, name: str) -> tuple[RenderedIssue, str]:
    apply_variant(project, name)
    settings = load_settings(project)
    rendered = render_issue(load_issue(project / "issues" / "2026-11"), settings)
    return rendered, filled_html(rendered, settings)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_matches_golden(project: Path, name: str) -> None:
    _, html = render_variant(project, name)
    check_golden(f"layouts/{name}.html", html)
    assert len(html.encode()) < 60 * 1024


def _item_images(html: str) -> list[str]:
    return re.findall(r'<img [^>]*src="cid:(?:garden|compost)[^>]*>', html)


def test_side_layouts_put_the_image_in_a_column(project: Path) -> None:
    _, html = render_variant(project, "layout-left")
    images = _item_images(html)
    assert len(images) == 2
    assert all('width="204"' in tag for tag in images)
    assert html.count("mj-column-per-40") >= 2 and html.count("mj-column-per-60") >= 2


def test_right_layout_reverses_the_columns_on_wide_screens(project: Path) -> None:
    _, html = render_variant(project, "layout-right")
    assert "direction:rtl" in html
    # Source order stays image first, so phones still show the image above the text.
    first = html.index("cid:garden")
    assert first < html.index("Harvest festival on 6 December</h2>")


def test_thumbnail_layout_keeps_image_and_text_side_by_side(project: Path) -> None:
    _, html = render_variant(project, "layout-thumbnail")
    assert all('width="120"' in tag for tag in _item_images(html))
    assert "mj-column-per-26" in html  # inside mj-group: no stacking on phones


def test_in_this_issue_lists_the_items_and_links_them_on_the_web(project: Path) -> None:
    rendered, html = render_variant(project, "layout-left")
    contents = html[html.index("In this issue") :]
    contents = contents[: contents.index("</ul>")]
    titles = [
        "Harvest festival on 6 December",
        "Three new compost bays",
        "Sign up for a winter shift",
    ]
    assert [t for t in titles if t in contents] == titles
    assert "<a " not in contents, "anchors do not work in most inboxes: the email lists"
    web = rendered.web_html[rendered.web_html.index("In this issue") :]
    assert '<a href="#harvest-festival"' in web
    assert 'id="harvest-festival"' in rendered.web_html


def test_masthead_variants(project: Path, tmp_path: Path) -> None:
    _, brand = render_variant(project, "masthead-brand")
    assert 'class="masthead-title"' in brand and "background-color:#1b6b5a" in brand
    plain = _masthead(project, "masthead-plain", tmp_path)
    assert "border-bottom:4px solid #1b6b5a" in plain and "masthead-title" in plain
    logo_only = _masthead(project, "masthead-logo", tmp_path)
    assert "masthead-title" not in logo_only and "cid:logo" in logo_only
    no_subject = _masthead(project, "masthead-no-subject", tmp_path)
    assert "masthead-title" not in no_subject and "November 26, 2026" in no_subject


def _masthead(project: Path, name: str, tmp_path: Path) -> str:
    fresh = copy_example_project(tmp_path / name)
    _, html = render_variant(fresh, name)
    body = html[html.index("<body") :]
    start = body.index("masthead")
    return body[start : body.index("Dear Alex")]


def test_an_unknown_layout_names_file_and_line(project: Path) -> None:
    issue = project / "issues" / "2026-11" / "01-harvest-festival.md"
    issue.write_text(
        issue.read_text(encoding="utf-8").replace("---\n", "---\nlayout: lefft\n", 1),
        encoding="utf-8",
    )
    with pytest.raises(ContentError) as caught:
        load_issue(project / "issues" / "2026-11")
    expected = "layout: must be one of above, left, right, thumbnail; did you mean 'left'?"
    assert f"{issue}:2: {expected}" in str(caught.value)


def test_logo_dark_is_hidden_until_dark_mode(project: Path) -> None:
    Image.new("RGBA", (192, 192), (255, 255, 255, 255)).save(project / "images" / "logo-dark.png")
    config = project / "newsletter.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "[newsletter]\n", '[newsletter]\nlogo_dark = "images/logo-dark.png"\n', 1
        ),
        encoding="utf-8",
    )
    settings = load_settings(project)
    rendered = render_issue(load_issue(project / "issues" / "2026-11"), settings)
    html = filled_html(rendered, settings)
    dark = re.search(r'<div class="logo-dark" style="([^"]*)">\s*<img [^>]*>', html)
    assert dark is not None and "display:none" in dark.group(1)
    assert re.search(r'height="96"', dark.group(0)) and "cid:logo-dark" in dark.group(0)
    assert "<!--[if !mso]><!-->" in html  # Outlook for Windows never shows the dark logo
    media = html[html.index("@media (prefers-color-scheme: dark)") :]
    assert ".logo-light { display: none !important; }" in media
    assert {image.filename.split("-")[0] for image in rendered.embedded_images} >= {"logo"}
