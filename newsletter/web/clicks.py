"""`GET /c/<issue>/<n>`: count one click on link n of an issue and redirect to its target.

The target is the one recorded in the store when the issue was sent (newsletter/clicks.py):
nothing in the request can change it (a query string is ignored), and a number that was never
recorded is a 404, so this is no open redirect. Nothing about the request is kept: no cookie is
set, and no address, IP or browser is stored, only the link's count goes up by one.

A HEAD request (link checkers, some mail scanners) is answered like a GET but not counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..clicks import CLICK_PREFIX, count_click, link_counts
from ..store import Store, StoreError

__all__ = ["click_routes"]

_ISSUE_LENGTH = 255  # any issue folder name works (it is only a key to look up); bounded
_NUMBER = re.compile(r"^[1-9][0-9]{0,8}$")
_HEADER_SAFE = re.compile(r"^https?://[\x21-\x7e]+$", re.IGNORECASE)
_HEADERS = {
    "Cache-Control": "no-store",  # every click reaches us; no proxy answers for us
    "Referrer-Policy": "no-referrer",  # the target learns nothing of this URL
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
}


def click_routes(store: Callable[[], Store]) -> list[Route]:
    """The redirect route, reading and counting in the store `store()` returns."""

    def target(issue: str, number: int, *, count: bool) -> str | None:
        database = store()
        if count:
            return count_click(database, issue, number)
        found = [c for c in link_counts(database, issue) if c.link.number == number]
        return found[0].link.target if found else None

    async def redirect(request: Request) -> Response:
        issue = request.path_params["issue"]
        number = request.path_params["number"]
        if len(issue) > _ISSUE_LENGTH or not _NUMBER.match(number):
            raise HTTPException(404)
        failures: tuple[type[Exception], ...] = (StoreError, *store().errors)
        try:
            found = await run_in_threadpool(
                target, issue, int(number), count=request.method == "GET"
            )
        except failures:
            # The store stayed locked past its busy timeout: the reader may try again.
            return Response(
                "Busy, please try again.\n",
                status_code=503,
                media_type="text/plain",
                headers={"Retry-After": "5", **_HEADERS},
            )
        if found is None or not _HEADER_SAFE.match(found):
            raise HTTPException(404)
        # The recorded target as it is (printable ASCII: nothing can be added to the header).
        return Response(status_code=302, headers={"Location": found, **_HEADERS})

    return [Route(f"/{CLICK_PREFIX}/{{issue}}/{{number}}", redirect, methods=["GET"], name="click")]
