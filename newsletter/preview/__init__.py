"""The live preview: a local web page showing an issue as a subscriber gets it, rebuilt on save.

The preview knows nothing of Markdown, templates or checks: it is given a `rebuild` callable
returning a `PreviewBuild` and the paths to watch (the CLI composes both for a project, in
`newsletter/cli/preview_project.py`). When a watched file changes it runs `rebuild` in a thread,
swaps the new build in whole (or keeps the last good one and shows the problems), and tells the
page over Server-Sent Events, which reloads the email frame.

- `model`: what a rebuild returns and what the server reports;
- `watch`: the file watcher;
- `hub`: the state and the rebuild loop;
- `app`: the Starlette app, and the page (`page.html`, `page.css`, `page.js`);
- `server`: uvicorn on a local port.
"""

from __future__ import annotations

from .app import LOCAL_HOSTS, create_app
from .model import (
    HOSTILE_SAMPLE,
    NO_NAME_SAMPLE,
    EventCallback,
    PreviewBuild,
    PreviewEvent,
    PreviewFailure,
    PreviewImage,
    PreviewSample,
    Rebuild,
    default_samples,
    failure_from,
)
from .server import DEFAULT_HOST, DEFAULT_PORT, PreviewError, PreviewServer, serve_preview
from .watch import DEFAULT_DEBOUNCE_MS

__all__ = [
    "DEFAULT_DEBOUNCE_MS",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "HOSTILE_SAMPLE",
    "LOCAL_HOSTS",
    "NO_NAME_SAMPLE",
    "EventCallback",
    "PreviewBuild",
    "PreviewError",
    "PreviewEvent",
    "PreviewFailure",
    "PreviewImage",
    "PreviewSample",
    "PreviewServer",
    "Rebuild",
    "create_app",
    "default_samples",
    "failure_from",
    "serve_preview",
]
