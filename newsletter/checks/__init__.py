"""`newsletter check`: the pre-send quality gate.

`check_issue` reads a loaded and rendered issue and returns a `CheckReport` of findings (errors,
warnings, infos), each naming the file and line it concerns where the sources allow. It never
prints. Checks: links (network unless offline), images, size and completeness, spam score
(SpamAssassin, when installed), accessibility.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from ..config import Settings
from ..content import Issue
from ..errors import NewsletterError
from ..render.model import RenderedIssue
from .accessibility import check_accessibility
from .context import CheckContext
from .images import check_images, remote_image_findings, remote_image_urls
from .links import (
    CACHE_TTL,
    LinkCache,
    LinkResult,
    cache_path,
    check_urls,
    page_urls,
    plan_links,
    result_findings,
    run_sync,
)
from .model import CheckReport, Finding, Severity
from .size import check_size
from .spam import SPAM_TIMEOUT, build_sample_message, check_spam

__all__ = ["CheckReport", "Finding", "LinkResult", "Severity", "check_issue"]


def check_issue(
    issue: Issue,
    rendered: RenderedIssue,
    settings: Settings,
    *,
    offline: bool = False,
    link_timeout_total: float = 20.0,
    client: httpx.AsyncClient | None = None,
    spamassassin: str | None = "spamassassin",
    sample_message: bytes | None = None,
    allow_loopback: bool = False,
    use_cache: bool = True,
    clock: Callable[[], float] = time.time,
    spam_timeout: float = SPAM_TIMEOUT,
) -> CheckReport:
    """Check `issue` (rendered as `rendered`) before it is sent.

    `offline` skips every network request (placeholder and http:// links are still reported).
    `link_timeout_total` bounds the whole link check in seconds. `spamassassin` is the program
    to score the message with (None: skip the spam check); `sample_message` is the message to
    score (built from `rendered` when None). `allow_loopback` checks links to 127.0.0.1 and
    localhost like any other instead of warning about them (for tests). Good link answers are
    cached in `<root>/.newsletter-cache/links.json` for ten minutes unless `use_cache` is False.
    """
    context = CheckContext.build(issue, rendered, settings)
    findings: list[Finding] = []
    findings += check_size(context)
    findings += check_images(context)
    findings += check_accessibility(context)

    urls = page_urls(context)
    plan = plan_links(context, urls, offline=offline, allow_loopback=allow_loopback)
    findings += plan.findings
    image_plan = plan_links(
        context, remote_image_urls(context), offline=offline, allow_loopback=allow_loopback
    )
    # Placeholder/insecure image addresses are reported like links; "not checked" only once.
    findings += [f for f in image_plan.findings if f.code != "links-offline"]
    if not offline and (plan.fetch or image_plan.fetch):
        cache = (
            LinkCache.load(cache_path(settings.root), ttl=CACHE_TTL, clock=clock)
            if use_cache
            else None
        )
        results = run_sync(
            lambda: check_urls(
                [*plan.fetch, *image_plan.fetch],
                client=client,
                total_timeout=link_timeout_total,
                cache=cache,
            )
        )
        findings += result_findings(context, results, plan.fetch)
        findings += remote_image_findings(context, results, list(image_plan.fetch))

    message = sample_message
    reason: str | None = None
    if message is None and spamassassin:
        try:
            message = build_sample_message(rendered, settings)
        except NewsletterError as err:
            reason = err.message.splitlines()[0]
    findings += check_spam(
        message,
        spamassassin,
        issue_file=issue.path,
        timeout=spam_timeout,
        reason_missing=reason,
    )
    return CheckReport.of(rendered.name, findings)
