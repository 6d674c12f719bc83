"""What `[sending] durable = true` costs: ledger marks per second with synchronous=NORMAL (the
default: a process crash loses nothing) and FULL (an fsync per commit: a power cut loses
nothing either). A send marks each recipient twice (sending, then sent).

    .venv/bin/python bench/bench_durable.py [ROWS] [ROUNDS]

Prints the median over ROUNDS of one-row marks (SMTP: one row per commit) and of 100-row batch
marks (providers), side by side, on the file system of the current directory's tmp.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from newsletter.delivery.ledger import Ledger


def marks_per_second(folder: Path, durable: bool, rows: int, batch: int) -> float:
    path = folder / f"bench-{durable}-{batch}-{time.monotonic_ns()}.db"
    with Ledger(path, durable=durable) as ledger:
        issue = ledger.issue("bench")
        keys = [f"r{n:07d}@example.org" for n in range(rows)]
        issue.freeze(((k, k) for k in keys), "fp")
        started = time.perf_counter()
        for start in range(0, rows, batch):
            part = keys[start : start + batch]
            issue.mark_sending(part)
            issue.mark_sent_many([(k, "250 ok") for k in part])
        elapsed = time.perf_counter() - started
    return rows / elapsed


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        folder = Path(tmp)
        for batch in (1, 100):
            results = {}
            for durable in (False, True):
                runs = [marks_per_second(folder, durable, rows, batch) for _ in range(rounds)]
                results[durable] = statistics.median(runs)
            normal, full = results[False], results[True]
            print(
                f"batch {batch:>3}: NORMAL {normal:8.0f} recipients/s   FULL (durable) "
                f"{full:8.0f} recipients/s   cost x{normal / full:.1f}"
            )


if __name__ == "__main__":
    main()
