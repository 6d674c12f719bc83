"""The example issue, checked offline: no errors, and the warnings its placeholder links earn."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from rich.console import Console

from newsletter.checks import CheckReport, Finding, check_issue
from newsletter.checks.report import format_finding, print_report
from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.render import render_issue
from tests.conftest import EXAMPLE_ISSUE, copy_example_project


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the example project for the whole module: these tests only read it."""
    return copy_example_project(tmp_path_factory.mktemp("example") / "project")


@pytest.fixture(scope="module")
def report(example: Path) -> CheckReport:
    settings = load_settings(example)
    issue = load_issue(example / "issues" / EXAMPLE_ISSUE)
    return check_issue(
        issue, render_issue(issue, settings), settings, offline=True, spamassassin=None
    )


@pytest.fixture
def project(example: Path) -> Path:
    return example


@pytest.fixture
def issue_folder(example: Path) -> Path:
    return example / "issues" / EXAMPLE_ISSUE


def test_example_issue_has_no_errors_offline(report: CheckReport) -> None:
    assert report.errors == ()
    assert report.ok


def test_example_issue_warns_about_each_placeholder_link_once(
    report: CheckReport, issue_folder: Path, project: Path
) -> None:
    config = project / "newsletter.toml"
    expected = {
        (
            "https://riverside-garden.example.org/festival",
            issue_folder / "01-harvest-festival.md",
            6,
        ),
        ("https://riverside-garden.example.org/compost", issue_folder / "02-compost-bays.md", 12),
        ("https://riverside-garden.example.org/roster", issue_folder / "03-winter-roster.md", 3),
        ("https://instagram.example.org/riversideroots", config, 24),
        ("https://mastodon.example.org/@riversideroots", config, 25),
        ("https://riverside-garden.example.org/", config, 26),
        ("https://buurtfonds.example.org/", config, 31),
    }
    links = [f for f in report.warnings if f.code == "link-example"]
    assert {(f.url, f.file, f.line) for f in links} == expected
    assert len(links) == len(expected)


def test_example_issue_warns_that_its_embedded_images_are_heavy(
    report: CheckReport, project: Path
) -> None:
    # The example embeds about 144 KB of images in every message (base_url is not set).
    (heavy,) = [f for f in report.warnings if f.code != "link-example"]
    assert (heavy.code, heavy.file) == ("images-embedded", project / "newsletter.toml")
    assert heavy.message.startswith("embedded images add 144 KB to every message (over 100 KB)")
    assert "set base_url" in heavy.message


def test_example_issue_infos(report: CheckReport, issue_folder: Path) -> None:
    assert [(f.code, f.file) for f in report.infos] == [
        ("item-draft", issue_folder / "04-seed-catalogue.md")
    ]


def test_unsubscribe_and_mailto_links_are_not_checked(report: CheckReport) -> None:
    urls = {f.url for f in report.findings}
    assert not any(url and ("unsubscribe" in url or url.startswith("mailto:")) for url in urls)


def test_to_json(report: CheckReport, issue_folder: Path) -> None:
    data = json.loads(report.to_json())
    assert data["issue"] == "2026-11"
    assert (data["ok"], data["errors"], data["warnings"]) == (True, 0, 8)
    first = data["findings"][0]
    assert first == {
        "severity": "warning",
        "code": "link-example",
        "message": "link on a placeholder domain (riverside-garden.example.org), not a real "
        "site: https://riverside-garden.example.org/festival",
        "file": str(issue_folder / "01-harvest-festival.md"),
        "line": 6,
        "url": "https://riverside-garden.example.org/festival",
    }


def test_print_report(report: CheckReport, project: Path) -> None:
    console = Console(record=True, width=300, color_system=None)
    print_report(report, console, root=project)
    lines = console.export_text().splitlines()
    assert lines[0].startswith(
        "warning issues/2026-11/01-harvest-festival.md:6  link on a placeholder"
    )
    assert lines[0].endswith("[link-example]")
    assert "info    issues/2026-11/04-seed-catalogue.md:1  draft item" in lines[-2]
    assert lines[-1] == "no errors, 8 warnings in 2026-11"

    quiet = Console(record=True, width=300, color_system=None)
    print_report(report, quiet, root=project, show_info=False)
    assert "draft item" not in quiet.export_text()


def test_print_report_with_errors_and_markup_in_messages(tmp_path: Path) -> None:
    report = CheckReport.of(
        "2026-12",
        [
            Finding("warning", "link-insecure", "link uses http://: http://a.org/[b]"),
            Finding(
                "error",
                "link-broken",
                "link returns 404 Not Found: https://a.org/[x]",
                tmp_path / "01-a.md",
                7,
                "https://a.org/[x]",
            ),
            Finding(
                "error",
                "link-broken",
                "link returns 404 Not Found: https://a.org/[x]",
                tmp_path / "01-a.md",
                7,
                "https://a.org/[x]",
            ),
        ],
    )
    assert len(report.findings) == 2  # duplicates are reported once
    console = Console(record=True, width=300, color_system=None)
    print_report(report, console, root=tmp_path)
    text = console.export_text()
    assert text.splitlines() == [
        "error   01-a.md:7  link returns 404 Not Found: https://a.org/[x] [link-broken]",
        "warning link uses http://: http://a.org/[b] [link-insecure]",
        "1 error, 1 warning: 2026-12 must not be sent like this",
    ]
    assert "[bold red]" in format_finding(report.errors[0])


def test_sync_check_works_inside_a_running_event_loop(example: Path, report: CheckReport) -> None:
    settings = load_settings(example)
    issue = load_issue(example / "issues" / EXAMPLE_ISSUE)
    rendered = render_issue(issue, settings)

    async def from_a_server() -> CheckReport:
        return check_issue(issue, rendered, settings, offline=True, spamassassin=None)

    assert asyncio.run(from_a_server()) == report
