"""Two servers adding the same new address at the same moment (PostgreSQL, real processes).

`serve` runs as several processes (or on several machines) on one PostgreSQL store, so two
sign-ups of one address can reach two processes at once: both must succeed, and the list must
hold the address once, with one entry in its history.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from newsletter.audience import SubscriberStore
from newsletter.store import Store
from tests.pgserver import PostgresServer

REPO = Path(__file__).resolve().parent.parent
COUNT = 150

ADDER = textwrap.dedent(
    """
    import sys
    from newsletter.audience import SubscriberStore

    url, count, who = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with SubscriberStore(url) as store:
        store.get("warm-up@example.org")  # connected and migrated before the start line
        print("ready", flush=True)
        sys.stdin.readline()  # both start together
        for n in range(count):
            store.add(f"Reader{n}@Example.org", name=f"Reader {n} ({who})")
    print("done", flush=True)
    """
)


def test_two_processes_adding_the_same_addresses_at_once(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.new_store()
    Store.open(url).close()  # migrated once, so the children race on the rows, not the schema
    children = [
        subprocess.Popen(
            [sys.executable, "-c", ADDER, url, str(COUNT), who],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("a", "b")
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err  # no error reached either "user"
        assert out.strip().endswith("done")

    with SubscriberStore(url) as store:
        everyone = list(store.iter_subscribers())
        assert sorted(s.email for s in everyone) == sorted(
            f"Reader{n}@example.org" for n in range(COUNT)
        )
        for n in (0, COUNT // 2, COUNT - 1):
            history = store.events(f"reader{n}@example.org")
            assert [event.new_status for event in history] == ["subscribed"], history
