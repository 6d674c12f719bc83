"""The CLI on real temporary projects: exit codes and exact messages."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
import typer.main
from typer.core import TyperGroup

from newsletter import cli
from newsletter.cli.commands import app as cli_app

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
    assert (target / ".gitignore").read_text().count(".newsletter-secret") == 1
    assert len((target / ".newsletter-secret").read_text().strip()) >= 32
    issue = next((target / "issues").iterdir())
    result = run("build", issue.name, cwd=target)
    assert result.exit_code == 0, result.err
    assert f"Built {issue.name} into {target / 'dist' / issue.name}" in result.out
    assert re.search(r"dist/\S+/email\.html\s+\d+\.\d KB", result.out)
    assert "left out (draft): 04-seed-catalogue.md" in result.out


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
    assert run("build", "2026-11", cwd=project).exit_code == 0
    before = (project / "dist" / "2026-11" / "email.html").read_bytes()
    item = project / "issues" / "2026-11" / "02-compost-bays.md"
    item.write_text(item.read_text().replace("\ntitle:", "\ntitel:"), encoding="utf-8")
    result = run("build", "2026-11", cwd=project)
    assert result.exit_code == 1
    assert result.err == (
        "error: 2 content problems:\n"
        f"  {item}:2: unknown key 'titel'; did you mean 'title'? (known keys: title, subtitle, "
        "image, image_alt, link, link_text, draft)\n"
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
