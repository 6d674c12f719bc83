"""The web side of `newsletter serve`: one-click unsubscribe and its pages (`app`), the archive
of sent issues with its feed and hosted images (`archive`), served by uvicorn (`server`)."""

from __future__ import annotations

from .app import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ServeError,
    ServeSettings,
    WebEvent,
    create_app,
    parse_form,
    parse_serve_table,
    unsubscribe_path,
)
from .server import HEADER_TIMEOUT, WebServer, serve

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "HEADER_TIMEOUT",
    "ServeError",
    "ServeSettings",
    "WebEvent",
    "WebServer",
    "create_app",
    "parse_form",
    "parse_serve_table",
    "serve",
    "unsubscribe_path",
]
