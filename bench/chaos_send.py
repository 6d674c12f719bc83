"""Chaos trials for the send (issue 15): kill a sending process part-way with SIGKILL or SIGTERM,
resume to the end, and count what went wrong.

    .venv/bin/python bench/chaos_send.py [TRIALS] [COUNT] [--code PATH]

For each transport family (SMTP against a real aiosmtpd server on loopback, Postmark's batch API
against the loopback fake of tests/), TRIALS trials alternate SIGKILL and SIGTERM. The child
sends COUNT recipients with the library (a SIGTERM sets the stop event, as `newsletter send`
does). After each kill the ledger is read (`uncertain` = rows left `sending` or `uncertain`),
then a resume runs to the end. Printed per family: kills, duplicates (a recipient the server
took twice), missing (neither sent nor uncertain), uncertain rows, and the share of uncertain
rows the server never received (over-reported uncertainty, D16).

For Postmark, after each kill `reconcile` asks the fake's outbound search about the uncertain
rows before the resume: "reconciled sent" / "reconciled pending" / "uncertain after reconcile".
`--only smtp|postmark` runs one family.

`--code PATH` runs the children with the `newsletter` package of another checkout (e.g. the
main branch, for the before/after figures).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.providerfake import ProviderFake
    from tests.smtpserver import SmtpTestServer

REPO = Path(__file__).resolve().parent.parent
if sys.argv[1:2] != ["child"]:
    # A child finds `newsletter` through PYTHONPATH (maybe another checkout's, --code).
    sys.path.insert(0, str(REPO))


def child(kind: str, target: str, project: str, database: str, count: str) -> None:
    """The sending process: the example issue to COUNT people via `kind`."""
    from newsletter.config import TransportSettings  # child mode only
    from newsletter.delivery.ledger import Ledger
    from newsletter.delivery.ratelimit import Backoff
    from newsletter.delivery.sender import SendOptions, send_issue
    from newsletter.delivery.transports import provider_class
    from tests.sendkit import ListAudience, example_template, people, smtp_transport

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if kind == "smtp":
        transport = smtp_transport(int(target))
    else:
        settings = TransportSettings(kind=kind, api_url=target, timeout=10.0, connections=2)
        transport = provider_class(kind).from_settings(settings, os.environ)
    with Ledger(Path(database)) as ledger:
        send_issue(
            example_template(Path(project)),
            ListAudience(people(int(count))),
            transport=transport,
            ledger=ledger,
            backoff=Backoff(base=0.05, cap=0.1),
            options=SendOptions(concurrency=2),
            stop=stop,
        )


def _received(smtp: SmtpTestServer | None, fake: ProviderFake | None) -> Counter[str]:
    """Messages the server took, per recipient."""
    if smtp is not None:
        return Counter(r for m in smtp.messages for r in m.rcpt_tos)
    assert fake is not None
    return Counter(fake.accepted)


def trials(kind: str, n: int, count: int, code: Path) -> None:
    from newsletter.config import TransportSettings
    from newsletter.delivery.ledger import Ledger  # after sys.path is set
    from newsletter.delivery.reconcile import reconcile_issue
    from newsletter.delivery.transports.base import Verdict
    from newsletter.delivery.transports.postmark import PostmarkTransport
    from tests.conftest import copy_example_project
    from tests.providerfake import ProviderFake
    from tests.smtpserver import SmtpTestServer
    from tests.test_reconcile import SearchablePostmark
    from tests.test_transport_postmark import TOKEN

    rng = random.Random(20261203)
    env = {
        **os.environ,
        "PYTHONPATH": f"{code}{os.pathsep}{REPO}",
        "POSTMARK_SERVER_TOKEN": TOKEN,
    }
    totals: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        project = copy_example_project(Path(tmp) / "project")
        for trial in range(n):
            smtp = SmtpTestServer() if kind == "smtp" else None
            fake = ProviderFake() if kind != "smtp" else None
            if smtp is not None:
                smtp.start()
                smtp.delay("data_end", 0.002, times=None)
                target = str(smtp.port)
            else:
                assert fake is not None
                fake.start()
                fake.record_requests = False
                SearchablePostmark(fake)  # answers Postmark's outbound search too
                target = fake.url

            database = Path(tmp) / f"{kind}-{trial}.db"
            command = [
                sys.executable,
                __file__,
                "child",
                kind,
                target,
                str(project),
                str(database),
                str(count),
            ]
            process = subprocess.Popen(command, cwd=REPO, env=env)
            goal = rng.randint(count // 10, count // 2)
            deadline = time.monotonic() + 120
            while sum(_received(smtp, fake).values()) < goal and process.poll() is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.001)
            sig = signal.SIGKILL if trial % 2 == 0 else signal.SIGTERM
            if process.poll() is None:
                process.send_signal(sig)
                totals[f"kills {sig.name}"] += 1
            process.wait()
            with Ledger(database) as ledger:
                issue = ledger.issue("2026-11")
                uncertain = {row.email for row in issue.uncertain()}
            got = _received(smtp, fake)
            totals["uncertain"] += len(uncertain)
            totals["uncertain never received"] += sum(1 for a in uncertain if got[a] == 0)
            if fake is not None:
                # Ask Postmark (an hour later, past its indexing delay) about the uncertain rows.
                lookup = PostmarkTransport(
                    TransportSettings(kind="postmark", api_url=fake.url), api_key=TOKEN
                ).sent_lookup()
                with Ledger(database) as ledger:
                    report = reconcile_issue(
                        ledger,
                        "2026-11",
                        lookup,
                        sender="news@example.org",
                        clock=lambda: time.time() + 3600,
                    )
                totals["reconciled sent"] += report.count(Verdict.SENT)
                totals["reconciled pending"] += report.count(Verdict.NOT_SENT)
                totals["uncertain after reconcile"] += report.count(Verdict.UNKNOWN)
            subprocess.run(command, cwd=REPO, env=env, check=True, timeout=300)
            with Ledger(database) as ledger:
                issue = ledger.issue("2026-11")
                sent = {row.email for row in issue.rows()} - {r.email for r in issue.uncertain()}
                left_uncertain = {row.email for row in issue.uncertain()}
            got = _received(smtp, fake)
            everyone = {f"reader{n:05d}@example.org" for n in range(count)}
            totals["duplicates"] += sum(1 for a in everyone if got[a] > 1)
            totals["missing"] += sum(
                1 for a in everyone if a not in sent and a not in left_uncertain
            )
            if smtp is not None:
                smtp.stop()
            if fake is not None:
                fake.stop()
    share = totals["uncertain never received"] / totals["uncertain"] if totals["uncertain"] else 0.0
    print(
        f"{kind:8} trials {n}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(totals.items()))
        + f"; uncertain rows never received: {share:.0%}"
    )


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "child":
        child(*args[1:6])
        return
    code = REPO
    if "--code" in args:
        at = args.index("--code")
        code = Path(args[at + 1]).resolve()
        del args[at : at + 2]
    families = ("smtp", "postmark")
    if "--only" in args:
        at = args.index("--only")
        families = (args[at + 1],)
        del args[at : at + 2]
    n = int(args[0]) if args else 20
    count = int(args[1]) if len(args) > 1 else 300
    for kind in families:
        trials(kind, n, count, code)


if __name__ == "__main__":
    main()
