"""Request bodies read with a size limit: the one reader of every form and JSON POST of `serve`."""

from __future__ import annotations

import contextlib

from starlette.requests import Request

__all__ = ["BodyTooLarge", "drain", "read_body"]


class BodyTooLarge(Exception):
    """The body (declared or streamed) is longer than the limit."""


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (`BodyTooLarge`) as soon as it is known to exceed `limit` bytes:
    by its Content-Length, or while it streams in (a client may lie or send chunks)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return body


async def drain(request: Request, limit: int) -> None:
    """Read (and drop) a bounded request body, so the connection can be reused."""
    with contextlib.suppress(BodyTooLarge):
        await read_body(request, limit)
