"""render/cache.py: a cached render is used only while everything the render reads is unchanged.

Each change below must give the render of the changed content, never the cached one: a stale
render would be a wrong email.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.render import cache, render_issue
from newsletter.render.model import RenderedIssue

from .conftest import EXAMPLE_ISSUE


def _fresh(project: Path, **options: object) -> RenderedIssue:
    settings = load_settings(project)
    return render_issue(load_issue(project / "issues" / EXAMPLE_ISSUE), settings, **options)  # type: ignore[arg-type]


def _cached(project: Path, **options: object) -> tuple[RenderedIssue, str]:
    """The cached render, and whether it was read back ("hit") or rendered ("rendered")."""
    settings = load_settings(project)
    before = (cache.work.hits, cache.work.rendered)
    rendered = cache.cached_render(
        load_issue(project / "issues" / EXAMPLE_ISSUE),
        settings,
        **options,  # type: ignore[arg-type]
    )
    after = (cache.work.hits, cache.work.rendered)
    outcome = "hit" if after[0] > before[0] else "rendered"
    assert after != before
    return rendered, outcome


def _same(first: RenderedIssue, second: RenderedIssue) -> None:
    assert first == second
    assert first.web_html == second.web_html
    assert first.html.parts == second.html.parts
    assert [image.data for image in first.embedded_images] == [
        image.data for image in second.embedded_images
    ]


def test_a_second_render_of_unchanged_content_is_read_back_equal(project: Path) -> None:
    first, outcome = _cached(project)
    assert outcome == "rendered"
    second, outcome = _cached(project)
    assert outcome == "hit"
    _same(second, first)
    _same(second, _fresh(project))
    assert second.image_sources == first.image_sources
    assert len(second.image_sources) >= 3  # the photos, the logo, the partner's logo, icons


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _same_size_same_mtime(path: Path) -> None:
    """Other bytes, the same size and modification time (a copy that keeps the time)."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _override_template(project: Path) -> None:
    theme = Path(cache.PACKAGE) / "theme" / "email.mjml.j2"
    (project / "templates").mkdir()
    text = theme.read_text(encoding="utf-8")
    (project / "templates" / "email.mjml.j2").write_text(
        text.replace("</mj-body>", "<mj-section><mj-column><mj-text>Ours</mj-text></mj-column>"
                     "</mj-section></mj-body>", 1),
        encoding="utf-8",
    )  # fmt: skip


def _locale(project: Path) -> None:
    (project / "locales").mkdir()
    (project / "locales" / "en.toml").write_text('unsubscribe = "Sign off"\n')


CHANGES: dict[str, Callable[[Path], object]] = {
    "an item's text": lambda p: _edit(
        p / "issues" / EXAMPLE_ISSUE / "01-harvest-festival.md", "Our yearly", "Our annual"
    ),
    "an item's front matter": lambda p: _edit(
        p / "issues" / EXAMPLE_ISSUE / "01-harvest-festival.md", "Plan your visit", "Come"
    ),
    "a new item": lambda p: shutil.copy(
        p / "issues" / EXAMPLE_ISSUE / "03-winter-roster.md",
        p / "issues" / EXAMPLE_ISSUE / "05-again.md",
    ),
    "issue.md": lambda p: _edit(
        p / "issues" / EXAMPLE_ISSUE / "issue.md", "subject:", "subject: X"
    ),
    "newsletter.toml": lambda p: _edit(p / "newsletter.toml", "#1b6b5a", "#5a1b6b"),
    "a photo, same size and time": lambda p: _same_size_same_mtime(
        p / "issues" / EXAMPLE_ISSUE / "garden.jpg"
    ),
    "the logo": lambda p: shutil.copy(
        p / "images" / "partner-buurtfonds.png", p / "images" / "logo.png"
    ),
    "a theme override": _override_template,
    "a project locale": _locale,
}  # fmt: skip


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_input_change_renders_again(project: Path, change: str) -> None:
    before, _ = _cached(project)
    assert _cached(project)[1] == "hit"
    CHANGES[change](project)
    after, outcome = _cached(project)
    assert outcome == "rendered", change
    _same(after, _fresh(project))
    assert after != before or after.embedded_images != before.embedded_images, change


def test_the_renders_arguments_are_part_of_the_key(project: Path) -> None:
    sent, _ = _cached(project)
    previewed, outcome = _cached(project, preview=True)
    assert outcome == "rendered" and previewed.html != sent.html  # the draft is shown
    _same(previewed, _fresh(project, preview=True))
    _, outcome = _cached(project, click_numbers={"https://example.org/": 7})
    assert outcome == "rendered"
    assert _cached(project, preview=True)[1] == "hit"


def test_the_code_is_part_of_the_key(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "package"
    (package / "render").mkdir(parents=True)
    module = package / "render" / "issue.py"
    module.write_text("one = 1\n")
    monkeypatch.setattr(cache, "PACKAGE", package)
    monkeypatch.setattr(cache, "_signatures", {})
    settings = load_settings(project)
    issue = load_issue(project / "issues" / EXAMPLE_ISSUE)
    first = cache.render_key(issue, settings)
    assert cache.render_key(issue, settings) == first
    module.write_text("one = 2\n")
    monkeypatch.setattr(cache, "_signatures", {})
    assert cache.render_key(issue, settings) != first


def test_a_torn_or_foreign_entry_is_rendered_again(project: Path) -> None:
    first, _ = _cached(project)
    (entry,) = (project / ".newsletter-cache" / "renders").iterdir()
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2])
    again, outcome = _cached(project)
    assert outcome == "rendered"
    _same(again, first)
    assert entry.read_bytes() == data  # written again, whole
    # An entry under another key's name (copied, or a digest collision) is not used.
    entry.write_bytes(data.replace(entry.name.encode(), b"0" * 64, 1))
    assert _cached(project)[1] == "rendered"


def test_an_unwritable_cache_only_costs_the_render(project: Path) -> None:
    (project / ".newsletter-cache").write_text("a file where the folder would be")
    first, outcome = _cached(project)
    assert outcome == "rendered"
    second, outcome = _cached(project)
    assert outcome == "rendered"
    _same(first, second)


def test_old_entries_are_pruned(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "KEEP", 2)
    item = project / "issues" / EXAMPLE_ISSUE / "01-harvest-festival.md"
    for number in range(4):
        _edit(item, "Our ", f"Our {number} ")
        _cached(project)
    assert len(list((project / ".newsletter-cache" / "renders").iterdir())) == 2
