"""A check's report reused by a send of the same content (newsletter/checks/reuse.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.checks import check_issue
from newsletter.checks.audience import check_audience
from newsletter.checks.model import CheckReport, Finding
from newsletter.checks.reuse import (
    REPORTS_FILE,
    REUSE_FOR,
    check_reusing,
    record_report,
    reused_report,
)
from newsletter.config import Settings, load_settings
from newsletter.content import Issue, load_issue
from newsletter.render.cache import cached_render
from newsletter.render.model import RenderedIssue
from tests.spamcache import SpamAssassinCache

NOW = 1_800_000_000.0
MARKER = Finding("warning", "marker", "recorded by this test, never by a check")


def _loaded(project: Path, folder: Path) -> tuple[Issue, RenderedIssue, Settings]:
    settings = load_settings(project)
    issue = load_issue(folder)
    return issue, cached_render(issue, settings), settings


def _record(project: Path, folder: Path, *findings: Finding, offline: bool = True) -> None:
    issue, rendered, settings = _loaded(project, folder)
    report = CheckReport.of(rendered.name, [MARKER, *findings])
    record_report(issue, rendered, settings, report, offline=offline, clock=lambda: NOW)


def _reused(
    project: Path, folder: Path, *, offline: bool = True, at: float = NOW + 1
) -> CheckReport | None:
    issue, rendered, settings = _loaded(project, folder)
    return reused_report(issue, rendered, settings, offline=offline, clock=lambda: at)


def test_the_report_of_the_same_content_is_reused(project: Path, issue_folder: Path) -> None:
    _record(project, issue_folder)
    found = _reused(project, issue_folder)
    assert found is not None
    assert MARKER in found.findings
    # A new process (nothing in memory) finds it too: it is on disk.
    assert (project / ".newsletter-cache" / REPORTS_FILE).exists()


def _edit_item(project: Path, folder: Path) -> None:
    item = sorted(folder.glob("*.md"))[-1]
    item.write_text(item.read_text(encoding="utf-8") + "\nOne more sentence.\n", encoding="utf-8")


def _comment_config(project: Path, folder: Path) -> None:
    config = project / "newsletter.toml"
    config.write_text("# moved down a line\n" + config.read_text(encoding="utf-8"), "utf-8")


def _add_file(project: Path, folder: Path) -> None:
    (folder / "notes.txt").write_text("a file the issue does not use yet\n", encoding="utf-8")


@pytest.mark.parametrize("change", [_edit_item, _comment_config, _add_file])
def test_any_change_to_what_the_findings_come_from_is_checked_again(
    project: Path, issue_folder: Path, change: Callable[[Path, Path], None]
) -> None:
    _record(project, issue_folder)
    change(project, issue_folder)
    assert _reused(project, issue_folder) is None


def test_another_spamassassin_is_checked_again(
    project: Path, issue_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key holds the SpamAssassin found on PATH (its identity, as the spam score's cache
    keys it): an upgrade means a new score."""
    programs = tmp_path / "bin"
    programs.mkdir()
    program = programs / "spamassassin"
    program.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{programs}:{os.environ.get('PATH', '')}")
    _record(project, issue_folder)
    assert _reused(project, issue_folder) is not None
    program.write_text("#!/bin/sh\n# upgraded\nexit 0\n", encoding="utf-8")
    assert _reused(project, issue_folder) is None


def test_a_report_is_reused_only_for_ten_minutes(project: Path, issue_folder: Path) -> None:
    _record(project, issue_folder)
    assert _reused(project, issue_folder, at=NOW + REUSE_FOR - 1) is not None
    assert _reused(project, issue_folder, at=NOW + REUSE_FOR + 1) is None
    assert _reused(project, issue_folder, at=NOW - 60) is None  # a clock set back


def test_an_online_check_is_not_reused_offline_nor_the_other_way(
    project: Path, issue_folder: Path
) -> None:
    _record(project, issue_folder, offline=False)
    assert _reused(project, issue_folder, offline=True) is None
    assert _reused(project, issue_folder, offline=False) is not None


def test_a_report_with_errors_is_never_reused(project: Path, issue_folder: Path) -> None:
    broken = Finding("error", "link-broken", "https://example.org/gone answered 404")
    _record(project, issue_folder, broken)
    assert _reused(project, issue_folder) is None


def test_the_audience_is_checked_again_at_every_reuse(project: Path, issue_folder: Path) -> None:
    # Recorded while the audience had nobody; reused once it has: the old warning is gone, and
    # whatever the audience check says now is there.
    empty = Finding("warning", "audience-empty", "the audience all has no subscribed subscriber")
    _record(project, issue_folder, empty)
    found = _reused(project, issue_folder)
    assert found is not None
    assert empty not in found.findings
    issue, _, settings = _loaded(project, issue_folder)
    assert set(check_audience(issue, settings)) <= set(found.findings)


def test_a_damaged_cache_is_a_miss(project: Path, issue_folder: Path) -> None:
    _record(project, issue_folder)
    path = project / ".newsletter-cache" / REPORTS_FILE
    entries = json.loads(path.read_text(encoding="utf-8"))
    for entry in entries.values():
        entry["findings"] = [{"severity": "fatal"}]
    path.write_text(json.dumps(entries), encoding="utf-8")
    assert _reused(project, issue_folder) is None
    path.write_text("{not json", encoding="utf-8")
    assert _reused(project, issue_folder) is None


def test_a_miss_checks_and_records_what_the_next_send_reuses(
    project: Path, issue_folder: Path, cached_spamassassin: SpamAssassinCache | None
) -> None:
    issue, rendered, settings = _loaded(project, issue_folder)
    first = check_reusing(issue, rendered, settings, offline=True, clock=lambda: NOW)
    assert first == check_issue(issue, rendered, settings, offline=True, clock=lambda: NOW)
    # What was recorded is what the next call returns, not a new check: mark it on disk.
    path = project / ".newsletter-cache" / REPORTS_FILE
    entries = json.loads(path.read_text(encoding="utf-8"))
    assert len(entries) == 1
    for entry in entries.values():
        entry["findings"].append(MARKER.to_dict())
    path.write_text(json.dumps(entries), encoding="utf-8")
    again = check_reusing(issue, rendered, settings, offline=True, clock=lambda: NOW + 5)
    assert MARKER in again.findings
    assert set(first.findings) <= set(again.findings)
