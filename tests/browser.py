"""Debian's Chromium for browser tests and benchmarks, launched the way this machine needs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
# Headless as root, and no background traffic: the network here is closed.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    """Skip without Chromium, or fail when NEWSLETTER_REQUIRE_BROWSER is set (as in CI)."""
    if CHROMIUM.exists():
        return
    if os.environ.get("NEWSLETTER_REQUIRE_BROWSER"):
        pytest.fail(f"{CHROMIUM} is missing and NEWSLETTER_REQUIRE_BROWSER is set")
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests")


def launch_chromium() -> Iterator[Browser]:
    """A Playwright Chromium browser for the duration of the generator."""
    # Deferred: importing Playwright takes half a second, paid only by tests that use a browser.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
