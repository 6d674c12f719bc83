"""Built-in words: Dutch in both registers, project overrides, and unknown locales."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.errors import ConfigError
from newsletter.i18n import words_for
from newsletter.render import render_issue


def _locale(project: Path, locale: str) -> None:
    config = project / "newsletter.toml"
    config.write_text(config.read_text().replace('locale = "en"', f'locale = "{locale}"'))


def test_dutch_informal_and_formal_registers() -> None:
    informal, formal = words_for("nl"), words_for("nl-formal")
    assert "je " in informal.why_you_get_this
    assert "u " in formal.why_you_get_this and " je " not in formal.why_you_get_this
    assert formal.view_in_browser == "Bekijk in uw browser"
    assert formal.language == "nl" and formal.read_more == informal.read_more


def test_formal_dutch_renders_with_dutch_dates(project: Path, issue_folder: Path) -> None:
    _locale(project, "nl-formal")
    rendered = render_issue(load_issue(issue_folder), load_settings(project))
    html = rendered.html.fill(lambda slot: "x")
    assert 'lang="nl"' in html and "26 november 2026" in html
    assert "U ontvangt deze e-mail omdat u zich" in html


def test_a_project_overrides_built_in_words(project: Path, issue_folder: Path) -> None:
    _locale(project, "nl")
    (project / "locales").mkdir()
    (project / "locales" / "nl.toml").write_text(
        'unsubscribe = "Geen nieuwsbrief meer"\n', encoding="utf-8"
    )
    rendered = render_issue(load_issue(issue_folder), load_settings(project))
    html = rendered.html.fill(lambda slot: "x")
    assert ">Geen nieuwsbrief meer</a>" in html
    assert "Je ontvangt deze e-mail" in html  # the rest stays built in


def test_a_broken_project_override_names_its_file(project: Path, issue_folder: Path) -> None:
    _locale(project, "nl")
    (project / "locales").mkdir()
    path = project / "locales" / "nl.toml"
    path.write_text('unsubscribe = "Afmelden\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        render_issue(load_issue(issue_folder), load_settings(project))
    assert str(path) in str(caught.value)
    path.write_text('unsubscrbe = "Afmelden"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        render_issue(load_issue(issue_folder), load_settings(project))
    assert "unsubscribe" in str(caught.value) and str(path) in str(caught.value)


def test_missing_language_points_at_the_project_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        words_for("de", tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "locales" / "de.toml") in message
    assert "site-packages" not in message and "newsletter/locales/" not in message


def test_register_key_chooses_the_formal_words(project: Path, issue_folder: Path) -> None:
    _locale(project, "nl")
    config = project / "newsletter.toml"
    config.write_text(
        config.read_text().replace('locale = "nl"', 'locale = "nl"\nregister = "formal"')
    )
    settings = load_settings(project)
    assert not settings.warnings
    html = render_issue(load_issue(issue_folder), settings).html.fill(lambda slot: "x")
    assert "U ontvangt deze e-mail omdat u zich" in html


def test_an_unknown_register_is_an_error_naming_the_key(project: Path) -> None:
    config = project / "newsletter.toml"
    config.write_text(
        config.read_text().replace('locale = "en"', 'locale = "en"\nregister = "stiff"')
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(project)
    assert "register" in str(caught.value) and "formal" in str(caught.value)
