"""Scheduled sends and approval (issue 14) through the library, with a controlled clock: the
real send use case, a real SMTP server on loopback, the store on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from newsletter.approvals import ApprovalError, Approvals
from newsletter.audience import SubscriberStore
from newsletter.config import SendingSettings, Settings, TransportSettings, load_settings
from newsletter.config_tables import ScheduleSettings
from newsletter.errors import ConfigError, ProjectError
from newsletter.scheduling import (
    ScheduleState,
    cancel_schedule,
    list_schedules,
    parse_when,
    run_due,
    schedule_send,
)
from newsletter.sending import SendRequest, approve, deliver, plan_send, send_test_copies
from newsletter.store import Store
from tests.smtpserver import SmtpTestServer
from tests.test_sending import RecordingChecker

ISSUE = "2026-11"
READERS = ("ann@example.org", "bob@example.org", "carol@example.net")
REVIEWER = "editor@riverside-garden.example.org"
ZONE = "Europe/Amsterdam"
# 2026-12-07 12:00 in Amsterdam: "now" when the tests schedule.
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=ZoneInfo(ZONE)).timestamp()
AT = "2026-12-08 09:00"
DUE = datetime(2026, 12, 8, 9, 0, tzinfo=ZoneInfo(ZONE)).timestamp()


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as running:
        yield running


@pytest.fixture
def project_settings(
    settings: Settings, store_url: str, server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The example project on `store_url`, sending to the loopback SMTP server, three readers."""
    monkeypatch.delenv(settings.unsubscribe.secret_env, raising=False)
    url = store_url if "://" in store_url else f"sqlite:///{store_url}"
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", url)
    (settings.root / ".newsletter-secret").write_text("a-test-signing-secret\n", encoding="utf-8")
    chosen = replace(
        settings,
        transport=TransportSettings(
            kind="smtp", host="127.0.0.1", port=server.port, security="none", connections=2
        ),
        schedule=ScheduleSettings(timezone=ZONE, grace_minutes=30),
    )
    with SubscriberStore(chosen.database()) as store:
        for address in READERS:
            store.add(address, address.split("@")[0].title())
    return chosen


def scheduled(settings: Settings, at: str = AT, now: float = T0) -> int:
    made = schedule_send(
        settings, SendRequest(ISSUE, link_check=False), at, now=now, checker=RecordingChecker()
    )
    return made.schedule.id


def due(settings: Settings, now: float, checker: RecordingChecker | None = None) -> list[str]:
    """Run what is due at `now`; the states the runs left, by issue."""
    runs = run_due(settings, now=now, checker=checker or RecordingChecker(), clock=lambda: now)
    return [f"{run.schedule.issue}:{run.schedule.state}" for run in runs]


def readers_mailed(server: SmtpTestServer) -> list[str]:
    return sorted(m.rcpt_tos[0] for m in server.messages if m.rcpt_tos[0] in READERS)


def notices(server: SmtpTestServer) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(m.data, policy=email.policy.default)
        for m in server.messages
        if m.rcpt_tos == (REVIEWER,)
    ]


def change_content(settings: Settings) -> None:
    item = settings.root / "issues" / ISSUE / "02-compost-bays.md"
    item.write_text(item.read_text(encoding="utf-8") + "\nOne more line.\n", encoding="utf-8")


def test_a_schedule_waits_for_its_time_and_is_sent_once(
    project_settings: Settings, server: SmtpTestServer
) -> None:
    scheduled(project_settings)
    (listed,) = list_schedules(project_settings)
    assert (listed.state, listed.due_at, listed.timezone) == (ScheduleState.SCHEDULED, DUE, ZONE)
    assert listed.due_local().strftime("%Y-%m-%d %H:%M") == AT
    assert server.messages == []  # scheduling checks, sends nothing

    assert due(project_settings, DUE - 1) == []
    assert server.messages == []
    assert due(project_settings, DUE + 5) == [f"{ISSUE}:sent"]
    assert readers_mailed(server) == sorted(READERS)
    assert due(project_settings, DUE + 60) == []  # done: never again
    assert len(server.messages) == 3
    (done,) = list_schedules(project_settings)
    assert done.state is ScheduleState.SENT and done.reason == "sent to 3 (sent 3)"


def test_a_changed_issue_is_refused_at_send_time_and_the_reviewers_told(
    project_settings: Settings, server: SmtpTestServer
) -> None:
    scheduled(project_settings)
    change_content(project_settings)
    assert due(project_settings, DUE) == [f"{ISSUE}:refused"]
    assert readers_mailed(server) == []
    (refused,) = list_schedules(project_settings)
    assert refused.reason is not None
    assert refused.reason.startswith("refused: the content changed since it was scheduled")
    assert refused.notified == f"mailed to {REVIEWER}"
    (notice,) = notices(server)
    assert notice["Subject"] == f"Scheduled send of {ISSUE}: refused"
    assert "the content changed since it was scheduled" in notice.get_content()
    assert "2026-12-08 09:00 CET" in notice.get_content()


def test_a_check_failing_at_send_time_refuses_the_send(
    project_settings: Settings, server: SmtpTestServer
) -> None:
    scheduled(project_settings)
    assert due(project_settings, DUE, RecordingChecker(error=True)) == [f"{ISSUE}:refused"]
    assert readers_mailed(server) == []
    (refused,) = list_schedules(project_settings)
    assert refused.reason == (
        "refused: the check found errors: https://example.org/gone answered 404"
    )


def test_a_schedule_missed_past_the_grace_period_is_reported_not_sent(
    project_settings: Settings, server: SmtpTestServer
) -> None:
    scheduled(project_settings)
    assert due(project_settings, DUE + 31 * 60) == [f"{ISSUE}:missed"]
    assert readers_mailed(server) == []
    (missed,) = list_schedules(project_settings)
    assert missed.reason == (
        "missed: due 2026-12-08 09:00 CET, found 31 min late, past the grace period of 30 min;"
        " not sent"
    )
    assert "found 31 min late" in notices(server)[0].get_content()
    assert due(project_settings, DUE + 32 * 60) == []  # reported once


def test_within_the_grace_period_it_is_sent_late(
    project_settings: Settings, server: SmtpTestServer
) -> None:
    scheduled(project_settings)
    assert due(project_settings, DUE + 29 * 60) == [f"{ISSUE}:sent"]
    assert readers_mailed(server) == sorted(READERS)


def test_an_unreachable_server_is_tried_again_until_the_grace_period_ends(
    project_settings: Settings, server: SmtpTestServer
) -> None:
    scheduled(project_settings)
    with SmtpTestServer() as stopped:
        closed = stopped.port
    down = replace(project_settings, transport=replace(project_settings.transport, port=closed))
    assert due(down, DUE) == [f"{ISSUE}:scheduled"]
    (waiting,) = list_schedules(down)
    assert waiting.reason is not None and waiting.reason.startswith("waiting: ")
    assert waiting.reason.endswith("tried at 2026-12-08 09:00 CET")
    assert due(project_settings, DUE + 10 * 60) == [f"{ISSUE}:sent"]
    assert readers_mailed(server) == sorted(READERS)


def more_readers(settings: Settings, count: int = 30) -> list[str]:
    """Add `count` subscribers (so a run stopped after its first message leaves many); every
    subscriber's address."""
    extra = [f"extra{n:02d}@example.org" for n in range(count)]
    with SubscriberStore(settings.database()) as store:
        for address in extra:
            store.add(address, "Extra")
    return sorted([*READERS, *extra])


def everyone_mailed(server: SmtpTestServer) -> list[str]:
    return sorted(m.rcpt_tos[0] for m in server.messages if m.rcpt_tos != (REVIEWER,))


def claimed_by(settings: Settings, who: str) -> None:
    """Mark the schedule `running` under `who`, as a runner that claimed it would have."""
    with Store.open(settings.database()) as store, store.transaction() as db:
        db.execute(
            "UPDATE schedule_sends SET state = 'running', claimed_by = :who, claimed_at = :at",
            {"who": who, "at": DUE},
        )


def a_dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(child.stdout)


def test_a_run_whose_process_died_is_resumed_within_the_grace_period(
    project_settings: Settings, server: SmtpTestServer
) -> None:
    everyone = more_readers(project_settings)
    scheduled(project_settings)
    # The run that died: it sent a message or two, then stopped (as if killed).
    plan = plan_send(project_settings, SendRequest(ISSUE), checker=RecordingChecker())
    stop = threading.Event()
    deliver(plan, stop=stop, progress=lambda update: stop.set() if update.sent else None)
    assert 1 <= len(everyone_mailed(server)) < len(everyone)

    claimed_by(project_settings, f"{socket.gethostname()}:{os.getpid()}")  # alive: left alone
    assert due(project_settings, DUE + 60) == []
    assert list_schedules(project_settings)[0].state is ScheduleState.RUNNING

    claimed_by(project_settings, f"{socket.gethostname()}:{a_dead_pid()}")
    assert due(project_settings, DUE + 120) == [f"{ISSUE}:sent"]
    assert everyone_mailed(server) == everyone  # the rest got it; nobody twice


def test_a_run_stopped_on_purpose_is_resumed_by_the_next_look(
    project_settings: Settings, server: SmtpTestServer
) -> None:
    everyone = more_readers(project_settings)
    scheduled(project_settings)
    stop = threading.Event()
    runs = run_due(
        project_settings,
        now=DUE,
        checker=RecordingChecker(),
        clock=lambda: DUE,
        stop=stop,
        progress=lambda update: stop.set() if update.sent else None,
    )
    (stopped,) = runs
    assert stopped.schedule.state is ScheduleState.SCHEDULED
    assert (
        stopped.schedule.reason == f"resuming: the run was stopped after sending {stopped.sent_now}"
    )
    assert 1 <= len(everyone_mailed(server)) < len(everyone)
    assert due(project_settings, DUE + 60) == [f"{ISSUE}:sent"]
    assert everyone_mailed(server) == everyone  # the rest got it; nobody twice


def test_a_run_whose_process_died_is_reported_after_the_grace_period(
    project_settings: Settings, server: SmtpTestServer
) -> None:
    scheduled(project_settings)
    dead = f"{socket.gethostname()}:{a_dead_pid()}"
    claimed_by(project_settings, dead)
    assert due(project_settings, DUE + 45 * 60) == [f"{ISSUE}:failed"]
    (failed,) = list_schedules(project_settings)
    assert failed.reason == (
        f"failed: its run ({dead}) stopped part-way, found 45 min after the time, past the "
        f"grace period; resume with: newsletter send {ISSUE}"
    )
    assert [n["Subject"] for n in notices(server)] == [f"Scheduled send of {ISSUE}: failed"]
    assert readers_mailed(server) == []


def test_racing_runners_send_a_due_schedule_once(
    project_settings: Settings, server: SmtpTestServer
) -> None:
    """Eight runners in threads, each with its own connection to the store, start together."""
    scheduled(project_settings)
    start = threading.Barrier(8)
    results: list[list[str]] = []

    def runner() -> None:
        start.wait()
        results.append(due(project_settings, DUE + 1))

    threads = [threading.Thread(target=runner) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(map(len, results)) == [0] * 7 + [1]
    assert readers_mailed(server) == sorted(READERS)


def test_cancel_and_schedule_again(project_settings: Settings, server: SmtpTestServer) -> None:
    scheduled(project_settings)
    with pytest.raises(ProjectError, match="already scheduled for 2026-12-08 09:00 CET"):
        scheduled(project_settings, "2026-12-09 09:00")
    cancelled = cancel_schedule(project_settings, ISSUE, now=T0 + 10)
    assert cancelled.state is ScheduleState.CANCELLED
    assert due(project_settings, DUE) == []
    scheduled(project_settings, "2026-12-09 09:00")
    with pytest.raises(ProjectError, match="'nope' is not scheduled"):
        cancel_schedule(project_settings, "nope", now=T0)
    assert [s.state for s in list_schedules(project_settings)] == [
        ScheduleState.CANCELLED,
        ScheduleState.SCHEDULED,
    ]
    assert server.messages == []


def test_a_running_send_is_cancelled_only_when_its_runner_is_gone(
    project_settings: Settings,
) -> None:
    scheduled(project_settings)
    claimed_by(project_settings, f"{socket.gethostname()}:{os.getpid()}")
    with pytest.raises(ProjectError, match="which is alive"):
        cancel_schedule(project_settings, ISSUE, now=DUE, stale=True)
    claimed_by(project_settings, "elsewhere.example.org:4242")
    with pytest.raises(ProjectError, match=r"is being sent now \(by elsewhere.example.org:4242\)"):
        cancel_schedule(project_settings, ISSUE, now=DUE)
    assert due(project_settings, DUE + 60) == []  # another machine's run: left alone
    failed = cancel_schedule(project_settings, ISSUE, now=DUE, stale=True)
    assert (failed.state, failed.reason) == (
        ScheduleState.FAILED,
        f"its run (elsewhere.example.org:4242) stopped; resume with: newsletter send {ISSUE}",
    )


def test_times_are_read_in_the_project_zone() -> None:
    zone = ZoneInfo(ZONE)
    assert parse_when(AT, ZONE, zone, now=T0) == DUE
    assert parse_when("2026-12-08T09:00", ZONE, zone, now=T0) == DUE
    assert parse_when("2026-12-08T08:00+00:00", ZONE, zone, now=T0) == DUE
    with pytest.raises(ProjectError, match="does not exist in Europe/Amsterdam"):
        parse_when("2027-03-28 02:30", ZONE, zone, now=T0)
    with pytest.raises(ProjectError, match="happens twice in Europe/Amsterdam") as twice:
        parse_when("2027-10-31 02:30", ZONE, zone, now=T0)
    assert twice.value.hint == "Give the offset you mean, e.g. 2027-10-31T02:30+02:00"
    with pytest.raises(ProjectError, match=r"is not in the future \(it is 2026-12-07 12:00"):
        parse_when("2026-12-07 11:59", ZONE, zone, now=T0)
    with pytest.raises(ProjectError, match="is not a time like '2026-12-08 09:00'"):
        parse_when("tomorrow", ZONE, zone, now=T0)


def test_force_cannot_be_scheduled(project_settings: Settings) -> None:
    with pytest.raises(ProjectError, match="--force cannot be scheduled"):
        schedule_send(project_settings, SendRequest(ISSUE, force=True), AT, now=T0)


# --- approval -----------------------------------------------------------------------------------


def requiring(settings: Settings, *approvers: str) -> Settings:
    return replace(
        settings,
        sending=SendingSettings(require_approval=True, approvers=tuple(approvers)),
    )


def test_send_refuses_unapproved_content_naming_who_must_approve(
    project_settings: Settings, server: SmtpTestServer
) -> None:
    settings = requiring(project_settings, "Anna", "Ben")
    with pytest.raises(ApprovalError) as refused:
        plan_send(settings, SendRequest(ISSUE), checker=RecordingChecker())
    assert refused.value.message == (
        f"'{ISSUE}' was not sent: it is not approved; it needs an approval by Anna or Ben"
    )
    assert refused.value.hint is not None
    assert f"newsletter approve {ISSUE} --by 'Anna'" in refused.value.hint
    with pytest.raises(ProjectError, match="Carl may not approve"):
        approve(settings, ISSUE, "Carl", clock=lambda: T0)

    approval = approve(settings, ISSUE, "anna", clock=lambda: T0)
    assert approval.by == "anna"
    plan = plan_send(settings, SendRequest(ISSUE), checker=RecordingChecker())
    assert plan.template.fingerprint == approval.fingerprint

    change_content(settings)
    with pytest.raises(ApprovalError) as changed:
        plan_send(settings, SendRequest(ISSUE), checker=RecordingChecker())
    assert changed.value.message == (
        f"'{ISSUE}' was not sent: the content changed after anna approved it; it needs a new "
        "approval by Anna or Ben"
    )
    assert server.messages == []


def test_a_scheduled_send_changed_after_approval_is_refused_naming_the_approver(
    project_settings: Settings, server: SmtpTestServer
) -> None:
    settings = requiring(project_settings, "Anna")
    made = schedule_send(
        settings, SendRequest(ISSUE, link_check=False), AT, now=T0, checker=RecordingChecker()
    )
    assert made.warnings == (
        "it is not approved; it needs an approval by Anna, before 2026-12-08 09:00 CET, or it "
        "will not be sent",
    )
    approve(settings, ISSUE, "Anna", clock=lambda: T0 + 60)
    # Approved, then changed, then scheduled again for the changed content: still refused.
    cancel_schedule(settings, ISSUE, now=T0 + 61)
    change_content(settings)
    schedule_send(
        settings, SendRequest(ISSUE, link_check=False), AT, now=T0 + 62, checker=RecordingChecker()
    )
    assert due(settings, DUE) == [f"{ISSUE}:refused"]
    assert readers_mailed(server) == []
    refused = list_schedules(settings)[-1]
    assert refused.reason == (
        "refused: the content changed after Anna approved it; it needs a new approval by Anna"
    )


def test_an_approved_scheduled_send_goes_out(
    project_settings: Settings, server: SmtpTestServer
) -> None:
    settings = requiring(project_settings)
    scheduled(settings)
    approve(settings, ISSUE, "Anyone", clock=lambda: T0 + 5)
    assert due(settings, DUE) == [f"{ISSUE}:sent"]
    assert readers_mailed(server) == sorted(READERS)


def test_test_sends_are_recorded(project_settings: Settings, server: SmtpTestServer) -> None:
    results = send_test_copies(
        project_settings, ISSUE, to=["rev@example.org", "ed@example.org"], clock=lambda: T0
    )
    assert [r.error for r in results] == [None, None]
    with Store.open(project_settings.database()) as store, Approvals(store) as approvals:
        copies = approvals.tests(ISSUE)
    assert [(c.recipient, c.at, c.error) for c in copies] == [
        ("rev@example.org", T0, None),
        ("ed@example.org", T0, None),
    ]
    plan = plan_send(project_settings, SendRequest(ISSUE), checker=RecordingChecker())
    assert {c.fingerprint for c in copies} == {plan.template.fingerprint}


def test_schedule_tables_are_in_every_store(store_url: str) -> None:
    with Store.open(store_url) as store, store.read() as db:
        tables = {str(row[0]) for row in db.execute(store.dialect.tables)}
    assert {"schedule_sends", "schedule_approvals", "schedule_test_sends"} <= tables


# --- settings -----------------------------------------------------------------------------------

MINIMAL = """\
[newsletter]
name = "Test News"
from = "Test News <news@example.org>"

[footer]
address = "1 Main Street"
"""


def test_schedule_and_approval_settings_are_read_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "newsletter.toml"
    config.write_text(
        MINIMAL + '[sending]\nrequire_approval = true\napprovers = ["Anna", "Ben"]\n\n'
        '[schedule]\ntimezone = "Europe/Amsterdam"\ngrace_minutes = 15\nin_serve = true\n',
        encoding="utf-8",
    )
    settings = load_settings(tmp_path)
    assert settings.sending.require_approval and settings.sending.approvers == ("Anna", "Ben")
    assert settings.schedule == ScheduleSettings("Europe/Amsterdam", 15, True, 30)
    assert load_settings(_minimal(tmp_path)).schedule == ScheduleSettings()

    config.write_text(
        MINIMAL + '[sending]\napprovers = ["Anna", "anna", "Bob\\nBcc: x"]\n\n'
        '[schedule]\ntimezone = "Mars/Olympus"\ngrace_minutes = -1\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    text = str(caught.value)
    assert "newsletter.toml:8: sending.approvers: entry 2 ('anna') is listed twice" in text
    assert "entry 3 ('Bob\\nBcc: x') must be a short name on one line" in text
    assert (
        "newsletter.toml:11: schedule.timezone: 'Mars/Olympus' is not a time zone name such as"
        " 'Europe/Amsterdam'" in text
    )
    assert "newsletter.toml:12: schedule.grace_minutes: must be at least 0" in text


def _minimal(root: Path) -> Path:
    (root / "newsletter.toml").write_text(MINIMAL, encoding="utf-8")
    return root
