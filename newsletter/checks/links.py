"""Link checks: every distinct URL of the HTML and text parts, checked concurrently with httpx.

A URL is asked for with HEAD; a failed HEAD is asked again with GET, because many servers answer
HEAD wrongly (405, 501, sometimes 403/404/503) while serving the page. Redirects are followed one
hop at a time, so the chain can be reported. Requests to one host run at most `per_host` at a time,
every request has its own timeout, and the whole check ends when `total_timeout` runs out:
whatever has not answered by then is reported as timed out, so one hanging server cannot stall
the check. Good answers are cached on disk for a few minutes, so running the check again right
after fixing something is quick; failures are never cached, they are asked again every time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from .. import __version__
from ..clicks import redirect_url
from ..config import CACHE_DIR_NAME
from ..linktags import text_urls
from .cachefile import read_cache, write_cache
from .context import SLOT_MARKER, CheckContext
from .model import Finding, Severity

if TYPE_CHECKING:
    import httpx

CACHE_DIR = CACHE_DIR_NAME
CACHE_FILE = "links.json"
CACHE_TTL = 600.0  # seconds: long enough for an edit-and-recheck loop, short enough to be fresh
PER_HOST = 2
MAX_CONNECTIONS = 10
MAX_REDIRECTS = 10
REQUEST_TIMEOUT = 10.0
SLOW_SECONDS = 5.0
USER_AGENT = f"newsletter-link-check/{__version__} (checks links before an email is sent)"
REDIRECTS = {301, 302, 303, 307, 308}
# Answers that say "not to robots" rather than "broken": reported as warnings.
REFUSALS = {429: "Too Many Requests", 999: "Request denied (bot protection)"}

_RESERVED_TLDS = ("example", "test", "invalid", "localhost")
_EXAMPLE_DOMAINS = ("example.org", "example.com", "example.net")

T = TypeVar("T")


@dataclass(frozen=True)
class LinkResult:
    """What asking for one URL gave: a status (after redirects) or an error."""

    url: str
    status: int | None = None
    reason: str = ""
    chain: tuple[str, ...] = ()  # the URLs redirected to, in order
    error: str | None = None  # dns, tls, timeout, connect, redirects, invalid, failed, unchecked
    detail: str = ""
    method: str = "HEAD"
    content_type: str | None = None
    content_length: int | None = None
    elapsed: float = 0.0
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and self.status < 400

    @property
    def final_url(self) -> str:
        return self.chain[-1] if self.chain else self.url


# --- cache ----------------------------------------------------------------------------------------


@dataclass
class LinkCache:
    """Good answers per URL, kept `ttl` seconds in a JSON file (None: in memory only)."""

    path: Path | None
    ttl: float = CACHE_TTL
    clock: Callable[[], float] = time.time
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(
        cls, path: Path | None, *, ttl: float = CACHE_TTL, clock: Callable[[], float] = time.time
    ) -> LinkCache:
        cache = cls(path, ttl, clock)
        if path is None:
            return cache
        now = clock()
        for url, entry in read_cache(path).items():
            fresh = (
                isinstance(entry, dict)
                and isinstance(entry.get("checked_at"), int | float)
                and 0 <= now - entry["checked_at"] < ttl
            )
            if fresh:
                cache.entries[url] = entry
        return cache

    def get(self, url: str) -> LinkResult | None:
        entry = self.entries.get(url)
        if entry is None or not 0 <= self.clock() - entry["checked_at"] < self.ttl:
            return None
        try:
            result = entry["result"]
            return LinkResult(
                url=str(result["url"]),
                status=result.get("status"),
                reason=str(result.get("reason", "")),
                chain=tuple(result.get("chain", ())),
                method=str(result.get("method", "HEAD")),
                content_type=result.get("content_type"),
                content_length=result.get("content_length"),
                elapsed=float(result.get("elapsed", 0.0)),
                cached=True,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, result: LinkResult) -> None:
        if result.ok:
            record = asdict(result)
            record.pop("cached", None)
            self.entries[result.url] = {"checked_at": self.clock(), "result": record}

    def save(self) -> None:
        if self.path is None:
            return
        write_cache(self.path, self.entries)


def cache_path(root: Path) -> Path:
    return root / CACHE_DIR / CACHE_FILE


# --- asking the network -------------------------------------------------------------------------


@dataclass
class _Limits:
    per_host: int
    semaphores: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    def for_host(self, url: str) -> asyncio.Semaphore:
        host = (urlsplit(url).hostname or "").lower()
        if host not in self.semaphores:
            self.semaphores[host] = asyncio.Semaphore(self.per_host)
        return self.semaphores[host]


async def check_urls(
    urls: Iterable[str],
    *,
    client: httpx.AsyncClient | None = None,
    total_timeout: float = 20.0,
    request_timeout: float = REQUEST_TIMEOUT,
    per_host: int = PER_HOST,
    max_redirects: int = MAX_REDIRECTS,
    cache: LinkCache | None = None,
) -> dict[str, LinkResult]:
    """Ask for every URL concurrently; returns a result for each, within `total_timeout`."""
    wanted = list(dict.fromkeys(urls))
    results: dict[str, LinkResult] = {}
    pending: list[str] = []
    for url in wanted:
        cached = cache.get(url) if cache is not None else None
        if cached is not None:
            results[url] = cached
        else:
            pending.append(url)
    if not pending:
        return results
    # httpx (0.2-0.4 s of imports) only when a link is asked for: a check whose links are all
    # cached, or a send whose check is cached, never loads it.
    import httpx  # noqa: PLC0415 (heavy, only asking for a link needs it)

    own_client = client is None
    if client is None:
        client = httpx.AsyncClient(
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS),
        )
    limits = _Limits(per_host)
    started: set[str] = set()
    timeout = min(request_timeout, total_timeout)

    async def one(url: str) -> LinkResult:
        return await _follow(client, url, limits, timeout, max_redirects, started)

    tasks = {url: asyncio.ensure_future(one(url)) for url in pending}
    try:
        if tasks:
            await asyncio.wait(tasks.values(), timeout=total_timeout)
        for url, task in tasks.items():
            if task.done() and not task.cancelled() and task.exception() is None:
                results[url] = task.result()
            elif task.done() and not task.cancelled():
                error = task.exception()
                results[url] = LinkResult(url, error="failed", detail=str(error))
            else:
                task.cancel()
                results[url] = LinkResult(
                    url,
                    error="timeout" if url in started else "unchecked",
                    detail=f"no answer within the check's time bound of {total_timeout:g} s",
                    elapsed=total_timeout,
                )
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    finally:
        if own_client:
            await client.aclose()
    if cache is not None:
        for url in pending:
            cache.put(results[url])
        cache.save()
    return {url: results[url] for url in wanted}


async def _follow(
    client: httpx.AsyncClient,
    url: str,
    limits: _Limits,
    timeout: float,
    max_redirects: int,
    started: set[str],
) -> LinkResult:
    """Ask for `url`, following redirects hop by hop."""
    import httpx  # noqa: PLC0415 (heavy; loaded already by check_urls)

    began = time.monotonic()
    chain: list[str] = []
    current = url
    seen = {url}
    method = "HEAD"
    while True:
        async with limits.for_host(current):
            started.add(url)
            try:
                method, response = await _ask(client, current, timeout)
            except httpx.HTTPError as err:
                kind, detail = classify_error(err)
                return LinkResult(
                    url,
                    chain=tuple(chain),
                    error=kind,
                    detail=detail,
                    method=method,
                    elapsed=time.monotonic() - began,
                )
        location = response.headers.get("location")
        if response.status_code in REDIRECTS and location:
            try:
                target = str(httpx.URL(current).join(location))
            except httpx.InvalidURL as err:
                return LinkResult(url, chain=tuple(chain), error="invalid", detail=str(err))
            chain.append(target)
            if target in seen:
                return LinkResult(
                    url, chain=tuple(chain), error="redirects", detail="redirects in a loop"
                )
            if len(chain) > max_redirects:
                return LinkResult(
                    url,
                    chain=tuple(chain),
                    error="redirects",
                    detail=f"more than {max_redirects} redirects",
                )
            seen.add(target)
            current = target
            continue
        length = response.headers.get("content-length")
        return LinkResult(
            url,
            status=response.status_code,
            reason=response.reason_phrase,
            chain=tuple(chain),
            method=method,
            content_type=response.headers.get("content-type"),
            content_length=int(length) if length and length.isdigit() else None,
            elapsed=time.monotonic() - began,
        )


async def _ask(client: httpx.AsyncClient, url: str, timeout: float) -> tuple[str, httpx.Response]:
    """HEAD, and GET when HEAD fails; a GET's body is never downloaded."""
    import httpx  # noqa: PLC0415 (heavy; loaded already by check_urls)

    try:
        response = await client.request("HEAD", url, follow_redirects=False, timeout=timeout)
        if response.status_code < 400:
            return "HEAD", response
    except (httpx.TimeoutException, httpx.ConnectError, httpx.UnsupportedProtocol):
        raise  # GET would fail the same way, and a second wait could blow the time bound
    except httpx.TransportError:
        pass  # some servers drop the connection on HEAD: try GET
    async with client.stream("GET", url, follow_redirects=False, timeout=timeout) as response:
        return "GET", response


def classify_error(err: httpx.HTTPError) -> tuple[str, str]:
    """`(kind, detail)` of a failed request: dns, tls, timeout, connect, invalid or failed."""
    import httpx  # noqa: PLC0415 (heavy; loaded already by check_urls)

    causes = list(_causes(err))
    if isinstance(err, httpx.TimeoutException):
        return "timeout", f"no answer within the per-request timeout ({type(err).__name__})"
    for cause in causes:
        if isinstance(cause, socket.gaierror):
            return "dns", f"the host name does not resolve ({cause.strerror or cause})"
        if isinstance(cause, ssl.SSLError):
            reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None)
            return "tls", f"TLS failed: {reason or cause}"
    text = " ".join(str(cause) for cause in causes)
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
        return "tls", f"TLS failed: {err}"
    if any(
        phrase in text
        for phrase in ("Name or service not known", "nodename nor servname", "name resolution")
    ):
        return "dns", f"the host name does not resolve ({err})"
    if isinstance(err, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return "invalid", str(err)
    if isinstance(err, httpx.ConnectError):
        return "connect", f"cannot connect ({err})"
    return "failed", f"{type(err).__name__}: {err}"


def _causes(err: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException] = [err]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code, also when the caller is inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


# --- turning URLs and results into findings -----------------------------------------------------


@dataclass(frozen=True)
class LinkPlan:
    """The URLs to check and what can be said about them without the network."""

    fetch: tuple[str, ...]
    findings: tuple[Finding, ...]


def is_placeholder_host(host: str) -> bool:
    """example.org/.com/.net, their subdomains, *.example.*, and the reserved test TLDs."""
    name = host.lower().rstrip(".")
    labels = name.split(".")
    if labels[-1] in _RESERVED_TLDS and labels[-1] != "localhost":
        return True
    if any(name == d or name.endswith("." + d) for d in _EXAMPLE_DOMAINS):
        return True
    return "example" in labels[:-1]


def is_local_host(host: str) -> bool:
    """This computer or a private network: localhost, 127.x, ::1, 10.x, 192.168.x..."""
    name = host.lower().rstrip(".").strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def page_urls(context: CheckContext) -> list[str]:
    """Every link target of the HTML and text parts, in order of appearance, once each."""
    urls = [link.href.strip() for link in context.scan.links]
    urls += text_urls(context.text)
    # Counted links are checked where they lead: their redirects answer only once recorded.
    base_url = context.settings.base_url or ""
    final = {
        redirect_url(base_url, context.rendered.name, link.number): link.target
        for link in context.rendered.click_links
    }
    return list(dict.fromkeys(final.get(url, url) for url in urls if url))


def plan_links(
    context: CheckContext,
    urls: list[str],
    *,
    offline: bool,
    allow_loopback: bool,
    kind: str = "link",
) -> LinkPlan:
    """Findings that need no network, and the URLs worth asking for (`kind`: link or image)."""
    findings: list[Finding] = []
    fetch: list[str] = []
    web_url = context.web_url.split("?", 1)[0]
    for url in urls:
        marker = SLOT_MARKER.search(url)
        if marker is not None:
            slot = context.slot_in(url)
            # Flagged when the value comes before any scheme: it decides what the link does.
            before = url[: marker.start()]
            if slot is not None and slot.field is not None and not any(c in before for c in ":/?#"):
                where = context.locator.find(f"]({{{{ {slot.path}", f'="{{{{ {slot.path}')
                findings.append(
                    Finding(
                        "warning",
                        f"{kind}-from-subscriber",
                        f"the {kind} address is {{{{ {slot.path} }}}}: a subscriber's value "
                        "decides where it goes (values that are not http(s), mailto or tel "
                        "become '#')",
                        where.file,
                        where.line,
                        url,
                    )
                )
            continue  # per-recipient (the unsubscribe link): differs per subscriber
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme in ("mailto", "tel", "sms", "cid", "data") or url.startswith("#"):
            continue
        where = context.locator.url(url)
        if scheme not in ("http", "https"):
            # An email has no address of its own: a relative link or one without a scheme
            # opens nothing, so it is an error (send refuses it), with the likely fix.
            bare = re.match(
                r"^(?:www\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?:[/?#]|$)", url, re.I
            )
            fix = (
                f"; write the full address: https://{url}"
                if bare and not scheme
                else "; write the full address, starting with https://"
            )
            findings.append(
                Finding(
                    "error",
                    f"{kind}-relative",
                    f"{kind} '{url}' is not a full http(s) URL: in an email it goes nowhere{fix}",
                    where.file,
                    where.line,
                    url,
                )
            )
            continue
        if web_url and url.split("?", 1)[0] == web_url:
            continue  # the web version is published with the issue, after the check
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            host = ""
        if not host:
            findings.append(
                Finding(
                    "error",
                    f"{kind}-invalid",
                    f"{kind} '{url}' has no host name",
                    where.file,
                    where.line,
                    url,
                )
            )
            continue
        if scheme == "http":
            findings.append(
                Finding(
                    "warning",
                    f"{kind}-insecure",
                    f"{kind} uses http://, not https://: {url}",
                    where.file,
                    where.line,
                    url,
                )
            )
        if is_placeholder_host(host):
            findings.append(
                Finding(
                    "warning",
                    f"{kind}-example",
                    f"{kind} on a placeholder domain ({host}), not a real site: {url}",
                    where.file,
                    where.line,
                    url,
                )
            )
            continue  # reserved names never resolve: asking would only add a DNS error
        if is_local_host(host) and not allow_loopback:
            findings.append(
                Finding(
                    "warning",
                    f"{kind}-localhost",
                    f"{kind} on this computer or a private network ({host}); readers cannot "
                    f"open it: {url}",
                    where.file,
                    where.line,
                    url,
                )
            )
            continue
        fetch.append(url)
    if offline and fetch and kind == "link":
        findings.append(
            Finding(
                "info",
                "links-offline",
                f"{len(fetch)} link(s) not checked over the network (offline)",
            )
        )
    return LinkPlan(tuple(dict.fromkeys(fetch)), tuple(findings))


def result_findings(
    context: CheckContext, results: dict[str, LinkResult], urls: Iterable[str]
) -> list[Finding]:
    """Findings from network answers for the page links `urls`."""
    findings: list[Finding] = []
    for url in urls:
        result = results.get(url)
        if result is None:
            continue
        where = context.locator.url(url)
        for severity, code, message in _judge(url, result):
            findings.append(Finding(severity, code, message, where.file, where.line, url))
    return findings


def _judge(url: str, result: LinkResult) -> list[tuple[Severity, str, str]]:
    """(severity, code, message) for one answer."""
    hops = " → ".join((url, *result.chain))
    error, detail = result.error, result.detail
    said: list[tuple[Severity, str, str]] = []
    if error == "unchecked":
        said.append(("warning", "link-unchecked", f"link not checked ({detail}): {url}"))
    elif error == "timeout":
        said.append(("error", "link-timeout", f"link timed out ({detail}): {url}"))
    elif error == "dns":
        said.append(("error", "link-dns", f"link's host name does not resolve ({detail}): {url}"))
    elif error == "tls":
        said.append(("error", "link-tls", f"link's secure connection fails ({detail}): {url}"))
    elif error == "connect":
        said.append(
            ("error", "link-unreachable", f"link's server cannot be reached ({detail}): {url}")
        )
    elif error == "redirects":
        said.append(("error", "link-redirects", f"link {detail}: {hops}"))
    elif error is not None:
        said.append(("error", "link-failed", f"link could not be checked ({detail}): {url}"))
    elif result.status in REFUSALS:
        reason = result.reason or REFUSALS[result.status]
        said.append(
            (
                "warning",
                "link-refused",
                f"link's server refused the check ({result.status} {reason}); "
                f"open it by hand: {url}",
            )
        )
    elif result.status is not None and result.status >= 400:
        status = f"{result.status} {result.reason}".rstrip()
        said.append(("error", "link-broken", f"link returns {status}: {hops}"))
    if result.chain and error is None:
        if not same_site(url, result.final_url):
            said.append(
                ("warning", "link-redirect-domain", f"link redirects to another domain: {hops}")
            )
        else:
            said.append(("info", "link-redirect", f"link redirects: {hops}"))
    if result.ok and result.elapsed > SLOW_SECONDS:
        said.append(("info", "link-slow", f"link took {result.elapsed:.1f} s to answer: {url}"))
    return said


def same_site(first: str, second: str) -> bool:
    """Same host, ignoring `www.`, or one a subdomain of the other."""
    a = (urlsplit(first).hostname or "").lower().removeprefix("www.")
    b = (urlsplit(second).hostname or "").lower().removeprefix("www.")
    return a == b or a.endswith("." + b) or b.endswith("." + a)
