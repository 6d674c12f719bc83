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
    assert (
        f"{bad_yaml}:2: title: YAML cannot read this value: "
        'put the value in quotes: title: "[unclosed"' in message
    )
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


# --- YAML traps: nothing is cut silently, every mistake says how to quote ------------------------


def test_value_cut_by_a_comment_is_an_error_with_the_quoted_line(issue_folder: Path) -> None:
    path = write_item(
        issue_folder,
        "05-hash.md",
        "---\ntitle: Nieuws\nsubtitle: Conferentie #2 op 10 februari\n---\nTekst\n",
    )
    message = problems_of(issue_folder)
    assert f"{path}:3: subtitle:" in message
    assert "put the value in quotes" in message
    assert 'subtitle: "Conferentie #2 op 10 februari"' in message


def test_colon_in_an_unquoted_value_says_put_it_in_quotes(issue_folder: Path) -> None:
    path = write_item(
        issue_folder,
        "05-colon.md",
        "---\ntitle: Agenda: wat er komt\nlink: https://e.org/\n---\nT\n",
    )
    message = problems_of(issue_folder)
    assert f"{path}:2: title:" in message
    assert 'put the value in quotes: title: "Agenda: wat er komt"' in message
    assert "mapping values are not allowed" not in message


def test_quotes_inside_a_quoted_value_suggest_the_other_quotes(issue_folder: Path) -> None:
    (issue_folder / "issue.md").write_text(
        '---\nsubject: "Hallo {{ subscriber.first_name | default("lezer") }}"\n---\nIntro\n',
        encoding="utf-8",
    )
    message = problems_of(issue_folder)
    assert f"{issue_folder / 'issue.md'}:2: subject:" in message
    assert "put the value in quotes" in message
    assert "subject: 'Hallo {{ subscriber.first_name | default(\"lezer\") }}'" in message
    assert "expected <block end>" not in message


def test_apostrophe_in_a_single_quoted_value(issue_folder: Path) -> None:
    path = write_item(issue_folder, "05-apos.md", "---\ntitle: 'Jan's tuin'\n---\nT\n")
    message = problems_of(issue_folder)
    assert f"{path}:2: title:" in message
    assert 'title: "Jan\'s tuin"' in message


@pytest.mark.parametrize(
    ("value", "fixed"),
    [
        ("[Update] nieuwe tijden", '"[Update] nieuwe tijden"'),
        ("*Nieuw* in de tuin", '"*Nieuw* in de tuin"'),
        ("@buurt op Instagram", '"@buurt op Instagram"'),
        ("{nieuw} rooster", '"{nieuw} rooster"'),
    ],
)
def test_values_starting_with_yaml_syntax_suggest_quotes(
    issue_folder: Path, value: str, fixed: str
) -> None:
    path = write_item(issue_folder, "05-start.md", f"---\ntitle: {value}\n---\nT\n")
    message = problems_of(issue_folder)
    assert f"{path}:2: title:" in message
    assert f"put the value in quotes: title: {fixed}" in message


def test_quoted_values_and_hashes_without_a_space_still_load(issue_folder: Path) -> None:
    write_item(
        issue_folder,
        "05-ok.md",
        '---\ntitle: "Conferentie #2: 10 februari"\nsubtitle: Nummer#2 en C# en 10:30 uur\n'
        "link: https://e.org/a#b\n---\nT\n",
    )
    item = next(i for i in load_issue(issue_folder).items if i.slug == "ok")
    assert item.title == "Conferentie #2: 10 februari"
    assert item.subtitle == "Nummer#2 en C# en 10:30 uur"
    assert item.link == "https://e.org/a#b"


def test_value_starting_with_a_hash_is_not_silently_empty(issue_folder: Path) -> None:
    path = write_item(issue_folder, "05-hash.md", "---\ntitle: T\nsubtitle: #2 van 4\n---\nB\n")
    message = problems_of(issue_folder)
    assert f"{path}:3: subtitle: YAML reads everything after" in message
    assert 'put the value in quotes: subtitle: "#2 van 4"' in message


# --- hostile front matter (issue 15: D12) -------------------------------------------------------


@pytest.mark.parametrize(
    ("front", "expected"),
    [
        ("title: T\nsubtitle: " + "9" * 100_000, "number is too long"),
        ("title: T\nsubtitle: " + "[" * 50_000 + "]" * 50_000, "nested too deeply"),
        ("title: T\nsubtitle: " + "{a: " * 50_000 + "1" + "}" * 50_000, "nested too deeply"),
    ],
)
def test_hostile_front_matter_is_a_clear_error(
    issue_folder: Path, front: str, expected: str
) -> None:
    path = write_item(issue_folder, "05-hostile.md", f"---\n{front}\n---\nBody\n")
    message = problems_of(issue_folder)
    assert f"{path}:3: " in message
    assert expected in message
