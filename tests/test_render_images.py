"""The processed-image cache: a rebuild with unchanged images does no image work."""

from __future__ import annotations

import base64
import io
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.render import images as render_images
from newsletter.render import render_issue
from newsletter.render.model import RenderedIssue

from .conftest import EXAMPLE_ISSUE


@pytest.fixture(autouse=True)
def fresh_process() -> Iterator[None]:
    """Each render as in a new process: no in-memory results, counters at zero."""
    render_images._prepare.cache_clear()
    before = (render_images.work.processed, render_images.work.cache_hits)
    yield
    render_images._prepare.cache_clear()
    render_images.work.processed, render_images.work.cache_hits = before


def render(project: Path) -> tuple[RenderedIssue, int, int]:
    """Render the example issue as a new process would; (rendered, processed, cache hits)."""
    render_images._prepare.cache_clear()
    render_images.work.processed = render_images.work.cache_hits = 0
    settings = load_settings(project)
    rendered = render_issue(load_issue(project / "issues" / EXAMPLE_ISSUE), settings)
    return rendered, render_images.work.processed, render_images.work.cache_hits


def image_bytes(rendered: RenderedIssue) -> dict[str, bytes]:
    return {image.filename: image.data for image in rendered.embedded_images}


def test_a_second_build_reads_every_image_from_the_cache(project: Path) -> None:
    first, processed, hits = render(project)
    assert processed == len(first.embedded_images) >= 5 and hits == 0
    entries = list((project / ".newsletter-cache" / "images").iterdir())
    assert len(entries) == processed

    second, processed, hits = render(project)
    assert (processed, hits) == (0, len(first.embedded_images))
    # The same bytes, names and fingerprint as a build that did the work.
    assert image_bytes(second) == image_bytes(first)
    assert second.fingerprint == first.fingerprint
    assert second.html.parts == first.html.parts


def test_a_changed_image_is_processed_again(project: Path) -> None:
    first, _, _ = render(project)
    photo = project / "issues" / EXAMPLE_ISSUE / "garden.jpg"
    with Image.open(photo) as image:
        image.rotate(180).save(photo, "JPEG", quality=90)

    second, processed, hits = render(project)
    assert (processed, hits) == (1, len(first.embedded_images) - 1)
    changed = set(image_bytes(second)) - set(image_bytes(first))
    assert len(changed) == 1 and next(iter(changed)).startswith("garden-")


def test_a_changed_width_setting_is_processed_again(project: Path) -> None:
    render(project)
    config = project / "newsletter.toml"
    config.write_text(config.read_text().replace("logo_width = 96", "logo_width = 64"))

    rendered, processed, _ = render(project)
    assert processed == 1
    logo = next(image for image in rendered.embedded_images if image.filename.startswith("logo-"))
    with Image.open(io.BytesIO(logo.data)) as image:
        assert image.width == 64 * render_images.DENSITY


def test_a_damaged_cache_entry_is_ignored_and_rewritten(project: Path) -> None:
    first, _, _ = render(project)
    cache = project / ".newsletter-cache" / "images"
    for entry in cache.iterdir():
        entry.write_bytes(entry.read_bytes()[:-10])  # torn writes

    second, processed, hits = render(project)
    assert (processed, hits) == (len(first.embedded_images), 0)
    assert image_bytes(second) == image_bytes(first)
    _, processed, hits = render(project)
    assert (processed, hits) == (0, len(first.embedded_images))


def test_several_changed_images_are_processed_in_threads(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    process = render_images._process

    def watched(raw: bytes, max_width: int) -> render_images._Prepared:
        threads.add(threading.current_thread().name)
        return process(raw, max_width)

    monkeypatch.setattr(render_images, "_process", watched)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # threads even on a one-core runner
    render(project)
    assert any(re.match(r"newsletter-image", name) for name in threads), threads


@pytest.mark.parametrize("size", [0, 1, 2, 3, 56, 57, 58, 76, 114, 1000, 4332, 100_001])
def test_the_embedded_weight_is_base64s_without_encoding(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    assert render_images.base64_size(size) == len(base64.encodebytes(data[:size]))
