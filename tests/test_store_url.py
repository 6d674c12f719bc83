"""Choosing the store: `[store] url`, NEWSLETTER_DATABASE_URL, passwords, TLS, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError
from newsletter.store_url import (
    StoreUrlError,
    is_local_host,
    parse_store_url,
    redact,
)

ROOT = Path("/srv/project")


def parse(url: str, *, env: bool = False, environ: dict[str, str] | None = None) -> str:
    found = parse_store_url(
        url, root=ROOT, origin="store.url", from_environment=env, environ=environ or {}
    )
    return found.conninfo or str(found.path)


def test_sqlite_paths_are_relative_to_the_project_unless_absolute() -> None:
    assert parse("sqlite:///newsletter.db") == "/srv/project/newsletter.db"
    assert parse("sqlite:///data/list.db") == "/srv/project/data/list.db"
    assert parse("sqlite:////var/lib/list.db") == "/var/lib/list.db"


@pytest.mark.parametrize(
    "url", ["sqlite://host/x.db", "sqlite:///", "newsletter.db", "mysql://h/d"]
)
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreUrlError, match=r"^store\.url: "):
        parse(url)


def test_remote_host_gets_verify_full_and_a_weaker_mode_is_refused() -> None:
    assert "sslmode=verify-full" in parse("postgresql://editor@db.example.org/news")
    assert "sslmode=verify-full" in parse("postgresql://editor@db.example.org,10.0.0.2/news")
    with pytest.raises(StoreUrlError, match=r"sslmode=require for db\.example\.org"):
        parse("postgresql://editor@db.example.org/news?sslmode=require")
    with pytest.raises(StoreUrlError, match=r"sslmode=disable"):
        parse("postgresql://editor@db.example.org/news", environ={"PGSSLMODE": "disable"})
    # The host may come from PGHOST when the URL names none.
    assert "verify-full" in parse("postgresql:///news", environ={"PGHOST": "db.example.org"})


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://editor@localhost/news",
        "postgresql://editor@127.0.0.1:5433/news",
        "postgresql://editor@[::1]/news",
        "postgresql:///news?host=/var/run/postgresql",
        "postgresql:///news",
    ],
)
def test_loopback_and_unix_sockets_need_no_tls(url: str) -> None:
    assert "sslmode" not in parse(url)


def test_local_hosts() -> None:
    assert is_local_host("") and is_local_host("/tmp/socket") and is_local_host("127.0.0.2")
    assert is_local_host("LOCALHOST") and is_local_host("[::1]")
    assert not is_local_host("db.example.org") and not is_local_host("10.1.2.3")


def test_a_password_in_the_toml_url_is_an_error_that_does_not_repeat_it() -> None:
    for url in (
        "postgresql://editor:hunter2@localhost/news",
        "postgresql:///news?password=hunter2",
    ):
        with pytest.raises(StoreUrlError) as caught:
            parse(url)
        assert "password" in str(caught.value) and "hunter2" not in str(caught.value)
    # From the environment it is allowed (already a secret kept there), and redacted when shown.
    found = parse_store_url(
        "postgresql://editor:hunter2@localhost/news",
        root=ROOT,
        origin="NEWSLETTER_DATABASE_URL",
        from_environment=True,
        environ={},
    )
    assert "hunter2" not in found.shown and "hunter2" not in str(found)


def test_redact() -> None:
    assert redact("postgresql://u:p%40ss@h/d") == "postgresql://u:***@h/d"
    assert redact("postgresql://h/d?password=x&sslmode=verify-full") == (
        "postgresql://h/d?password=***&sslmode=verify-full"
    )
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"


def with_store_table(project: Path, body: str) -> Settings:
    config = project / "newsletter.toml"
    config.write_text(config.read_text(encoding="utf-8") + f"\n[store]\n{body}\n", "utf-8")
    return load_settings(project)


def test_default_is_the_project_file(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSLETTER_DATABASE_URL", raising=False)
    found = settings.database()
    assert found.is_sqlite and found.path == settings.database_path


def test_store_table_and_environment_override(project: Path) -> None:
    settings = with_store_table(project, 'url = "postgresql://editor@localhost/news"')
    assert settings.database({}).conninfo == "postgresql://editor@localhost/news"
    env = {"NEWSLETTER_DATABASE_URL": "sqlite:///other.db"}
    assert settings.database(env).path == project / "other.db"
    with pytest.raises(ConfigError, match="NEWSLETTER_DATABASE_URL: unknown database kind"):
        settings.database({"NEWSLETTER_DATABASE_URL": "mongodb://x/y"})


def test_toml_password_is_a_config_error_naming_file_line_and_key(project: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        with_store_table(project, 'url = "postgresql://editor:hunter2@db.example.org/news"')
    text = str(caught.value)
    assert "store.url" in text and "newsletter.toml:" in text and "hunter2" not in text
