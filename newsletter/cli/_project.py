"""What several commands need from the project: its root, settings, signing secret, template."""

from __future__ import annotations

from pathlib import Path

from ..audience import make_token
from ..config import Settings, find_project_root, load_settings
from ..delivery.message import MessageTemplate
from ..errors import ProjectError
from ..render.model import RenderedIssue
from ._output import err_console


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
    return MessageTemplate.prepare(rendered, settings, secret=secret, token_for=make_token)
