"""Benchmark: recipients/s through the provider transports (loopback fakes), before vs after.

    .venv/bin/python bench/bench_providers.py [--providers ses,postmark] [--images linked]
                                              [--runs 3] [--connections 3[,24]] [--latency MS]
                                              [--baseline REF] [--fake raw|checking]
                                              [--recipients N] [--validate] [--smtp-recipients N]

What runs, alternated in each repetition so every side sees the same machine:
- for each provider (ses, postmark, sendgrid, mailgun, brevo) and image mode (`--images`:
  `linked` = `base_url` set, the message links its images, the issue's "hosted images";
  `embedded` = inline `cid:` attachments; `both`), a whole child process (its own interpreter,
  so sender and fake never share a GIL) runs `send_issue` of the example issue with the real
  ledger (a fresh SQLite file per run) through the provider transport, to a fake of that
  provider on 127.0.0.1 in another child process (tests/providerfake.py). The fake parses every
  request, counts the recipients it carries and answers as the provider does. Only
  `send_issue` is timed (not the interpreter start, the render or the template preparation).
- `--baseline REF`: the same run with the package of commit REF (`git archive`, see
  bench/baseline.py: same interpreter and libraries), beside the current code in each round.
- `--validate`: the fake also checks every body against the provider's spec schema
  (tests/specs/), which costs the fake far more than the sender: measure with it off.
- `--smtp-recipients N`: also `SmtpTransport` to bench/rawsink.py's counting sink, for scale.

Prints each run (wall and this process's CPU) and the medians per case; targets (issue 16):
SES >= 500 recipients/s and Postmark >= 2,000/s with hosted images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROVIDERS = ("ses", "postmark", "sendgrid", "mailgun", "brevo")
# Per-request providers get fewer recipients, so a run takes a few seconds either way.
DEFAULT_RECIPIENTS = {
    "ses": 3000,
    "postmark": 10000,
    "sendgrid": 20000,
    "mailgun": 3000,
    "brevo": 3000,
    "smtp": 0,
}
TARGETS = {("ses", "linked"): 500.0, ("postmark", "linked"): 2000.0}
KEYS = {"sendgrid": "SG.bench", "postmark": "pm-bench", "mailgun": "key-bench", "brevo": "xk"}
LINKED_BASE_URL = "https://riverside-garden.example.org/newsletter/"
AWS = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "eu-west-1")


@dataclass(frozen=True)
class Run:
    side: str  # "current" or "baseline"
    sender: str
    images: str
    connections: int
    recipients: int
    seconds: float
    cpu_seconds: float  # the sending process (all threads), not the fake
    requests: int
    load: float
    fake_cpu: float  # the fake's process: must stay well below the sender's

    @property
    def rate(self) -> float:
        return self.recipients / self.seconds

    @property
    def cpu_rate(self) -> float:
        return self.recipients / self.cpu_seconds


# --- the fake, in its own process ------------------------------------------------------------


class FakeProcess:
    """A provider fake in a child process: `count` on stdin answers recipients and requests."""

    def __init__(self, kind: str, validate: bool, checking: bool, latency: float) -> None:
        command = [sys.executable, __file__, "--serve-fake" if checking else "--serve-raw", kind]
        command += ["--latency", str(latency)]
        if validate:
            command.append("--validate")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env
        )
        assert self.child.stdout is not None
        self.url = self.child.stdout.readline().split()[1]

    def count(self) -> tuple[int, int, float]:
        """(recipients, requests, the fake's CPU seconds) so far."""
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write("count\n")
        self.child.stdin.flush()
        recipients, requests, cpu = self.child.stdout.readline().split()
        return int(recipients), int(requests), float(cpu)

    def stop(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.close()
        self.child.wait(timeout=10)


# Every GET a transport's `check()` makes, answered at once: the checks pass.
_GET_ANSWER = {
    "scopes": ["mail.send"],  # sendgrid
    "SendingEnabled": True,  # ses
    "EnforcementStatus": "HEALTHY",
    "SubscriptionManagementConfiguration": {"UnsubscribeHandlingType": "None"},  # postmark
    "tracking": {"unsubscribe": {"active": False}},  # mailgun
    "items": [{"name": "example.org"}],
    "email": "team@example.org",  # brevo
}


def _serve_fake(kind: str, validate: bool) -> None:
    """The child side of FakeProcess: accept like the provider, count, keep nothing."""
    import base64
    import binascii

    from tests.providerfake import FakeRequest, FakeResponse, ProviderFake, spec_validator

    lock = threading.Lock()
    totals = {"recipients": 0, "requests": 0}
    check = _validator(kind, spec_validator) if validate else None

    def handle(request: FakeRequest) -> FakeResponse:
        if request.method == "GET":
            return FakeResponse.json(_GET_ANSWER)
        if kind == "mailgun":
            fields = request.form() if check is not None else {"to": ["?"]}
            count, answer = len(fields["to"]), FakeResponse.json({"id": "<b@x>", "message": "ok"})
        else:
            body = json.loads(request.body)
            if check is not None and check(body):
                return FakeResponse.json({"message": f"off spec: {check(body)[:2]}"}, 400)
            if kind == "sendgrid":
                count = len(body["personalizations"])
                answer = FakeResponse(202, b"", {"X-Message-Id": "bench"})
            elif kind == "postmark":
                count = len(body)
                answer = FakeResponse.json(
                    [
                        {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{n}"}
                        for n in range(count)
                    ]
                )
            elif kind == "ses":
                count = len(body["Destination"]["ToAddresses"])
                if check is not None:
                    try:
                        base64.b64decode(body["Content"]["Raw"]["Data"], validate=True)
                    except binascii.Error:
                        return FakeResponse.json({"message": "Raw.Data is not base64"}, 400)
                answer = FakeResponse.json({"MessageId": "0102019c-bench"})
            else:  # brevo
                count = len(body["to"])
                answer = FakeResponse.json({"messageId": "<bench@smtp-relay.mailin.fr>"}, 201)
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
                    print(totals["recipients"], totals["requests"], time.process_time(), flush=True)


def _serve_raw(kind: str, latency: float) -> None:
    """The default fake: an asyncio HTTP/1.1 server that counts and does not parse bodies.

    Like bench/rawsink.py for SMTP, it is there not to be the bottleneck: tests/providerfake.py
    (http.server, a thread per connection, every body parsed) costs more CPU per request than
    the sender being measured, on the same two cores. Recipients are counted per kind: one a
    request for the one-recipient APIs (ses, mailgun, brevo), the `"MessageStream":` keys of a
    Postmark batch (a quote inside a JSON string is always escaped, so only keys match), the
    `personalizations` of a SendGrid request (parsed: one request a thousand recipients).
    """
    import asyncio

    totals = [0, 0]  # recipients, requests (read by the stdin thread; ints, no lock needed)

    def answer(method: bytes, count: int, body: bytes) -> tuple[int, bytes]:
        """`count`: the Postmark markers seen in the body; `body`: SendGrid's only."""
        if method == b"GET":
            return 200, json.dumps(_GET_ANSWER).encode()
        if kind == "postmark":
            results = b",".join(
                b'{"ErrorCode":0,"Message":"OK","MessageID":"pm-%d"}' % n for n in range(count)
            )
            reply = 200, b"[" + results + b"]"
        elif kind == "sendgrid":
            count = len(json.loads(body)["personalizations"])
            reply = 202, b""
        else:
            count = 1
            reply = {
                "ses": (200, b'{"MessageId":"0102019c-bench"}'),
                "mailgun": (200, b'{"id":"<b@example.org>","message":"Queued. Thank you."}'),
                "brevo": (201, b'{"messageId":"<bench@smtp-relay.mailin.fr>"}'),
            }[kind]
        totals[0] += count
        totals[1] += 1
        return reply

    marker = b'"MessageStream":'

    class Session(asyncio.Protocol):
        """One connection: heads parsed, bodies counted as they stream in, never kept whole
        (but SendGrid's, parsed): asyncio's streams would buffer and copy a 27 MB Postmark
        batch, a third of the sender's CPU again."""

        def __init__(self) -> None:
            self.transport: asyncio.Transport | None = None
            self.head = b""
            self.method = b""
            self.remaining = -1  # body bytes still to come; -1: reading a head
            self.count = 0
            self.tail = b""  # the last bytes of the previous piece (a marker may straddle)
            self.kept: list[bytes] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            while data:
                if self.remaining < 0:
                    self.head += data
                    end = self.head.find(b"\r\n\r\n")
                    if end < 0:
                        return
                    data = self.head[end + 4 :]
                    self.begin(self.head[:end])
                    self.head = b""
                    if self.remaining == 0:
                        self.finish()
                    continue
                if len(data) <= self.remaining:
                    piece, data = data, b""
                else:
                    piece, data = data[: self.remaining], data[self.remaining :]
                self.remaining -= len(piece)
                if kind == "postmark":
                    # Whole markers in the piece, and one across the boundary with the last
                    # piece (the tail and this start are each shorter than a marker).
                    edge = len(marker) - 1
                    self.count += piece.count(marker) + (self.tail + piece[:edge]).count(marker)
                    self.tail = (self.tail + piece)[-edge:] if len(piece) < edge else piece[-edge:]
                elif kind == "sendgrid":
                    self.kept.append(piece)
                if self.remaining == 0:
                    self.finish()

        def begin(self, head: bytes) -> None:
            lines = head.split(b"\r\n")
            self.method = lines[0].split(b" ", 1)[0]
            self.remaining, self.count, self.tail, self.kept = 0, 0, b"", []
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.remaining = int(value)
                elif name.strip().lower() == b"transfer-encoding":
                    raise SystemExit("the raw fake takes no chunked requests")

        def finish(self) -> None:
            self.remaining = -1
            status, payload = answer(self.method, self.count, b"".join(self.kept))
            reply = (
                b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nX-Message-Id: bench\r\n\r\n%s"
                % (status, len(payload), payload)
            )
            assert self.transport is not None
            if latency:
                asyncio.get_running_loop().call_later(latency / 1000, self.transport.write, reply)
            else:
                self.transport.write(reply)

    def counts() -> None:
        for line in sys.stdin:
            if line.strip() == "count":
                print(totals[0], totals[1], time.process_time(), flush=True)
        os._exit(0)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Session, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print("url", f"http://127.0.0.1:{port}", flush=True)
        threading.Thread(target=counts, daemon=True).start()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _validator(kind: str, spec_validator: Any) -> Any:
    if kind == "sendgrid":
        return spec_validator(
            "sendgrid/tsg_mail_v3.json",
            "/components/requestBodies/PostMailSend/content/application~1json/schema",
            "oas31",
        )
    if kind == "postmark":
        return spec_validator(
            "postmark/server.yml",
            "/paths/~1email~1batch/post/requestBody/content/application~1json/schema",
            "oas30",
            patch=lambda schema: {"allOf": [schema, {"maxItems": 500}]},
        )
    if kind == "ses":
        from tests.test_transport_ses import SEND_SCHEMA

        return SEND_SCHEMA
    if kind == "brevo":
        return spec_validator(
            "brevo/swagger.yaml", "/paths/~1smtp~1email/post/parameters/0/schema", "swagger2"
        )
    return lambda body: []  # mailgun: a multipart form, parsed above


# --- one send, in its own process ------------------------------------------------------------


def _run_one(job: dict[str, Any]) -> None:
    """The child that sends: imports the package found first on PYTHONPATH (current or
    baseline), prepares the example issue, times `send_issue` and prints a JSON line."""
    import dataclasses

    from newsletter.config import TransportSettings, load_settings
    from newsletter.content import load_issue
    from newsletter.delivery.ledger import Ledger, State
    from newsletter.delivery.message import MessageTemplate
    from newsletter.delivery.sender import SendOptions, send_issue
    from newsletter.render import render_issue
    from tests.sendkit import SECRET, ListAudience, people, token_for

    project = Path(job["project"])
    settings = load_settings(project)
    if job["images"] == "linked":
        settings = dataclasses.replace(settings, base_url=settings.base_url or LINKED_BASE_URL)
    rendered = render_issue(load_issue(project / "issues" / "2026-11"), settings)
    template = MessageTemplate.prepare(rendered, settings, secret=SECRET, token_for=token_for)
    kind, connections = job["kind"], job["connections"]
    transport: Any
    if kind == "smtp":
        from newsletter.delivery.transports.smtp import SmtpTransport

        host, port = job["url"].rsplit(":", 1)
        smtp = TransportSettings(
            kind="smtp", host=host, port=int(port), security="none", connections=connections
        )
        transport = SmtpTransport(smtp, password=None)
    else:
        changes: dict[str, Any] = {}
        if kind == "mailgun":
            changes["domain"] = "example.org"
        options = TransportSettings(
            kind=kind, api_url=job["url"], connections=connections, timeout=60, **changes
        )
        if kind == "ses":
            from newsletter.delivery.transports._sigv4 import AwsCredentials
            from newsletter.delivery.transports.ses import SesTransport

            access, secret, region = AWS
            transport = SesTransport(
                options, credentials=AwsCredentials(access, secret), region=region
            )
        else:
            from newsletter.delivery.transports import provider_class

            transport = provider_class(kind)(options, api_key=KEYS[kind])
    database = Path(job["folder"]) / f"{kind}-{time.monotonic_ns()}.db"
    audience = ListAudience(people(job["recipients"]))
    profiles = _profile_threads() if job.get("profile") else None
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
    database.unlink()
    if profiles is not None:
        import pstats

        stats = pstats.Stats(*profiles, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(35)
        stats.sort_stats("cumulative").print_stats(45)
    sent = report.counts.get(State.SENT, 0)
    print(json.dumps({"seconds": seconds, "cpu": cpu, "sent": sent}), flush=True)


def _profile_threads() -> list[Any]:
    """cProfile every thread started from now on (the sender's workers); their profiles."""
    import cProfile

    profiles: list[Any] = []
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)  # CPU, not waiting
        profiles.append(profile)
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    return profiles


def one_run(
    side: str,
    code_root: Path,
    job: dict[str, Any],
    count: Any,
) -> Run:
    """Run one send in a child with `code_root` first on the path; check what arrived."""
    before = count()
    env = dict(os.environ, PYTHONPATH=str(code_root))
    load = os.getloadavg()[0]
    done = subprocess.run(
        [sys.executable, __file__, "--run-one", json.dumps(job)],
        env=env,
        cwd=code_root,
        capture_output=True,
        text=True,
        check=False,
    )
    if job.get("profile"):
        print(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{side} {job['kind']}: the sending child failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    after = count()
    received, requests = after[0] - before[0], after[1] - before[1]
    fake_cpu = after[2] - before[2]
    if result["sent"] != job["recipients"] or received != job["recipients"]:
        raise SystemExit(
            f"{side} {job['kind']}: {result['sent']} recorded sent, {received} received, "
            f"for {job['recipients']} recipients"
        )
    return Run(
        side,
        job["kind"],
        job["images"],
        job["connections"],
        job["recipients"],
        result["seconds"],
        result["cpu"],
        requests,
        load,
        fake_cpu,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--providers", default="ses,postmark", help=",".join(PROVIDERS))
    parser.add_argument("--images", choices=["linked", "embedded", "both"], default="linked")
    parser.add_argument("--recipients", type=int, help="per run (default: per provider)")
    parser.add_argument("--smtp-recipients", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--connections", default="3", help="connections (= sending threads); a list runs each"
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="ms the raw fake waits before each answer (a network round trip and the "
        "provider's own time), to show what parallel requests buy",
    )
    parser.add_argument("--baseline", help="also run the package of this commit (git archive)")
    parser.add_argument("--validate", action="store_true")
    parser.add_argument(
        "--fake",
        choices=["raw", "checking"],
        default="raw",
        help="raw: asyncio, counts without parsing (default); checking: tests/providerfake.py",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the sending threads (slower; stderr)"
    )
    parser.add_argument("--serve-fake", help=argparse.SUPPRESS)
    parser.add_argument("--serve-raw", help=argparse.SUPPRESS)
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_fake:
        _serve_fake(options.serve_fake, options.validate)
        return
    if options.serve_raw:
        _serve_raw(options.serve_raw, options.latency)
        return
    if options.run_one:
        _run_one(json.loads(options.run_one))
        return

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    from baseline import extract
    from rawsink import RawSink

    from tests.conftest import copy_example_project

    providers = [p for p in options.providers.split(",") if p]
    unknown = set(providers) - set(PROVIDERS)
    if unknown:
        raise SystemExit(f"unknown providers {sorted(unknown)}; known: {', '.join(PROVIDERS)}")
    modes = ["linked", "embedded"] if options.images == "both" else [options.images]
    pairs = [(kind, mode) for kind in providers for mode in modes]
    if "brevo" in providers and "embedded" in modes:  # Brevo refuses cid: images
        pairs.remove(("brevo", "embedded"))
    if options.smtp_recipients:
        pairs += [("smtp", mode) for mode in modes]
    counts = [int(n) for n in options.connections.split(",")]
    cases = [(kind, mode, n) for kind, mode in pairs for n in counts]

    with tempfile.TemporaryDirectory(prefix="bench-providers-") as tmp:
        folder = Path(tmp)
        project = copy_example_project(folder / "project")
        sides = [("current", REPO)]
        if options.baseline:
            sides.append(("baseline", extract(options.baseline, folder / "baseline")))
        checking = options.validate or options.fake == "checking"
        if checking and options.latency:
            raise SystemExit("--latency works with the raw fake only")
        fakes = {
            kind: FakeProcess(kind, options.validate, checking, options.latency)
            for kind in providers
        }
        sink = RawSink() if options.smtp_recipients else None
        runs: list[Run] = []
        print(
            f"example issue 2026-11; images {' and '.join(modes)}; ledger on (SQLite); "
            f"connections (= threads) {options.connections}; senders and fakes in child processes; "
            f"fake answers after {options.latency:g} ms; "
            f"fake: {'tests/providerfake.py' if checking else 'raw asyncio counter'}, "
            f"schema validation {'ON' if options.validate else 'off (see --validate)'}; "
            f"sides: current{f', baseline {options.baseline}' if options.baseline else ''}"
        )
        try:
            if sink is not None:
                sink.__enter__()
            for number in range(1, options.runs + 1):
                # Alternate which side goes first, so neither always runs on a warmer machine.
                order = sides if number % 2 else sides[::-1]
                for kind, mode, connections in cases:
                    for side, root in order:
                        recipients = options.recipients or DEFAULT_RECIPIENTS[kind]
                        if kind == "smtp":
                            recipients = options.smtp_recipients
                            assert sink is not None
                            url, count = f"{sink.host}:{sink.port}", _sink_counter(sink)
                        else:
                            url, count = fakes[kind].url, fakes[kind].count
                        job = {
                            "kind": kind,
                            "images": mode,
                            "url": url,
                            "recipients": recipients,
                            "connections": connections,
                            "project": str(project),
                            "folder": str(folder),
                            "profile": options.profile,
                        }
                        runs.append(one_run(side, root, job, count))
                        print(run_line(number, runs[-1]), flush=True)
        finally:
            for fake in fakes.values():
                fake.stop()
            if sink is not None:
                sink.__exit__(None, None, None)

    load = os.getloadavg()
    print(
        f"\nmedians of {options.runs} ({os.cpu_count()} CPUs; load average now "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; during the runs "
        f"{min(r.load for r in runs):.1f}-{max(r.load for r in runs):.1f}):"
    )
    print(
        f"  {'sender':9} {'images':9} {'conns':>5} {'side':9} {'recipients/s':>13} "
        f"{'per CPU-s':>10}"
    )
    for kind, mode, connections in cases:
        for side, _ in sides:
            case = (kind, mode, connections, side)
            mine = [r for r in runs if (r.sender, r.images, r.connections, r.side) == case]
            median = statistics.median(r.rate for r in mine)
            cpu_median = statistics.median(r.cpu_rate for r in mine)
            mark = ""
            target = TARGETS.get((kind, mode))
            if target is not None:
                mark = f"  (target >= {target:,.0f}/s: " + (
                    "met)" if median >= target else "NOT met)"
                )
            print(
                f"  {kind:9} {mode:9} {connections:5} {side:9} {median:13,.0f} "
                f"{cpu_median:10,.0f}{mark}"
            )
    print(
        "per CPU-s: recipients per second of the sending process's CPU time (sender and ledger, "
        "all threads; the fakes run in other processes): steadier than wall time on a busy "
        "machine."
    )


def _sink_counter(sink: Any) -> Any:
    """`count()` for the SMTP sink: (messages received so far, the same as 'requests')."""

    def count() -> tuple[int, int, float]:
        received = int(sink.settle(0))
        return received, received, 0.0  # the sink runs in this process: not counted

    return count


def run_line(number: int, run: Run) -> str:
    unit = "messages" if run.sender == "smtp" else "requests"
    return (
        f"run {number}  {run.sender:9} {run.images:8} {run.connections:3}c {run.side:8} "
        f"{run.recipients:7,} "
        f"recipients in {run.seconds:6.2f}s = {run.rate:7,.0f}/s, {run.cpu_rate:7,.0f} per CPU-s "
        f"({run.requests:,} {unit}; fake CPU {run.fake_cpu / run.cpu_seconds:.0%} of the "
        f"sender's; load {run.load:.1f})"
    )


if __name__ == "__main__":
    main()
