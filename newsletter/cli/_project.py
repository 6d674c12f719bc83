"""What several commands need from the project: its root, settings, signing secret, template."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..audience.tokenbook import opaque_token_maker
from ..config import Settings, find_project_root, load_settings
from ..errors import ProjectError
from ._output import err_console

if TYPE_CHECKING:
    from ..delivery.message import MessageTemplate
    from ..render.model import RenderedIssue


def project_root(start: Path | None = None) -> Path:
    """The folder holding newsletter.toml around `start` (the current folder)."""
    root = find_project_root(start)
    if root is None:
        raise ProjectError(
            "no newsletter.toml here or in any parent folder",
            hint="Run 'newsletter init' to create a project, or change to the project folder.",
        )
    return root


def project_settings() -> Settings:
    """The settings of the project around the current folder."""
    settings = load_settings(project_root())
    for warning in settings.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    return settings


def message_template(settings: Settings, rendered: RenderedIssue, secret: bytes) -> MessageTemplate:
    """The message template of a rendered issue, with this project's tokens and secret."""
    from ..delivery.message import MessageTemplate  # noqa: PLC0415 (heavy, only a build needs it)
    from ..delivery.mime import list_identifier  # noqa: PLC0415 (beside MessageTemplate)

    token_for = opaque_token_maker(list_identifier(settings))
    return MessageTemplate.prepare(rendered, settings, secret=secret, token_for=token_for)
