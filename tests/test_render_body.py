"""Images and links inside an item's Markdown body: the same pipeline as the item's own image."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from newsletter.config import Settings, load_settings
from newsletter.content import load_issue
from newsletter.errors import RenderError
from newsletter.render import render_issue


def _item(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(f"---\ntitle: Met foto\n---\n{body}", encoding="utf-8")
    return path


def test_body_webp_image_is_converted_resized_embedded_and_sized(
    settings: Settings, issue_folder: Path
) -> None:
    Image.new("RGB", (2000, 1000), "#336699").save(issue_folder / "foto.webp", "WEBP")
    _item(issue_folder, "05-foto.md", "Tekst.\n\n![Een blauw veld](foto.webp)\n")
    rendered = render_issue(load_issue(issue_folder), settings)
    foto = next(i for i in rendered.embedded_images if i.filename.startswith("foto-"))
    assert foto.content_type in ("image/jpeg", "image/png")
    with Image.open(io.BytesIO(foto.data)) as image:
        assert image.size == (1104, 552)
    html = rendered.html.fill(lambda slot: "x")
    tag = re.search(r'<img[^>]*alt="Een blauw veld"[^>]*>', html)
    assert tag is not None
    assert f'src="cid:{foto.cid}"' in tag.group(0)
    assert 'width="552"' in tag.group(0) and 'height="276"' in tag.group(0)
    assert "foto.webp" not in html


def test_body_image_in_a_subfolder_and_in_the_intro(settings: Settings, issue_folder: Path) -> None:
    (issue_folder / "img").mkdir()
    Image.new("RGB", (300, 200), "#aa3300").save(issue_folder / "img" / "klein.png")
    _item(issue_folder, "05-foto.md", "![Rood](img/klein.png)\n")
    rendered = render_issue(load_issue(issue_folder), settings)
    html = rendered.html.fill(lambda slot: "x")
    tag = re.search(r'<img[^>]*alt="Rood"[^>]*>', html)
    assert tag is not None and 'src="cid:klein-' in tag.group(0)
    assert 'width="300"' in tag.group(0) and 'height="200"' in tag.group(0)


def test_body_image_is_published_under_base_url(project: Path, issue_folder: Path) -> None:
    config = project / "newsletter.toml"
    config.write_text(
        config.read_text().replace(
            '# base_url = "https://riverside-garden.example.org/newsletter/"',
            'base_url = "https://news.example.org/archive/"',
        )
    )
    Image.new("RGB", (300, 200), "#aa3300").save(issue_folder / "klein.png")
    _item(issue_folder, "05-foto.md", "![Rood](klein.png)\n")
    rendered = render_issue(load_issue(issue_folder), load_settings(project))
    html = rendered.html.fill(lambda slot: "x")
    assert re.search(r'src="https://news.example.org/archive/2026-11/klein-[0-9a-f]{12}.png"', html)
    assert any(p.filename.startswith("klein-") for p in rendered.published_images)


def test_missing_body_image_is_an_error_with_file_and_line(
    settings: Settings, issue_folder: Path
) -> None:
    path = _item(issue_folder, "05-foto.md", "Eerst tekst.\n\nMeer tekst.\n\n![Weg](weg.jpg)\n")
    with pytest.raises(RenderError) as caught:
        render_issue(load_issue(issue_folder), settings)
    problems = caught.value.problems
    assert any(p.file == path and p.line == 8 and "weg.jpg" in p.message for p in problems), [
        str(p) for p in problems
    ]


def test_body_image_with_another_scheme_is_an_error(settings: Settings, issue_folder: Path) -> None:
    path = _item(issue_folder, "05-foto.md", "![Foto](http://example.org/a.jpg)\n")
    with pytest.raises(RenderError) as caught:
        render_issue(load_issue(issue_folder), settings)
    assert any(p.file == path and p.line == 4 for p in caught.value.problems)


def test_body_image_outside_the_project_is_refused(
    settings: Settings, issue_folder: Path, tmp_path: Path
) -> None:
    Image.new("RGB", (10, 10), "#000000").save(tmp_path / "secret.png")
    path = _item(issue_folder, "05-uit.md", "Tekst.\n\n![Geheim](../../../secret.png)\n")
    with pytest.raises(RenderError) as caught:
        render_issue(load_issue(issue_folder), settings)
    assert any(
        p.file == path and p.line == 6 and "inside the project" in p.message
        for p in caught.value.problems
    ), caught.value.problems
