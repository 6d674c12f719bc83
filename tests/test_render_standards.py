"""The email conventions every rendered issue carries (render/standards.py), on the example."""

from __future__ import annotations

import re
from pathlib import Path

from newsletter.config import Settings, load_settings
from newsletter.content import load_issue
from newsletter.render import render_issue
from newsletter.render.inline import inline_css
from newsletter.render.standards import apply_standards


def _html(settings: Settings, issue_folder: Path) -> str:
    rendered = render_issue(load_issue(issue_folder), settings)
    return rendered.html.fill(lambda slot: slot.default or "x")


def test_doctype_survives_inlining(settings: Settings, issue_folder: Path) -> None:
    # premailer alone drops it: the reason apply_standards puts it back.
    assert (
        not inline_css(
            "<!doctype html><html><head></head><body><p>x</p></body></html>", "p { color: red; }"
        )
        .lower()
        .startswith("<!doctype")
    )
    for html in (
        _html(settings, issue_folder),
        render_issue(load_issue(issue_folder), settings).web_html,
    ):
        assert html.startswith("<!DOCTYPE html>\n<html")
        assert html.lower().count("<!doctype") == 1


def test_apple_and_colour_scheme_metas_are_in_the_head(
    settings: Settings, issue_folder: Path
) -> None:
    html = _html(settings, issue_folder)
    head = html[: html.index("</head>")]
    assert '<meta name="x-apple-disable-message-reformatting">' in head
    assert '<meta name="format-detection" content="telephone=no' in head
    assert '<meta name="color-scheme" content="light dark">' in head
    assert '<meta name="supported-color-schemes" content="light dark">' in head
    assert "a[x-apple-data-detectors]" in head


def test_light_only_is_declared_when_chosen(project: Path, issue_folder: Path) -> None:
    config = project / "newsletter.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "[newsletter]\n", '[newsletter]\ncolor_scheme = "light"\n', 1
        ),
        encoding="utf-8",
    )
    html = _html(load_settings(project), issue_folder)
    assert '<meta name="color-scheme" content="light">' in html
    assert "light dark" not in html


def test_preheader_is_hidden_without_white_text_and_padded(
    settings: Settings, issue_folder: Path
) -> None:
    html = _html(settings, issue_folder)
    body = html[html.index("<body") :]
    block = re.search(r"<div style=\"([^\"]*)\">Join us on 6 December[^<]*</div>", body)
    assert block is not None, "the preheader is the first hidden block"
    style = block.group(1)
    for declaration in ("display:none", "mso-hide:all", "max-height:0", "opacity:0"):
        assert declaration in style
    assert "color" not in style, "white-on-white text is what HTML_FONT_LOW_CONTRAST flags"
    assert block.group(0).count("&#847;&zwnj;&nbsp;") >= 80
    # Nothing visible comes between <body> and the preheader.
    assert re.match(r'<body[^>]*>(<div[^>]*>)?<div style="display:none', body)


def test_preheader_text_stays_escaped() -> None:
    compiled = (
        '<!doctype html><html><head><title>t</title></head><body><div style="display:none;'
        "font-size:1px;color:#ffffff;line-height:1px;max-height:0px;max-width:0px;opacity:0;"
        'overflow:hidden">Tom &amp; Jerry &lt;b&gt;</div></body></html>'
    )
    html = apply_standards(compiled)
    assert ">Tom &amp; Jerry &lt;b&gt;&#847;" in html
    assert "color:#ffffff" not in html


def test_a_quoted_font_in_an_inlined_rule_leaves_one_style_attribute() -> None:
    # premailer writes style='...' around a value with double quotes; the merge must see it.
    html = inline_css(
        '<html><head></head><body><img src="a.png" style="width:100%;height:auto"></body></html>',
        "img { font-family: 'Segoe UI', Arial, sans-serif; color: #56636d; }",
    )
    (tag,) = re.findall(r"<img[^>]*>", html)
    assert tag.count("style=") == 1, tag
    assert "width:100%" in tag and "color:#56636d" in tag and "Segoe UI" in tag


def test_theme_conventions_in_the_example(settings: Settings, issue_folder: Path) -> None:
    html = _html(settings, issue_folder)
    head = html[: html.index("</head>")]
    # A dark palette, for prefers-color-scheme and for Outlook.com's attribute twins.
    assert "@media (prefers-color-scheme: dark)" in head
    assert "[data-ogsc] .card" in head and "[data-ogsb] .card" in head
    # MSO font fallback, so Outlook for Windows does not fall back to Times New Roman.
    assert "<!--[if mso]><style" in head and "Arial" in head
    # No no-op CSS from mjml's button; the button has an accessible name and is a padded
    # link (clickable as a whole) with Outlook's text-made padding.
    assert "cursor:auto" not in html and "text-transform:none" not in html
    buttons = re.findall(r'<a [^>]*class="button"[^>]*>.*?</a>', html, re.S)
    assert len(buttons) == 2  # the two items with a link
    for button in buttons:
        assert re.search(r'aria-label="[^"]+: [^"]+"', button) and "padding:12px 22px" in button
        assert "mso-text-raise" in button and "mso-padding-alt:0" in button
    # Every content image has a numeric height (images-off and Outlook layouts keep their
    # shape) yet scales with its width, and its alt text is styled.
    images = re.findall(r"<img [^>]*>", html)
    for tag in images:
        if "cid:garden" in tag or "cid:compost" in tag or "cid:logo" in tag:
            assert re.search(r'\sheight="\d+"', tag), tag
            assert "height:auto" in tag and re.search(r"height:\d+px", tag) is None
            assert "font-family" in tag and "color:" in tag
    # Markdown table headers head their columns; cells do not break words at 320 px.
    assert '<th scope="col"' in html and "<th>" not in html
    assert "word-break: normal !important" in head


def test_light_only_has_no_dark_palette(project: Path, issue_folder: Path) -> None:
    config = project / "newsletter.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "[newsletter]\n", '[newsletter]\ncolor_scheme = "light"\n', 1
        ),
        encoding="utf-8",
    )
    html = _html(load_settings(project), issue_folder)
    assert "prefers-color-scheme" not in html and "data-ogsc" not in html
