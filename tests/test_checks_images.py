"""Image checks: alt texts, dimensions, weights, and remote images over a real HTTPS server."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from newsletter.checks import CheckReport, check_issue, check_issue_async, images
from newsletter.config import load_settings
from newsletter.content import load_issue
from newsletter.render import render_issue
from tests.linkserver import LinkServer, serve_links


def check(project: Path, issue_folder: Path, *, allow_loopback: bool = False) -> CheckReport:
    settings = load_settings(project)
    issue = load_issue(issue_folder)
    return check_issue(
        issue,
        render_issue(issue, settings),
        settings,
        offline=True,
        spamassassin=None,
        use_cache=False,
        allow_loopback=allow_loopback,
    )


def set_front_matter(path: Path, key: str, value: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines = [f"{key}: {value}" if line.startswith(f"{key}:") else line for line in lines]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("alt", "meaningful"),
    [
        ("IMG_1234.jpg", False),
        ("DSC01234", False),
        ("image", False),
        ("Foto", False),
        ("Three wooden compost bays side by side", True),
        ("Logo of the Buurtfonds", True),
    ],
)
def test_alt_text_must_describe(
    project: Path, issue_folder: Path, alt: str, meaningful: bool
) -> None:
    item = issue_folder / "02-compost-bays.md"
    set_front_matter(item, "image_alt", f'"{alt}"')
    report = check(project, issue_folder)
    found = [f for f in report.findings if f.code == "image-alt-meaningless"]
    if meaningful:
        assert found == []
    else:
        assert [(f.severity, f.file, f.line) for f in found] == [("warning", item, 5)]
        assert alt in found[0].message


def test_markdown_image_without_alt_or_width(project: Path, issue_folder: Path) -> None:
    item = issue_folder / "05-photo.md"
    item.write_text(
        "---\ntitle: Photo\n---\nLook:\n\n![](https://images.riverside.test/bed.jpg)\n",
        encoding="utf-8",
    )
    report = check(project, issue_folder)
    codes = {(f.code, f.file, f.line) for f in report.warnings if f.file == item}
    assert ("image-alt-empty", item, 6) in codes
    assert ("image-dimensions", item, 6) in codes


def test_theme_icons_with_empty_alt_are_decoration(project: Path, issue_folder: Path) -> None:
    report = check(project, issue_folder)
    assert not report.codes() & {"image-alt-empty", "image-alt-missing", "link-text-empty"}


def test_heavy_image_and_heavy_email(project: Path, issue_folder: Path) -> None:
    # Noise does not compress: a photo-sized PNG of it stays heavy after scaling.
    noise = Image.frombytes("RGB", (1200, 800), os.urandom(1200 * 800 * 3))
    noise.save(issue_folder / "noise.png")
    item = issue_folder / "01-harvest-festival.md"
    set_front_matter(item, "image", "noise.png")
    report = check(project, issue_folder)
    [heavy] = [f for f in report.findings if f.code == "image-heavy"]
    assert (heavy.severity, heavy.file, heavy.line) == ("warning", item, 4)
    assert "noise" in heavy.message and "KB" in heavy.message
    [email] = [f for f in report.findings if f.code == "email-heavy"]
    assert email.severity == "warning"
    assert "MB" in email.message


def test_example_images_are_fine(project: Path, issue_folder: Path) -> None:
    report = check(project, issue_folder)
    assert not {code for code in report.codes() if code.startswith(("image-", "email-"))}


# --- remote images, over HTTPS on loopback ------------------------------------------------------


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[LinkServer]:
    with serve_links(tls=True, folder=tmp_path) as server:
        yield server


def trusting_client(server: LinkServer) -> httpx.AsyncClient:
    assert server.ca_file is not None
    return httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(server.ca_file)))


def test_remote_images_are_fetched_and_judged(
    project: Path, issue_folder: Path, https_server: LinkServer
) -> None:
    heavy = https_server.url("/image.png?kb=300")
    light = https_server.url("/image.png?kb=2")
    not_image = https_server.url("/page-as-image")
    missing = https_server.url("/missing.png")
    item = issue_folder / "01-harvest-festival.md"
    set_front_matter(item, "image", heavy)
    (issue_folder / "05-gallery.md").write_text(
        "---\ntitle: Gallery\n---\n"
        f"![Pumpkins on the bench]({light})\n\n"
        f"![The seed library shelves]({not_image})\n\n"
        f"![Lanterns by the river]({missing})\n",
        encoding="utf-8",
    )
    settings = load_settings(project)
    issue = load_issue(issue_folder)
    rendered = render_issue(issue, settings)

    async def run() -> CheckReport:
        # The client belongs to this loop: the async entry point runs in it.
        async with trusting_client(https_server) as client:
            return await check_issue_async(
                issue,
                rendered,
                settings,
                allow_loopback=True,
                client=client,
                spamassassin=None,
                use_cache=False,
            )

    report = asyncio.run(run())

    def found(url: str) -> set[tuple[str, str]]:
        return {(f.severity, f.code) for f in report.findings if f.url == url}

    assert found(heavy) == {("warning", "image-heavy")}
    assert found(light) == set()
    assert found(not_image) == {("error", "image-not-image")}
    assert found(missing) == {("error", "image-unreachable")}
    gallery = issue_folder / "05-gallery.md"
    [unreachable] = [f for f in report.findings if f.url == missing]
    assert (unreachable.file, unreachable.line) == (gallery, 8)
    assert "404" in unreachable.message
    assert {"HEAD"} <= {r.method for r in https_server.requests}


def test_remote_images_are_not_fetched_offline(
    project: Path, issue_folder: Path, https_server: LinkServer
) -> None:
    set_front_matter(
        issue_folder / "01-harvest-festival.md", "image", https_server.url("/image.png?kb=300")
    )
    report = check(project, issue_folder, allow_loopback=True)
    assert https_server.requests == []
    assert "image-heavy" not in report.codes()


def test_heavy_embedded_images_warn_until_base_url_hosts_them(
    project: Path, issue_folder: Path
) -> None:
    (embedded,) = [f for f in check(project, issue_folder).warnings if f.code == "images-embedded"]
    assert embedded.file == project / "newsletter.toml"
    assert "to every message (over 100 KB): set base_url in newsletter.toml" in embedded.message
    config = project / "newsletter.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            '# base_url = "https://riverside-garden.example.org/newsletter/"',
            'base_url = "https://riverside-garden.example.org/newsletter/"',
        ),
        encoding="utf-8",
    )
    assert load_settings(project).base_url is not None
    assert "images-embedded" not in check(project, issue_folder).codes()


def test_light_embedded_images_do_not_warn(project: Path, issue_folder: Path) -> None:
    for item in issue_folder.glob("0*.md"):
        text = item.read_text(encoding="utf-8")
        lines = [line for line in text.splitlines() if not line.startswith("image")]
        item.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert "images-embedded" not in check(project, issue_folder).codes()


@pytest.mark.parametrize("size", [0, 1, 2, 3, 56, 57, 58, 114, 1000, 185_123])
def test_the_base64_size_is_counted_without_encoding(size: int) -> None:
    data = os.urandom(size)
    assert images._base64_size(size) == len(base64.encodebytes(data))
