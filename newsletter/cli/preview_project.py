"""A project's preview: the rebuild callable and the paths to watch that `newsletter preview`
hands the preview server.

This is where the renderer meets the preview: the server (`newsletter.preview`) only ever calls
the rebuild it is given, so it never imports render, build or checks.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..audience import Subscriber
from ..checks import check_issue
from ..config import Settings, load_settings
from ..content import load_issue
from ..preview import PreviewBuild, PreviewImage, PreviewSample, Rebuild, default_samples
from ..preview.texts import page_texts
from ..render import render_issue
from ..render.model import RenderedIssue
from ..render.samples import sample_filler

__all__ = ["make_rebuild", "watch_paths_for"]

Samples = Sequence[tuple[str, Mapping[str, str]]]


def watch_paths_for(root: Path, issue_folder: Path) -> list[Path]:
    """What the preview of one issue watches: the issue, the theme overrides, config and images."""
    return [
        issue_folder,
        root / "templates",
        root / "newsletter.toml",
        root / "images",
        root / "locales",
    ]


def make_rebuild(root: Path, issue_folder: Path, samples: Samples | None = None) -> Rebuild:
    """A rebuild callable for `issue_folder`: settings, content and render, read afresh each call.

    Without `samples`, the page offers the project's sample subscriber (the one `newsletter
    build` and `check` use, named in the project's language), one without a name and a hostile one.
    """

    def rebuild() -> PreviewBuild:
        settings = load_settings(root)
        issue = load_issue(issue_folder)
        rendered = render_issue(issue, settings, preview=True)
        # The offline part of `newsletter check`, beside the email (links and the spam score
        # take seconds: `newsletter check` runs them).
        report = check_issue(issue, rendered, settings, offline=True, spamassassin=None)
        chosen = (
            samples
            if samples is not None
            else default_samples(Subscriber.sample(settings.locale).as_dict(), rendered.language)
        )
        # Rendered images are named after their content (render/images.py): immutable.
        images = [
            PreviewImage(image.filename, image.content_type, image.data, immutable=True)
            for image in rendered.embedded_images
        ] + [
            PreviewImage(image.filename, _content_type(image.filename), image.data, immutable=True)
            for image in rendered.published_images
        ]
        draft_note = page_texts(rendered.language)["draft_note"]
        notes = [draft_note.format(name=name) for name in rendered.draft_items] + [
            f"newsletter.toml: {warning}" for warning in settings.warnings
        ]
        for finding in (*report.errors, *report.warnings):
            where = ""
            if finding.file is not None:
                shown = (
                    finding.file.relative_to(root)
                    if finding.file.is_relative_to(root)
                    else finding.file
                )
                where = f"{shown}:{finding.line}: " if finding.line else f"{shown}: "
            notes.append(f"check {finding.severity}: {where}{finding.message}")
        return PreviewBuild(
            issue_name=rendered.name,
            language=rendered.language,
            sender_name=settings.sender.display_name,
            sender_address=settings.sender.addr_spec,
            preheader=rendered.preheader,
            samples=tuple(_sample(rendered, settings, *each) for each in chosen),
            images=tuple(images),
            notes=tuple(notes),
        )

    return rebuild


def _sample(
    rendered: RenderedIssue, settings: Settings, label: str, subscriber: Mapping[str, str]
) -> PreviewSample:
    """The email as `subscriber` gets it, its images served by the preview."""
    html = rendered.html.fill(sample_filler(rendered, settings, subscriber, html=True))
    for image in rendered.embedded_images:
        html = html.replace(f"cid:{image.cid}", f"/images/{image.filename}")
    if settings.base_url:
        # Published images are not online yet while previewing: serve them from here.
        html = html.replace(f"{settings.base_url}{rendered.name}/", "/images/")
    plain = sample_filler(rendered, settings, subscriber, html=False)
    return PreviewSample(
        label=label,
        subscriber=dict(subscriber),
        subject=rendered.subject.fill(plain),
        html=html,
        text=rendered.text.fill(plain),
    )


def _content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"
