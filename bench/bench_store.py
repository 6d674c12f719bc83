"""Benchmark: the two store engines side by side (issue 10): a big import, and one send spread
over several workers.

    .venv/bin/python bench/bench_store.py [--import-rows 1000000] [--send-recipients 100000]
                                          [--runs 3] [--workers 1,2,4] [--skip-import]
                                          [--skip-send] [--baseline REF]

PostgreSQL: a throw-away cluster (tests/pgserver.py: Debian's initdb + pg_ctl, Unix socket,
fsync on as in production), removed at the end. SQLite: a file in a temporary directory.

- import: `newsletter subscribers import` of a generated CSV of `--import-rows` people into an
  empty store, in a child process per run; wall time and the child's peak RSS (ru_maxrss).
- send: the example issue to `--send-recipients` people through SendGrid's loopback fake (in
  this process, counting only: tests/workerkit.py's CountingSendGrid; 1,000 recipients a
  request, one body with per-recipient substitutions), by worker processes
  (tests/workerkit.py): SQLite with 1 worker, PostgreSQL with each of `--workers`. Reported:
  recipients/s from the first to the last request the fake accepted (workers' start-up, which
  renders the issue, excluded), and the workers' CPU (user+sys, start-up included) per 1,000.

Medians of `--runs`, every configuration once per round so all see the same machine.
`--baseline REF` also runs every send configuration with the code of commit REF (`git archive`,
bench/baseline.py: the workers import that tree, same interpreter and libraries), side by side.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import baseline  # noqa: E402  (bench/baseline.py, beside this script)

from tests.conftest import copy_example_project  # noqa: E402
from tests.pgserver import PostgresServer, postgresql_bin  # noqa: E402
from tests.providerfake import ProviderFake  # noqa: E402
from tests.test_transport_sendgrid import KEY  # noqa: E402
from tests.workerkit import CountingSendGrid  # noqa: E402

IMPORT_CHILD = """
import resource, sys, time
from pathlib import Path
from newsletter.audience import SubscriberStore
started = time.perf_counter()
with SubscriberStore(sys.argv[1]) as store:
    report = store.import_csv(Path(sys.argv[2]))
elapsed = time.perf_counter() - started
assert report.added == int(sys.argv[3]), report
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "city"])
        for n in range(rows):
            writer.writerow([f"reader{n:07d}@example.org", f"Reader {n}", "Utrecht"])


def run_import(store_url: str, csv_path: Path, rows: int) -> tuple[float, float]:
    """Seconds and peak MiB of one import in a child process."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_CHILD, store_url, str(csv_path), str(rows)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, kib = done.stdout.split()
    return float(seconds), int(kib) / 1024


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_jiffies() -> tuple[int, int]:
    """Busy and total CPU time of the whole machine so far (all cores), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(f) for f in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


def server_cpu(server: PostgresServer) -> float:
    """CPU seconds used so far by the PostgreSQL server: the postmaster and its children."""
    try:
        master = int((server.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        if pid == master:  # its own time, and that of the backends that have ended
            ticks += sum(int(f) for f in fields[11:15])
        elif int(fields[1]) == master:  # fields[1]: the parent's pid; a live backend
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_send(
    fake: ProviderFake,
    project: Path,
    store_url: str,
    recipients: int,
    workers: int,
    code: Path = REPO,
    server: PostgresServer | None = None,
) -> tuple[float, float, float, float, float]:
    """Recipients/s (first to last accepted message), worker CPU seconds per 1,000, and how
    busy the whole machine was between the first and the last accepted message (0-1: workers,
    PostgreSQL, the fake and anything else running), and per 1,000 recipients the CPU seconds
    of the PostgreSQL server and of this process (the fake), over the whole run."""
    fake.accepted.clear()
    fake.ids.clear()
    times: list[float] = []  # when the first request's recipients were accepted, and the last's
    window: list[tuple[int, int]] = []
    counted = [0]
    lock = threading.Lock()
    original = fake.accept_many

    def accept_many(addresses: Sequence[str], provider_id: str) -> None:
        with lock:
            if not counted[0]:
                times.append(time.perf_counter())
                window.append(machine_jiffies())
            original(addresses, provider_id)
            counted[0] += len(addresses)
            if counted[0] == recipients:
                times.append(time.perf_counter())
                window.append(machine_jiffies())

    fake.accept_many = accept_many  # type: ignore[method-assign]
    cpu = children_cpu()
    database_cpu = server_cpu(server) if server is not None else 0.0
    fake_cpu = own_cpu()
    command = [
        sys.executable, "-m", "tests.workerkit", fake.url, str(project), store_url,
        str(recipients), "list", "sendgrid",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code), "SENDGRID_API_KEY": KEY}
    started = [
        subprocess.Popen(command, cwd=code, env=env, stdout=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    for child in started:
        if child.wait() != 0:
            raise SystemExit("a worker failed")
    fake.accept_many = original  # type: ignore[method-assign]
    if len(fake.accepted) != recipients or max(fake.accepted.values()) != 1:
        raise SystemExit(f"the fake got {len(fake.accepted)} recipients, some twice?")
    rate = recipients / (times[-1] - times[0])
    (busy_0, total_0), (busy_1, total_1) = window
    busy = (busy_1 - busy_0) / max(1, total_1 - total_0)
    per_1k = 1000 / recipients
    database = (server_cpu(server) - database_cpu) * per_1k if server is not None else 0.0
    return (
        rate,
        (children_cpu() - cpu) * per_1k,
        busy,
        database,
        (own_cpu() - fake_cpu) * per_1k,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--import-rows", type=int, default=1_000_000)
    parser.add_argument("--send-recipients", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--skip-import", action="store_true")
    parser.add_argument("--skip-send", action="store_true")
    parser.add_argument("--baseline", help="also send with this commit's code (before/after)")
    args = parser.parse_args()
    # Stopped by SIGTERM (a timeout), still remove the PostgreSQL cluster and temporary files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if postgresql_bin() is None:
        raise SystemExit("needs PostgreSQL (Debian's postgresql package)")
    worker_counts = [int(n) for n in args.workers.split(",")]
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}, runs {args.runs}")
    with tempfile.TemporaryDirectory() as folder, PostgresServer(durable=True) as server:
        tmp = Path(folder)
        if not args.skip_import:
            csv_path = tmp / "list.csv"
            write_csv(csv_path, args.import_rows)
            found: dict[str, list[tuple[float, float]]] = {"sqlite": [], "postgresql": []}
            for run in range(args.runs):
                for engine in found:
                    url = (
                        str(tmp / f"import-{run}.db") if engine == "sqlite" else server.new_store()
                    )
                    seconds, mib = run_import(url, csv_path, args.import_rows)
                    found[engine].append((seconds, mib))
                    print(f"import run {run + 1} {engine:10} {seconds:7.1f} s  {mib:6.0f} MiB")
            print(f"\nimport of {args.import_rows} subscribers (median):")
            for engine, values in found.items():
                seconds = statistics.median(v[0] for v in values)
                mib = statistics.median(v[1] for v in values)
                print(
                    f"  {engine:10} {seconds:7.1f} s  {args.import_rows / seconds:8.0f} rows/s"
                    f"  peak {mib:5.0f} MiB"
                )
        if not args.skip_send:
            project = copy_example_project(tmp / "project")
            codes = {"current": REPO}
            if args.baseline:
                codes = {args.baseline: baseline.extract(args.baseline, tmp / "baseline")} | codes
            configs = [
                (side, engine, n)
                for side in codes
                for engine, n in [("sqlite", 1)] + [("postgresql", n) for n in worker_counts]
            ]
            sends: dict[tuple[str, str, int], list[tuple[float, float, float, float, float]]] = {
                c: [] for c in configs
            }
            with ProviderFake() as fake:
                CountingSendGrid(fake)
                fake.record_requests = False
                for run in range(args.runs):
                    for side, engine, workers in configs:
                        url = (
                            str(tmp / f"send-{side}-{run}.db")
                            if engine == "sqlite"
                            else server.new_store()
                        )
                        measured = run_send(
                            fake,
                            project,
                            url,
                            args.send_recipients,
                            workers,
                            codes[side],
                            server if engine == "postgresql" else None,
                        )
                        sends[(side, engine, workers)].append(measured)
                        rate, cpu, busy, database, fake_cpu = measured
                        print(
                            f"send run {run + 1} {side:8} {engine:10} {workers} worker(s) "
                            f"{rate:8.0f} recipients/s  CPU s per 1k: workers {cpu:5.2f}"
                            f" PostgreSQL {database:5.2f} fake {fake_cpu:5.2f}"
                            f"  machine {busy:4.0%} busy  load {os.getloadavg()[0]:.1f}",
                            flush=True,
                        )
            print(f"\nsend of {args.send_recipients} recipients to the SendGrid fake (median):")
            for side in codes:
                base = statistics.median(
                    v[0] for v in sends[(side, "postgresql", worker_counts[0])]
                )
                sqlite = statistics.median(v[0] for v in sends[(side, "sqlite", 1)])
                for (other, engine, workers), runs in sends.items():
                    if other != side:
                        continue
                    rate, cpu, busy, database, fake_cpu = (
                        statistics.median(v[i] for v in runs) for i in range(5)
                    )
                    print(
                        f"  {side:8} {engine:10} {workers} worker(s) {rate:8.0f} recipients/s"
                        f"  CPU s per 1k: workers {cpu:5.2f} PostgreSQL {database:5.2f}"
                        f" fake {fake_cpu:5.2f}  machine {busy:4.0%} busy"
                        f"  ({rate / base:.2f}x PostgreSQL "
                        f"{worker_counts[0]} worker, {rate / sqlite:.2f}x SQLite)"
                    )
            print(
                "  (a send can go at most 1/busy times faster by adding workers: the machine's"
                " idle share is the room a second worker has)"
            )


if __name__ == "__main__":
    main()
