"""A check's report reused for the same content: a `send` right after a `check` checks nothing
again (issue 16). Importing this module loads none of the checks.

`newsletter check` and a send's own check record their report in
`.newsletter-cache/check-reports.json`, under a digest of everything its findings come from:

- what the render read (`render.cache.render_key`: the settings, the issue as loaded, the
  templates, locales and theme, this package's code, the render libraries' versions) and the
  rendered issue itself (its parts, images and counted links: a send with counted links
  renders with their numbers);
- the bytes of newsletter.toml, and the size and modification time of every file in the
  issue's folder (findings name lines);
- whether links were checked over the network (`offline`), and the SpamAssassin found: the
  program and its configuration and rules, as the spam score's own cache keys it
  (`checks.spamid`), so a rule update also checks again.

A report is reused for `REUSE_FOR` seconds (the link cache's ten minutes; a reused report's link
answers were at most that old when it was made) and only when it found no error: an error
stops the send, and whoever fixed its cause (a site back up) expects the next send to look
again. The audience findings are never reused: they depend on the subscribers, and are
checked again (one row answers). A cache that cannot be read or written only costs a check.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Settings
from ..content import Issue
from ..render.cache import KeyDigest, render_key
from ..render.model import RenderedIssue
from .audience import check_audience
from .cachefile import read_cache, write_cache
from .model import SEVERITIES, CheckReport, Finding
from .spamid import file_signatures, spamassassin_identity

__all__ = ["REPORTS_FILE", "REUSE_FOR", "check_reusing", "record_report", "reused_report"]

REPORTS_FILE = "check-reports.json"
REUSE_FOR = 600.0  # seconds: links.CACHE_TTL, without importing the link checker
KEEP = 16  # reports kept (the newest)
FORMAT = "1"
SPAMASSASSIN = "spamassassin"  # the program `check_issue` scores with by default
# Findings about who is subscribed: checked again at every reuse (checks/audience.py).
AUDIENCE_CODES = frozenset({"audience", "audience-empty"})


def check_reusing(
    issue: Issue,
    rendered: RenderedIssue,
    settings: Settings,
    *,
    offline: bool,
    clock: Callable[[], float] = time.time,
) -> CheckReport:
    """`checks.check_issue`, unless a report of the same content may be reused (see the module's
    docstring): then only the audience is checked again. A report it makes is recorded."""
    found = reused_report(issue, rendered, settings, offline=offline, clock=clock)
    if found is not None:
        return found
    from .run import check_issue  # noqa: PLC0415 (heavy: every check; only a miss runs them)

    report = check_issue(issue, rendered, settings, offline=offline, clock=clock)
    record_report(issue, rendered, settings, report, offline=offline, clock=clock)
    return report


def reused_report(
    issue: Issue,
    rendered: RenderedIssue,
    settings: Settings,
    *,
    offline: bool,
    clock: Callable[[], float] = time.time,
) -> CheckReport | None:
    """The recorded report of this content, with the audience checked now; None when there is
    none to reuse (another content, too old, or it found errors)."""
    key = report_key(issue, rendered, settings, offline=offline)
    entry = read_cache(_path(settings)).get(key)
    if not isinstance(entry, dict):
        return None
    try:
        age = clock() - float(entry["at"])
        findings = [_finding(item) for item in entry["findings"]]
    except (KeyError, TypeError, ValueError):
        return None
    if not 0 <= age < REUSE_FOR or any(finding.severity == "error" for finding in findings):
        return None
    return CheckReport.of(rendered.name, findings + check_audience(issue, settings))


def record_report(
    issue: Issue,
    rendered: RenderedIssue,
    settings: Settings,
    report: CheckReport,
    *,
    offline: bool,
    clock: Callable[[], float] = time.time,
) -> None:
    """Keep `report` (a check of `rendered` with `check_issue`'s defaults but `offline`) for
    `reused_report`; best effort."""
    path = _path(settings)
    now = clock()
    kept = {
        key: entry
        for key, entry in read_cache(path).items()
        if isinstance(entry, dict)
        and isinstance(entry.get("at"), int | float)
        and 0 <= now - entry["at"] < REUSE_FOR
    }
    kept[report_key(issue, rendered, settings, offline=offline)] = {
        "at": now,
        "issue": rendered.name,
        "findings": [f.to_dict() for f in report.findings if f.code not in AUDIENCE_CODES],
    }
    newest = sorted(kept.items(), key=lambda pair: pair[1]["at"], reverse=True)[:KEEP]
    write_cache(path, dict(newest))


def report_key(issue: Issue, rendered: RenderedIssue, settings: Settings, *, offline: bool) -> str:
    """The digest a report is recorded under (see the module's docstring)."""
    digest = KeyDigest()
    add = digest.add
    add("format", FORMAT)
    add("offline", offline)
    add("render", render_key(issue, settings))
    add(
        "rendered",
        (
            rendered.name,
            rendered.fingerprint,
            rendered.preheader,
            rendered.web_html,
            rendered.language,
            rendered.draft_items,
            rendered.click_links,
            [(image.cid, image.filename, image.content_type) for image in rendered.embedded_images],
            [image.filename for image in rendered.published_images],
            rendered.image_sources,
        ),
    )
    for data in [image.data for image in rendered.embedded_images] + [
        image.data for image in rendered.published_images
    ]:
        digest.update(hashlib.sha256(data).digest())
    add("config", _content(settings.config_path))
    add("issue files", file_signatures(issue.folder))
    program = shutil.which(SPAMASSASSIN)
    add("spamassassin", spamassassin_identity(program) if program is not None else None)
    return digest.hexdigest()


def _path(settings: Settings) -> Path:
    return settings.cache_dir / REPORTS_FILE


def _finding(item: Any) -> Finding:
    severity = item["severity"]
    if severity not in SEVERITIES:
        raise ValueError(severity)
    return Finding(
        severity,
        str(item["code"]),
        str(item["message"]),
        Path(item["file"]) if item["file"] is not None else None,
        int(item["line"]) if item["line"] is not None else None,
        str(item["url"]) if item["url"] is not None else None,
    )


def _content(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""
