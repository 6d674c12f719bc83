"""Shared fixtures: a copy of the example project in a temporary folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from newsletter.config import Settings, load_settings

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
