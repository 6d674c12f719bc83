"""Hostile input: hundreds of mutated front matters, TOML files, CSV files and Markdown bodies,
made by a seeded generator. Every one must end in exit 0 or in exit 1 with a message naming the
file; never a traceback. Where the build succeeds, no text of a title or subtitle may be lost.
"""

from __future__ import annotations

import random
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from newsletter import cli
from tests.conftest import EXAMPLE_ISSUE, copy_example_project

SEED = 20261203
FRONT_MATTER_CASES = 200
ISSUE_CASES = 60
TOML_CASES = 150
CSV_CASES = 120
BODY_CASES = 100
ITEM = "01-harvest-festival.md"

# Pieces that trip parsers: YAML and TOML syntax, quotes, Jinja, control and odd Unicode.
NASTY = [
    "#",
    " #",
    ": ",
    ":",
    '"',
    "'",
    "''",
    '""',
    "{",
    "}",
    "[",
    "]",
    "{{",
    "}}",
    "{%",
    "%}",
    "*",
    "&",
    "!",
    "|",
    ">",
    "%",
    "@",
    "`",
    "\t",
    "\\",
    "\x00",
    "\x07",
    "\u00a0",
    "\u200f",
    "\ufeff",
    "\r",
    "\r\n",
    "\n",
    "  ",
    "---",
    "- ",
    "? ",
    "~",
    "null",
    "yes",
    "no",
    "true",
    "2016-11-31",
    "2016-13-01",
    "24-11-2016",
    "1e309",
    "0x1F",
    "😀",
    "é",
    "ß",
    "<script>",
    "]]",
    "[[",
    "=",
    '"""',
    "'''",
    ",",
    ";",
    "\x85",
    "\u2028",
    "a" * 300,
]


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path, *args: str
) -> Outcome:
    """`newsletter ARGS` in-process; an exception other than SystemExit fails the test."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["newsletter", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def mutate(rng: random.Random, text: str) -> str:
    """One to three random edits: insert a nasty piece, delete, duplicate or swap lines, cut."""
    for _ in range(rng.randint(1, 3)):
        choice = rng.random()
        position = rng.randrange(len(text) + 1)
        values = list(re.finditer(r"^[\w.\"]+[ \t]*[:=][ \t]*(.+)$", text, re.M))
        if values and rng.random() < 0.5:
            # Inside a value, where editors type: the most likely place for a trap.
            found = rng.choice(values)
            start, end = found.span(1)
            at = rng.randint(start, end)
            piece = rng.choice(NASTY)
            if rng.random() < 0.3:
                text = text[:start] + piece + " " + text[start:]
            else:
                text = text[:at] + piece + text[at:]
            continue
        if choice < 0.45:
            text = text[:position] + rng.choice(NASTY) + text[position:]
        elif choice < 0.6:
            end = min(len(text), position + rng.randint(1, 8))
            text = text[:position] + text[end:]
        elif choice < 0.7:
            lines = text.split("\n")
            index = rng.randrange(len(lines))
            lines.insert(index, lines[index])
            text = "\n".join(lines)
        elif choice < 0.8:
            lines = text.split("\n")
            first, second = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[first], lines[second] = lines[second], lines[first]
            text = "\n".join(lines)
        elif choice < 0.9:
            text = text[:position]
        else:
            lines = text.split("\n")
            index = rng.randrange(len(lines))
            key = lines[index].split(":", 1)[0].split("=", 1)[0]
            lines[index] = f"{key}{rng.choice([': ', ' = ', ':', '='])}{rng.choice(NASTY)}"
            text = "\n".join(lines)
    return text


def _cases(count: int, salt: int, source: str) -> list[str]:
    rng = random.Random(SEED + salt)
    return [mutate(rng, source) for _ in range(count)]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_example_project(tmp_path / "project")


def _front_value(text: str, key: str) -> str | None:
    """The raw text after `key:` in a front matter that has exactly one such line."""
    front = text.split("\n---", 1)[0]
    found = re.findall(rf"^{key}:[ \t]*(.*)$", front, re.M)
    return found[0] if len(found) == 1 else None


def _check(outcome: Outcome, names: tuple[str, ...], label: str, failures: list[str]) -> bool:
    """True when the command succeeded; records a failure for anything but 0 or 1 with a file."""
    if outcome.code == 0:
        return True
    if outcome.code != 1:
        failures.append(f"{label}: exit {outcome.code}: {outcome.err[-300:]}")
    elif not any(name in outcome.err for name in names):
        failures.append(f"{label}: the message names no file: {outcome.err[-300:]}")
    return False


def _run_all(
    cases: list[str],
    write: Callable[[str], object],
    run: Callable[[], Outcome],
    names: tuple[str, ...],
    after_success: Callable[[str], str | None] | None = None,
) -> list[str]:
    failures: list[str] = []
    for index, case in enumerate(cases):
        write(case)
        outcome = run()
        label = f"case {index} {case[:120]!r}"
        if _check(outcome, names, label, failures) and after_success is not None:
            lost = after_success(case)
            if lost:
                failures.append(f"{label}: {lost}")
    return failures


def _lost_words(project: Path, case: str) -> str | None:
    """A word of the title or subtitle as written that is not in the built text part."""
    text = (project / "dist" / EXAMPLE_ISSUE / "email.txt").read_text(encoding="utf-8").casefold()
    for key in ("title", "subtitle"):
        raw = _front_value(case, key)
        if raw is None or "\\" in raw or raw.lstrip()[:1] in ("|", ">"):
            continue  # escapes and block scalars are YAML features, not losses
        for word in re.findall(r"\w+", raw):
            if word.casefold() not in text:
                return f"{key}: '{word}' of {raw!r} is missing from email.txt"
    return None


def test_mutated_item_front_matter(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project / "issues" / EXAMPLE_ISSUE / ITEM
    original = path.read_text(encoding="utf-8")
    front, body = original.split("\n---\n", 1)
    cases = [
        mutate_front + "\n---\n" + body for mutate_front in _cases(FRONT_MATTER_CASES, 1, front)
    ]
    failures = _run_all(
        cases,
        lambda case: path.write_text(case, encoding="utf-8", newline=""),
        lambda: run_cli(monkeypatch, capsys, project, "build", EXAMPLE_ISSUE),
        (ITEM,),
        lambda case: _lost_words(project, case),
    )
    assert failures == [], "\n".join(failures)


def test_mutated_issue_front_matter(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project / "issues" / EXAMPLE_ISSUE / "issue.md"
    original = path.read_text(encoding="utf-8")
    failures = _run_all(
        _cases(ISSUE_CASES, 2, original),
        lambda case: path.write_text(case, encoding="utf-8", newline=""),
        lambda: run_cli(monkeypatch, capsys, project, "build", EXAMPLE_ISSUE),
        ("issue.md",),
    )
    assert failures == [], "\n".join(failures)


def test_mutated_markdown_bodies(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project / "issues" / EXAMPLE_ISSUE / ITEM
    front, body = path.read_text(encoding="utf-8").split("\n---\n", 1)
    body += (
        "\n![A photo of the beds](garden.jpg)\n\nSee [the programme](https://e.org/p) and "
        "{{ subscriber.first_name | default('friend') }}.\n"
    )
    failures = _run_all(
        [front + "\n---\n" + case for case in _cases(BODY_CASES, 3, body)],
        lambda case: path.write_text(case, encoding="utf-8", newline=""),
        lambda: run_cli(monkeypatch, capsys, project, "build", EXAMPLE_ISSUE),
        (ITEM,),
    )
    assert failures == [], "\n".join(failures)


def test_mutated_newsletter_toml(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project / "newsletter.toml"
    original = path.read_text(encoding="utf-8")
    failures = _run_all(
        _cases(TOML_CASES, 4, original),
        lambda case: path.write_text(case, encoding="utf-8", newline=""),
        lambda: run_cli(monkeypatch, capsys, project, "build", EXAMPLE_ISSUE),
        ("newsletter.toml",),
    )
    assert failures == [], "\n".join(failures)


def test_mutated_subscriber_csv(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = Path(__file__).resolve().parent.parent / "subscribers.example.csv"
    original = source.read_text(encoding="utf-8")
    path = project / "list.csv"
    rng = random.Random(SEED + 5)
    cases = _cases(CSV_CASES, 5, original)
    for index in range(0, len(cases), 10):  # some in other encodings, as spreadsheets save them
        cases[index] = cases[index].encode("utf-8").decode("latin-1")
    failures: list[str] = []
    for index, case in enumerate(cases):
        encoding = rng.choice(["utf-8", "utf-8-sig", "cp1252", "utf-16"])
        try:
            path.write_bytes(case.encode(encoding))
        except UnicodeEncodeError:
            path.write_bytes(case.encode("utf-8"))
        outcome = run_cli(monkeypatch, capsys, project, "subscribers", "import", "list.csv")
        _check(outcome, ("list.csv",), f"case {index} ({encoding}) {case[:120]!r}", failures)
    shutil.rmtree(project / "dist", ignore_errors=True)
    assert failures == [], "\n".join(failures)


def test_the_suite_size_is_what_the_changelog_says() -> None:
    total = FRONT_MATTER_CASES + ISSUE_CASES + TOML_CASES + CSV_CASES + BODY_CASES
    assert total == 630
