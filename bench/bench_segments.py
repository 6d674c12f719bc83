"""Benchmark: selecting an audience (issue 14) on a SQLite store, side by side with the whole list.

    .venv/bin/python bench/bench_segments.py [--rows 100000] [--runs 5]

Builds a store of `--rows` generated subscribers (a city attribute, 0-3 of six tags each, one in
ten unsubscribed) with `subscribers import`, then times, per round and in the same order:
streaming every subscribed person the old way (`iter_subscribers`), the same through
`iter_segment` (audience `all`), three audiences, and counting one (`count_segment`). Medians of
`--runs` rounds, in ms, with the number of people selected.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.audience import SubscriberStore  # noqa: E402
from newsletter.segment import parse_audience  # noqa: E402

TAGS = ["members", "board", "press", "partners", "volunteers", "donors"]
CITIES = ["Utrecht", "Gent", "Amsterdam", "Den Haag", "Zürich"]
AUDIENCES = ["tag:members", "tag:members,-tag:press", "tag:board,tag:donors,city=Utrecht"]


def build(path: Path, rows: int) -> None:
    rng = random.Random(14)
    lines = ["email,city,tags,status"]
    for number in range(rows):
        tags = ",".join(rng.sample(TAGS, rng.randint(0, 3)))
        status = "unsubscribed" if rng.random() < 0.1 else "subscribed"
        lines.append(f'p{number:07d}@example.org,{rng.choice(CITIES)},"{tags}",{status}')
    csv_path = path.parent / "list.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with SubscriberStore(path) as store:
        store.import_csv(csv_path, strict=True)


def selecting(store: SubscriberStore, text: str) -> Callable[[], int]:
    segment = parse_audience(text)
    return lambda: sum(1 for _ in store.iter_segment(segment))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "newsletter.db"
        started = time.perf_counter()
        build(path, args.rows)
        print(f"store of {args.rows} built in {time.perf_counter() - started:.1f} s")
        with SubscriberStore(path) as store:
            cases: dict[str, Callable[[], int]] = {
                "iter_subscribers (old path)": lambda: sum(1 for _ in store.iter_subscribers()),
                "iter_segment all": lambda: sum(1 for _ in store.iter_segment()),
            }
            for text in AUDIENCES:
                cases[f"iter_segment {text}"] = selecting(store, text)
            counted = parse_audience(AUDIENCES[1])
            cases[f"count_segment {AUDIENCES[1]}"] = lambda: store.count_segment(counted)
            times: dict[str, list[float]] = {name: [] for name in cases}
            sizes: dict[str, int] = {}
            for _ in range(args.runs):
                for name, case in cases.items():
                    begun = time.perf_counter()
                    sizes[name] = case()
                    times[name].append(time.perf_counter() - begun)
        for name in cases:
            median = statistics.median(times[name]) * 1000
            print(f"{name:48} {median:9.1f} ms  {sizes[name]:>8} people")


if __name__ == "__main__":
    main()
