"""The CLI on real temporary projects: exit codes and exact messages."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import typer.main
from typer.core import TyperGroup

from newsletter import cli
from newsletter.cli.commands import app as cli_app
from newsletter.cli.commands import cli_command, command_name

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    exit_code: int
    out: str
    err: str


class Run(Protocol):
    """`newsletter ARGS...` run in-process from the folder `cwd`."""

    def __call__(self, *args: str, cwd: Path) -> Result: ...


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    def invoke(*args: str, cwd: Path) -> Result:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["newsletter", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def test_init_creates_a_project_that_builds(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "club"
    result = run("init", str(target), cwd=tmp_path)
    assert result.exit_code == 0, result.err
    assert (target / "newsletter.toml").is_file()
    ignored = (target / ".gitignore").read_text().splitlines()
    assert ignored.count(".newsletter-secret") == 1
    # Private keys never end up in git: DKIM keys from `dkim keygen` and any stray key file.
    assert {".secrets/", "*.pem", "*.key"} <= set(ignored)
    assert len((target / ".newsletter-secret").read_text().strip()) >= 32
    issue = next((target / "issues").iterdir())
    result = run("build", issue.name, cwd=target)
    assert result.exit_code == 0, result.err
    assert f"Built {issue.name} into {target / 'dist' / issue.name}" in result.out
    assert re.search(r"dist/\S+/email\.html\s+\d+\.\d KB", result.out)
    assert "left out (draft): 04-seed-catalogue.md" in result.out
    # The starter issue embeds its photos: the build says how to host them instead.
    assert "warning: embedded images add" in result.out and "set base_url" in result.out


def test_init_in_dutch(run: Run, tmp_path: Path) -> None:
    assert run("init", "--language", "nl", "krant", cwd=tmp_path).exit_code == 0
    issue = next((tmp_path / "krant" / "issues").iterdir())
    assert run("build", issue.name, cwd=tmp_path / "krant").exit_code == 0
    html = (tmp_path / "krant" / "dist" / issue.name / "email.html").read_text()
    assert 'lang="nl"' in html and "Lees meer" in html and "Afmelden" in html


def test_init_refuses_to_overwrite(run: Run, tmp_path: Path) -> None:
    (tmp_path / "newsletter.toml").write_text("mine")
    result = run("init", str(tmp_path), cwd=tmp_path)
    assert result.exit_code == 1
    assert f"error: {tmp_path} already has newsletter.toml; nothing was written" in result.err
    assert (tmp_path / "newsletter.toml").read_text() == "mine"
    assert not (tmp_path / "issues").exists()


def test_new_creates_the_next_issue(run: Run, project: Path) -> None:
    result = run("new", "2026-12", cwd=project)
    assert result.exit_code == 0
    assert "Created issues/2026-12" in result.out
    assert (project / "issues" / "2026-12" / "issue.md").is_file()
    again = run("new", "2026-12", cwd=project)
    assert again.exit_code == 1
    assert "already exists; nothing was written" in again.err


def test_build_error_is_clear_and_leaves_previous_output(run: Run, project: Path) -> None:
    built = run("build", "2026-11", cwd=project)
    assert built.exit_code == 0
    # The example embeds its photos: the build says how to host them instead.
    assert "warning: embedded images add 144 KB to every message" in " ".join(built.out.split())
    before = (project / "dist" / "2026-11" / "email.html").read_bytes()
    item = project / "issues" / "2026-11" / "02-compost-bays.md"
    item.write_text(item.read_text().replace("\ntitle:", "\ntitel:"), encoding="utf-8")
    result = run("build", "2026-11", cwd=project)
    assert result.exit_code == 1
    assert result.err == (
        "error: 2 content problems:\n"
        f"  {item}:2: unknown key 'titel'; did you mean 'title'? (known keys: title, subtitle, "
        "image, image_alt, link, link_text, draft, layout)\n"
        f"  {item}:1: title: 'title' is required\n"
    )
    assert "Traceback" not in result.err
    assert (project / "dist" / "2026-11" / "email.html").read_bytes() == before


def test_unknown_issue_and_missing_project(run: Run, project: Path, tmp_path: Path) -> None:
    result = run("build", "2026-1", cwd=project)
    assert result.exit_code == 1
    assert result.err == (
        "error: no issue '2026-1' (looked for issue.md in it)\nhint: Did you mean '2026-11'?\n"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("build", "x", cwd=empty)
    assert result.exit_code == 1
    assert "error: no newsletter.toml here or in any parent folder" in result.err


def test_debug_shows_the_traceback(project: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "--debug", "build", "nope"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ProjectError" in result.stderr


def test_every_command_has_help_with_examples(run: Run, tmp_path: Path) -> None:
    for name in command_names():
        result = run(*name.split(), "--help", cwd=tmp_path)
        assert result.exit_code == 0, name
        assert "Example" in result.out, f"'newsletter {name} --help' shows no example"


def command_names() -> list[str]:
    group = typer.main.get_command(cli_app)
    assert isinstance(group, TyperGroup)
    names: list[str] = []
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup) and command.commands:
            names += [f"{name} {child}" for child in command.commands]
        else:
            names.append(name)
    return names


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in command_names():
        assert f"newsletter {name}" in readme, f"README does not document 'newsletter {name}'"


def test_every_newsletter_command_named_in_a_message_exists() -> None:
    """Hints name commands the CLI has: `newsletter --debug build`, never `build --debug`."""
    root = typer.main.get_command(cli_app)
    package = Path(__file__).resolve().parent.parent / "newsletter"
    sources = [p for p in package.rglob("*") if p.suffix in (".py", ".js", ".html", ".toml")]
    wrong: list[str] = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for found in re.finditer(r"[`'\"]newsletter((?: [a-z-]+)+)", text):
            words = found.group(1).split()
            command: Any = root
            if words[0] == "--debug":
                words = words[1:]
            for word in words:
                if word.startswith("-"):
                    if word != "--help" and not any(word in p.opts for p in command.params):
                        wrong.append(f"{path.name}: {found.group(0)} ({word})")
                    break
                if not hasattr(command, "commands"):
                    break
                sub = command.commands.get(word)
                if sub is None:
                    wrong.append(f"{path.name}: {found.group(0)} ({word})")
                    break
                command = sub
    assert wrong == [], wrong


def _leaf_commands(command: Any, words: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if hasattr(command, "commands"):
        found: list[tuple[str, ...]] = []
        for name, sub in command.commands.items():
            found += _leaf_commands(sub, (*words, name))
        return found
    return [words]


def test_help_examples_stand_on_their_own_lines_and_options_show_no_type_names(
    run: Run, tmp_path: Path
) -> None:
    for words in _leaf_commands(typer.main.get_command(cli_app)):
        result = run(*words, "--help", cwd=tmp_path)
        assert result.exit_code == 0, words
        for line in result.out.splitlines():
            uses = re.findall(r"(?:^|\s)newsletter\s+[a-z-]", line)
            assert len(uses) <= 1, f"{' '.join(words)}: {line.strip()}"
        assert not re.search(r"<(?:bool|str|int|float|path|list\[\w+\])>", result.out), (
            f"{' '.join(words)} shows internal type names:\n{result.out}"
        )


def test_new_follows_the_projects_language_and_dates_the_issue_from_its_name(
    run: Run, tmp_path: Path
) -> None:
    assert run("init", "--language", "nl", "krant", cwd=tmp_path).exit_code == 0
    root = tmp_path / "krant"
    assert run("new", "2031-03", cwd=root).exit_code == 0
    issue = (root / "issues" / "2031-03" / "issue.md").read_text(encoding="utf-8")
    assert "date: 2031-03-01" in issue
    assert "onderwerp" in issue.lower() and "subject line" not in issue
    item = next((root / "issues" / "2031-03").glob("01-*.md")).read_text(encoding="utf-8")
    assert "Schrijf" in item and "Write the item" not in item
    assert run("new", "2031-04-15", cwd=root).exit_code == 0
    assert "date: 2031-04-15" in (root / "issues" / "2031-04-15" / "issue.md").read_text()
    # A new issue is only drafts, which build says plainly; once the item is no draft, it builds.
    result = run("build", "2031-03", cwd=root)
    assert result.exit_code == 1 and "every item is a draft" in result.err
    stub = next((root / "issues" / "2031-03").glob("01-*.md"))
    stub.write_text(stub.read_text(encoding="utf-8").replace("draft: true\n", ""), "utf-8")
    result = run("build", "2031-03", cwd=root)
    assert result.exit_code == 0, result.err


def test_the_dutch_example_subject_promises_only_items_it_has(run: Run, tmp_path: Path) -> None:
    assert run("init", "--language", "nl", "krant", cwd=tmp_path).exit_code == 0
    issue = next((tmp_path / "krant" / "issues").iterdir())
    subject = (issue / "issue.md").read_text(encoding="utf-8").split("\n")[1].lower()
    assert "winterrooster" not in subject
    titles = " ".join(p.read_text(encoding="utf-8").lower() for p in issue.glob("0*.md"))
    for word in ("oogstfeest", "compostbakken"):
        assert word in subject and word in titles


def _help_of(command: Any, words: Sequence[str], capsys: pytest.CaptureFixture[str]) -> str:
    with contextlib.suppress(SystemExit):
        command([*words, "--help"], prog_name="newsletter", standalone_mode=False)
    return capsys.readouterr().out


def test_a_command_built_alone_is_the_one_of_the_whole_app(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`run` builds only the command it runs (commands.command_name): every command's help, so
    its options, arguments and texts, must be what the whole app shows."""
    whole = cli_command(["--help"])
    for words in _leaf_commands(whole):
        assert command_name(words) == words[0]
        alone = cli_command(words)
        assert list(alone.commands) == [words[0]]  # type: ignore[attr-defined]
        shown = _help_of(alone, words, capsys)
        assert f"Usage: newsletter {' '.join(words)} " in shown
        assert shown == _help_of(whole, words, capsys), words


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        (["build", "2026-11"], "build"),
        (["--debug", "send", "x"], "send"),
        (["subscribers", "tag", "a@example.org", "x"], "subscribers"),
        (["--help"], None),
        ([], None),
        (["--debug"], None),
        (["biuld", "x"], None),  # click's "No such command" comes from the whole app
        (["--version", "build"], None),
    ],
)
def test_which_command_the_arguments_name(arguments: list[str], name: str | None) -> None:
    assert command_name(arguments) == name


def test_a_mistyped_command_still_gets_a_suggestion(run: Run, tmp_path: Path) -> None:
    result = run("biuld", "x", cwd=tmp_path)
    assert result.exit_code != 0
    assert "No such command" in result.err and "build" in result.err
