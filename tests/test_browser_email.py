"""The built email in a real Chromium: it fits phone and desktop widths and every image shows."""

from __future__ import annotations

import functools
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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


# --- every width, images on and off, light and dark ----------------------------------------------

JUDGED_WIDTHS = [320, 375, 600, 800]


@pytest.fixture(scope="module")
def email_url(email_html: Path) -> Iterator[str]:
    """The built email served over HTTP on loopback, so image requests can be refused."""
    handler = functools.partial(QuietHandler, directory=str(email_html.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{email_html.name}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _open_as(browser: Browser, email_url: str, width: int, scheme: str, images: bool) -> Page:
    context = browser.new_context(
        viewport={"width": width, "height": 800},
        color_scheme=scheme,  # type: ignore[arg-type]
    )
    if not images:
        # Outlook's default, and many corporate gateways': no image is fetched.
        context.route(re.compile(r".*\.(png|jpe?g|gif)$"), lambda route: route.abort())
    page = context.new_page()
    page.goto(email_url, wait_until="load")
    return page


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("images", [True, False], ids=["images-on", "images-off"])
@pytest.mark.parametrize("width", JUDGED_WIDTHS)
def test_no_sideways_scroll_at_any_width_images_on_or_off_light_or_dark(
    browser: Browser, email_url: str, width: int, images: bool, scheme: str
) -> None:
    page = _open_as(browser, email_url, width, scheme, images)
    scroll_width = page.evaluate("() => document.documentElement.scrollWidth")
    assert scroll_width <= width, f"scrolls sideways at {width} px: {scroll_width} px wide"
    loaded = page.evaluate("() => Array.from(document.images, (img) => img.naturalWidth > 0)")
    assert all(loaded) if images else not any(loaded)
    if not images:
        # Numeric heights keep the space the images take: the layout does not collapse.
        boxes = page.evaluate(
            """() => Array.from(document.images)
                .filter((img) => img.getAttribute("height"))
                .map((img) => [img.getAttribute("height"), img.getBoundingClientRect().height])"""
        )
        assert boxes, "images carry a numeric height"
        assert [box for box in boxes if box[1] < 20] == []
    page.context.close()


def test_images_off_keeps_the_length_of_the_email(browser: Browser, email_url: str) -> None:
    heights = []
    for images in (True, False):
        page = _open_as(browser, email_url, 600, "light", images)
        heights.append(page.evaluate("() => document.documentElement.scrollHeight"))
        page.context.close()
    on, off = heights
    assert off >= 0.95 * on, f"images off: {off} px against {on} px with images"


def test_dark_mode_recolours_the_cards(browser: Browser, email_url: str) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        page = _open_as(browser, email_url, 600, scheme, True)
        colours[scheme] = page.evaluate(
            """() => {
                const card = document.querySelector(".card");
                const text = document.querySelector(".card-text div");
                return [getComputedStyle(card).backgroundColor, getComputedStyle(text).color];
            }"""
        )
        page.context.close()
    assert colours["light"][0] == "rgb(255, 255, 255)"
    assert colours["dark"][0] == "rgb(28, 33, 36)"
    assert colours["dark"][1] == "rgb(228, 232, 233)"
