from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from newsletter.content import load_issue, resolve_issue_folder
from newsletter.errors import ContentError, ProjectError


def test_example_issue_loads_items_in_file_name_order(issue_folder: Path) -> None:
    issue = load_issue(issue_folder)
    assert issue.subject.startswith("Harvest festival")
    assert issue.date == dt.date(2026, 11, 26)
    assert [item.slug for item in issue.items] == [
        "harvest-festival",
        "compost-bays",
        "winter-roster",
        "seed-catalogue",
    ]
    assert issue.items[-1].draft is True
    assert [item.slug for item in issue.without_drafts().items][-1] == "winter-roster"
    assert issue.items[0].body_line == 9


def write_item(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(folder: Path) -> str:
    with pytest.raises(ContentError) as caught:
        load_issue(folder)
    return str(caught.value)


def test_misspelt_key_is_an_error_with_did_you_mean_and_line(issue_folder: Path) -> None:
    path = write_item(issue_folder, "05-typo.md", "---\ntitle: T\nsubtitel: S\n---\nBody\n")
    message = problems_of(issue_folder)
    assert f"{path}:3: unknown key 'subtitel'; did you mean 'subtitle'?" in message


def test_all_problems_of_all_files_are_reported_together(issue_folder: Path) -> None:
    bad_yaml = write_item(issue_folder, "05-yaml.md", "---\ntitle: [unclosed\n---\nBody\n")
    no_title = write_item(issue_folder, "06-notitle.md", "---\nsubtitle: x\n---\nBody\n")
    no_image = write_item(
        issue_folder, "07-img.md", "---\ntitle: T\nimage: missing.png\nimage_alt: A\n---\nB\n"
    )
    latin1 = issue_folder / "08-latin1.md"
    latin1.write_bytes("---\ntitle: Caf\u00e9\n---\nna\u00efve\n".encode("latin-1"))
    message = problems_of(issue_folder)
    assert message.startswith("4 content problems:")
    assert f"{bad_yaml}:2: invalid YAML front matter: expected ',' or ']'" in message
    assert f"{no_title}:1: title: 'title' is required" in message
    assert f"{no_image}:3: image: image file 'missing.png' not found" in message
    assert f"{latin1}:2: is not UTF-8 text (byte 0xe9); save it as UTF-8" in message


def test_image_needs_alt_text(issue_folder: Path) -> None:
    path = write_item(issue_folder, "05-alt.md", "---\ntitle: T\nimage: garden.jpg\n---\nB\n")
    assert f"{path}:3: image_alt: an image needs 'image_alt'" in problems_of(issue_folder)


def test_empty_issue_and_stray_files(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "issue.md").write_text("---\nsubject: S\n---\n", encoding="utf-8")
    (folder / "notes.md").write_text("x", encoding="utf-8")
    message = problems_of(folder)
    assert "the issue has no items" in message
    assert f"{folder / 'notes.md'}: is not an item" in message


def test_missing_front_matter_and_bad_date(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "issue.md").write_text("---\nsubject: S\ndate: 26-13-2026\n---\n", encoding="utf-8")
    (folder / "01-a.md").write_text("Just text\n", encoding="utf-8")
    message = problems_of(folder)
    assert f"{folder / '01-a.md'}:1: has no front matter" in message
    assert f"{folder / 'issue.md'}:3: date: '26-13-2026' is not a date" in message


def test_only_drafts_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "issue.md").write_text("---\nsubject: S\n---\n", encoding="utf-8")
    (folder / "01-a.md").write_text("---\ntitle: A\ndraft: true\n---\nB\n", encoding="utf-8")
    assert "every item is a draft" in problems_of(folder)


def test_wrong_types_are_reported(issue_folder: Path) -> None:
    path = write_item(
        issue_folder, "05-types.md", "---\ntitle: T\ndraft: maybe\nlink: ftp://x\n---\nB\n"
    )
    message = problems_of(issue_folder)
    assert f"{path}:3: draft: must be true or false" in message


def test_issue_reference_by_name_or_path(project: Path, issue_folder: Path) -> None:
    assert resolve_issue_folder(project, "2026-11") == issue_folder.resolve()
    assert resolve_issue_folder(project, str(issue_folder)) == issue_folder.resolve()
    with pytest.raises(ProjectError) as caught:
        resolve_issue_folder(project, "2026-1")
    assert caught.value.hint == "Did you mean '2026-11'?"


def _issue_with_date(tmp_path: Path, value: str) -> Path:
    folder = tmp_path / "dated"
    folder.mkdir(exist_ok=True)
    (folder / "issue.md").write_text(f"---\nsubject: S\ndate: {value}\n---\n", encoding="utf-8")
    (folder / "01-a.md").write_text("---\ntitle: A\n---\nB\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    "value",
    [
        "2016-11-24",
        "'2016-11-24'",
        "24-11-2016",
        "24/11/2016",
        "24.11.2016",
        "24 november 2016",
        "24 November 2016",
        "24 nov 2016",
        "November 24, 2016",
        "24 nov. 2016",
        "donderdag 24 november 2016",
    ],
)
def test_dates_in_iso_and_the_usual_written_forms(tmp_path: Path, value: str) -> None:
    assert load_issue(_issue_with_date(tmp_path, value)).date == dt.date(2016, 11, 24)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("2016-11-31", "November 2016 has 30 days"),
        ("2016-13-01", "there is no month 13"),
        ("31-11-2016", "November 2016 has 30 days"),
        ("29 februari 2015", "February 2015 has 28 days"),
        ("volgende week", "not a date"),
    ],
)
def test_impossible_dates_are_errors_with_file_and_line(
    tmp_path: Path, value: str, why: str
) -> None:
    folder = _issue_with_date(tmp_path, value)
    message = problems_of(folder)
    assert f"{folder / 'issue.md'}:3: date: '{value}'" in message
    assert why in message
    assert "2016-11-24" not in message or "24-11-2016" in message
