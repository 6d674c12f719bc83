"""Several workers sending one issue from a shared PostgreSQL store (issue 10), as processes
against Postmark's loopback fake: leases, claims, SIGKILLs at random moments, restarts."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from newsletter.audience import SubscriberStore
from newsletter.delivery import leases
from newsletter.delivery.ledger import Ledger, State
from newsletter.store import Store
from newsletter.tokens import make_token
from tests.pgserver import PostgresServer
from tests.providerfake import ProviderFake
from tests.sendkit import people
from tests.test_transport_postmark import TOKEN
from tests.workerkit import CountingPostmark

REPO = Path(__file__).resolve().parent.parent
ISSUE = "2026-11"


@pytest.fixture
def postmark() -> Iterator[ProviderFake]:
    with ProviderFake() as server:
        CountingPostmark(server)
        server.record_requests = False
        yield server


def spawn(
    server: ProviderFake, project: Path, url: str, count: int, audience: str = "list"
) -> subprocess.Popen[str]:
    """A worker process sending the example issue to `count` people (or the store's)."""
    command = [sys.executable, "-m", "tests.workerkit", server.url, str(project), url]
    return subprocess.Popen(
        [*command, str(count), audience],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "POSTMARK_SERVER_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        text=True,
    )


def outcome(server: ProviderFake, url: str, count: int) -> tuple[int, int, set[str]]:
    """Check one send after its workers ended: (duplicates, uncertain, senders' pids).

    Every person was accepted by the provider exactly once with the id the ledger holds (`sent`),
    or is `uncertain` and was accepted at most once; no row is left pending or sending.
    """
    everyone = {person.email for person in people(count)}
    with Store.open(url) as store:
        issue = Ledger(store).issue(ISSUE)
        counts = issue.counts()
        sent = {row.email: row.reply for row in issue.rows(State.SENT)}
        uncertain = {row.email for row in issue.rows(State.UNCERTAIN)}
        workers = leases.leases(store, ISSUE)
    assert counts[State.PENDING] == counts[State.SENDING] == counts[State.DEFERRED] == 0, counts
    assert set(sent) | uncertain == everyone and not set(sent) & uncertain
    duplicates = sum(1 for n in server.accepted.values() if n > 1)
    for address, reply in sent.items():
        assert server.accepted[address] == 1 and server.ids[address] == [reply], address
    assert set(server.accepted) <= everyone
    assert server.problems == []
    assert all(lease.state != "active" for lease in workers)
    return duplicates, len(uncertain), {f"{w.info.pid}" for w in workers if w.state == "released"}


def reasons_of(url: str) -> set[str | None]:
    with Store.open(url) as store:
        return {row.last_error for row in Ledger(store).issue(ISSUE).rows(State.UNCERTAIN)}


def test_three_workers_share_one_send(
    postmark: ProviderFake, project: Path, postgres_server: PostgresServer
) -> None:
    count = 3000
    url = postgres_server.new_store()
    workers = [spawn(postmark, project, url, count) for _ in range(3)]
    for worker in workers:
        assert worker.wait(timeout=300) == 0
    duplicates, uncertain, finished = outcome(postmark, url, count)
    assert (duplicates, uncertain) == (0, 0), reasons_of(url)
    assert len(finished) == 3
    # The audience was frozen once; each worker joined the same send.
    with Store.open(url) as store, store.read() as db:
        assert db.execute("SELECT freeze_round FROM ledger_issues").fetchone()[0] == 1


@pytest.mark.slow
def test_chaos_sigkilled_workers_never_send_twice(
    postmark: ProviderFake, project: Path, postgres_server: PostgresServer
) -> None:
    """3 workers, 20,000 recipients, workers SIGKILLed at random moments and restarted."""
    trials = int(os.environ.get("NEWSLETTER_CHAOS_TRIALS", "10"))
    count = 20_000
    rng = random.Random(20261203)
    total_duplicates = total_uncertain = total_in_flight = total_kills = 0
    for _ in range(trials):
        postmark.accepted.clear()
        postmark.ids.clear()
        url = postgres_server.new_store()
        running = [spawn(postmark, project, url, count) for _ in range(3)]
        kills = 0
        in_flight = 0
        deadline = time.monotonic() + 300
        while any(w.poll() is None for w in running):
            assert time.monotonic() < deadline, "the workers did not finish"
            time.sleep(rng.uniform(0.05, 0.6))
            alive = [w for w in running if w.poll() is None]
            if kills >= 2 or not alive or not postmark.accepted:
                continue
            victim = rng.choice(alive)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            # What the killed worker had in flight: the rows claimed under its lease and not
            # answered, still `sending`, or already `uncertain` if another worker's heartbeat
            # expired the lease first (rows keep the lease they were claimed under).
            with Store.open(url) as store, store.read() as db:
                in_flight += db.execute(
                    "SELECT COUNT(*) FROM ledger_rows r JOIN ledger_leases l"
                    " ON r.lease_id = l.id WHERE r.state IN ('sending', 'uncertain')"
                    " AND l.pid = :pid",
                    {"pid": victim.pid},
                ).fetchone()[0]
            running.remove(victim)
            running.append(spawn(postmark, project, url, count))
        # A last worker takes over whatever a kill left and finds nothing more to send.
        last = spawn(postmark, project, url, count)
        assert last.wait(timeout=300) == 0
        duplicates, uncertain, _ = outcome(postmark, url, count)
        assert uncertain <= in_flight, reasons_of(url)
        total_duplicates += duplicates
        total_uncertain += uncertain
        total_in_flight += in_flight
        total_kills += kills
    print(
        f"\nchaos: {trials} trials of {count} recipients, 3 workers, {total_kills} SIGKILLs:"
        f" duplicates {total_duplicates}, uncertain {total_uncertain}"
        f" (in flight at the kills {total_in_flight})"
    )
    assert total_duplicates == 0
    assert total_kills >= trials


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unsubscribe_on_the_server_during_a_send_stops_later_messages(
    postmark: ProviderFake, project: Path, postgres_server: PostgresServer
) -> None:
    """The laptop and the server: `serve --workers 2` and a sending worker, separate processes
    on one PostgreSQL store; a one-click unsubscribe POSTed mid-send means no later message."""
    url = postgres_server.new_store()
    count = 3000
    with Store.open(url) as store:
        subscribers = SubscriberStore(store)
        for person in people(count):
            subscribers.add(person.email, person.name or "")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NEWSLETTER_DATABASE_URL": url,
        "NEWSLETTER_SECRET": "server-secret",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port), "--workers", "2"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    sender = None
    try:
        assert server.stdout is not None
        assert "with 2 workers" in server.stdout.readline()
        base = f"http://127.0.0.1:{port}/unsubscribe"
        sender = spawn(postmark, project, url, count, audience="store")
        leaving = [p.email for p in people(count)[-5:]]  # the last in send order
        deadline = time.monotonic() + 120
        while not postmark.accepted:
            assert time.monotonic() < deadline and sender.poll() is None, "no progress"
            time.sleep(0.01)
        for address in leaving:
            token = make_token(b"server-secret", address)
            answer = httpx.post(
                base, params={"token": token}, data={"List-Unsubscribe": "One-Click"}, timeout=30
            )
            assert answer.status_code == 200, answer.text
        assert sender.wait(timeout=300) == 0
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert server.returncode == 0
    assert all(postmark.accepted[address] == 0 for address in leaving)
    with Store.open(url) as store:
        subscribers = SubscriberStore(store)
        for address in leaving:
            found = subscribers.get(address)
            assert found is not None and found.status == "unsubscribed"
            assert [e.source for e in subscribers.events(address)][-1].startswith("web")
        issue = Ledger(store).issue(ISSUE)
        assert issue.counts()[State.SENT] == count - len(leaving)
