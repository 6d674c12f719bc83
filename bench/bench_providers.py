"""Benchmark: recipients/s through a provider batch API (loopback fake) beside SMTP, in one run.

    .venv/bin/python bench/bench_providers.py [--recipients 20000] [--smtp-recipients 3000]
                                              [--providers sendgrid,postmark] [--runs 3]
                                              [--connections 2] [--validate]

What runs, alternated in each repetition so every sender sees the same machine:
- a provider: `send_issue` of the example issue (its embedded images included) with the real
  ledger (a fresh SQLite file per run) through the provider transport, to a fake of that
  provider on 127.0.0.1 in a child process (tests/providerfake.py, its own interpreter so it
  does not share our GIL). The fake parses every request, counts the recipients it carries and
  answers as the provider does. With `--validate` it also checks every body against the
  provider's spec schema (tests/specs/), which costs the fake far more than the sender: the
  default measures with validation off, and the output says which.
- smtp: `send_issue` with `SmtpTransport` (`--connections` connections) to an aiosmtpd sink in a
  child process (bench/bench_send.py's), messages counted and dropped.

Prints each run and the median recipients/s per sender; the target for a batch provider is
>= 5,000 recipients/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from newsletter.config import TransportSettings  # noqa: E402
from newsletter.delivery.ledger import Ledger, State  # noqa: E402
from newsletter.delivery.message import MessageTemplate  # noqa: E402
from newsletter.delivery.sender import SendOptions, send_issue  # noqa: E402
from newsletter.delivery.transports import provider_class  # noqa: E402
from newsletter.delivery.transports.base import BatchTransport, Transport  # noqa: E402
from newsletter.delivery.transports.smtp import SmtpTransport  # noqa: E402

KEYS = {"sendgrid": "SG.bench", "postmark": "pm-bench"}
TARGET = 5000.0


@dataclass(frozen=True)
class Run:
    sender: str
    recipients: int
    seconds: float
    requests: int
    cpu_seconds: float  # this process (the sender, all threads), not the sink

    @property
    def rate(self) -> float:
        return self.recipients / self.seconds

    @property
    def cpu_rate(self) -> float:
        return self.recipients / self.cpu_seconds


class FakeProcess:
    """A provider fake in a child process: `count` on stdin answers recipients and requests."""

    def __init__(self, kind: str, validate: bool) -> None:
        command = [sys.executable, __file__, "--serve-fake", kind]
        if validate:
            command.append("--validate")
        self.child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        assert self.child.stdout is not None
        self.url = self.child.stdout.readline().split()[1]

    def count(self) -> tuple[int, int]:
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write("count\n")
        self.child.stdin.flush()
        recipients, requests = self.child.stdout.readline().split()
        return int(recipients), int(requests)

    def stop(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.close()
        self.child.wait(timeout=10)


def _serve_fake(kind: str, validate: bool) -> None:
    """The child side of FakeProcess: accept like the provider, count, keep nothing."""
    import threading

    from tests.providerfake import FakeRequest, FakeResponse, ProviderFake, spec_validator

    lock = threading.Lock()
    totals = {"recipients": 0, "requests": 0}
    check = None
    if validate and kind == "sendgrid":
        check = spec_validator(
            "sendgrid/tsg_mail_v3.json",
            "/components/requestBodies/PostMailSend/content/application~1json/schema",
            "oas31",
        )
    elif validate and kind == "postmark":
        check = spec_validator(
            "postmark/server.yml",
            "/paths/~1email~1batch/post/requestBody/content/application~1json/schema",
            "oas30",
        )

    def handle(request: FakeRequest) -> FakeResponse:
        if request.method == "GET":
            return FakeResponse.json({"scopes": ["mail.send"]})
        body = json.loads(request.body)
        if check is not None and check(body):
            return FakeResponse.json({"errors": [{"message": "off spec"}]}, 400)
        if kind == "sendgrid":
            count = len(body["personalizations"])
            answer = FakeResponse(202, b"", {"X-Message-Id": "bench"})
        else:
            count = len(body)
            answer = FakeResponse.json(
                [{"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{n}"} for n in range(count)]
            )
        with lock:
            totals["recipients"] += count
            totals["requests"] += 1
        return answer

    with ProviderFake(handle) as fake:
        fake.record_requests = False
        print("url", fake.url, flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                with lock:
                    print(totals["recipients"], totals["requests"], flush=True)


def example_template(folder: Path) -> MessageTemplate:
    from tests.conftest import copy_example_project
    from tests.sendkit import example_template as make

    return make(copy_example_project(folder / "project"))


def one_run(
    name: str,
    template: MessageTemplate,
    recipients: int,
    transport: Transport | BatchTransport,
    connections: int,
    folder: Path,
) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) to send to `recipients` people."""
    from tests.sendkit import ListAudience, people

    database = folder / f"{name}-{time.monotonic_ns()}.db"
    audience = ListAudience(people(recipients))
    with Ledger(database) as ledger:
        started = time.perf_counter()
        cpu = time.process_time()
        report = send_issue(
            template,
            audience,
            transport=transport,
            ledger=ledger,
            options=SendOptions(concurrency=connections),
        )
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    if report.counts.get(State.SENT, 0) != recipients:
        raise SystemExit(f"{name}: {report.counts} for {recipients} recipients")
    database.unlink()
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--smtp-recipients", type=int, default=3_000)
    parser.add_argument("--providers", default="sendgrid,postmark")
    parser.add_argument("--postmark-recipients", type=int, default=3_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--validate", action="store_true")
    parser.add_argument("--serve-fake", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_fake:
        _serve_fake(options.serve_fake, options.validate)
        return

    from bench_send import AiosmtpdSink

    providers = [p for p in options.providers.split(",") if p]
    with tempfile.TemporaryDirectory(prefix="bench-providers-") as tmp:
        folder = Path(tmp)
        template = example_template(folder)
        fakes = {kind: FakeProcess(kind, options.validate) for kind in providers}
        sink = AiosmtpdSink()
        runs: list[Run] = []
        print(
            f"example issue 2026-11 with {len(template.images)} embedded images; ledger on; "
            f"{options.connections} connections/threads; provider fakes in child processes, "
            f"schema validation {'ON' if options.validate else 'off (see --validate)'}; "
            f"SMTP sink: {sink.describe()}"
        )
        try:
            for number in range(1, options.runs + 1):
                for kind in providers:
                    count = (
                        options.postmark_recipients if kind == "postmark" else options.recipients
                    )
                    fake = fakes[kind]
                    before = fake.count()
                    settings = TransportSettings(
                        kind=kind, api_url=fake.url, connections=options.connections, timeout=60
                    )
                    transport = provider_class(kind)(settings, api_key=KEYS[kind])
                    seconds, cpu = one_run(
                        kind, template, count, transport, options.connections, folder
                    )
                    after = fake.count()
                    if after[0] - before[0] != count:
                        raise SystemExit(f"{kind}: the fake counted {after[0] - before[0]}")
                    runs.append(Run(kind, count, seconds, after[1] - before[1], cpu))
                    print(run_line(number, runs[-1]))
                smtp = SmtpTransport(
                    TransportSettings(
                        kind="smtp",
                        host=sink.host,
                        port=sink.port,
                        security="none",
                        connections=options.connections,
                    ),
                    password=None,
                )
                before_smtp = sink.settle(0)
                seconds, cpu = one_run(
                    "smtp", template, options.smtp_recipients, smtp, options.connections, folder
                )
                received = sink.settle(0) - before_smtp
                if received != options.smtp_recipients:
                    raise SystemExit(f"smtp: the sink counted {received}")
                runs.append(Run("smtp", options.smtp_recipients, seconds, received, cpu))
                print(run_line(number, runs[-1]))
        finally:
            for fake in fakes.values():
                fake.stop()
            sink.stop()

    print(f"\nmedians ({os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}):")
    print(f"  {'sender':9} {'recipients/s':>13} {'per CPU-s':>10}")
    for sender in [*providers, "smtp"]:
        median = statistics.median(run.rate for run in runs if run.sender == sender)
        cpu_median = statistics.median(run.cpu_rate for run in runs if run.sender == sender)
        mark = ""
        if sender != "smtp":
            mark = "  (target >= 5,000/s: " + ("met" if median >= TARGET else "NOT met") + ")"
        print(f"  {sender:9} {median:13,.0f} {cpu_median:10,.0f}{mark}")
    print(
        "per CPU-s: recipients per second of this process's CPU time (sender and ledger, all "
        "threads; the sinks run in other processes): steadier than wall time on a busy machine."
    )


def run_line(number: int, run: Run) -> str:
    unit = "messages" if run.sender == "smtp" else "requests"
    return (
        f"run {number}  {run.sender:9} {run.recipients:7,} recipients in {run.seconds:6.2f}s "
        f"= {run.rate:9,.0f}/s, {run.cpu_rate:9,.0f} per CPU-s  ({run.requests:,} {unit})"
    )


if __name__ == "__main__":
    main()
