"""Benchmark: what the send ledger costs per batch and per SMTP message, before and after the
group commits (issues 10 and 16), without the transport: only the database work.

    .venv/bin/python bench/bench_ledger_batch.py [--baseline REF] [--rows 20000] [--runs 5]

Each side runs in a child process (the baseline from `git archive` of REF, bench/baseline.py),
alternating, on one throw-away PostgreSQL cluster with fsync on (tests/pgserver.py) and on a
SQLite file. Per side and case, the child freezes `--rows` recipients, takes the lease, and
times the ledger's statements the way the sender issues them:

- `pg batch`: PostgreSQL, batches of 1,000 (SendGrid): claim, Message-IDs + `sending`, `sent`;
- `pg smtp`: PostgreSQL, one message per claim (SMTP), 300 messages: claim, `sending`, `sent`;
- `sqlite smtp`: SQLite, one message at a time, 300 messages: `sending`, `sent`.

Reported: the median per batch or per message over `--runs` rounds (each round's figure is its
own mean), and the ratio after/before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import baseline  # noqa: E402  (bench/baseline.py, beside this script)

from tests.pgserver import PostgresServer  # noqa: E402

CHILD = """
import sys, time
from newsletter.delivery import leases
from newsletter.delivery.ledger import Ledger, State

case, url, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
grouped = not hasattr(leases, "set_message_ids")  # the API after the group commits
ledger = Ledger(url)
issue = ledger.issue("bench")
issue.freeze(((f"k{n:06d}", f"k{n}@example.org") for n in range(rows)), "fp")
ids = lambda keys: {k: f"<{k}@bench>" for k in keys}
done = 0
with ledger.lock("bench"):
    own = ledger.own_connection() if grouped and case != "sqlite-smtp" else ledger
    mine = own.issue("bench")
    size = 1000 if case == "pg-batch" else 1
    count = rows if case == "pg-batch" else min(rows, 300)
    held = []
    started = time.perf_counter()
    while done < count:
        if case == "sqlite-smtp":
            keys = [f"k{done:06d}"]
        else:
            keys = [r.key for r in leases.claim(own, "bench", size, now=time.time())]
        if grouped:
            if size == 1:  # the previous message's `sent` rides with this `sending`
                mine.record(sending=[(k, f"<{k}@bench>") for k in keys], sent=held)
                held = [(k, "250 ok", f"<{k}@bench>") for k in keys]
            else:
                mine.mark_sending(keys, message_ids=ids(keys))
            if case != "sqlite-smtp":
                own.database.release(commit=True)
            if size != 1:
                mine.mark_sent_many([(k, "202") for k in keys], message_ids=ids(keys))
        elif case == "sqlite-smtp":
            issue.mark_sending(keys, message_ids=ids(keys))
            issue.mark_sent(keys[0], "250 ok")
        else:
            leases.set_message_ids(ledger, "bench", ids(keys))
            leases.mark_sent(ledger, "bench", [(k, "202") for k in keys], ids(keys))
        done += len(keys)
    if held:
        mine.record(sent=held)
    elapsed = time.perf_counter() - started
    assert issue.counts()[State.SENT] == count, issue.counts()
print(elapsed / (count / size) * 1000)
"""

CASES = ("pg-batch", "pg-smtp", "sqlite-smtp")


def run(code: Path, case: str, url: str, rows: int) -> float:
    """Milliseconds per batch (or message) of one child."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.pop("NEWSLETTER_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, case, url, str(rows)],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{case} failed:\n{done.stderr}")
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="92b7bbe")
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}, runs {args.runs}")
    with tempfile.TemporaryDirectory() as folder, PostgresServer(durable=True) as server:
        tmp = Path(folder)
        codes = {"before": baseline.extract(args.baseline, tmp / "baseline"), "after": REPO}
        found: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.runs):
            for case in CASES:
                for side, code in codes.items():
                    url = (
                        str(tmp / f"{side}-{case}-{round_}.db")
                        if case.startswith("sqlite")
                        else server.new_store()
                    )
                    ms = run(code, case, url, args.rows)
                    found.setdefault((case, side), []).append(ms)
                    print(f"round {round_ + 1} {case:12} {side:6} {ms:8.2f} ms", flush=True)
        print(f"\nmedians ({args.baseline} = before):")
        for case in CASES:
            before = statistics.median(found[(case, "before")])
            after = statistics.median(found[(case, "after")])
            unit = "batch of 1,000" if case == "pg-batch" else "message"
            print(
                f"  {case:12} before {before:8.2f} ms  after {after:8.2f} ms per {unit}"
                f"  ({after / before:.2f}x)"
            )


if __name__ == "__main__":
    main()
