"""Scheduled sends and approval as an editor and a server run them: `newsletter send --at`,
`schedule`, `approve`, `status`, `run-due` processes racing (SQLite and PostgreSQL), and
`newsletter serve` sending a due issue from its background task (real uvicorn on loopback),
all delivering to a real SMTP server on loopback."""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.audience import SubscriberStore
from newsletter.config import Settings, load_settings
from newsletter.config_tables import ScheduleSettings, ServeSettings
from newsletter.delivery.ledger import Ledger, State
from newsletter.scheduling import DueRun, ScheduleState, list_schedules, schedule_send
from newsletter.sending import SendRequest
from newsletter.web import WebServer
from tests.smtpserver import SmtpTestServer
from tests.spamcache import SpamAssassinCache
from tests.test_sending import RecordingChecker

SECRET = "a-test-signing-secret"
READERS = ("ann@example.org", "bob@example.org", "carol@example.net")
REVIEWER = "editor@riverside-garden.example.org"


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as running:
        yield running


@pytest.fixture
def smtp_project(
    project: Path, server: SmtpTestServer, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The example project sending to the loopback SMTP server, its store at `store_url` (for
    this process and the commands it starts), three subscribers."""
    config = project / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    text = re.sub(
        r'kind = "outbox".*\npath = "outbox"',
        f'kind = "smtp"\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n'
        "connections = 2",
        text,
    )
    config.write_text(text + '\n[schedule]\ntimezone = "Europe/Amsterdam"\n', encoding="utf-8")
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)
    url = store_url if "://" in store_url else f"sqlite:///{store_url}"
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", url)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    with SubscriberStore(url) as store:
        for address in READERS:
            store.add(address, address.split("@")[0].title())
    return project


def newsletter(project: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", *args],
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    process = newsletter(project, *args)
    out, err = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def schedule_past(settings: Settings, issue: str, *, due: float) -> None:
    """Schedule `issue` for `due` as if it had been done ten minutes before it."""
    at = datetime.fromtimestamp(due, UTC).isoformat(timespec="seconds")
    schedule_send(
        settings,
        SendRequest(issue, link_check=False),
        at,
        now=due - 600,
        checker=RecordingChecker(),
    )


def test_racing_run_due_processes_send_each_due_schedule_once(
    smtp_project: Path,
    server: SmtpTestServer,
    cached_spamassassin: SpamAssassinCache | None,
) -> None:
    issues = ["2026-11", "2026-11-b", "2026-11-c"]
    for copy in issues[1:]:
        shutil.copytree(smtp_project / "issues" / issues[0], smtp_project / "issues" / copy)
    settings = load_settings(smtp_project)
    due = time.time() - 60  # a minute ago: well within the grace period
    for issue in issues:
        schedule_past(settings, issue, due=due)

    runners = [newsletter(smtp_project, "run-due") for _ in range(4)]
    results = [(p.communicate(timeout=300), p.returncode) for p in runners]
    assert [code for _, code in results] == [0] * 4, results
    said = collections.Counter(
        line.split()[1]
        for (out, _), _ in results
        for line in out.splitlines()
        if line.startswith("sent ")
    )
    assert said == dict.fromkeys(issues, 1)  # each reported sent by exactly one runner

    # Each reader got each issue exactly once: 9 messages, every ledger row sent once.
    assert len(server.messages) == len(issues) * len(READERS)
    assert collections.Counter(m.rcpt_tos[0] for m in server.messages) == dict.fromkeys(
        READERS, len(issues)
    )
    with Ledger(settings.database()) as ledger:
        for issue in issues:
            rows = list(ledger.issue(issue).rows())
            assert sorted(r.email for r in rows) == sorted(READERS)
            assert {(r.state, r.attempts) for r in rows} == {(State.SENT, 1)}
    schedules = list_schedules(settings)
    assert {s.issue: s.state for s in schedules} == dict.fromkeys(issues, ScheduleState.SENT)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_schedule_approve_and_status_from_the_command_line(
    smtp_project: Path,
    server: SmtpTestServer,
    cached_spamassassin: SpamAssassinCache | None,
) -> None:
    made = run(smtp_project, "send", "2026-11", "--at", "2099-12-08 09:00", "--no-link-check")
    assert made.returncode == 0, made.stderr
    assert "Scheduled '2026-11' for 2099-12-08 09:00 CET (Europe/Amsterdam)" in made.stdout
    assert "3 subscribed now" in made.stdout
    again = run(smtp_project, "send", "2026-11", "--at", "2099-12-09 09:00", "--no-link-check")
    assert again.returncode == 1
    assert "'2026-11' is already scheduled for 2099-12-08 09:00 CET" in again.stderr
    past = run(smtp_project, "send", "2026-11", "--at", "2020-01-01 09:00")
    assert past.returncode == 1 and "is not in the future" in past.stderr

    listed = run(smtp_project, "schedule", "list")
    assert re.search(r"2026-11\s+2099-12-08 09:00 CET\s+scheduled", listed.stdout), listed.stdout
    status = run(smtp_project, "status", "2026-11")
    assert "schedule: 2099-12-08 09:00 CET: scheduled" in status.stdout
    assert run(smtp_project, "run-due").stdout.strip() == "Nothing is due."
    declined = run(smtp_project, "send", "2026-11", "--no-link-check")  # no answer: aborted
    assert declined.returncode != 0 and server.messages == []
    assert "'2026-11' is also scheduled for 2099-12-08 09:00 CET" in declined.stdout
    cancelled = run(smtp_project, "schedule", "cancel", "2026-11")
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    assert run(smtp_project, "schedule", "list").stdout.startswith("Nothing is scheduled.")
    assert server.messages == []

    config = smtp_project / "newsletter.toml"
    with config.open("a", encoding="utf-8") as appended:
        appended.write('\n[sending]\nrequire_approval = true\napprovers = ["Anna", "Ben"]\n')
    refused = run(smtp_project, "send", "2026-11", "--yes", "--no-link-check")
    assert refused.returncode == 1
    assert (
        "'2026-11' was not sent: it is not approved; it needs an approval by Anna or Ben"
        in " ".join(refused.stderr.split())
    )
    wrong = run(smtp_project, "approve", "2026-11", "--by", "Carl")
    assert wrong.returncode == 1 and "Carl may not approve" in wrong.stderr
    approved = run(smtp_project, "approve", "2026-11", "--by", "Anna")
    assert approved.returncode == 0, approved.stderr
    assert "Approved '2026-11' by Anna" in approved.stdout
    test = run(smtp_project, "send", "2026-11", "--test", "--to", "rev@example.org")
    assert test.returncode == 0, test.stderr
    sent = run(smtp_project, "send", "2026-11", "--yes", "--no-link-check")
    assert sent.returncode == 0, sent.stderr
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted([*READERS, "rev@example.org"])
    status = run(smtp_project, "status", "2026-11")
    assert re.search(r"approved: \S+ \S+ by Anna \(content [0-9a-f]{12}\)", status.stdout)
    assert re.search(r"test copy: \S+ \S+ to rev@example.org, sent", status.stdout)


def test_serve_sends_a_due_schedule_from_its_background_task(
    smtp_project: Path, server: SmtpTestServer, cached_spamassassin: SpamAssassinCache | None
) -> None:
    settings = load_settings(smtp_project)
    due = time.time() + 3600
    at = datetime.fromtimestamp(due, UTC).isoformat(timespec="seconds")
    schedule_send(
        settings,
        SendRequest("2026-11", link_check=False),
        at,
        now=time.time(),
        checker=RecordingChecker(),
    )
    sending = replace(settings, schedule=ScheduleSettings(timezone="UTC", in_serve=True))
    events: list[DueRun] = []
    web = WebServer(
        sending,
        secret=SECRET.encode(),
        serve_settings=ServeSettings(port=0),
        clock=lambda: due + 5,  # the server's clock says the time has come
        on_schedule=events.append,
    )
    web.bind()
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    try:
        assert web.ready.wait(10), "the server did not start"
        deadline = time.monotonic() + 120
        while len(events) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the send to finish, not for time to pass
    finally:
        web.stop()
        thread.join(30)
    assert not thread.is_alive(), "the server did not stop"
    assert [(e.schedule.issue, e.schedule.state, e.sent_now) for e in events] == [
        ("2026-11", ScheduleState.SENT, 3)
    ]
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(READERS)
    assert [s.state for s in list_schedules(settings)] == [ScheduleState.SENT]


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_serve_with_several_workers_sends_a_due_schedule_once(
    smtp_project: Path, server: SmtpTestServer, cached_spamassassin: SpamAssassinCache | None
) -> None:
    """`newsletter serve --workers 3` with `in_serve`: three processes look for due sends at
    once; the claim in the store lets one of them send it."""
    with (smtp_project / "newsletter.toml").open("a", encoding="utf-8") as config:
        config.write("in_serve = true\ncheck_every = 1\n")  # appended to [schedule]
    settings = load_settings(smtp_project)
    schedule_past(settings, "2026-11", due=time.time() - 60)
    serving = newsletter(smtp_project, "serve", "--port", "0", "--workers", "3")
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if list_schedules(settings)[0].state is ScheduleState.SENT:
                break
            time.sleep(0.2)  # waiting for the workers to send, not for time to pass
        time.sleep(2)  # two more looks by every worker: none may send again
    finally:
        serving.terminate()
        out, err = serving.communicate(timeout=60)
    assert list_schedules(settings)[0].state is ScheduleState.SENT, (out, err)
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(READERS)
    assert out.count("scheduled send of 2026-11: sent") == 1, out
