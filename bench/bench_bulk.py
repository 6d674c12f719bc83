"""Benchmark: big imports and audience freezes beside sending and `serve` (issues 15 D1, 16, 10).

    .venv/bin/python bench/bench_bulk.py [--rows 1000000] [--runs 3] [--audience 5000]
                                         [--baseline main] [--engines sqlite,postgresql]
                                         [--skip-concurrent] [--skip-import] [--skip-freeze]

1. **Beside a send** (current code only): a project with `--audience` subscribers; `newsletter
   subscribers import` of a `--rows` CSV (which also names the audience, as existing people) in
   one process; started with it, a send of the example issue to the subscribers through a
   loopback SMTP server (aiosmtpd, in this process) in another (it freezes the audience while
   the import reads the file, then sends while the import writes); `newsletter serve` in a
   third, flooded with one-click unsubscribe POSTs for a fifth of the audience by 4 threads
   until the import ends.
   Checked: the send completes (no failed, uncertain or pending row), nobody got two messages,
   every `sent` row is a message the server took and every message a `sent` row, everyone
   whose POST returned 200 is unsubscribed at the end (the import did not undo it), the import
   is complete. Reported: POST latency p50/p99/max (target p99 < 2 s), the send's duration.
2. **Import**: `SubscriberStore.import_csv` of the CSV into an empty store in a child process,
   the `--baseline` commit (from `git archive`, bench/baseline.py) and the current code in turn,
   on each engine: wall time and the child's peak RSS (VmHWM; target ≤ 100 MB).
3. **Freeze**: the start of a send of the example issue to the imported list (SQLite): the
   baseline's `check_audience` + `freeze` (two reads of the list, one transaction) against the
   current one-pass chunked freeze, each on a fresh copy of a store its own code imported: time
   and the child's peak RSS, and the peak before the freeze began (imports and the rendered
   issue), so the freeze's own share shows.

Medians of `--runs`; every configuration once per round, so all see the same machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.baseline import extract  # noqa: E402
from tests.conftest import copy_example_project  # noqa: E402
from tests.pgserver import PostgresServer, postgresql_bin  # noqa: E402

SECRET = "bench-bulk-secret"
IMPORT_CHILD = """
import sys, time
def peak():
    # VmHWM: this process's own peak RSS (KiB). Not ru_maxrss, which Linux carries over from
    # the parent across fork + exec (a big bench process would show as every child's peak).
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
from pathlib import Path
from newsletter.audience import SubscriberStore
started = time.perf_counter()
with SubscriberStore(sys.argv[1]) as store:
    report = store.import_csv(Path(sys.argv[2]))
elapsed = time.perf_counter() - started
assert report.added == int(sys.argv[3]), report
print(elapsed, peak())
"""
FREEZE_CHILD = """
import sys, time
def peak():
    # VmHWM: this process's own peak RSS (KiB). Not ru_maxrss, which Linux carries over from
    # the parent across fork + exec (a big bench process would show as every child's peak).
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
from pathlib import Path
from newsletter.audience import SubscriberStore
from newsletter.delivery import sender
from newsletter.delivery.ledger import Ledger
from tests.sendkit import example_template
template = example_template(Path(sys.argv[2]))
before = peak()
with SubscriberStore(sys.argv[1]) as store, Ledger(sys.argv[1]) as ledger:
    issue = ledger.issue(template.issue)
    audience = sender.StoreAudience(store)
    started = time.perf_counter()
    if hasattr(sender, "_freeze"):
        report = sender._freeze(template, audience, issue)
    else:  # the baseline: check, then freeze, as its send_issue does
        sender.check_audience(template, audience)
        report = issue.freeze(
            ((key, r.email) for key, r in audience.recipients()), template.fingerprint
        )
    elapsed = time.perf_counter() - started
assert report.total == int(sys.argv[3]), report
print(elapsed, before, peak())
"""
SEND_CHILD = """
import sys
from pathlib import Path
from newsletter.audience import SubscriberStore
from newsletter.delivery.ledger import Ledger
from newsletter.delivery.ratelimit import Backoff
from newsletter.delivery.sender import SendOptions, StoreAudience, send_issue
from tests.sendkit import example_template, smtp_transport
template = example_template(Path(sys.argv[2]))
with SubscriberStore(sys.argv[1]) as store, Ledger(sys.argv[1]) as ledger:
    report = send_issue(template, StoreAudience(store), transport=smtp_transport(int(sys.argv[3])),
                        ledger=ledger, backoff=Backoff(base=0.05, cap=0.1),
                        options=SendOptions(concurrency=2))
print(report.sent_now, report.complete, len(report.failures), len(report.uncertain))
"""


def audience_address(n: int) -> str:
    return f"member{n:06d}@example.org"


def write_csv(path: Path, rows: int, *, members: int = 0) -> None:
    """`rows` people: the first `members` are the send's audience, the rest newcomers."""
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name,city\n")
        for n in range(rows):
            email = audience_address(n) if n < members else f"reader{n:07d}@example.org"
            out.write(f"{email},Reader {n},Utrecht\n")


def child_env(code: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["PYTHONPATH"] = str(code)
    return env


def run_child(script: str, code: Path, cwd: Path, *args: str) -> list[float]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env=child_env(code),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr[-3000:]}")
    return [float(v) for v in done.stdout.split()]


def median_line(label: str, values: list[tuple[float, ...]]) -> str:
    seconds = [v[0] for v in values]
    mib = [v[-1] for v in values]
    runs = ", ".join(f"{s:.1f}" for s in seconds)
    return (
        f"| {label} | {statistics.median(seconds):.1f} s ({runs}) |"
        f" {statistics.median(mib):.0f} MiB |"
    )


# --- 1. beside a send -------------------------------------------------------------------------


def concurrent(tmp: Path, rows: int, audience: int) -> None:
    import httpx

    from newsletter.audience import SubscriberStore, make_token
    from newsletter.delivery.ledger import Ledger, State
    from tests.smtpserver import SmtpTestServer
    from tests.test_cli_loop import free_port

    project = copy_example_project(tmp / "concurrent")
    db = project / "newsletter.db"
    members = tmp / "members.csv"
    write_csv(members, audience, members=audience)
    big = project / "big-with-members.csv"
    write_csv(big, rows, members=audience)
    with SubscriberStore(db) as store:
        store.import_csv(members)
    env = child_env(REPO)
    env["NEWSLETTER_SECRET"] = SECRET
    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    flooded = [audience_address(n) for n in range(0, audience, 5)]
    tokens = {a: make_token(SECRET.encode(), a) for a in flooded}
    base = f"http://127.0.0.1:{port}/unsubscribe?token="
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise SystemExit("serve did not start") from None
            time.sleep(0.2)
    latencies: list[float] = []
    answered: dict[str, int] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def flood(offset: int) -> None:
        with httpx.Client(timeout=30) as client:
            n = offset
            while not stop.is_set():
                address = flooded[n % len(flooded)]
                n += 4
                started = time.perf_counter()
                try:
                    status = client.post(
                        base + tokens[address], data={"List-Unsubscribe": "One-Click"}
                    ).status_code
                except httpx.TransportError:
                    status = 0
                with lock:
                    latencies.append(time.perf_counter() - started)
                    if status == 200:
                        answered[address] = 200
                time.sleep(0.01)

    with SmtpTestServer(timeout=300) as sink:
        importer = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "subscribers", "import", big.name],
            cwd=project,
            env={**env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started_import = time.monotonic()
        threads = [threading.Thread(target=flood, args=(k,), daemon=True) for k in range(4)]
        for thread in threads:
            thread.start()
        send_started = time.monotonic()
        sent = subprocess.run(
            [sys.executable, "-c", SEND_CHILD, str(db), str(project), str(sink.port)],
            cwd=tmp,
            env=child_env(REPO),
            capture_output=True,
            text=True,
            check=False,
        )
        send_seconds = time.monotonic() - send_started
        out, err = importer.communicate()
        import_seconds = time.monotonic() - started_import
        stop.set()
        for thread in threads:
            thread.join()
        messages = sink.messages
    serve.send_signal(signal.SIGINT)
    serve.communicate(timeout=30)
    if sent.returncode != 0:
        raise SystemExit(f"the send died:\n{sent.stderr[-3000:]}")
    if importer.returncode != 0:
        raise SystemExit(f"the import failed:\n{err[-3000:]}")
    recipients = [m.rcpt_tos[0] for m in messages]
    with Ledger(db) as ledger, SubscriberStore(db) as store:
        issue = ledger.issue(ledger.issues()[0])
        counts = issue.counts()
        sent_rows = {row.email for row in issue.rows(State.SENT)}
        resubscribed = [a for a in answered if store.get(a).status != "unsubscribed"]  # type: ignore[union-attr]
        total_subscribers = sum(store.count().values())
    problems = []
    if len(recipients) != len(set(recipients)):
        problems.append("someone got two messages")
    if sent_rows != set(recipients):
        problems.append(f"sent rows {len(sent_rows)} != messages {len(set(recipients))}")
    open_rows = sum(
        counts[s] for s in (State.PENDING, State.SENDING, State.UNCERTAIN, State.FAILED)
    )
    if open_rows:
        problems.append(f"{open_rows} rows pending/sending/uncertain/failed")
    if resubscribed:
        problems.append(f"{len(resubscribed)} unsubscribed people subscribed again")
    if total_subscribers != rows:
        problems.append(f"{total_subscribers} subscribers, expected {rows}")
    ordered = sorted(latencies)
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    print(
        f"\n1. import of {rows} rows beside a send to {audience}"
        f" and {len(ordered)} unsubscribe POSTs"
    )
    print(
        f"   send: {send_seconds:.1f} s, {len(recipients)} messages,"
        f" child said: {sent.stdout.strip()}"
    )
    print(
        f"   import: {import_seconds:.1f} s ({out.strip().splitlines()[-1] if out.strip() else ''})"
    )
    print(
        f"   POST latency: p50 {statistics.median(ordered) * 1000:.0f} ms,"
        f" p99 {p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms;"
        f" {len(answered)} people unsubscribed"
    )
    print(f"   checks: {'all passed' if not problems else '; '.join(problems)}")
    print(f"   target p99 < 2 s: {'met' if p99 < 2 else 'NOT met'}")


# --- 2. and 3. imports and freezes, before and after ------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--audience", type=int, default=5000)
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--skip-concurrent", action="store_true")
    parser.add_argument("--skip-import", action="store_true")
    parser.add_argument("--skip-freeze", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    engines = args.engines.split(",")
    print(
        f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}, rows {args.rows},"
        f" runs {args.runs}, baseline {args.baseline}"
    )
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if not args.skip_concurrent:
            concurrent(tmp, args.rows, args.audience)
        if args.skip_import and args.skip_freeze:
            return
        sides = {"before": extract(args.baseline, tmp / "baseline"), "after": REPO}
        project = copy_example_project(tmp / "project")
        csv_path = tmp / "list.csv"
        write_csv(csv_path, args.rows)
        kept: dict[str, Path] = {}
        imports: dict[tuple[str, str], list[tuple[float, ...]]] = {}
        freezes: dict[str, list[tuple[float, ...]]] = {}
        server = None
        if "postgresql" in engines and not args.skip_import:
            if postgresql_bin() is None:
                raise SystemExit("needs PostgreSQL (Debian's postgresql package)")
            server = PostgresServer(durable=True).__enter__()
        try:
            for run in range(args.runs):
                for side, code in sides.items():
                    for engine in engines if not args.skip_import else ["sqlite"]:
                        if engine == "sqlite":
                            url = str(tmp / f"{side}-{run}.db")
                        else:
                            assert server is not None
                            url = server.new_store()
                        found = run_child(
                            IMPORT_CHILD, code, tmp, url, str(csv_path), str(args.rows)
                        )
                        imports.setdefault((side, engine), []).append(tuple(found))
                        print(
                            f"import run {run + 1} {side:6} {engine:10}"
                            f" {found[0]:7.1f} s {found[1] / 1024:5.0f} MiB"
                        )
                        if engine == "sqlite":
                            if side in kept:
                                Path(url).unlink()
                                for extra in ("-wal", "-shm"):
                                    Path(url + extra).unlink(missing_ok=True)
                            else:
                                kept[side] = Path(url)
                    if args.skip_freeze:
                        continue
                    copy = tmp / f"freeze-{side}.db"
                    shutil.copy(kept[side], copy)
                    found = run_child(
                        FREEZE_CHILD, code, tmp, str(copy), str(project), str(args.rows)
                    )
                    freezes.setdefault(side, []).append(tuple(found))
                    print(
                        f"freeze run {run + 1} {side:6} {found[0]:7.1f} s"
                        f"  before {found[1] / 1024:5.0f} MiB, peak {found[2] / 1024:5.0f} MiB"
                    )
                    copy.unlink()
        finally:
            if server is not None:
                server.__exit__(None, None, None)
        if not args.skip_import:
            print(f"\n2. import of {args.rows} subscribers (median, runs)\n")
            print("| engine, code | wall time | peak RSS |\n|---|---|---|")
            for (side, engine), values in imports.items():
                print(median_line(f"{engine}, {side}", [(s, kib / 1024) for s, kib in values]))
        if not args.skip_freeze:
            print(f"\n3. freeze of {args.rows} subscribers, SQLite (median, runs)\n")
            print("| code | wall time | peak RSS before the freeze | peak RSS |\n|---|---|---|---|")
            for side, values in freezes.items():
                seconds = [v[0] for v in values]
                print(
                    f"| {side} | {statistics.median(seconds):.1f} s"
                    f" ({', '.join(f'{s:.1f}' for s in seconds)}) |"
                    f" {statistics.median(v[1] for v in values) / 1024:.0f} MiB |"
                    f" {statistics.median(v[2] for v in values) / 1024:.0f} MiB |"
                )


if __name__ == "__main__":
    main()
