"""What the preview shows: the data a rebuild returns, the failures and events it reports.

These types are all the preview knows of an issue. The caller that composes a rebuild (the CLI,
from settings, content, render and checks) fills them in; the preview never renders anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import NewsletterError, Problem, ProblemsError
from .texts import page_texts

__all__ = [
    "HOSTILE_SAMPLE",
    "NO_NAME_SAMPLE",
    "EventCallback",
    "PreviewBuild",
    "PreviewEvent",
    "PreviewFailure",
    "PreviewImage",
    "PreviewSample",
    "Rebuild",
    "default_samples",
    "failure_from",
]

NO_NAME_SAMPLE: Mapping[str, str] = {
    "email": "reader@example.org",
    "name": "",
    "first_name": "",
    "last_name": "",
}
HOSTILE_SAMPLE: Mapping[str, str] = {
    "email": "soren@example.org",
    "name": 'Søren "Evil" <x@y> <script>alert(1)</script> Kierkegaard-Østergaard-Vandenberghe',
    "first_name": 'Søren "Evil" <x@y> <script>',
    "last_name": "Kierkegaard-Østergaard-Vandenberghe",
}


@dataclass(frozen=True)
class PreviewSample:
    """The email as one sample subscriber gets it: every slot already filled in."""

    label: str
    subscriber: Mapping[str, str]
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class PreviewImage:
    """An image the email shows, served at `/images/<filename>`."""

    filename: str
    content_type: str
    data: bytes
    # The file name changes whenever the bytes do (it holds their hash): the browser may keep
    # the image instead of asking again at every reload (20 photos: 20 requests per save).
    immutable: bool = False


@dataclass(frozen=True)
class PreviewBuild:
    """Everything the preview page shows of one successful rebuild."""

    issue_name: str
    sender_name: str
    sender_address: str
    preheader: str
    samples: tuple[PreviewSample, ...]
    images: tuple[PreviewImage, ...] = ()
    notes: tuple[str, ...] = ()
    language: str = "en"  # the newsletter's: the page speaks it when it can (en, nl)

    def image(self, filename: str) -> PreviewImage | None:
        return next((image for image in self.images if image.filename == filename), None)


@dataclass(frozen=True)
class PreviewFailure:
    """Why the last rebuild failed: a title and every problem as `file:line: message`."""

    title: str
    problems: tuple[str, ...]
    hint: str | None = None


@dataclass(frozen=True)
class PreviewEvent:
    """What the server reports to its caller after each rebuild (the CLI prints it)."""

    kind: Literal["built", "failed"]
    version: int
    seconds: float
    changed: tuple[Path, ...] = ()
    failure: PreviewFailure | None = None


Rebuild = Callable[[], PreviewBuild]
EventCallback = Callable[[PreviewEvent], None]


def default_samples(
    built_in: Mapping[str, str], language: str = "en"
) -> tuple[tuple[str, Mapping[str, str]], ...]:
    """The sample subscribers offered: the project's own, one without a name, a hostile one;
    labelled in `language` (the newsletter's) where the page speaks it."""
    texts = page_texts(language)
    name = built_in.get("name") or built_in.get("email", "sample")
    return (
        (texts["sample_subscriber"].format(name=name), built_in),
        (texts["no_name"], NO_NAME_SAMPLE),
        (texts["hostile_name"], HOSTILE_SAMPLE),
    )


def failure_from(error: BaseException, display_root: Path | None = None) -> PreviewFailure:
    """Every problem of a failed rebuild as `file:line: message`, paths relative to the project."""
    if isinstance(error, ProblemsError):
        title = error.message.splitlines()[0].rstrip(":")
        problems = tuple(str(_relative(problem, display_root)) for problem in error.problems)
        return PreviewFailure(title, problems, error.hint)
    if isinstance(error, NewsletterError):
        return PreviewFailure("The issue cannot be built", (error.message,), error.hint)
    return PreviewFailure(
        "Unexpected error while rebuilding",
        (f"{type(error).__name__}: {error}",),
        "This is a bug in newsletter or in a template; "
        "run 'newsletter --debug build ISSUE' for details.",
    )


def _relative(problem: Problem, root: Path | None) -> Problem:
    if root is None or problem.file is None or not problem.file.is_relative_to(root):
        return problem
    return dataclasses.replace(problem, file=problem.file.relative_to(root))
