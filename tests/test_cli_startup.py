"""Start-up: what `newsletter --version`, `status` and `send` import (the import graph, not a time).

Each case runs in a fresh interpreter, because this test process has imported everything
already. The times themselves are in bench/bench_startup.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter import __version__

from .conftest import EXAMPLE_ISSUE

# Libraries a command pays for only if it uses them: the web side and preview server, the
# browser, image processing, CSS inlining, HTTP, email-validator's pattern compilation, and
# pydantic (Typer converts values with it; cli/_typer.py does the plain ones without).
HEAVY = (
    "pydantic",
    "starlette",
    "uvicorn",
    "playwright",
    "PIL",
    "premailer",
    "cssutils",
    "httpx",
    "email_validator",
)
PROVIDERS = "newsletter.delivery.transports."

_PROBE = """
import json, sys
{setup}
heavy = {heavy!r}
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in heavy
    or (name.startswith({providers!r}) and name.rsplit(".", 1)[1]
        not in ("base", "smtp", "outbox"))
)
print(json.dumps(loaded))
"""


def loaded_after(setup: str, cwd: Path | None = None) -> tuple[list[str], str]:
    """The heavy modules in sys.modules after running `setup` in a new interpreter, and the
    output `setup` printed before them."""
    code = _PROBE.format(setup=setup, heavy=HEAVY, providers=PROVIDERS)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, check=False
    )
    assert done.returncode == 0, done.stderr
    *printed, last = done.stdout.strip().splitlines()
    loaded: list[str] = json.loads(last)
    return loaded, "\n".join(printed)


def test_version_answers_before_typer_and_the_library_load() -> None:
    setup = (
        "sys.argv = ['newsletter', '--version']\n"
        "from newsletter.cli import main\n"
        "main()\n"
        "print('typer' in sys.modules, 'rich' in sys.modules, 'newsletter.config' in sys.modules)"
    )
    loaded, printed = loaded_after(setup)
    assert printed.splitlines() == [f"newsletter {__version__}", "False False False"]
    assert loaded == []


def test_building_the_app_loads_no_heavy_library() -> None:
    loaded, _ = loaded_after("import newsletter.cli.commands")
    assert loaded == []


def test_status_loads_no_heavy_library(project: Path) -> None:
    setup = (
        f"sys.argv = ['newsletter', 'status', {EXAMPLE_ISSUE!r}]\n"
        "from newsletter.cli import main\n"
        "main()"
    )
    loaded, printed = loaded_after(setup, cwd=project)
    assert printed == f"'{EXAMPLE_ISSUE}' has not been sent yet."
    assert loaded == []


def test_the_send_use_case_loads_neither_serve_nor_the_providers() -> None:
    # What `send` imports before it renders and checks: the renderer's heavy parts (Pillow,
    # premailer) and the link check's httpx come only when they have work to do.
    loaded, _ = loaded_after("import newsletter.sending, newsletter.cli.send")
    assert loaded == []


def test_a_render_with_cached_images_does_not_load_pillow(project: Path) -> None:
    setup = (
        "from newsletter.config import load_settings\n"
        "from newsletter.content import load_issue\n"
        "from newsletter.render import render_issue\n"
        "settings = load_settings(__import__('pathlib').Path('.'))\n"
        f"issue = load_issue(settings.issues_dir / {EXAMPLE_ISSUE!r})\n"
        "render_issue(issue, settings)\n"
        "print('PIL' in sys.modules)"
    )
    first, printed = loaded_after(setup, cwd=project)
    assert printed == "True" and "PIL" in first
    second, printed = loaded_after(setup, cwd=project)
    assert printed == "False"
    assert "PIL" not in second


def test_a_build_of_unchanged_content_renders_nothing(project: Path) -> None:
    """The second build reads the render back (render/cache.py): no premailer, MJML, Markdown
    or Pillow, and the same files."""
    setup = (
        f"sys.argv = ['newsletter', 'build', {EXAMPLE_ISSUE!r}]\n"
        "from newsletter.cli import main\n"
        "main()\n"
        "print(sorted(m for m in ('mjml', 'markdown_it') if m in sys.modules))"
    )
    first, printed = loaded_after(setup, cwd=project)
    assert "premailer" in first and printed.splitlines()[-1] == "['markdown_it', 'mjml']"
    built = project / "dist" / EXAMPLE_ISSUE

    def files() -> dict[str, bytes]:
        # The sample message's Date: header is the time of the build.
        return {
            path.name: re.sub(rb"\r\nDate: [^\r]*", b"", path.read_bytes())
            for path in built.iterdir()
        }

    before = files()
    second, printed = loaded_after(setup, cwd=project)
    assert second == [] and printed.splitlines()[-1] == "[]"
    assert files() == before


def test_a_send_right_after_a_check_runs_none_of_the_checks(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The send reuses the check's report (checks/reuse.py): no check module, no Pillow for
    the logo's contrast, no email-validator, no premailer (the render is read back)."""
    monkeypatch.setenv("NEWSLETTER_SECRET", "a-test-signing-secret")
    check = f"sys.argv = ['newsletter', 'check', {EXAMPLE_ISSUE!r}, '--offline']\n"
    send = f"sys.argv = ['newsletter', 'send', {EXAMPLE_ISSUE!r}, '--dry-run', '--no-link-check']\n"
    run = (
        "from newsletter.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('newsletter.checks.')))"
    )
    _, printed = loaded_after(check + run, cwd=project)
    assert "newsletter.checks.run" in printed.splitlines()[-1]
    second, printed = loaded_after(send + run, cwd=project)
    assert "Dry run: 0 messages rendered" in printed
    # The report's model and printing, the reuse and the audience check: no content check.
    loaded_checks = set(json.loads(printed.splitlines()[-1].replace("'", '"')))
    checks = ("run", "accessibility", "images", "links", "size", "spam", "masthead", "context")
    assert loaded_checks.isdisjoint(f"newsletter.checks.{name}" for name in checks)
    assert "newsletter.checks.reuse" in loaded_checks
    assert second == []
