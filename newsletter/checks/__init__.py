"""`newsletter check`: the pre-send quality gate.

`check_issue` reads a loaded and rendered issue and returns a `CheckReport` of findings (errors,
warnings, infos), each naming the file and line it concerns where the sources allow. It never
prints. Checks: links (network unless offline), images, size and completeness, spam score
(SpamAssassin, when installed), accessibility, sender authentication (from the settings), and
whether the issue's audience has anybody in it.

`check_issue` lives in `run` and is loaded on first use: importing this package (or `reuse`,
which a `send` right after a `check` of the same content uses instead) loads none of the checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .model import CheckReport, Finding, Severity

if TYPE_CHECKING:
    from .links import LinkResult
    from .run import check_issue, check_issue_async

__all__ = ["CheckReport", "Finding", "LinkResult", "Severity", "check_issue", "check_issue_async"]


def __getattr__(name: str) -> Any:
    # Every check, asyncio and the link checker load with the first `check_issue` (see above).
    if name in ("check_issue", "check_issue_async"):
        from . import run  # noqa: PLC0415 (heavy: only a check that runs needs it)

        return getattr(run, name)
    if name == "LinkResult":
        from .links import LinkResult  # noqa: PLC0415 (beside check_issue)

        return LinkResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
