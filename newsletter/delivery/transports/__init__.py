"""Transports by name: `make_transport(settings)` builds the one `[transport] kind` names.

Provider transports are listed in the one registry, `newsletter/providers.py` (kind → module and
class, and the rules for their settings, which the config checks at load time). Each lives in
its own module (`<kind>.py`, class `<Name>Transport`, a subclass of
`_http.HttpProviderTransport`) and is imported only when chosen. Each is built with
`<Name>Transport.from_settings(transport_settings, os.environ, config_path=...)`, which reads its
secrets from the environment and raises `ConfigError` naming a missing variable before anything
is sent. The constructor convention is `<Name>Transport(settings, *, api_key=..., client=None)`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ...config import Settings
from ...config_reader import located
from ...errors import ConfigError, Problem
from ...providers import PROVIDERS
from .base import Transport
from .outbox import OutboxTransport
from .smtp import SmtpTransport

if TYPE_CHECKING:  # httpx (heavy) is imported only when a provider transport is chosen
    from ._http import HttpProviderTransport

__all__ = ["describe_transport", "make_transport", "provider_class"]


def provider_class(kind: str) -> type[HttpProviderTransport]:
    """The transport class of provider `kind` (`KeyError` for a kind not in the registry)."""
    # Deferred: importing _http imports httpx, which a project sending by SMTP never needs.
    from ._http import HttpProviderTransport  # noqa: PLC0415 (httpx is heavy; see above)

    provider = PROVIDERS[kind]
    module = importlib.import_module(provider.import_path)
    found = getattr(module, provider.class_name)
    if not (isinstance(found, type) and issubclass(found, HttpProviderTransport)):
        raise TypeError(f"{module.__name__}.{provider.class_name} is not an HttpProviderTransport")
    return found


def make_transport(settings: Settings, environ: Mapping[str, str] = os.environ) -> Transport:
    """The configured transport; a missing password or key is an error before anything is sent
    (naming the file, line and key)."""
    try:
        return _make_transport(settings, environ)
    except ConfigError as err:
        raise ConfigError(located(err.problems, settings.config_path), hint=err.hint) from err


def _make_transport(settings: Settings, environ: Mapping[str, str]) -> Transport:
    transport = settings.transport
    if transport.ca_file and not Path(transport.ca_file).is_absolute():
        transport = replace(transport, ca_file=str(settings.root / transport.ca_file))
    if transport.kind == "outbox":
        folder = Path(transport.path)
        return OutboxTransport(folder if folder.is_absolute() else settings.root / folder)
    if transport.kind == "smtp":
        password = None
        if transport.username:
            password = environ.get(transport.password_env)
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
        return SmtpTransport(transport, password=password)
    if transport.kind in PROVIDERS:
        cls = _provider_or_error(settings)
        return cls.from_settings(transport, environ, config_path=settings.config_path)
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
    if transport.kind in PROVIDERS:
        return _provider_or_error(settings).describe_settings(transport)
    return transport.kind


def _provider_or_error(settings: Settings) -> type[HttpProviderTransport]:
    kind = settings.transport.kind
    try:
        return provider_class(kind)
    except ModuleNotFoundError as err:
        if err.name != PROVIDERS[kind].import_path:
            raise
        raise ConfigError(
            [
                Problem(
                    f"the '{kind}' transport is not available in this version",
                    file=settings.config_path,
                    key="transport.kind",
                )
            ]
        ) from err
