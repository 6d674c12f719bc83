"""Benchmark: sending the example issue over SMTP, our sender against a naive one, in one run.

    .venv/bin/python bench/bench_send.py [--recipients 5000] [--naive-recipients 1000] [--runs 3]
                                         [--connections 3] [--images embedded|linked]
                                         [--sink auto|postfix|aiosmtpd|raw] [--queue-parent DIR]
                                         [--baseline REF] [--no-naive] [--no-ceiling]

Sink: a private Postfix on 127.0.0.1 (bench/postfix.py: own config directory, queue in a
temporary directory, discard transport; needs root and Debian's postfix package). If Postfix
cannot be started, an aiosmtpd sink in a child process takes its place and the output says so.
`--sink raw`: bench/rawsink.py, a counting asyncio sink that offers PIPELINING and parses
nothing (not the bottleneck of a Python client: what the client can do).

Senders, one after the other in each repetition so all see the same machine:
- newsletter: `send_issue` with the real ledger (a fresh SQLite file per run) and `SmtpTransport`
  with `--connections` persistent connections, sending `--recipients` messages. It runs in a
  child process (the template is prepared before the clock starts); the child reports its own
  wall time, CPU (all threads) and context switches;
- before (with `--baseline REF`): the same child, importing the package of commit REF
  (bench/baseline.py: `git archive` into a temporary folder, PYTHONPATH), alternated with ours;
- naive: per recipient an `EmailMessage(policy=SMTP)` with the same text and HTML parts
  (personalised by str.replace) and embedded images, a new smtplib connection, send, QUIT. No
  ledger (like mailmerge). It sends `--naive-recipients` messages: rates are per message.
- ceiling (a reference, not a competitor): one pre-encoded message sent `--recipients` times
  over `--connections` persistent connections, no ledger, no personalisation. What the sink
  accepts when the client does almost nothing; ours cannot beat it.

Between runs it waits until the sink has processed everything it accepted (so each run starts on
an idle sink) and checks the count. Per run it reports the client's CPU and the sink's CPU per
message and the load average: on a small machine the sink's CPU is what bounds the rate. Then
the medians, the ratio (target >= 5x), and the issue 16 targets: >= 1,500 msg/s to the raw sink,
>= 85 % of the ceiling to Postfix, client CPU <= 0.4 s per 1,000 messages.

`--images linked` sets a base_url so images are published, not embedded (a smaller message).
"""

from __future__ import annotations

import argparse
import dataclasses
import html as html_lib
import os
import resource
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parent.parent
if "--child-send" not in sys.argv:
    # A sending child finds `newsletter` through PYTHONPATH (maybe an earlier commit's).
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import baseline  # noqa: E402
from postfix import PostfixError, PrivatePostfix, free_port, process_cpu_seconds  # noqa: E402
from rawsink import RawSink  # noqa: E402

from newsletter.config import Settings, TransportSettings, load_settings  # noqa: E402
from newsletter.content import load_issue  # noqa: E402
from newsletter.delivery.ledger import Ledger  # noqa: E402
from newsletter.delivery.message import MessageTemplate  # noqa: E402
from newsletter.delivery.sender import SendOptions, send_issue  # noqa: E402
from newsletter.delivery.transports.base import OutgoingMessage  # noqa: E402
from newsletter.delivery.transports.smtp import SmtpTransport, smtp_body  # noqa: E402
from newsletter.render import render_issue  # noqa: E402
from newsletter.render.model import RenderedIssue  # noqa: E402
from newsletter.slots import Slot  # noqa: E402
from tests.sendkit import SECRET, ListAudience, Person, people, token_for  # noqa: E402

ISSUE = "2026-11"
LINKED_BASE_URL = "https://riverside-garden.example.org/newsletter/"
TARGET_RATIO = 5.0
TARGET_RATE = 600.0
TARGET_RAW_RATE = 1500.0  # issue 16, to the raw sink at 100k
TARGET_CEILING_SHARE = 0.85  # issue 16, to Postfix
TARGET_CPU_PER_1000 = 0.4  # seconds of client CPU per 1,000 messages (issue 16)


# --- sinks ------------------------------------------------------------------------------------


class Sink(Protocol):
    host: str
    port: int
    name: str

    def describe(self) -> str: ...

    def settle(self, expected: int) -> int:
        """Wait until the sink has processed `expected` messages in all; return its count."""
        ...

    def cpu_seconds(self) -> float: ...

    def stop(self) -> None: ...


class PostfixSink:
    name = "postfix"

    def __init__(self, queue_parent: Path | None) -> None:
        self._postfix = PrivatePostfix(parent=queue_parent).start()
        self.host = self._postfix.host
        self.port = self._postfix.port
        self.queue_parent = queue_parent

    def describe(self) -> str:
        where = f", queue under {self.queue_parent}" if self.queue_parent else ""
        return self._postfix.describe() + where

    def settle(self, expected: int) -> int:
        return self._postfix.wait_discarded(expected)

    def cpu_seconds(self) -> float:
        return self._postfix.cpu_seconds()

    def stop(self) -> None:
        self._postfix.stop()


class AiosmtpdSink:
    """aiosmtpd in a child process (its own interpreter, so it does not share our GIL).

    Not tests/smtpserver.py's SmtpTestServer: that one keeps every message (GBs here) and would
    run on our GIL.
    """

    name = "aiosmtpd"

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self._child = subprocess.Popen(
            [sys.executable, __file__, "--serve-aiosmtpd"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._child.stdout is not None
        self.port = int(self._child.stdout.readline().split()[1])

    def describe(self) -> str:
        return f"aiosmtpd (child process) on {self.host}:{self.port}, messages counted and dropped"

    def settle(self, expected: int) -> int:
        # aiosmtpd has answered 250 only after handling each message: nothing is pending.
        assert self._child.stdin is not None and self._child.stdout is not None
        self._child.stdin.write("count\n")
        self._child.stdin.flush()
        return int(self._child.stdout.readline())

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self._child.pid)

    def stop(self) -> None:
        assert self._child.stdin is not None
        self._child.stdin.close()
        self._child.wait(timeout=10)


def _serve_aiosmtpd() -> None:
    """The child side of AiosmtpdSink: count messages, keep none; `count` on stdin asks."""
    from aiosmtpd.controller import Controller

    class Counter:
        received = 0

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            Counter.received += 1
            return "250 2.0.0 Ok: discarded"

    # aiosmtpd probes its own port after starting, so it needs a real one, not 0.
    controller = Controller(Counter(), hostname="127.0.0.1", port=free_port())
    controller.start()
    print("port", controller.port, flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(Counter.received, flush=True)
    controller.stop()


class RawSinkAdapter:
    """bench/rawsink.py behind this script's Sink interface."""

    name = "raw"

    def __init__(self) -> None:
        self._sink = RawSink()
        self.host = self._sink.host
        self.port = self._sink.port

    def describe(self) -> str:
        return self._sink.describe()

    def settle(self, expected: int) -> int:
        return self._sink.settle(expected)

    def cpu_seconds(self) -> float:
        return self._sink.cpu_seconds()

    def stop(self) -> None:
        self._sink.stop()


def open_sink(kind: str, queue_parent: Path | None) -> tuple[Sink, str | None]:
    """The sink to use, and why Postfix is not it (None when it is)."""
    if kind == "raw":
        return RawSinkAdapter(), None
    if kind in ("auto", "postfix"):
        try:
            return PostfixSink(queue_parent), None
        except PostfixError as err:
            if kind == "postfix":
                raise
            return AiosmtpdSink(), str(err).splitlines()[0]
    return AiosmtpdSink(), "--sink aiosmtpd was asked for"


# --- measuring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    sender: str
    messages: int
    seconds: float
    client_cpu: float  # seconds, this process, all threads
    sink_cpu: float  # seconds, from the start of the run until the sink had processed it all
    machine_busy: float  # share of all cores busy during the run (anything on the machine)
    load: float = 0.0  # load average (1 min) at the end of the run
    switches: float = 0.0  # voluntary context switches of the client per message (children)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


@dataclass(frozen=True)
class ChildFigures:
    """What a child sender measured itself (its wall time excludes start-up and preparing)."""

    seconds: float
    cpu: float
    switches: int


def measure(
    sender: str,
    messages: int,
    sink: Sink,
    expected: int,
    work: Callable[[], ChildFigures | None],
) -> Run:
    """Run `work`, then wait for the sink to catch up to `expected` messages and check it.

    A `work` that runs in a child process returns the child's own figures; they replace this
    process's (which would count the child's start-up and template preparation).
    """
    sink0 = sink.cpu_seconds()
    busy0, total0 = _cpu_ticks()
    cpu0 = time.process_time()
    started = time.perf_counter()
    child = work()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    busy1, total1 = _cpu_ticks()
    seen = sink.settle(expected)
    if seen != expected:
        raise SystemExit(f"{sender}: the sink processed {seen} messages, expected {expected}")
    busy = (busy1 - busy0) / max(1, total1 - total0)
    switches = 0.0
    if child is not None:
        seconds, cpu, switches = child.seconds, child.cpu, child.switches / messages
    return Run(
        sender,
        messages,
        seconds,
        cpu,
        sink.cpu_seconds() - sink0,
        busy,
        os.getloadavg()[0],
        switches,
    )


# --- the senders ------------------------------------------------------------------------------


def newsletter_send(
    code: Path | None,
    images: str,
    sink: Sink,
    count: int,
    connections: int,
    workdir: Path,
) -> Callable[[], ChildFigures]:
    """`send_issue` to `count` recipients in a child process, with the package at `code`
    (None: this checkout); the ledger in a fresh SQLite file."""
    database = Path(tempfile.mkdtemp(dir=workdir)) / "newsletter.db"
    argv, env = baseline.command(code)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(REPO)) if p)
    command = [
        argv[0],
        __file__,
        "--child-send",
        f"{sink.host}:{sink.port}",
        str(count),
        str(connections),
        images,
        str(database),
    ]

    def work() -> ChildFigures:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the sending child failed:\n{done.stdout}{done.stderr}")
        package, seconds, cpu, switches = done.stdout.split()[-4:]
        expected = (code or REPO) / "newsletter"
        if Path(package) != expected:
            raise SystemExit(f"the sending child ran {package}, not {expected}")
        return ChildFigures(float(seconds), float(cpu), int(switches))

    return work


def child_send(target: str, count: int, connections: int, images: str, database: Path) -> None:
    """The child side of `newsletter_send`: prepare, then time `send_issue` alone."""
    template = prepare_template(images)
    audience = ListAudience(people(count))
    host, port = target.rsplit(":", 1)
    settings = TransportSettings(
        kind="smtp", host=host, port=int(port), security="none", connections=connections
    )
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with Ledger(database) as ledger:
        report = send_issue(
            template,
            audience,
            transport=SmtpTransport(settings, password=None),
            ledger=ledger,
            options=SendOptions(concurrency=connections),
        )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    if report.sent_now != count:
        raise SystemExit(f"newsletter sent {report.sent_now} of {count}: {report}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    import newsletter

    # Which package ran (this checkout's or the baseline's), then the figures.
    print(Path(newsletter.__file__).parent, seconds, cpu, after.ru_nvcsw - before.ru_nvcsw)


def prepare_template(images: str) -> MessageTemplate:
    settings = load_settings(REPO)
    if images == "linked":
        settings = dataclasses.replace(settings, base_url=settings.base_url or LINKED_BASE_URL)
    rendered = render_issue(load_issue(settings.issues_dir / ISSUE), settings)
    return MessageTemplate.prepare(rendered, settings, secret=SECRET, token_for=token_for)


def naive_builder(rendered: RenderedIssue, settings: Settings) -> Callable[[Person], bytes]:
    """A new EmailMessage per recipient, its parts personalised with str.replace."""

    def marker(slot: Slot) -> str:
        return "{{" + slot.path + "}}"

    subject = rendered.subject.fill(marker)
    text = rendered.text.fill(marker)
    html = rendered.html.fill(marker)
    paths = sorted(
        {
            slot.path
            for part in (rendered.subject, rendered.text, rendered.html)
            for slot in part.slots
        }
    )
    unsubscribe = settings.unsubscribe.url or ""
    web_url = f"{settings.base_url}{rendered.name}/web.html" if settings.base_url else ""
    domain = settings.sender.domain

    def build(person: Person) -> bytes:
        url = f"{unsubscribe}?token={token_for(SECRET, person.email)}"
        values = {"unsubscribe_url": url, "web_url": web_url}
        for path in paths:
            if path.startswith("subscriber."):
                values[path] = person.value(path.removeprefix("subscriber.")) or ""
        title, body_text, body_html = subject, text, html
        for path, value in values.items():
            key = "{{" + path + "}}"
            title = title.replace(key, value)
            body_text = body_text.replace(key, value)
            body_html = body_html.replace(key, html_lib.escape(value))
        message = EmailMessage(policy=policy.SMTP)
        message["From"] = settings.sender
        message["To"] = Address(person.name or "", addr_spec=person.email)
        message["Subject"] = title
        message["Date"] = formatdate()
        message["Message-ID"] = f"<{rendered.name}.{person.email}@{domain}>"
        message["List-Unsubscribe"] = f"<{url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(body_text, cte="quoted-printable")
        message.add_alternative(body_html, subtype="html", cte="quoted-printable")
        if rendered.embedded_images:
            part = message.get_body(("html",))
            assert isinstance(part, EmailMessage)
            for image in rendered.embedded_images:
                maintype, subtype = image.content_type.split("/")
                part.add_related(
                    image.data, maintype, subtype, cid=f"<{image.cid}>", filename=image.filename
                )
        return bytes(message)

    return build


def naive_send(
    build: Callable[[Person], bytes], sender: str, sink: Sink, count: int
) -> Callable[[], None]:
    """Build, connect, send, QUIT, per recipient: what a mail-merge script does."""
    recipients = people(count)

    def work() -> None:
        for person in recipients:
            data = build(person)
            with smtplib.SMTP(sink.host, sink.port) as smtp:  # QUIT on leaving
                smtp.sendmail(sender, [person.email], data)

    return work


def ceiling_send(
    message: OutgoingMessage, sink: Sink, count: int, connections: int
) -> Callable[[], None]:
    """One pre-encoded message, `count` transactions over `connections` persistent connections."""
    wire = smtp_body(message.data) + b".\r\n"
    share = [count // connections + (n < count % connections) for n in range(connections)]
    failures: list[str] = []

    def connection(number: int, messages: int) -> None:
        with smtplib.SMTP(sink.host, sink.port) as smtp:
            smtp.ehlo()
            for index in range(messages):
                smtp.mail(message.sender, [f"SIZE={len(wire)}", "BODY=8BITMIME"])
                smtp.rcpt(f"ceiling{number}-{index}@example.org")
                smtp.putcmd("data")
                smtp.getreply()
                assert smtp.sock is not None
                smtp.sock.sendall(wire)
                code, reply = smtp.getreply()
                if code != 250:
                    failures.append(f"{code} {reply!r}")

    def work() -> None:
        threads = [
            threading.Thread(target=connection, args=(number, messages))
            for number, messages in enumerate(share)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise SystemExit(f"ceiling: {len(failures)} refused, e.g. {failures[0]}")

    return work


# --- report -----------------------------------------------------------------------------------


def median_run(runs: list[Run]) -> Run:
    """The run with the median rate (an actual run, so its other numbers belong together)."""
    return sorted(runs, key=lambda run: run.rate)[len(runs) // 2]


def run_line(number: int, run: Run, sink: str) -> str:
    return (
        f"run {number} {run.sender:<10} {run.messages:>6} msgs {run.rate:>6.0f}/s "
        f"{run.seconds:6.1f} s   client CPU {run.client_cpu / run.messages * 1000:5.2f} ms/msg   "
        f"{sink} CPU {run.sink_cpu / run.messages * 1000:5.2f} ms/msg   "
        f"machine busy {run.machine_busy:4.0%}   load {run.load:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=5000)
    parser.add_argument("--naive-recipients", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=3)
    parser.add_argument("--images", choices=["embedded", "linked"], default="embedded")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the reference sender")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive sender")
    parser.add_argument("--sink", choices=["auto", "postfix", "aiosmtpd", "raw"], default="auto")
    parser.add_argument(
        "--baseline", metavar="REF", help="also send with the package of commit REF ('before')"
    )
    parser.add_argument(
        "--queue-parent", type=Path, help="where Postfix's temporary directory goes (e.g. /dev/shm)"
    )
    parser.add_argument("--serve-aiosmtpd", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-send", nargs=5, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_aiosmtpd:
        _serve_aiosmtpd()
        return
    if options.child_send:
        target, count, connections, images, database = options.child_send
        child_send(target, int(count), int(connections), images, Path(database))
        return

    settings = load_settings(REPO)
    if options.images == "linked":
        settings = dataclasses.replace(settings, base_url=settings.base_url or LINKED_BASE_URL)
    rendered = render_issue(load_issue(settings.issues_dir / ISSUE), settings)
    template = prepare_template(options.images)
    build = naive_builder(rendered, settings)
    sample = template.personalise(people(1)[0])
    naive_kb = len(build(people(1)[0])) / 1024
    sender = settings.sender.addr_spec
    load_before = os.getloadavg()

    sink, fallback = open_sink(options.sink, options.queue_parent)
    if fallback:
        banner = "!" * 100
        print(banner)
        print(f"!!! POSTFIX NOT USED ({fallback}).")
        print("!!! FALLING BACK to an aiosmtpd sink: these are NOT rates to Postfix.")
        print(banner, flush=True)
    description = sink.describe()
    runs: dict[str, list[Run]] = {"before": [], "newsletter": [], "naive": [], "ceiling": []}
    expected = 0
    connections = options.connections
    try:
        with tempfile.TemporaryDirectory(prefix="bench-send-") as folder:
            workdir = Path(folder)
            codes: list[tuple[str, Path | None]] = [("newsletter", None)]
            if options.baseline:
                old = baseline.extract(options.baseline, workdir / "baseline")
                codes.insert(0, ("before", old))
            # Warm-up, not counted: Postfix spawns its daemons, our caches fill.
            warm_ups: list[tuple[Callable[[], ChildFigures | None], int]] = [
                (newsletter_send(code, options.images, sink, 200, connections, workdir), 200)
                for _, code in codes
            ]
            if not options.no_naive:
                warm_ups.append((naive_send(build, sender, sink, 20), 20))
            for warm, count in warm_ups:
                expected += count
                measure("warm-up", count, sink, expected, warm)
            for number in range(1, options.runs + 1):
                plan: list[tuple[str, int, Callable[[], ChildFigures | None]]] = [
                    (
                        name,
                        options.recipients,
                        newsletter_send(
                            code, options.images, sink, options.recipients, connections, workdir
                        ),
                    )
                    for name, code in codes
                ]
                if number % 2 == 0:
                    plan.reverse()  # alternate which side goes first
                if not options.no_naive:
                    naive = naive_send(build, sender, sink, options.naive_recipients)
                    plan.append(("naive", options.naive_recipients, naive))
                if not options.no_ceiling:
                    work = ceiling_send(sample, sink, options.recipients, connections)
                    plan.append(("ceiling", options.recipients, work))
                for name, count, work in plan:
                    expected += count
                    run = measure(name, count, sink, expected, work)
                    runs[name].append(run)
                    print(run_line(number, run, sink.name), flush=True)
    finally:
        sink.stop()
    load_after = os.getloadavg()
    report(
        options, runs, sink.name, description, fallback, sample, naive_kb, load_before, load_after
    )


def report(
    options: argparse.Namespace,
    runs: dict[str, list[Run]],
    name: str,
    description: str,
    fallback: str | None,
    sample: OutgoingMessage,
    naive_kb: float,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    """The table of medians and the targets."""
    ours = median_run(runs["newsletter"])
    print()
    print(f"sink: {description}      recipients: {options.recipients}")
    print(
        f"message: example issue {ISSUE}, images {options.images}, {len(sample.data) / 1024:.0f} KB"
        f" (naive build {naive_kb:.0f} KB)   naive sender: {options.naive_recipients} messages "
        "(shorter, it is slow; rates are per message)"
    )
    print(
        f"median of {options.runs} run(s)   cores: {os.cpu_count()}   load average (1 min) "
        f"before {load_before[0]:.2f}, after {load_after[0]:.2f}"
    )
    print()
    print(
        f"{'sender':<44}{'msgs/s':>8}{'total s':>9}{'client s/1000':>15}{'vcsw/msg':>10}"
        f"{name + ' ms/msg':>15}"
    )
    conns = options.connections
    rows: list[tuple[str, Run]] = []
    if runs["before"]:
        rows.append(
            (f"before: {options.baseline} ({conns} conns, ledger)", median_run(runs["before"]))
        )
    rows.append((f"newsletter ({conns} conns, ledger)", ours))
    if runs["naive"]:
        rows.append(("naive (EmailMessage, new conn)", median_run(runs["naive"])))
    if runs["ceiling"]:
        rows.append((f"ceiling (prebuilt, {conns} conns, no ledger)", median_run(runs["ceiling"])))
    for label, run in rows:
        print(
            f"{label:<44}{run.rate:>8.0f}{run.seconds:>9.1f}"
            f"{run.client_cpu / run.messages * 1000:>15.2f}{run.switches:>10.1f}"
            f"{run.sink_cpu / run.messages * 1000:>15.2f}"
        )
    cpu = ours.client_cpu / ours.messages * 1000
    print(
        f"client CPU {cpu:.2f} s per 1,000 messages (target <= {TARGET_CPU_PER_1000}): "
        + ("yes" if cpu <= TARGET_CPU_PER_1000 else "NO")
    )
    if runs["before"]:
        before = median_run(runs["before"])
        print(
            f"after/before: {ours.rate / before.rate:.2f}x the rate, "
            f"{ours.client_cpu / ours.messages / (before.client_cpu / before.messages):.2f}x "
            "the CPU per message"
        )
    if runs["ceiling"]:
        share = ours.rate / median_run(runs["ceiling"]).rate
        print(f"newsletter reaches {share:.0%} of the ceiling", end="")
        if name == "postfix":
            print(f" (target >= {TARGET_CEILING_SHARE:.0%} to Postfix)", end="")
        print()
    if name == "raw":
        reaches = "yes" if ours.rate >= TARGET_RAW_RATE else "NO"
        print(f"newsletter >= {TARGET_RAW_RATE:.0f}/s to the raw sink: {reaches}")
    if runs["naive"]:
        ratio = ours.rate / median_run(runs["naive"]).rate
        reaches = "yes" if ours.rate >= TARGET_RATE else "NO"
        not_postfix = "" if fallback is None else " (NOT to Postfix)"
        print(
            f"{'ratio to naive':<44}{ratio:>7.1f}x   (target >= {TARGET_RATIO:.0f}x)   "
            f"newsletter >= {TARGET_RATE:.0f}/s: {reaches}{not_postfix}"
        )


if __name__ == "__main__":
    main()
