"""`newsletter build` and the sample subscriber it shares with `check` and the preview."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

from newsletter.audience import Subscriber
from newsletter.build import build_issue
from newsletter.checks.context import CheckContext
from newsletter.checks.spam import build_sample_message
from newsletter.cli.preview_project import make_rebuild
from newsletter.config import Settings, load_settings
from newsletter.content import load_issue
from newsletter.project import init_project
from newsletter.render import render_issue


def test_build_check_and_preview_greet_the_same_sample_subscriber_in_a_dutch_project(
    tmp_path: Path,
) -> None:
    root = tmp_path / "krant"
    init_project(root, language="nl", today=dt.date(2026, 11, 2))
    folder = next((root / "issues").iterdir())
    settings = load_settings(root)
    sample = Subscriber.sample(settings.locale)
    assert sample.first_name == "Sanne"  # the Dutch sample, not the English "Alex"
    greeting = f"Beste {sample.first_name},"

    report = build_issue(settings, folder)
    built = (report.folder / "email.html").read_text(encoding="utf-8")
    assert greeting in built
    assert greeting in (report.folder / "email.txt").read_text(encoding="utf-8")

    preview = make_rebuild(root, folder)()
    shown = preview.samples[0]
    assert shown.label == f"{sample.name} (voorbeeldabonnee)"  # the preview speaks Dutch too
    assert shown.subscriber["email"] == sample.email
    assert greeting in shown.html and greeting in shown.text

    rendered = render_issue(load_issue(folder), settings)
    context = CheckContext.build(load_issue(folder), rendered, settings)
    assert greeting in context.sample_html and greeting in context.sample_text
    message = build_sample_message(rendered, settings)
    assert f"To: {sample.name} <{sample.email}>".encode() in message


def test_an_english_project_keeps_its_english_sample(tmp_path: Path) -> None:
    init_project(tmp_path, language="en", today=dt.date(2026, 11, 2))
    folder = next((tmp_path / "issues").iterdir())
    report = build_issue(load_settings(tmp_path), folder)
    assert "Dear Alex," in (report.folder / "email.html").read_text(encoding="utf-8")
    assert make_rebuild(tmp_path, folder)().samples[0].label == "Alex Example (sample subscriber)"


def test_a_build_warns_when_embedded_images_are_heavy(settings: Settings) -> None:
    folder = settings.issues_dir / "2026-11"
    (warning,) = build_issue(settings, folder).warnings
    assert warning.startswith("embedded images add 144 KB to every message (over 100 KB)")
    assert "set base_url in newsletter.toml" in warning
    hosted = replace(settings, base_url="https://news.example.org/")
    assert build_issue(hosted, folder).warnings == ()
