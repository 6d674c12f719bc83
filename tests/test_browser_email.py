"""The built email in a real Chromium: it fits phone and desktop widths and every image shows."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import pytest

from newsletter.build import build_issue
from newsletter.config import load_settings
from tests.browser import launch_chromium, require_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO = Path(__file__).resolve().parent.parent
WIDTHS = [375, 600, 800]

pytestmark = pytest.mark.browser


class ImageInfo(TypedDict):
    """What the page reports about one <img> (names as in the DOM)."""

    src: str | None
    alt: str | None
    complete: bool
    naturalWidth: float
    naturalHeight: float
    width: float
    height: float


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_chromium()
    yield from launch_chromium()


@pytest.fixture(scope="module")
def email_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example issue built once for this module, from a copy of the repo's example project."""
    project = tmp_path_factory.mktemp("browser-email")
    shutil.copy(REPO / "newsletter.toml", project / "newsletter.toml")
    shutil.copytree(REPO / "images", project / "images")
    shutil.copytree(REPO / "issues" / "2026-11", project / "issues" / "2026-11")
    report = build_issue(load_settings(project), project / "issues" / "2026-11")
    return report.folder / "email.html"


def _open(browser: Browser, email_html: Path, width: int) -> Page:
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.goto(email_html.as_uri(), wait_until="load")
    return page


def _images(page: Page) -> list[ImageInfo]:
    images: list[ImageInfo] = page.evaluate(
        """() => Array.from(document.images, (img) => ({
            src: img.getAttribute("src"),
            alt: img.getAttribute("alt"),
            complete: img.complete,
            naturalWidth: img.naturalWidth,
            naturalHeight: img.naturalHeight,
            width: img.getBoundingClientRect().width,
            height: img.getBoundingClientRect().height,
        }))"""
    )
    return images


@pytest.mark.parametrize("width", WIDTHS)
def test_the_email_fits_the_width_and_every_image_loads_with_alt_text(
    browser: Browser, email_html: Path, width: int, tmp_path: Path
) -> None:
    page = _open(browser, email_html, width)
    scroll_width, inner_width = page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert inner_width == width
    assert scroll_width <= inner_width, f"scrolls sideways at {width} px: {scroll_width} px wide"

    images = _images(page)
    assert len(images) >= 4  # logo, two item images, partner logo (and the social icons)
    assert [image["src"] for image in images if image["alt"] is None] == []
    assert [image["src"] for image in images if image["naturalWidth"] == 0] == []
    assert all(image["complete"] for image in images)
    assert [image["src"] for image in images if image["width"] > width] == []
    page.screenshot(path=tmp_path / f"email-{width}.png", full_page=True)
    page.close()


@pytest.mark.parametrize("width", [375])
def test_images_keep_their_proportions_on_a_phone(
    browser: Browser, email_html: Path, width: int
) -> None:
    page = _open(browser, email_html, width)
    squashed = [
        image["src"]
        for image in _images(page)
        if image["height"]
        and abs(image["width"] / image["height"] - image["naturalWidth"] / image["naturalHeight"])
        > 0.05 * image["naturalWidth"] / image["naturalHeight"]
    ]
    page.close()
    assert squashed == []
