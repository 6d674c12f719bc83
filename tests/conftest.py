"""Shared fixtures: a copy of the example project in a temporary folder; the store on each
engine (`store_url`: a SQLite file, or a fresh database on a throw-away PostgreSQL cluster)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.config import Settings, load_settings
from tests.pgserver import PostgresServer, require_postgresql
from tests.spamcache import SpamAssassinCache

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_ISSUE = "2026-11"


def copy_example_project(target: Path) -> Path:
    """Copy the repo's example project (config, images, the example issue) into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "newsletter.toml", target / "newsletter.toml")
    shutil.copytree(REPO / "images", target / "images")
    shutil.copytree(REPO / "issues" / EXAMPLE_ISSUE, target / "issues" / EXAMPLE_ISSUE)
    return target


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_example_project(tmp_path / "project")


@pytest.fixture
def settings(project: Path) -> Settings:
    return load_settings(project)


@pytest.fixture
def issue_folder(project: Path) -> Path:
    return project / "issues" / EXAMPLE_ISSUE


@pytest.fixture(scope="session")
def spamassassin_cache(tmp_path_factory: pytest.TempPathFactory) -> SpamAssassinCache | None:
    """One report cache for the whole run (per xdist worker); None without SpamAssassin."""
    real = shutil.which("spamassassin")
    if real is None:
        return None
    return SpamAssassinCache(tmp_path_factory.mktemp("spamassassin-cache"), real)


@pytest.fixture
def cached_spamassassin(
    spamassassin_cache: SpamAssassinCache | None, monkeypatch: pytest.MonkeyPatch
) -> SpamAssassinCache | None:
    """For tests not about the spam score: SpamAssassin runs once per distinct message per run.

    The caching `spamassassin` goes first on PATH, for this process and the commands it starts.
    """
    if spamassassin_cache is not None:
        monkeypatch.setenv("PATH", spamassassin_cache.search_path(os.environ.get("PATH")))
    return spamassassin_cache


ENGINES = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throw-away PostgreSQL cluster per test process (xdist worker), removed at the end."""
    bin_dir = require_postgresql()
    with PostgresServer(bin_dir) as server:
        yield server


@pytest.fixture(params=ENGINES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's store lives, once per engine: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "newsletter.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_store()
