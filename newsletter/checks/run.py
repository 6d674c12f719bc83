"""`check_issue`: every check, run on a loaded and rendered issue (see the package's docstring).

Imported on first use (`newsletter.checks` names it lazily): it loads every check, asyncio and
the link checker, which a `send` that reuses the report of a `check` just run never needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..audience import Subscriber
from ..config import Settings
from ..content import Issue
from ..errors import NewsletterError
from ..render.model import RenderedIssue
from ..render.samples import missing_sample_values
from .accessibility import check_accessibility
from .audience import check_audience
from .authentication import check_authentication
from .context import CheckContext
from .images import check_images, remote_image_findings, remote_image_urls
from .links import (
    CACHE_TTL,
    LinkCache,
    cache_path,
    check_urls,
    page_urls,
    plan_links,
    result_findings,
    run_sync,
)
from .masthead import check_logo_contrast
from .model import CheckReport, Finding
from .size import check_size
from .spam import SPAM_CACHE_FILE, SPAM_TIMEOUT, SpamCache, build_sample_message, check_spam

if TYPE_CHECKING:
    import httpx

__all__ = ["check_issue", "check_issue_async"]


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
    cached in `<root>/.newsletter-cache/links.json` for ten minutes, and spam scores in
    `spam.json` per message and SpamAssassin installation (so a `send` right after a `check` of
    the same content neither asks for its links nor runs SpamAssassin again). `use_cache=False`
    asks and scores afresh (and records the new score).

    This runs its own event loop (in a thread when called from inside one). A `client` belongs
    to the loop it is used in: to share one, call `check_issue_async` from that loop instead.
    """
    return run_sync(
        lambda: check_issue_async(
            issue,
            rendered,
            settings,
            offline=offline,
            link_timeout_total=link_timeout_total,
            client=client,
            spamassassin=spamassassin,
            sample_message=sample_message,
            allow_loopback=allow_loopback,
            use_cache=use_cache,
            clock=clock,
            spam_timeout=spam_timeout,
        )
    )


async def check_issue_async(
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
    """`check_issue` for callers inside an event loop (the preview server); same options."""
    context = CheckContext.build(issue, rendered, settings)
    findings: list[Finding] = []
    # What `build` refuses, `check` reports as errors (one code path for both).
    sample = Subscriber.sample(settings.locale).as_dict()
    findings += [
        Finding("error", "template-value", problem.message, problem.file, problem.line)
        for problem in missing_sample_values(rendered, issue, settings, sample)
    ]
    findings += check_size(context)
    findings += check_images(context)
    findings += check_accessibility(context)
    findings += check_authentication(context)
    findings += check_logo_contrast(context)
    findings += check_audience(issue, settings)

    plan = plan_links(context, page_urls(context), offline=offline, allow_loopback=allow_loopback)
    image_plan = plan_links(
        context,
        remote_image_urls(context),
        offline=offline,
        allow_loopback=allow_loopback,
        kind="image",
    )
    findings += plan.findings
    findings += image_plan.findings
    if not offline and (plan.fetch or image_plan.fetch):
        cache = (
            LinkCache.load(cache_path(settings.root), ttl=CACHE_TTL, clock=clock)
            if use_cache
            else None
        )
        results = await check_urls(
            [*plan.fetch, *image_plan.fetch],
            client=client,
            total_timeout=link_timeout_total,
            cache=cache,
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
    # SpamAssassin takes a second or so: off the loop, so a server stays responsive.
    findings += await asyncio.to_thread(
        check_spam,
        message,
        spamassassin,
        issue_file=issue.path,
        timeout=spam_timeout,
        reason_missing=reason,
        cache=SpamCache.load(settings.cache_dir / SPAM_CACHE_FILE, read=use_cache, clock=clock),
    )
    return CheckReport.of(rendered.name, findings)
