"""Benchmark: sending the example issue over SMTP, our sender against a naive one, in one run.

    .venv/bin/python bench/bench_send.py [--recipients 5000] [--naive-recipients 1000] [--runs 3]
                                         [--connections 3] [--images embedded|linked]
                                         [--sink auto|postfix|aiosmtpd] [--queue-parent DIR]

Sink: a private Postfix on 127.0.0.1 (bench/postfix.py: own config directory, queue in a
temporary directory, discard transport; needs root and Debian's postfix package). If Postfix
cannot be started, an aiosmtpd sink in a child process takes its place and the output says so.

Senders, one after the other in each repetition so all see the same machine:
- newsletter: `send_issue` with the real ledger (a fresh SQLite file per run) and `SmtpTransport`
  with `--connections` persistent connections, sending `--recipients` messages;
- naive: per recipient an `EmailMessage(policy=SMTP)` with the same text and HTML parts
  (personalised by str.replace) and embedded images, a new smtplib connection, send, QUIT. No
  ledger (like mailmerge). It sends `--naive-recipients` messages: rates are per message.
- ceiling (a reference, not a competitor): one pre-encoded message sent `--recipients` times
  over `--connections` persistent connections, no ledger, no personalisation. What the sink
  accepts when the client does almost nothing; ours cannot beat it.

Between runs it waits until the sink has processed everything it accepted (so each run starts on
an idle sink) and checks the count. Per run it reports the client's CPU and the sink's CPU per
message: on a small machine the sink's CPU is what bounds the rate. Then the medians, the ratio
(target >= 5x) and whether ours reaches 600 messages/s with the ledger on.

`--images linked` sets a base_url so images are published, not embedded (a smaller message).
"""

from __future__ import annotations

import argparse
import dataclasses
import html as html_lib
import os
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
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from postfix import PostfixError, PrivatePostfix, free_port, process_cpu_seconds  # noqa: E402

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


def open_sink(kind: str, queue_parent: Path | None) -> tuple[Sink, str | None]:
    """The sink to use, and why Postfix is not it (None when it is)."""
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

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def measure(sender: str, messages: int, sink: Sink, expected: int, work: Callable[[], None]) -> Run:
    """Run `work`, then wait for the sink to catch up to `expected` messages and check it."""
    sink0 = sink.cpu_seconds()
    busy0, total0 = _cpu_ticks()
    cpu0 = time.process_time()
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    busy1, total1 = _cpu_ticks()
    seen = sink.settle(expected)
    if seen != expected:
        raise SystemExit(f"{sender}: the sink processed {seen} messages, expected {expected}")
    busy = (busy1 - busy0) / max(1, total1 - total0)
    return Run(sender, messages, seconds, cpu, sink.cpu_seconds() - sink0, busy)


# --- the senders ------------------------------------------------------------------------------


def newsletter_send(
    template: MessageTemplate, sink: Sink, count: int, connections: int, workdir: Path
) -> Callable[[], None]:
    """`send_issue` to `count` recipients, the ledger in a fresh SQLite file."""
    audience = ListAudience(people(count))
    settings = TransportSettings(
        kind="smtp", host=sink.host, port=sink.port, security="none", connections=connections
    )
    database = Path(tempfile.mkdtemp(dir=workdir)) / "newsletter.db"

    def work() -> None:
        with Ledger(database) as ledger:
            report = send_issue(
                template,
                audience,
                transport=SmtpTransport(settings, password=None),
                ledger=ledger,
                options=SendOptions(concurrency=connections),
            )
        if report.sent_now != count:
            raise SystemExit(f"newsletter sent {report.sent_now} of {count}: {report}")

    return work


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
        f"machine busy {run.machine_busy:4.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=5000)
    parser.add_argument("--naive-recipients", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=3)
    parser.add_argument("--images", choices=["embedded", "linked"], default="embedded")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the reference sender")
    parser.add_argument("--sink", choices=["auto", "postfix", "aiosmtpd"], default="auto")
    parser.add_argument(
        "--queue-parent", type=Path, help="where Postfix's temporary directory goes (e.g. /dev/shm)"
    )
    parser.add_argument("--serve-aiosmtpd", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_aiosmtpd:
        _serve_aiosmtpd()
        return

    settings = load_settings(REPO)
    if options.images == "linked":
        settings = dataclasses.replace(settings, base_url=settings.base_url or LINKED_BASE_URL)
    rendered = render_issue(load_issue(settings.issues_dir / ISSUE), settings)
    template = MessageTemplate.prepare(rendered, settings, secret=SECRET, token_for=token_for)
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
    runs: dict[str, list[Run]] = {"newsletter": [], "naive": [], "ceiling": []}
    expected = 0
    try:
        with tempfile.TemporaryDirectory(prefix="bench-send-") as folder:
            workdir = Path(folder)
            # Warm-up, not counted: Postfix spawns its daemons, our caches fill.
            for warm, count in (
                (newsletter_send(template, sink, 200, options.connections, workdir), 200),
                (naive_send(build, sender, sink, 20), 20),
            ):
                expected += count
                measure("warm-up", count, sink, expected, warm)
            for number in range(1, options.runs + 1):
                plan = [
                    (
                        "newsletter",
                        options.recipients,
                        newsletter_send(
                            template, sink, options.recipients, options.connections, workdir
                        ),
                    ),
                    (
                        "naive",
                        options.naive_recipients,
                        naive_send(build, sender, sink, options.naive_recipients),
                    ),
                ]
                if not options.no_ceiling:
                    work = ceiling_send(sample, sink, options.recipients, options.connections)
                    plan.append(("ceiling", options.recipients, work))
                for name, count, work in plan:
                    expected += count
                    run = measure(name, count, sink, expected, work)
                    runs[name].append(run)
                    print(run_line(number, run, sink.name), flush=True)
    finally:
        sink.stop()
    load_after = os.getloadavg()

    ours, naive = median_run(runs["newsletter"]), median_run(runs["naive"])
    ratio = ours.rate / naive.rate
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
    name = sink.name
    print(f"{'sender':<40}{'msgs/s':>8}{'total s':>9}{'client ms/msg':>15}{name + ' ms/msg':>17}")
    rows = [(f"newsletter ({options.connections} conns, ledger)", ours)]
    rows.append(("naive (EmailMessage, new conn)", naive))
    if runs["ceiling"]:
        ceiling = median_run(runs["ceiling"])
        rows.append((f"ceiling (prebuilt, {options.connections} conns, no ledger)", ceiling))
    for label, run in rows:
        print(
            f"{label:<40}{run.rate:>8.0f}{run.seconds:>9.1f}"
            f"{run.client_cpu / run.messages * 1000:>15.2f}"
            f"{run.sink_cpu / run.messages * 1000:>17.2f}"
        )
    reaches = "yes" if ours.rate >= TARGET_RATE else "NO"
    not_postfix = "" if fallback is None else " (NOT to Postfix)"
    print(
        f"{'ratio':<40}{ratio:>7.1f}x   (target >= {TARGET_RATIO:.0f}x)   "
        f"newsletter >= {TARGET_RATE:.0f}/s: {reaches}{not_postfix}"
    )
    if runs["ceiling"] and ours.rate < TARGET_RATE:
        share = ours.rate / median_run(runs["ceiling"]).rate
        print(
            f"newsletter reaches {share:.0%} of the ceiling: what the sink accepts from a client "
            "doing almost nothing over the same connections"
        )


if __name__ == "__main__":
    main()
