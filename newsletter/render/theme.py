"""Where the package's default theme is, for what only lists its files (a cached build's
samples, the checks): without loading Jinja (render/engine.py)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_theme_dir() -> Path:
    return Path(str(resources.files("newsletter") / "theme"))
