from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.errors import ConfigError

MINIMAL = """\
[newsletter]
name = "Test News"
from = "Test News <news@example.org>"

[footer]
address = "1 Main Street\\nTown"
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "newsletter.toml").write_text(text, encoding="utf-8")
    return tmp_path


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.name == "Test News"
    assert settings.sender.addr_spec == "news@example.org"
    assert settings.sender.display_name == "Test News"
    assert settings.locale == "en"
    assert settings.transport.kind == "outbox"
    assert settings.footer.address == "1 Main Street\nTown"
    assert settings.warnings == ()


def test_example_project_config_loads(settings) -> None:  # type: ignore[no-untyped-def]
    assert settings.reply_to is not None
    assert [link.network for link in settings.footer.social] == ["instagram", "mastodon", "web"]
    assert settings.footer.partners[0].name == "Buurtfonds"
    assert settings.unsubscribe.url == "https://riverside-garden.example.org/unsubscribe"


def test_every_problem_is_reported_at_once_with_its_key_and_line(tmp_path: Path) -> None:
    text = """\
[newsletter]
name = "X"
from = "not an address"
locale = "english"
brand_color = "green"

[footer]
contact = "a@b.org"

[transport]
kind = "smpt"
password = "hunter2"
"""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    message = str(caught.value)
    path = tmp_path / "newsletter.toml"
    assert f"{path}:3: newsletter.from: is not an email address" in message
    assert f"{path}:4: newsletter.locale: must be a locale code" in message
    assert f"{path}:5: newsletter.brand_color: must be a colour" in message
    assert f"{path}: footer.address: is required" in message
    assert "unknown transport 'smpt'; use one of outbox, smtp, postmark," in message
    assert "(did you mean 'smtp'?)" in message
    assert f"{path}:12: transport.password: secrets do not belong in newsletter.toml" in message
    assert "hunter2" not in message
    assert message.startswith("6 configuration problems:")


def test_unknown_keys_are_warned_with_a_suggestion(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, MINIMAL.replace('name = "Test News"', 'name = "T"\nlocal = "nl"'))
    )
    assert any(
        "newsletter.toml:3: unknown key 'newsletter.local' is ignored (did you mean 'locale'?)" in w
        for w in settings.warnings
    )


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL + "\nbroken = \n"))
    assert "newsletter.toml:8: is not valid TOML" in str(caught.value)


def test_missing_config_has_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert "newsletter.toml: not found" in str(caught.value)
    assert caught.value.hint and "newsletter init" in caught.value.hint


def test_header_injection_in_from_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'from = "Test News <news@example.org>"', 'from = "A <a@example.org>\\r\\nBcc: x@evil.org"'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert "newsletter.from: must be on one line" in str(caught.value)


def test_secret_comes_from_the_environment_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    assert settings.secret() is None
    (tmp_path / ".newsletter-secret").write_text("from-file\n")
    assert settings.secret() == b"from-file"
    monkeypatch.setenv("NEWSLETTER_SECRET", "from-env")
    assert settings.secret() == b"from-env"
