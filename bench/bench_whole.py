"""Benchmark: the whole `newsletter send` process, beside mailmerge 2.3 (issue 16).

    .venv/bin/python bench/bench_whole.py [--parts compare,startup,throughput] [--runs 3]
        [--subscribers 1000] [--startup-sizes 100000,1000000] [--throughput 100000]
        [--mailmerge PATH] [--baseline REF] [--data DIR]

Every figure is a whole process started with `subprocess` (interpreter start, imports, render,
check, audience freeze, delivery, exit), sending to bench/rawsink.py's counting SMTP sink on
127.0.0.1 (one sink for the run, reset between processes). The project: the repository's
newsletter.toml and images with a generated 5-item issue `photos`, each item with its own
3000x2000 JPEG (bench_build.py's `make_photo_issue`), `[transport] kind = "smtp"` pointed at
the sink with `security = "none"` and the default 3 connections, `rate_per_second = 0`.
Subscribers are imported once per size with `newsletter subscribers import` and the database
is copied afresh before every process, so every send starts with an empty ledger.

Parts (`--parts`, each side by side in one run, every configuration once per round):

- **compare**: `mailmerge --no-dry-run --no-limit` against `newsletter send photos --yes` for
  `--subscribers` people: wall time, msg/s, the ratio (target >= 10x). mailmerge (from the
  venv `--mailmerge` names, else one made in /tmp with `pip install 'mailmerge==2.3.*'`) is
  fed what `newsletter build photos` writes: a template with `TO`, `FROM`, `SUBJECT`, one
  `ATTACHMENT:` header per embedded image (mailmerge attaches them and points the HTML's
  `<img src>` at their Content-IDs, as its README describes) and a multipart/alternative body
  with build's email.txt and email.html; the recipient's address and unsubscribe link are
  Jinja2 fields filled from the CSV, the rest is inside `{% raw %}`. Its output (it prints
  every message) goes to /dev/null.
- **startup**: process start -> the sink's first message, for each of `--startup-sizes`, after
  one `newsletter check photos` (warm check cache); the send is stopped with SIGTERM once the
  first message arrived and 2 s more were sent (it finishes what is in flight and exits
  cleanly). Peak RSS is the process's own VmHWM read from /proc until it exits. With
  `--baseline REF` the same is run with that commit's code (bench/baseline.py), alternating.
  Then one timing run per size prints the phases: `-X importtime` (the biggest top-level
  imports) and wall-clock marks around loading + rendering, the transport check (first
  connect), the content check, the audience freeze and the first accepted message (the bench
  wraps those functions in a driver; nothing in the package is instrumented).
- **throughput**: a whole send to `--throughput` subscribers: msg/s from process start to exit,
  msg/s between the first and the last message, and the client's CPU (user + system) per 1,000.

The load average is printed with every figure: the machine is shared, read the medians.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from baseline import command, extract  # noqa: E402
from bench_build import make_photo_issue  # noqa: E402
from rawsink import RawSink  # noqa: E402

ISSUE = "photos"
ITEMS = 5
SECRET = "bench-whole-secret"
MAILMERGE_SPEC = "mailmerge==2.3.*"
TARGET_RATIO = 10.0
TARGET_FIRST = {100_000: 1.0, 1_000_000: 5.0}
TARGET_RSS_MIB = 100.0
TARGET_RATE = 1_500.0
TARGET_CPU_PER_1K = 0.4


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


# --- the project ------------------------------------------------------------------------------


def smooth_photo(seed: int) -> Any:
    """A 3000x2000 picture with the detail of a photo (shapes, a gradient, a little grain), so
    the scaled copy in the message weighs what a photo's does (~50 KB), not noise's (~190 KB)."""
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.linear_gradient("L").resize((3000, 2000)).convert("RGB")
    draw = ImageDraw.Draw(image)
    chance = random.Random(seed)
    for _ in range(40):
        x, y, size = chance.randrange(3000), chance.randrange(2000), chance.randrange(100, 600)
        colour = (chance.randrange(256), chance.randrange(256), chance.randrange(256))
        draw.ellipse((x, y, x + size, y + size * 2 // 3), fill=colour)
    grain = Image.effect_noise((3000, 2000), 12).convert("RGB")
    return Image.blend(image, grain, 0.15).filter(ImageFilter.GaussianBlur(2))


def make_project(folder: Path, port: int, *, noisy: bool = False) -> Path:
    """The example settings and images, the 5-item photo issue, SMTP to the sink on `port`.
    `noisy`: bench_build.py's photos as they are (pure noise: ~190 KB each once scaled)."""
    folder.mkdir(parents=True)
    make_photo_issue(folder, ITEMS)
    issue = folder / "issues" / ISSUE
    if not noisy:
        for number in range(1, ITEMS + 1):
            smooth_photo(number).save(issue / f"photo-{number:02}.jpg", "JPEG", quality=90)
    toml = folder / "newsletter.toml"
    text = toml.read_text(encoding="utf-8")
    head = text[: text.index("[transport]")]
    toml.write_text(
        head + '[transport]\nkind = "smtp"\nhost = "127.0.0.1"\n'
        f'port = {port}\nsecurity = "none"\n\n[sending]\nrate_per_second = 0\n',
        encoding="utf-8",
    )
    return folder


def environment(code_root: Path | None) -> tuple[list[str], dict[str, str]]:
    prefix, env = command(code_root)
    env = {k: v for k, v in env.items() if not k.startswith("NEWSLETTER_")}
    # An installed package has its bytecode; this variable (set on the shared machine) would
    # make every process compile the package's sources again (~0.2 s of CPU before the first
    # message). The first process of each side writes the bytecode (the warm-up check).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["NEWSLETTER_SECRET"] = SECRET
    if code_root is not None:
        env["PYTHONPATH"] = str(code_root)
    return prefix, env


def newsletter(project: Path, *args: str, code_root: Path | None = None) -> None:
    prefix, env = environment(code_root)
    done = subprocess.run(
        [*prefix, *args], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode not in (0, 1) or (done.returncode == 1 and args[0] != "check"):
        raise SystemExit(f"newsletter {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def subscriber_db(project: Path, data: Path, count: int) -> Path:
    """A store with `count` subscribers (imported once, kept in `data`)."""
    kept = data / f"subscribers-{count}.db"
    if kept.exists():
        return kept
    csv = data / f"subscribers-{count}.csv"
    with csv.open("w", encoding="utf-8") as out:
        out.write("email,name\n")
        for n in range(count):
            out.write(f"reader{n:07d}@example.org,Reader {n}\n")
    target = project / "newsletter.db"
    fresh_db(project, None)
    started = time.perf_counter()
    print(f"importing {count:,} subscribers once ({load()}) …", flush=True)
    newsletter(project, "subscribers", "import", str(csv))
    print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    csv.unlink()
    shutil.copy(target, kept)
    return kept


def fresh_db(project: Path, source: Path | None) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        (project / f"newsletter.db{suffix}").unlink(missing_ok=True)
    if source is not None:
        shutil.copy(source, project / "newsletter.db")


# --- one whole process ------------------------------------------------------------------------


@dataclass
class Run:
    wall: float
    messages: int
    cpu: float
    first: float | None = None  # process start -> first message at the sink
    first_cpu: float | None = None  # the process's CPU (user + system) up to then
    last: float | None = None  # process start -> last message counted
    peak_mib: float | None = None
    load: str = field(default_factory=load)

    @property
    def rate(self) -> float:
        return self.messages / self.wall


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of process `pid` (all its threads) so far, from /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def peak_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def whole_process(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    sink: RawSink,
    *,
    expect: int | None,
    stop_after: float | None = None,
    stdout: int | None = subprocess.DEVNULL,
) -> Run:
    """Run `argv` to its end (or SIGTERM it `stop_after` s after the first message)."""
    sink.reset()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE)
    peak: float | None = None
    first: float | None = None
    first_cpu: float | None = None
    stopped = False
    last_count, last_at = 0, started
    while child.poll() is None:
        peak = peak_mib(child.pid) or peak
        if first is None and sink.first_at:
            first = sink.first_at - started
            first_cpu = cpu_seconds(child.pid)  # a poll (5 ms) after the first message at most
        count = sink.count
        if count != last_count:
            last_count, last_at = count, time.time()
        if (
            stop_after is not None
            and first is not None
            and not stopped
            and time.time() - started > first + stop_after
        ):
            child.send_signal(signal.SIGTERM)
            stopped = True
        time.sleep(0.005)
    ended = time.time()
    _, err = child.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode not in (0, 3, 5) and not (stopped and child.returncode > 0):
        raise SystemExit(f"{argv} exited {child.returncode}:\n{err.decode()[-3000:]}")
    if first is None and sink.first_at:
        first = sink.first_at - started
    count = sink.settle(expect, timeout=10) if expect is not None else sink.count
    if count != last_count:
        last_at = time.time()
    if expect is not None and count != expect:
        raise SystemExit(f"{argv}: the sink counted {count} messages, expected {expect}")
    return Run(
        wall=ended - started,
        messages=count,
        cpu=after.ru_utime - used.ru_utime + after.ru_stime - used.ru_stime,
        first=first,
        first_cpu=first_cpu,
        last=last_at - started,
        peak_mib=peak,
    )


# --- mailmerge --------------------------------------------------------------------------------


def mailmerge_command(given: str | None, root: Path) -> Path:
    """The `mailmerge` program: in the venv `given`, else in a venv made here."""
    if given is not None:
        program = Path(given)
        program = program / "bin" / "mailmerge" if program.is_dir() else program
        if not program.exists():
            raise SystemExit(f"--mailmerge {given}: no mailmerge there")
        return program
    venv = root / "mailmerge-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            MAILMERGE_SPEC,
        ],
        check=True,
    )
    return venv / "bin" / "mailmerge"


def mailmerge_inputs(project: Path, count: int, port: int) -> tuple[Path, Path, Path]:
    """Template, database and server config for mailmerge, from `newsletter build photos`."""
    newsletter(project, "build", ISSUE)
    built = project / "dist" / ISSUE
    html = (built / "email.html").read_text(encoding="utf-8")
    text = (built / "email.txt").read_text(encoding="utf-8")
    settings_text = (project / "newsletter.toml").read_text(encoding="utf-8")
    unsubscribe = re.search(
        r'(?m)^url = "([^"]+)"', settings_text[settings_text.index("[unsubscribe]") :]
    )
    assert unsubscribe is not None
    link = re.compile(re.escape(unsubscribe.group(1)) + r"[^\"'\s<>)\]]*")
    subject = re.search(r"<title>(.*?)</title>", html, re.S)
    images = [p.name for p in sorted(built.iterdir()) if p.suffix in (".jpg", ".png", ".gif")]
    images = [name for name in images if name in html]

    def fields(body: str) -> str:
        # Raw Jinja2 around everything but the per-recipient unsubscribe link.
        parts = link.split(body)
        return "{{ unsubscribe }}".join("{% raw %}" + p + "{% endraw %}" for p in parts)

    template = built / "mailmerge_template.txt"
    sender = re.search(r'(?m)^from = "([^"]+)"', settings_text)
    assert sender is not None
    headers = [
        "TO: {{ email }}",
        f"FROM: {sender.group(1)}",
        f"SUBJECT: {(subject.group(1) if subject else ISSUE).strip()}",
        *[f"ATTACHMENT: {name}" for name in images],
        "MIME-Version: 1.0",
        'Content-Type: multipart/alternative; boundary="bench-boundary"',
    ]
    template.write_text(
        "\n".join(headers)
        + "\n\n--bench-boundary\nContent-Type: text/plain; charset=utf-8\n\n"
        + fields(text)
        + "\n--bench-boundary\nContent-Type: text/html; charset=utf-8\n\n"
        + fields(html)
        + "\n--bench-boundary--\n",
        encoding="utf-8",
    )
    database = built / "mailmerge_database.csv"
    with database.open("w", encoding="utf-8") as out:
        out.write("email,unsubscribe\n")
        for n in range(count):
            out.write(f"reader{n:07d}@example.org,{unsubscribe.group(1)}?token=t{n:07d}\n")
    config = built / "mailmerge_server.conf"
    config.write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\nratelimit = 0\n", encoding="utf-8"
    )
    return template, database, config


# --- the phases of start-up -------------------------------------------------------------------

DRIVER = r"""
import atexit, sys, time
T0 = float(sys.argv[1])
marks = []
def mark(label, since=None):
    marks.append((label, since, time.time() - T0, time.process_time()))
atexit.register(lambda: print("PHASES " + repr(marks), file=sys.stderr, flush=True))
mark("interpreter started")
import newsletter.cli
import newsletter.cli.send
mark("imported the CLI")
import newsletter.sending as sending
from newsletter.delivery import sender
from newsletter.delivery.transports import smtp
mark("imported the send use case")

def timed(owner, name, label, once=False):
    inner = getattr(owner, name)
    done = []
    def wrapper(*args, **kwargs):
        if once:
            if done:
                return inner(*args, **kwargs)
            done.append(1)  # the first caller only (three connections start together)
        start = time.time() - T0
        try:
            return inner(*args, **kwargs)
        finally:
            mark(label, start)
    setattr(owner, name, wrapper)

timed(sending._Issue, "load", "load + render the issue")
timed(sending, "_checked_transport", "transport: connect, EHLO, QUIT (its check)")
timed(sending, "_gate", "content check (warm cache)")
timed(sending, "plan_send", "plan_send (all of the above + counts)")
timed(sender, "_freeze", "audience freeze")
timed(smtp.SmtpTransport, "send_batch", "first message handed over and accepted", once=True)
sys.argv = ["newsletter", "send", sys.argv[2], "--yes"]
newsletter.cli.main()
"""


def phases(project: Path, sink: RawSink, code_root: Path | None) -> None:
    _, env = environment(code_root)
    argv = [sys.executable, "-X", "importtime", "-c", DRIVER, f"{time.time():.6f}", ISSUE]
    sink.reset()
    started = time.time()
    argv[5] = f"{started:.6f}"
    child = subprocess.Popen(
        argv, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    while child.poll() is None and not sink.first_at:
        time.sleep(0.005)
    first = sink.first_at - started if sink.first_at else None
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate()
    text = err.decode(errors="replace")
    imports = []
    for line in text.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\S.*)$", line)
        if found:  # a top-level import (no indentation before its name)
            imports.append((int(found.group(2)), found.group(3)))
    imports.sort(reverse=True)
    print("  biggest top-level imports (-X importtime, cumulative; slower than a plain run):")
    for micros, name in imports[:8]:
        print(f"    {micros / 1000:8.0f} ms  {name}")
    marks = re.search(r"PHASES (\[.*\])", text)
    if marks is None:
        print("  (no phase marks: the driver failed)\n" + text[-2000:])
        return
    print("  phases (seconds from process start; start-end; the process's CPU at the end):")
    for label, since, at, cpu in ast.literal_eval(marks.group(1)):
        span = (
            f"{since:6.2f}-{at:6.2f} ({at - since:5.2f} s)" if since is not None else f"{at:6.2f}"
        )
        print(f"    {label:<48}{span:<24} CPU {cpu:5.2f}")
    if first is not None:
        print(f"    {'first message at the sink':<48}{first:6.2f}")


# --- the parts --------------------------------------------------------------------------------


def compare(args: argparse.Namespace, root: Path, sink: RawSink, data: Path) -> None:
    count = args.subscribers
    project = make_project(root / "compare", sink.port, noisy=args.noisy_photos)
    db = subscriber_db(project, data, count)
    program = mailmerge_command(args.mailmerge, root)
    template, database, config = mailmerge_inputs(project, count, sink.port)
    size = len(template.read_bytes())
    print(
        f"\n== compare: {count:,} subscribers, issue '{ISSUE}' ({ITEMS} items with photos), "
        f"mailmerge template {size / 1024:.0f} KB =="
    )
    newsletter(project, "check", ISSUE)  # warm caches, as a user who checked before sending
    runs: dict[str, list[Run]] = {"mailmerge 2.3": [], "newsletter send": []}
    prefix, env = environment(None)
    for round_ in range(args.runs):
        argv = [
            str(program),
            "--no-dry-run",
            "--no-limit",
            "--output-format",
            "raw",
            "--template",
            str(template),
            "--database",
            str(database),
            "--config",
            str(config),
        ]
        run = whole_process(argv, project, dict(os.environ), sink, expect=count)
        runs["mailmerge 2.3"].append(run)
        print(
            f"  round {round_ + 1} mailmerge: {run.wall:6.2f} s {run.rate:7.0f} msg/s "
            f"CPU {run.cpu:5.2f} s ({run.load})",
            flush=True,
        )
        fresh_db(project, db)
        run = whole_process([*prefix, "send", ISSUE, "--yes"], project, env, sink, expect=count)
        runs["newsletter send"].append(run)
        print(
            f"  round {round_ + 1} newsletter: {run.wall:6.2f} s {run.rate:7.0f} msg/s "
            f"CPU {run.cpu:5.2f} s first at {run.first or 0:4.2f} s ({run.load})",
            flush=True,
        )
    print(f"\n| {count:,} subscribers | median wall | msg/s | CPU | first message |")
    print("|---|---|---|---|---|")
    medians = {}
    for label, done in runs.items():
        wall = statistics.median(r.wall for r in done)
        medians[label] = wall
        print(
            f"| {label} | {wall:.2f} s ({', '.join(f'{r.wall:.2f}' for r in done)}) | "
            f"{count / wall:,.0f} | {statistics.median(r.cpu for r in done):.2f} s | "
            f"{statistics.median(r.first or 0 for r in done):.2f} s |"
        )
    ratio = medians["mailmerge 2.3"] / medians["newsletter send"]
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"\nnewsletter / mailmerge = {ratio:.1f}x ({verdict} the {TARGET_RATIO:.0f}x target)")


def startup(args: argparse.Namespace, root: Path, sink: RawSink, data: Path) -> None:
    project = make_project(root / "startup", sink.port, noisy=args.noisy_photos)
    sides: dict[str, Path | None] = {"current": None}
    if args.baseline:
        sides = {"baseline": extract(args.baseline, root / "baseline"), "current": None}
    for size in args.startup_sizes:
        db = subscriber_db(project, data, size)
        fresh_db(project, db)
        for code_root in sides.values():
            # Each side's warm caches (its render, the check's link answers and spam score, a
            # reusable report where the code keeps one) and its bytecode.
            newsletter(project, "check", ISSUE, code_root=code_root)
        print(f"\n== start-up to the first message: {size:,} subscribers ==")
        runs: dict[str, list[Run]] = {side: [] for side in sides}
        for round_ in range(args.runs):
            for side, code_root in sides.items():
                fresh_db(project, db)
                prefix, env = environment(code_root)
                run = whole_process(
                    [*prefix, "send", ISSUE, "--yes"],
                    project,
                    env,
                    sink,
                    expect=None,
                    stop_after=2.0,
                )
                runs[side].append(run)
                print(
                    f"  round {round_ + 1} {side:<9} first message at {run.first or 0:5.2f} s "
                    f"(CPU {run.first_cpu or 0:4.2f} s), peak RSS {run.peak_mib or 0:5.1f} MiB, "
                    f"{run.messages} sent before the stop ({run.load})",
                    flush=True,
                )
        target = TARGET_FIRST.get(size)
        for side, done in runs.items():
            first = statistics.median(r.first or 0 for r in done)
            peak = statistics.median(r.peak_mib or 0 for r in done)
            verdict = (
                ""
                if target is None
                else (f" ({'meets' if first <= target else 'MISSES'} <= {target:g} s)")
            )
            cpu = statistics.median(r.first_cpu or 0 for r in done)
            print(
                f"  {side}: first message median {first:.2f} s "
                f"({', '.join(f'{r.first or 0:.2f}' for r in done)}){verdict}; CPU to it "
                f"{cpu:.2f} s ({', '.join(f'{r.first_cpu or 0:.2f}' for r in done)}); "
                f"peak RSS {peak:.1f} MiB"
                + (
                    f" ({'meets' if peak <= TARGET_RSS_MIB else 'MISSES'} <= 100 MB)"
                    if size >= 1_000_000
                    else ""
                )
            )
        for side, code_root in sides.items():
            fresh_db(project, db)
            print(f"  where the time goes ({side}, one run, {load()}):")
            phases(project, sink, code_root)


def throughput(args: argparse.Namespace, root: Path, sink: RawSink, data: Path) -> None:
    count = args.throughput
    project = make_project(root / "throughput", sink.port, noisy=args.noisy_photos)
    db = subscriber_db(project, data, count)
    fresh_db(project, db)
    newsletter(project, "check", ISSUE)
    prefix, env = environment(None)
    print(f"\n== throughput: {count:,} subscribers, whole process ==")
    done: list[Run] = []
    for round_ in range(args.runs):
        fresh_db(project, db)
        run = whole_process([*prefix, "send", ISSUE, "--yes"], project, env, sink, expect=count)
        done.append(run)
        steady = (count - 1) / max((run.last or run.wall) - (run.first or 0), 1e-6)
        print(
            f"  round {round_ + 1}: {run.wall:6.1f} s, {run.rate:6.0f} msg/s whole process, "
            f"{steady:6.0f} msg/s first->last message, CPU {run.cpu / count * 1000:.2f} s "
            f"per 1,000 ({run.load})",
            flush=True,
        )
    rate = statistics.median(r.rate for r in done)
    cpu = statistics.median(r.cpu / count * 1000 for r in done)
    print(
        f"  median: {rate:,.0f} msg/s ({'meets' if rate >= TARGET_RATE else 'MISSES'} "
        f">= {TARGET_RATE:,.0f}); client CPU {cpu:.2f} s per 1,000 "
        f"({'meets' if cpu <= TARGET_CPU_PER_1K else 'MISSES'} <= {TARGET_CPU_PER_1K})"
    )


PARTS: dict[str, Callable[[argparse.Namespace, Path, RawSink, Path], None]] = {
    "compare": compare,
    "startup": startup,
    "throughput": throughput,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="compare,startup,throughput")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--subscribers", type=int, default=1_000)
    parser.add_argument("--startup-sizes", default="100000,1000000")
    parser.add_argument("--throughput", type=int, default=100_000)
    parser.add_argument("--mailmerge", help="a venv (or its bin/mailmerge) with mailmerge 2.3")
    parser.add_argument("--baseline", help="also run start-up with this commit's code")
    parser.add_argument("--data", help="keep the imported subscriber stores here between runs")
    parser.add_argument("--noisy-photos", action="store_true", help="bench_build.py's noise photos")
    args = parser.parse_args()
    args.startup_sizes = [int(n) for n in args.startup_sizes.split(",") if n]
    with tempfile.TemporaryDirectory(prefix="bench-whole-") as folder, RawSink() as sink:
        root = Path(folder)
        data = Path(args.data) if args.data else root / "data"
        data.mkdir(parents=True, exist_ok=True)
        print(f"{sink.describe()}; {os.cpu_count()} cores; {load()}")
        for part in args.parts.split(","):
            PARTS[part](args, root, sink, data)


if __name__ == "__main__":
    main()
