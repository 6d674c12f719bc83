"""Benchmark: click redirects per second on `newsletter serve`, SQLite and PostgreSQL side by side.

    .venv/bin/python bench/bench_clicks.py [--clicks 1000] [--concurrency 100] [--runs 3]

The example project with `[links] count_clicks = true`; its link table recorded as a send does.
For each engine, `newsletter serve`'s library call runs in a process of its own (one uvicorn
worker, as `newsletter serve` starts by default), and an httpx async client in this process sends
`--clicks` GETs to the issue's redirects, `--concurrency` at a time, a connection each, then as
many to `/healthz` (one store read, no write: the app's own floor on this machine). Runs
alternate between the engines, so both see the same machine. Prints the rates per run, the
medians, and the clicks lost (the store's counts against the 302s received: must be 0).

PostgreSQL: a throw-away cluster (tests/pgserver.py, Unix socket) with fsync on, like a real one.
Target: no click lost; each click one UPDATE, so the rate is the store's commit rate, not the
redirect's work (hundreds per second on a shared 2-core machine is plenty for a newsletter).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.clicks import link_counts, record_links  # noqa: E402
from newsletter.config import load_settings  # noqa: E402
from newsletter.content import load_issue  # noqa: E402
from newsletter.render import render_issue  # noqa: E402
from newsletter.store import Store  # noqa: E402
from tests.conftest import copy_example_project  # noqa: E402
from tests.pgserver import PostgresServer, postgresql_bin  # noqa: E402

ISSUE = "2026-11"
CHILD = """
import sys
from pathlib import Path
from newsletter.config import load_settings
from newsletter.web import ServeSettings, serve
server = serve(load_settings(Path(sys.argv[1])), secret=b"bench-secret",
               serve_settings=ServeSettings(port=0))
print(server.port, flush=True)
server.run()
"""


def project_in(folder: Path) -> Path:
    project = copy_example_project(folder / "project")
    config = project / "newsletter.toml"
    text = re.sub(r"^# (base_url = \S+).*$", r"\1", config.read_text(), flags=re.MULTILINE)
    config.write_text(text + "\n[links]\ncount_clicks = true\n")
    return project


def record(project: Path, store_url: str) -> int:
    """Record the issue's link table in the store; the number of links."""
    settings = load_settings(project)
    rendered = render_issue(load_issue(project / "issues" / ISSUE), settings)
    with Store.open(store_url) as store:
        record_links(store, ISSUE, rendered.click_links, now=time.time())
    return len(rendered.click_links)


def total_clicks(store_url: str) -> int:
    with Store.open(store_url) as store:
        return sum(count.clicks for count in link_counts(store, ISSUE))


def run(
    project: Path, store_url: str, links: int, clicks: int, concurrency: int
) -> tuple[float, float]:
    """Clicks per second, and `/healthz` answers per second (the app's floor: one store read,
    no write), for one run against a fresh server process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_DATABASE_URL"] = store_url
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(project)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        base = f"http://127.0.0.1:{int(child.stdout.readline())}/"
        for _ in range(200):
            try:
                httpx.get(base + "healthz")
                break
            except httpx.TransportError:
                time.sleep(0.05)

        async def ask_all(path: str, status: int) -> float:
            # A connection per request, as readers' browsers arrive (and no keep-alive race
            # with the server's idle timeout).
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
            async with httpx.AsyncClient(limits=limits, timeout=120) as client:
                gate = asyncio.Semaphore(concurrency)

                async def one(n: int) -> None:
                    async with gate:
                        answer = await client.get(base + path.format(n=n % links + 1))
                        assert answer.status_code == status, answer.status_code

                started = time.perf_counter()
                await asyncio.gather(*(one(n) for n in range(clicks)))
                return time.perf_counter() - started

        click_seconds = asyncio.run(ask_all(f"c/{ISSUE}/{{n}}", 302))
        health_seconds = asyncio.run(ask_all("healthz", 200))
    finally:
        child.send_signal(signal.SIGINT)
        child.wait(10)
    return clicks / click_seconds, clicks / health_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clicks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if postgresql_bin() is None:
        sys.exit("PostgreSQL is missing (Debian's postgresql): it is half of the comparison")
    with tempfile.TemporaryDirectory() as folder, PostgresServer(durable=True) as server:
        tmp = Path(folder)
        project = project_in(tmp)
        stores = {"sqlite": f"sqlite:///{tmp / 'clicks.db'}", "postgresql": server.new_store()}
        links = {engine: record(project, url) for engine, url in stores.items()}
        rates: dict[str, list[float]] = {engine: [] for engine in stores}
        floors: dict[str, list[float]] = {engine: [] for engine in stores}
        for round_number in range(1, args.runs + 1):
            for engine, url in stores.items():
                rate, floor = run(project, url, links[engine], args.clicks, args.concurrency)
                rates[engine].append(rate)
                floors[engine].append(floor)
                print(
                    f"run {round_number} {engine:<10} {rate:8.0f} clicks/s"
                    f"  {floor:8.0f} /healthz per s",
                    flush=True,
                )
        print()
        print(f"{'engine':<10} {'median clicks/s':>16} {'median /healthz/s':>18} {'lost':>6}")
        for engine, url in stores.items():
            lost = args.clicks * args.runs - total_clicks(url)
            click_rate = statistics.median(rates[engine])
            floor_rate = statistics.median(floors[engine])
            print(f"{engine:<10} {click_rate:16.0f} {floor_rate:18.0f} {lost:6d}")


if __name__ == "__main__":
    main()
