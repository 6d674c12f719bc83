"""Accessibility: lang, heading order, link texts (en and nl), theme colour contrast."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from newsletter.checks import CheckReport, check_issue
from newsletter.checks.accessibility import is_vague, normalise_link_text
from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.render import render_issue
from newsletter.render.theme import package_theme_dir

SITE = "https://riverside-garden.example.org"


def check(project: Path, issue_folder: Path) -> CheckReport:
    settings = load_settings(project)
    issue = load_issue(issue_folder)
    return check_issue(
        issue, render_issue(issue, settings), settings, offline=True, spamassassin=None
    )


def override_email_template(project: Path, old: str, new: str) -> Path:
    source = (package_theme_dir() / "email.mjml.j2").read_text(encoding="utf-8")
    assert old in source
    target = project / "templates" / "email.mjml.j2"
    target.parent.mkdir(exist_ok=True)
    target.write_text(source.replace(old, new), encoding="utf-8")
    return target


def test_example_issue_is_accessible(project: Path, issue_folder: Path) -> None:
    report = check(project, issue_folder)
    codes = report.codes()
    assert not codes & {"lang-missing", "heading-skipped", "contrast-low"}
    assert not {code for code in codes if code.startswith("link-text")}


def test_skipped_heading_level_names_the_item_line(project: Path, issue_folder: Path) -> None:
    item = issue_folder / "05-deep.md"
    item.write_text(
        "---\ntitle: Deep\n---\n## Fine, an h3 under the item's h2\n\nText.\n\n"
        "##### Too deep\n\nMore text.\n",
        encoding="utf-8",
    )
    report = check(project, issue_folder)
    [skipped] = [f for f in report.findings if f.code == "heading-skipped"]
    assert (skipped.severity, skipped.file, skipped.line) == ("warning", item, 8)
    assert "'Too deep' is an h5 right after h3" in skipped.message


@pytest.mark.parametrize("text", ["Click here!", "read more →", "klik hier", "Lees meer", "hier"])
def test_vague_link_texts_are_warned_about(project: Path, issue_folder: Path, text: str) -> None:
    item = issue_folder / "05-vague.md"
    item.write_text(
        f"---\ntitle: Vague\n---\nThe programme is out.\nSee [{text}]({SITE}/programme).\n",
        encoding="utf-8",
    )
    report = check(project, issue_folder)
    [vague] = [f for f in report.findings if f.code == "link-text-vague"]
    assert (vague.severity, vague.file, vague.line, vague.url) == (
        "warning",
        item,
        5,
        f"{SITE}/programme",
    )


def test_descriptive_link_text_is_fine(project: Path, issue_folder: Path) -> None:
    (issue_folder / "05-fine.md").write_text(
        f"---\ntitle: Fine\n---\nSee [the festival programme]({SITE}/programme).\n",
        encoding="utf-8",
    )
    report = check(project, issue_folder)
    assert not {code for code in report.codes() if code.startswith("link-text")}


def test_default_button_is_accessible_by_construction(project: Path, issue_folder: Path) -> None:
    # mjml-python drops mj-button's title; the renderer puts "Read more: <title>" back as the
    # link's title and aria-label, so the tool's own default never trips its own check.
    (issue_folder / "05-button.md").write_text(
        f"---\ntitle: Button\nlink: {SITE}/button\n---\nA button follows.\n", encoding="utf-8"
    )
    settings = load_settings(project)
    issue = load_issue(issue_folder)
    html = render_issue(issue, settings).html.fill(lambda slot: "x")
    # The theme's bulletproof button wraps the text in Outlook-only spacers and a span.
    assert re.search(
        rf'<a href="{SITE}/button"[^>]*aria-label="Read more: Button"[^>]*>((?!</a>).)*Read more',
        html,
        re.S,
    )
    report = check(project, issue_folder)
    assert not {code for code in report.codes() if code.startswith("link-text")}


def test_dutch_defaults_pass_and_messages_have_no_english_example(
    project: Path, issue_folder: Path
) -> None:
    config = project / "newsletter.toml"
    config.write_text(config.read_text().replace('locale = "en"', 'locale = "nl"'))
    assert 'locale = "nl"' in config.read_text()
    report = check(project, issue_folder)
    assert not {code for code in report.codes() if code.startswith("link-text")}
    (issue_folder / "05-hier.md").write_text(
        f"---\ntitle: Hier\n---\nZie [klik hier]({SITE}/hier).\n", encoding="utf-8"
    )
    [vague] = [f for f in check(project, issue_folder).findings if f.code == "link-text-vague"]
    assert "festival programme" not in vague.message


def test_title_and_aria_label(project: Path, issue_folder: Path) -> None:
    template = override_email_template(
        project,
        '<div class="footer-text">',
        '<div class="footer-text">'
        f'<p><a href="{SITE}/calendar" aria-label="The garden calendar">here</a> '
        f'<a href="{SITE}/programme" title="Festival programme">Read more</a> '
        f'<a href="{SITE}/nothing"></a></p>',
    )
    report = check(project, issue_folder)
    by_url = {f.url: f for f in report.findings if f.code.startswith("link-text")}
    assert f"{SITE}/calendar" not in by_url
    titled = by_url[f"{SITE}/programme"]
    assert (titled.severity, titled.code, titled.file) == ("info", "link-text-title", template)
    empty = by_url[f"{SITE}/nothing"]
    assert (empty.severity, empty.code, empty.file) == ("warning", "link-text-empty", template)


def test_missing_lang(project: Path, issue_folder: Path) -> None:
    template = override_email_template(project, '<mjml lang="{{ lang }}" dir="ltr">', "<mjml>")
    report = check(project, issue_folder)
    [missing] = [f for f in report.findings if f.code == "lang-missing"]
    assert (missing.severity, missing.file) == ("warning", template)


@pytest.mark.parametrize(
    ("colours", "expected"),
    [
        ({}, set()),
        ({"text_color": "#999999"}, {"body text"}),  # links stay brand-coloured: readable
        ({"brand_color": "#777777"}, {"masthead text", "button text"}),  # neither white nor black
        ({"brand_color": "#ffdd00"}, set()),  # yellow: dark text on it; links in text colour
        ({"brand_color": "#ffdd00", "text_color": "#999999"}, {"body text", "link text"}),
    ],
)
def test_theme_colour_contrast(
    project: Path, issue_folder: Path, colours: dict[str, str], expected: set[str]
) -> None:
    config = project / "newsletter.toml"
    text = config.read_text(encoding="utf-8").replace('brand_color = "#1b6b5a"\n', "")
    for key, value in colours.items():
        text = text.replace("[newsletter]\n", f'[newsletter]\n{key} = "{value}"\n', 1)
    config.write_text(text, encoding="utf-8")
    lines = text.splitlines()
    report = check(project, issue_folder)
    low = [f for f in report.findings if f.code == "contrast-low"]
    assert {f.message.split(" (")[0] for f in low} == expected
    for finding in low:
        assert finding.file == config
        assert finding.line is not None
        key = lines[finding.line - 1].split(" =")[0]
        assert f"change newsletter.{key}" in finding.message
        assert "WCAG AA asks for 4.5:1" in finding.message


@pytest.mark.parametrize(
    ("text", "normal", "vague"),
    [
        ("  Click   HERE! ", "click here", True),
        ("→ Read more", "read more", True),
        ("Lees meer…", "lees meer", True),
        ("Read more about the festival", "read more about the festival", False),
        ("the compost guide", "the compost guide", False),
    ],
)
def test_normalise_link_text(text: str, normal: str, vague: bool) -> None:
    assert normalise_link_text(text) == normal
    assert is_vague(text) is vague
