"""`dist/<issue>/`: the email body, the text part, the web version, a sample message and images.

The whole issue is rendered before anything is written, and the new folder replaces the old one
in one rename, so a failed build leaves the previous output untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .audience import Subscriber
from .config import Settings
from .content import Issue, load_issue
from .errors import RenderError
from .render.cache import cached_render
from .render.images import embedded_images_advice
from .render.model import RenderedIssue
from .render.samples import missing_sample_values, sample_filler


@dataclass(frozen=True)
class BuiltFile:
    path: Path
    size: int


@dataclass(frozen=True)
class BuildReport:
    issue: Issue
    rendered: RenderedIssue
    folder: Path
    files: tuple[BuiltFile, ...]
    warnings: tuple[str, ...] = ()


def local_image_html(rendered: RenderedIssue, html: str) -> str:
    """Point `cid:` references at the image files written beside the HTML, for browsers."""
    for image in rendered.embedded_images:
        html = html.replace(f"cid:{image.cid}", image.filename)
    return html


def build_issue(
    settings: Settings,
    folder: Path,
    *,
    sample_message: Callable[[RenderedIssue], bytes] | None = None,
) -> BuildReport:
    """Render the issue in `folder` and write `dist/<issue>/` atomically.

    `email.html` and `email.txt` are filled in for the project's sample subscriber, the same one
    `newsletter check` and the preview show (`Subscriber.sample(settings.locale)`).
    """
    issue = load_issue(folder)
    # Unchanged content since the last render: read back, nothing rendered (render/cache.py).
    rendered = cached_render(issue, settings)
    sample = Subscriber.sample(settings.locale).as_dict()
    problems = missing_sample_values(rendered, issue, settings, sample)
    if problems:
        raise RenderError(problems)
    html = rendered.html.fill(sample_filler(rendered, settings, sample, html=True))
    text = rendered.text.fill(sample_filler(rendered, settings, sample, html=False))
    outputs: dict[str, bytes] = {
        "email.html": local_image_html(rendered, html).encode("utf-8"),
        "email.txt": text.encode("utf-8"),
        "web.html": local_image_html(rendered, rendered.web_html).encode("utf-8"),
    }
    if sample_message is not None:
        outputs["message.eml"] = sample_message(rendered)
    for image in rendered.embedded_images:
        outputs[image.filename] = image.data
    for published in rendered.published_images:
        outputs[published.filename] = published.data
    target = settings.dist_dir / rendered.name
    files = write_folder_atomically(target, outputs)
    advice = embedded_images_advice(rendered.embedded_images)
    return BuildReport(
        issue=issue,
        rendered=rendered,
        folder=target,
        files=files,
        warnings=(advice,) if advice else (),
    )


def write_folder_atomically(target: Path, outputs: Mapping[str, bytes]) -> tuple[BuiltFile, ...]:
    """Write every file into a fresh folder, then swap it in place of `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        files = []
        for name, data in outputs.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)  # a name may hold a folder: `a/b`
            path.write_bytes(data)
            files.append(BuiltFile(target / name, len(data)))
        retired = None
        if target.exists():
            retired = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, retired)
        os.replace(staging, target)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return tuple(files)
