"""Transports by name: `make_transport(settings)` builds the one `[transport] kind` names."""

from __future__ import annotations

import os
from pathlib import Path

from ...config import Settings
from ...errors import ConfigError, Problem
from .base import Transport


def make_transport(settings: Settings) -> Transport:
    """The configured transport; a missing password is an error before anything is sent."""
    transport = settings.transport
    if transport.kind == "outbox":
        from .outbox import OutboxTransport

        folder = Path(transport.path)
        return OutboxTransport(folder if folder.is_absolute() else settings.root / folder)
    if transport.kind == "smtp":
        from .smtp import SmtpTransport

        password = None
        if transport.username:
            password = os.environ.get(transport.password_env)
            if not password:
                raise ConfigError(
                    [
                        Problem(
                            f"is set, so the SMTP password must be in the environment variable "
                            f"{transport.password_env}, which is empty or not set",
                            file=settings.config_path,
                            key="transport.username",
                        )
                    ]
                )
        if transport.ca_file and not Path(transport.ca_file).is_absolute():
            from dataclasses import replace

            transport = replace(transport, ca_file=str(settings.root / transport.ca_file))
        return SmtpTransport(transport, password=password)
    raise ConfigError(
        [
            Problem(
                f"unknown transport '{transport.kind}'",
                file=settings.config_path,
                key="transport.kind",
            )
        ]
    )


def describe_transport(settings: Settings) -> str:
    """A short description for the send summary, never including secrets."""
    transport = settings.transport
    if transport.kind == "outbox":
        return f"outbox (writes .eml files to {transport.path}/)"
    if transport.kind == "smtp":
        user = f" as {transport.username}" if transport.username else ""
        return f"smtp {transport.host}:{transport.port} ({transport.security}){user}"
    return transport.kind
