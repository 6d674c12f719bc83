"""Third-party judges of the rendered email: html-validate (email profile), caniemail's support
data, and the size budget, on the example issue, a 5-item Dutch issue with images and every
layout variant. (Chromium at 320-800 px, images on/off, light/dark: test_browser_email.py;
SpamAssassin: test_checks_spam.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from newsletter.build import build_issue
from newsletter.config import load_settings
from tests.conftest import copy_example_project
from tests.judges import MAX_UNSUPPORTED, judge
from tests.variants import VARIANTS, apply_variant, make_dutch_issue

JUDGES = Path(__file__).resolve().parent.parent / "scripts" / "judges"
HTML_VALIDATE = JUDGES / "node_modules" / ".bin" / "html-validate"
SIZE_BUDGET = 60 * 1024


def built(tmp_path: Path, name: str) -> Path:
    """email.html and web.html of the example issue changed into `name` ('example', 'dutch' or
    a layout variant)."""
    project = copy_example_project(tmp_path / name)
    if name == "dutch":
        make_dutch_issue(project)
    elif name != "example":
        apply_variant(project, name)
    report = build_issue(load_settings(project), project / "issues" / "2026-11")
    return report.folder


CASES = ["example", "dutch", *sorted(VARIANTS)]


@pytest.mark.parametrize("name", CASES)
def test_no_css_feature_is_unsupported_in_more_than_3_major_clients(
    tmp_path: Path, name: str
) -> None:
    html = (built(tmp_path, name) / "email.html").read_text(encoding="utf-8")
    verdicts = judge(html)
    assert verdicts, "the judge found the email's CSS"
    failing = [
        f"{v.title}: not in {', '.join(v.unsupported)}"
        for v in verdicts
        if len(v.unsupported) > MAX_UNSUPPORTED
    ]
    assert failing == []


def test_the_judge_catches_what_major_clients_lack() -> None:
    # A design relying on positioning and CSS variables fails; the same inside @media does not.
    relied = '<div style="position:absolute;color:var(--ink)">x</div>'
    failing = {v.slug for v in judge(relied) if len(v.unsupported) > MAX_UNSUPPORTED}
    assert failing == {"css-variables", "css-position"}
    enhanced = "<style>@media (max-width:479px) { .x { display:flex; gap: 4px; } }</style>"
    assert judge(enhanced) == []


def test_five_item_dutch_issue_stays_under_60_kb(tmp_path: Path) -> None:
    folder = built(tmp_path, "dutch")
    html = (folder / "email.html").read_text(encoding="utf-8")
    assert html.count('class="item-title"') == 5
    assert html.count("<img") >= 6  # five item images and the logo
    assert 'lang="nl"' in html
    assert len(html.encode()) < SIZE_BUDGET, f"{len(html.encode())} bytes"


def _html_validate() -> Path | None:
    if HTML_VALIDATE.exists() and shutil.which("node"):
        return HTML_VALIDATE
    if os.environ.get("NEWSLETTER_REQUIRE_JUDGES"):
        pytest.fail("NEWSLETTER_REQUIRE_JUDGES=1 but html-validate is not installed")
    pytest.skip("html-validate is not installed: run 'npm ci' in scripts/judges")


@pytest.mark.parametrize("name", CASES)
def test_html_validate_finds_no_errors(tmp_path: Path, name: str) -> None:
    program = _html_validate()
    folder = built(tmp_path, name)
    result = subprocess.run(
        [str(program), "--config", str(JUDGES / ".htmlvalidate.json"), "--formatter", "json",
         str(folder / "email.html"), str(folder / "web.html")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    reports = json.loads(result.stdout or "[]")
    errors = [
        f"{Path(report['filePath']).name}:{message['line']}: {message['ruleId']}: "
        f"{message['message']}"
        for report in reports
        for message in report["messages"]
        if message["severity"] == 2
    ]
    assert errors == [], "\n".join(errors[:20])
    assert result.returncode == 0, result.stderr
