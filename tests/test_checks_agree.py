"""`check` runs every validation `build` and `send` run: what fails one fails the other, with the
same file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.build import build_issue
from newsletter.checks import CheckReport, check_issue
from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.errors import RenderError
from newsletter.render import render_issue


def check(project: Path, issue_folder: Path) -> CheckReport:
    settings = load_settings(project)
    issue = load_issue(issue_folder)
    return check_issue(
        issue, render_issue(issue, settings), settings, offline=True, spamassassin=None
    )


def test_unknown_subscriber_field_fails_build_and_check_at_its_line(
    project: Path, issue_folder: Path
) -> None:
    item = issue_folder / "05-veld.md"
    item.write_text(
        "---\ntitle: Veld\n---\nEerste regel.\n\nHallo {{ subscriber.gemeente }}!\n",
        encoding="utf-8",
    )
    with pytest.raises(RenderError) as caught:
        build_issue(load_settings(project), issue_folder)
    assert any(
        p.file == item and p.line == 6 and "subscriber.gemeente" in p.message
        for p in caught.value.problems
    ), caught.value.problems
    report = check(project, issue_folder)
    errors = [f for f in report.findings if f.severity == "error"]
    assert any(
        f.file == item and f.line == 6 and "subscriber.gemeente" in f.message for f in errors
    ), report.findings


def test_a_default_makes_the_field_fine(project: Path, issue_folder: Path) -> None:
    (issue_folder / "05-veld.md").write_text(
        '---\ntitle: Veld\n---\nHallo {{ subscriber.gemeente | default("buur") }}!\n',
        encoding="utf-8",
    )
    build_issue(load_settings(project), issue_folder)
    assert not check(project, issue_folder).errors


@pytest.mark.parametrize(
    ("href", "suggestion"),
    [
        ("www.site.nl/agenda", "https://www.site.nl/agenda"),
        ("agenda.html", None),
        ("/agenda", None),
        ("site.nl/agenda", "https://site.nl/agenda"),
    ],
)
def test_link_that_cannot_work_in_an_email_is_an_error(
    project: Path, issue_folder: Path, href: str, suggestion: str | None
) -> None:
    item = issue_folder / "05-link.md"
    item.write_text(
        f"---\ntitle: Link\n---\nTekst.\n\nZie de [agenda van de buurt]({href}).\n",
        encoding="utf-8",
    )
    report = check(project, issue_folder)
    found = [f for f in report.findings if f.code == "link-relative"]
    assert found and found[0].severity == "error"
    assert (found[0].file, found[0].line) == (item, 6)
    if suggestion:
        assert suggestion in found[0].message


def test_vague_link_text_is_located_at_its_own_line(project: Path, issue_folder: Path) -> None:
    item = issue_folder / "05-hier.md"
    url = "https://www.example.com/agenda"
    item.write_text(
        f"---\ntitle: Hier\n---\nDe [agenda voor december]({url}) staat online.\n\n"
        + "Tekst.\n\n" * 3
        + f"Aanmelden? [Klik hier]({url}).\n",
        encoding="utf-8",
    )
    report = check(project, issue_folder)
    vague = [f for f in report.findings if f.code == "link-text-vague"]
    assert [(f.file, f.line) for f in vague] == [(item, 12)]
