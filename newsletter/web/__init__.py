"""The web side of `newsletter serve`: one-click unsubscribe, its pages, the issue archive."""

from __future__ import annotations

from .app import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ServeError,
    ServeSettings,
    WebEvent,
    WebServer,
    create_app,
    parse_form,
    parse_serve_table,
    serve,
    unsubscribe_path,
)

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
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
