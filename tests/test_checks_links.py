from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from newsletter.checks import check_issue
from newsletter.checks.links import (
    CACHE_TTL,
    LinkCache,
    LinkResult,
    cache_path,
    check_urls,
    classify_error,
    is_local_host,
    is_placeholder_host,
    same_site,
)
from newsletter.config import Settings
from newsletter.content import load_issue
from newsletter.render import render_issue
from tests.linkserver import LinkServer, serve_links

TOTAL = 2.0  # the time bound of the shared run; the hang must not hold it up longer
MARGIN = 1.5  # generous: a loaded CI machine is slow, but a hang would take far longer
# The shared run: each URL's result, and the seconds the whole run took.
SharedRun = tuple[dict[str, LinkResult], float]


@pytest.fixture(scope="module")
def server() -> Iterator[LinkServer]:
    with serve_links() as running:
        yield running


@pytest.fixture(scope="module")
def shared_run(server: LinkServer) -> SharedRun:
    """Every route checked in one concurrent run, the hang last, timed."""
    paths = [
        "/good",
        "/missing",
        "/error",
        "/chain/3",
        "/elsewhere",
        "/loop",
        "/head-not-allowed",
        "/slow?seconds=1",
        "/hang",
    ]
    began = time.monotonic()
    results = asyncio.run(
        check_urls([server.url(p) for p in paths], total_timeout=TOTAL, request_timeout=TOTAL)
    )
    return results, time.monotonic() - began


def result_for(server: LinkServer, run: SharedRun, path: str) -> LinkResult:
    return run[0][server.url(path)]


def test_the_whole_run_ends_within_its_time_bound(
    shared_run: SharedRun,
) -> None:
    results, elapsed = shared_run
    assert len(results) == 9
    assert elapsed < TOTAL + MARGIN


@pytest.mark.parametrize(
    ("path", "status", "method", "error"),
    [
        ("/good", 200, "HEAD", None),
        ("/missing", 404, "GET", None),  # a failed HEAD is asked again with GET
        ("/error", 500, "GET", None),
        ("/head-not-allowed", 200, "GET", None),
        ("/slow?seconds=1", 200, "HEAD", None),
        ("/loop", None, "HEAD", "redirects"),
        ("/hang", None, "HEAD", "timeout"),
    ],
)
def test_each_route_is_reported(
    server: LinkServer,
    shared_run: SharedRun,
    path: str,
    status: int | None,
    method: str,
    error: str | None,
) -> None:
    result = result_for(server, shared_run, path)
    assert (result.status, result.error) == (status, error)
    if error is None:
        assert result.method == method
    assert result.ok is (status is not None and status < 400)


def test_slow_answer_is_fine_and_took_its_time(server: LinkServer, shared_run: SharedRun) -> None:
    result = result_for(server, shared_run, "/slow?seconds=1")
    assert result.ok
    assert result.elapsed >= 0.9


def test_head_405_falls_back_to_get(server: LinkServer, shared_run: SharedRun) -> None:
    methods = [r.method for r in server.requests if r.path == "/head-not-allowed"]
    assert methods == ["HEAD", "GET"]


def test_redirect_chain_is_reported_hop_by_hop(server: LinkServer, shared_run: SharedRun) -> None:
    result = result_for(server, shared_run, "/chain/3")
    assert result.ok
    assert result.chain == (server.url("/chain/2"), server.url("/chain/1"), server.url("/chain/0"))
    assert result.final_url == server.url("/chain/0")


def test_redirect_to_another_host_name(server: LinkServer, shared_run: SharedRun) -> None:
    result = result_for(server, shared_run, "/elsewhere")
    assert result.ok
    assert result.chain == (server.url("/good", host="localhost"),)
    assert not same_site(server.url("/elsewhere"), result.final_url)


@pytest.mark.slow
def test_total_bound_cuts_a_hang_even_with_a_long_request_timeout() -> None:
    with serve_links() as server:
        began = time.monotonic()
        results = asyncio.run(
            check_urls(
                [server.url("/hang"), server.url("/good")], total_timeout=1.0, request_timeout=30
            )
        )
        elapsed = time.monotonic() - began
    assert elapsed < 1.0 + MARGIN
    hang = results[server.url("/hang")]
    assert hang.error == "timeout"
    assert "time bound of 1 s" in hang.detail
    assert results[server.url("/good")].ok


def test_queued_links_left_when_the_bound_runs_out_are_unchecked_not_broken() -> None:
    with serve_links() as server:
        urls = [server.url(f"/hang?n={n}") for n in range(2)] + [server.url("/good")]
        results = asyncio.run(check_urls(urls, total_timeout=0.5, per_host=2))
    assert [results[url].error for url in urls] == ["timeout", "timeout", "unchecked"]


def test_per_host_concurrency_is_limited() -> None:
    with serve_links() as server:
        urls = [server.url(f"/slow?seconds=0.15&n={n}") for n in range(6)]
        urls += [server.url(f"/slow?seconds=0.15&n={n}", host="localhost") for n in range(2)]
        results = asyncio.run(check_urls(urls, per_host=2, total_timeout=10))
        assert all(result.ok for result in results.values())
        assert server.max_in_flight["127.0.0.1"] == 2
        assert server.max_in_flight["localhost"] == 2


def test_cache_keeps_good_answers_for_a_while_and_never_failures(tmp_path: Path) -> None:
    now = [1_000_000.0]

    def clock() -> float:
        return now[0]

    path = tmp_path / ".newsletter-cache" / "links.json"
    with serve_links() as server:
        urls = [server.url("/good"), server.url("/missing")]
        first = asyncio.run(check_urls(urls, cache=LinkCache.load(path, clock=clock)))
        assert path.is_file()
        asked = len(server.requests)

        now[0] += CACHE_TTL - 1
        second = asyncio.run(check_urls(urls, cache=LinkCache.load(path, clock=clock)))
        again = server.paths()[asked:]
        assert "/good" not in again and "/missing" in again
        assert second[server.url("/good")].cached and second[server.url("/good")].ok
        assert not first[server.url("/good")].cached
        assert second[server.url("/missing")].status == 404

        now[0] += 2  # past the TTL
        asked = len(server.requests)
        asyncio.run(check_urls(urls, cache=LinkCache.load(path, clock=clock)))
        assert "/good" in server.paths()[asked:]


def test_damaged_cache_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "links.json"
    path.write_text("{not json", encoding="utf-8")
    with serve_links() as server:
        results = asyncio.run(check_urls([server.url("/good")], cache=LinkCache.load(path)))
    assert results[server.url("/good")].ok
    assert server.url("/good") in path.read_text(encoding="utf-8")


def test_untrusted_certificate_is_a_tls_error(tmp_path: Path) -> None:
    with serve_links(tls=True, folder=tmp_path) as server:
        results = asyncio.run(check_urls([server.url("/good")]))
        result = results[server.url("/good")]
        assert result.error == "tls"
        assert "certificate" in result.detail.lower()

        assert server.ca_file is not None
        trusting = ssl.create_default_context(cafile=str(server.ca_file))

        async def with_trust() -> dict[str, LinkResult]:
            async with httpx.AsyncClient(verify=trusting) as client:
                return await check_urls([server.url("/good")], client=client)

        assert asyncio.run(with_trust())[server.url("/good")].ok


def test_dns_failure_is_classified() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        try:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        except socket.gaierror as err:
            raise httpx.ConnectError("[Errno -2] Name or service not known") from err

    async def run() -> dict[str, LinkResult]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
            return await check_urls(["https://no-such-host.riverside.test/"], client=client)

    result = asyncio.run(run())["https://no-such-host.riverside.test/"]
    assert result.error == "dns"
    assert "Name or service not known" in result.detail


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ReadTimeout("timed out"), "timeout"),
        (httpx.ConnectError("[Errno 111] Connection refused"), "connect"),
        (httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."), "invalid"),
        (httpx.RemoteProtocolError("Server disconnected"), "failed"),
    ],
)
def test_classify_error(error: httpx.HTTPError, kind: str) -> None:
    assert classify_error(error)[0] == kind


@pytest.mark.parametrize(
    ("host", "placeholder", "local"),
    [
        ("example.org", True, False),
        ("riverside-garden.example.org", True, False),
        ("shop.example.co.uk", True, False),
        ("garden.test", True, False),
        ("example", True, False),
        ("examples.org", False, False),
        ("riverside.org", False, False),
        ("localhost", False, True),
        ("app.localhost", False, True),
        ("127.0.0.1", False, True),
        ("127.5.0.1", False, True),
        ("[::1]", False, True),
        ("192.168.1.10", False, True),
        ("8.8.8.8", False, False),
    ],
)
def test_host_kinds(host: str, placeholder: bool, local: bool) -> None:
    assert is_placeholder_host(host) is placeholder
    assert is_local_host(host) is local


# --- the whole check over an issue ------------------------------------------------------------


def write_item(folder: Path, name: str, front: str, body: str) -> Path:
    path = folder / name
    path.write_text(f"---\n{front.strip()}\n---\n{body}", encoding="utf-8")
    return path


def linking_issue(issue_folder: Path, server: LinkServer) -> tuple[Path, Path]:
    """The example issue plus an item whose links hit every route of the server."""
    first = write_item(
        issue_folder,
        "05-links.md",
        f"title: Links to check\nlink: {server.url('/head-not-allowed')}\nlink_text: Try the form",
        f"Good: [page]({server.url('/good')}).\n"
        f"Missing: [page]({server.url('/missing')}).\n"
        f"Broken: [page]({server.url('/error')}).\n"
        f"Chain: [page]({server.url('/chain/3')}).\n"
        f"Elsewhere: [page]({server.url('/elsewhere')}).\n",
    )
    second = write_item(
        issue_folder,
        "06-slow.md",
        "title: Slow and hanging",
        f"Slow: [page]({server.url('/slow?seconds=0.5')}).\n\n"
        f"Hang: [page]({server.url('/hang')}).\n",
    )
    return first, second


@pytest.mark.slow
def test_check_issue_reports_each_link_with_file_and_line(
    settings: Settings, issue_folder: Path
) -> None:
    with serve_links() as server:
        first, second = linking_issue(issue_folder, server)
        issue = load_issue(issue_folder)
        rendered = render_issue(issue, settings)
        began = time.monotonic()
        report = check_issue(
            issue,
            rendered,
            settings,
            # Room for the 0.5 s link and a 3-hop redirect chain on a loaded machine; /hang
            # never answers, so it still times out.
            link_timeout_total=4.0,
            allow_loopback=True,
            spamassassin=None,
            use_cache=False,
        )
        elapsed = time.monotonic() - began
    assert elapsed < 4.0 + MARGIN

    by_url = {(f.code, f.url): f for f in report.findings}

    def finding(code: str, path: str) -> tuple[Path | None, int | None, str]:
        found = by_url[(code, server.url(path))]
        return found.file, found.line, found.severity

    assert finding("link-broken", "/missing") == (first, 7, "error")
    assert finding("link-broken", "/error") == (first, 8, "error")
    assert "returns 404 Not Found" in by_url[("link-broken", server.url("/missing"))].message
    assert finding("link-redirect", "/chain/3") == (first, 9, "info")
    assert "/chain/3 → " in by_url[("link-redirect", server.url("/chain/3"))].message
    assert finding("link-redirect-domain", "/elsewhere") == (first, 10, "warning")
    assert finding("link-timeout", "/hang") == (second, 6, "error")
    assert finding("link-insecure", "/good") == (first, 6, "warning")
    # Fine links: only the http:// warning, nothing else.
    for path in ("/good", "/slow?seconds=0.5", "/head-not-allowed"):
        codes = {f.code for f in report.findings if f.url == server.url(path)}
        assert codes == {"link-insecure"}, path
    assert finding("link-insecure", "/head-not-allowed") == (first, 3, "warning")
    # The example's own links are placeholders: warned about, never asked for.
    assert "link-example" in report.codes("warning")
    assert not report.ok


def test_loopback_links_are_warned_about_and_not_fetched_by_default(
    settings: Settings, issue_folder: Path
) -> None:
    with serve_links() as server:
        path = write_item(
            issue_folder, "05-local.md", "title: Local", f"See [it]({server.url('/missing')}).\n"
        )
        issue = load_issue(issue_folder)
        report = check_issue(
            issue, render_issue(issue, settings), settings, spamassassin=None, use_cache=False
        )
        assert server.requests == []
    local = [f for f in report.findings if f.code == "link-localhost"]
    assert [(f.file, f.line, f.severity) for f in local] == [(path, 4, "warning")]
    assert report.ok


def test_offline_makes_no_request(settings: Settings, issue_folder: Path) -> None:
    with serve_links() as server:
        linking_issue(issue_folder, server)
        issue = load_issue(issue_folder)
        report = check_issue(
            issue,
            render_issue(issue, settings),
            settings,
            offline=True,
            allow_loopback=True,
            spamassassin=None,
        )
        assert server.requests == []
    assert "links-offline" in report.codes("info")
    assert report.ok  # nothing but warnings and infos without the network


def test_repeated_check_uses_the_cache(settings: Settings, issue_folder: Path) -> None:
    with serve_links() as server:
        write_item(issue_folder, "05-good.md", "title: Good", f"See [it]({server.url('/good')}).\n")
        issue = load_issue(issue_folder)
        rendered = render_issue(issue, settings)

        def run() -> None:
            check_issue(issue, rendered, settings, allow_loopback=True, spamassassin=None)

        run()
        assert server.paths() == ["/good"]
        run()
        assert server.paths() == ["/good"]
    assert cache_path(settings.root).is_file()
