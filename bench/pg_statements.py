"""Where PostgreSQL's work goes in a send (issue 10): one send of `--recipients` to the SendGrid
fake by `--workers` worker processes, with `pg_stat_statements` on, counted only between the
first and the last message the fake accepted (the audience freeze before it is left out).

    .venv/bin/python bench/pg_statements.py [--recipients 100000] [--workers 1] [--top 12]
                                            [--baseline REF]

Prints, for that window: the CPU seconds per 1,000 recipients of the workers, the PostgreSQL
server (postmaster and every backend, autovacuum included) and the fake; the statements by
total execution time (calls, rows, ms per call, WAL records and bytes, buffers dirtied); and
the ledger table's row and index activity (updates, HOT updates, autovacuum runs).
`--baseline REF`: the workers run that commit's code instead (bench/baseline.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import baseline  # noqa: E402  (bench/baseline.py, beside this script)
from bench_store import machine_jiffies, own_cpu, server_cpu  # noqa: E402

from tests.conftest import copy_example_project  # noqa: E402
from tests.pgserver import PostgresServer, postgresql_bin  # noqa: E402
from tests.providerfake import ProviderFake  # noqa: E402
from tests.test_transport_sendgrid import KEY  # noqa: E402
from tests.workerkit import CountingSendGrid  # noqa: E402

_STATEMENTS = """
SELECT calls, rows, total_exec_time, wal_records, wal_bytes, shared_blks_dirtied,
       shared_blks_hit + shared_blks_read, regexp_replace(query, '\\s+', ' ', 'g')
FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT %s
"""
_TABLES = """
SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, autovacuum_count,
       autoanalyze_count
FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY relname
"""


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by the live processes `pids`."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--baseline", help="run the workers with this commit's code")
    args = parser.parse_args()
    if postgresql_bin() is None:
        raise SystemExit("needs PostgreSQL (Debian's postgresql package)")
    settings = ("shared_preload_libraries=pg_stat_statements", "pg_stat_statements.max=1000")
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}", flush=True)
    with (
        tempfile.TemporaryDirectory() as folder,
        PostgresServer(durable=True, settings=settings) as server,
        ProviderFake() as fake,
    ):
        with psycopg.connect(server.url("tests"), autocommit=True) as admin:
            admin.execute("CREATE EXTENSION pg_stat_statements")
        project = copy_example_project(Path(folder) / "project")
        store_url = server.new_store()
        code = baseline.extract(args.baseline, Path(folder) / "code") if args.baseline else REPO
        CountingSendGrid(fake)
        fake.record_requests = False
        pids: list[int] = []
        marks: dict[str, tuple[float, ...]] = {}
        seen = [0]
        original = fake.accept_many
        lock = threading.Lock()

        def snapshot() -> tuple[float, ...]:
            busy, total = machine_jiffies()
            return (
                time.perf_counter(),
                process_cpu(pids),
                server_cpu(server),
                own_cpu(),
                busy,
                total,
            )

        def accept_many(addresses: Sequence[str], provider_id: str) -> None:
            with lock:
                if not seen[0]:
                    with psycopg.connect(server.url("tests"), autocommit=True) as admin:
                        admin.execute("SELECT pg_stat_statements_reset()")
                        admin.execute("SELECT pg_stat_reset()")
                    marks["first"] = snapshot()
                original(addresses, provider_id)
                seen[0] += len(addresses)
                if seen[0] == args.recipients:
                    marks["last"] = snapshot()

        fake.accept_many = accept_many  # type: ignore[method-assign]
        command = [
            sys.executable, "-m", "tests.workerkit", fake.url, str(project), store_url,
            str(args.recipients), "list", "sendgrid",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(code), "SENDGRID_API_KEY": KEY}
        children = [
            subprocess.Popen(command, cwd=code, env=env, stdout=subprocess.DEVNULL)
            for _ in range(args.workers)
        ]
        pids.extend(child.pid for child in children)
        for child in children:
            if child.wait() != 0:
                raise SystemExit("a worker failed")
        first, last = marks["first"], marks["last"]
        seconds = last[0] - first[0]
        per_1k = 1000 / args.recipients
        print(
            f"code {args.baseline or 'current'}: {args.recipients} recipients,"
            f" {args.workers} worker(s): {args.recipients / seconds:.0f}"
            f" recipients/s, first to last message {seconds:.1f} s; machine"
            f" {(last[4] - first[4]) / max(1, last[5] - first[5]):.0%} busy;"
            f" load {os.getloadavg()[0]:.1f}"
        )
        workers, database, faker = ((last[i] - first[i]) * per_1k for i in (1, 2, 3))
        print(
            f"CPU s per 1k in that window: workers {workers:.3f}  PostgreSQL {database:.3f}"
            f"  fake {faker:.3f}"
        )
        with psycopg.connect(server.url("tests"), autocommit=True) as admin:
            print(
                f"\n{'calls':>7} {'rows':>8} {'ms':>8} {'ms/call':>8} {'WAL rec':>8}"
                f" {'WAL MB':>7} {'dirtied':>8} {'buffers':>9}  statement"
            )
            for calls, rows, total, wal, wal_bytes, dirtied, buffers, query in admin.execute(
                _STATEMENTS, (args.top,)
            ):
                print(
                    f"{calls:7} {rows:8} {total:8.0f} {total / calls:8.2f} {wal:8}"
                    f" {int(wal_bytes) / 1e6:7.1f} {dirtied:8} {buffers:9}  {query[:150]}"
                )
            print(f"\n{'table':24} {'ins':>8} {'upd':>8} {'hot':>8} {'del':>6} autovac analyze")
            for name, ins, upd, hot, dele, vac, analyze in admin.execute(_TABLES):
                print(f"{name:24} {ins:8} {upd:8} {hot:8} {dele:6} {vac:7} {analyze:7}")


if __name__ == "__main__":
    main()
