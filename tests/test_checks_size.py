"""Size and completeness: Gmail clipping, subject, preheader, empty items, unsubscribe, address."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.checks import CheckReport, check_issue
from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.render import render_issue
from newsletter.render.theme import package_theme_dir

PARAGRAPH = "Paragraph {n}: the compost bays need turning every month, and volunteers are welcome."


def check(project: Path, issue_folder: Path) -> CheckReport:
    settings = load_settings(project)
    issue = load_issue(issue_folder)
    return check_issue(
        issue, render_issue(issue, settings), settings, offline=True, spamassassin=None
    )


def write_issue_md(issue_folder: Path, front: str) -> Path:
    path = issue_folder / "issue.md"
    path.write_text(f"---\n{front.strip()}\n---\nHello.\n", encoding="utf-8")
    return path


def override_template(project: Path, name: str, remove: str) -> Path:
    """The default theme file `name` copied into the project's templates/ minus `remove`."""
    source = (package_theme_dir() / name).read_text(encoding="utf-8")
    assert remove in source
    target = project / "templates" / name
    target.parent.mkdir(exist_ok=True)
    target.write_text(source.replace(remove, ""), encoding="utf-8")
    return target


@pytest.mark.parametrize(
    ("paragraphs", "expected"),
    [(0, set()), (540, {("warning", "html-large")}), (800, {("error", "html-clipped")})],
)
def test_html_size(
    project: Path, issue_folder: Path, paragraphs: int, expected: set[tuple[str, str]]
) -> None:
    if paragraphs:
        body = "\n\n".join(PARAGRAPH.format(n=n) for n in range(paragraphs))
        (issue_folder / "05-long.md").write_text(f"---\ntitle: Long\n---\n{body}\n", "utf-8")
    report = check(project, issue_folder)
    found = {(f.severity, f.code) for f in report.findings if f.code.startswith("html-")}
    assert found == expected
    for finding in report.findings:
        if finding.code.startswith("html-"):
            assert finding.file == issue_folder / "issue.md"
            assert "KB" in finding.message


@pytest.mark.parametrize(
    ("subject", "code"),
    [
        ("Harvest festival, new compost bays and the winter roster", None),
        ("News", "subject-short"),
        (
            "A" * 40 + " harvest festival, compost bays, winter roster and a seed swap",
            "subject-long",
        ),
        ("HARVEST FESTIVAL AND COMPOST NEWS", "subject-shouting"),
    ],
)
def test_subject(project: Path, issue_folder: Path, subject: str, code: str | None) -> None:
    path = write_issue_md(
        issue_folder, f'subject: "{subject}"\npreheader: "Join us on 6 December."'
    )
    report = check(project, issue_folder)
    found = [f for f in report.findings if f.code.startswith("subject-")]
    if code is None:
        assert found == []
    else:
        assert [(f.code, f.severity, f.file, f.line) for f in found] == [(code, "warning", path, 2)]


def test_preheader_missing_and_long(project: Path, issue_folder: Path) -> None:
    path = write_issue_md(issue_folder, 'subject: "Harvest festival and compost bays"')
    report = check(project, issue_folder)
    [missing] = [f for f in report.findings if f.code.startswith("preheader-")]
    assert (missing.code, missing.severity, missing.file) == ("preheader-missing", "warning", path)

    write_issue_md(
        issue_folder, f'subject: "Harvest festival and compost bays"\npreheader: "{"x" * 141}"'
    )
    report = check(project, issue_folder)
    [long] = [f for f in report.findings if f.code.startswith("preheader-")]
    assert (long.code, long.line) == ("preheader-long", 3)
    assert "141 characters" in long.message


def test_item_with_nothing_to_read_is_an_error(project: Path, issue_folder: Path) -> None:
    path = issue_folder / "05-blank.md"
    path.write_text("---\ntitle: Blank\n---\n&nbsp;\n", encoding="utf-8")
    report = check(project, issue_folder)
    [empty] = [f for f in report.findings if f.code == "item-empty"]
    assert (empty.severity, empty.file, empty.line) == ("error", path, 4)


def test_unsubscribe_link_missing_from_html(project: Path, issue_folder: Path) -> None:
    template = override_template(
        project, "email.mjml.j2", '<a href="{{ unsubscribe_url }}">{{ words.unsubscribe }}</a>'
    )
    report = check(project, issue_folder)
    [missing] = [f for f in report.findings if f.code == "unsubscribe-missing"]
    assert (missing.severity, missing.file) == ("error", template)
    assert "HTML part" in missing.message


def test_unsubscribe_link_missing_from_text(project: Path, issue_folder: Path) -> None:
    template = override_template(
        project, "email.txt.j2", "{{ labelled(words.unsubscribe, unsubscribe_url, own_line=true) }}"
    )
    report = check(project, issue_folder)
    [missing] = [f for f in report.findings if f.code == "unsubscribe-missing"]
    assert (missing.severity, missing.file) == ("error", template)
    assert "text part" in missing.message


def test_postal_address_missing_from_text(project: Path, issue_folder: Path) -> None:
    template = override_template(
        project, "email.txt.j2", '{{ footer.address_lines | join("\\n") }}'
    )
    report = check(project, issue_folder)
    [missing] = [f for f in report.findings if f.code == "address-missing"]
    assert (missing.severity, missing.file) == ("error", template)
    assert "12 Willow Lane" in missing.message


def test_unsubscribe_settings_missing(project: Path, issue_folder: Path) -> None:
    config = project / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text[: text.index("[unsubscribe]")], encoding="utf-8")
    report = check(project, issue_folder)
    [missing] = [f for f in report.findings if f.code == "unsubscribe-config"]
    assert (missing.severity, missing.file) == ("error", config)
