"""Scheduled sends (issue 14): `send ISSUE --at TIME`, `schedule list|cancel`, `run-due`.

Scheduling runs the whole send use case now (`sending.plan_send`: secret, transport, content
check) and records, in the store's `schedule_sends` table, when to send and the fingerprint of
the content that passed. At the time, `run_due` (called by `newsletter run-due` from cron or a
systemd timer, or by `newsletter serve`'s background task) sends it through the same use case:

- a runner *claims* a due schedule by moving its row from `scheduled` to `running` in one
  UPDATE; on both engines only one of several racing runners (processes, server workers) sees
  its UPDATE change the row, and only that one sends;
- the send goes out only when the content is exactly what was scheduled (same fingerprint),
  the check passes again, and, with `[sending] require_approval`, an allowed approver approved
  that content; otherwise it is `refused`, with the reason recorded (and mailed to the
  reviewers when the transport can carry a plain message: SMTP or the outbox);
- a schedule found later than `[schedule] grace_minutes` after its time (the machine was off)
  is `missed`: reported, never sent late.

Times are read and shown in the project's zone (`[schedule] timezone`, else the machine's).
Every function takes the time as an argument (`now`/`clock`), so tests need no sleeping.
"""

from __future__ import annotations

import enum
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .approvals import ApprovalError, Approvals, approval_problem
from .checks.model import CheckReport
from .checks.reuse import check_reusing
from .config import Settings, parse_address
from .delivery.content import OutgoingMessage
from .delivery.sender import SendProgress
from .delivery.transports import make_transport
from .delivery.transports.base import DeliveryReceipt
from .errors import NewsletterError, ProjectError, TransportUnavailableError
from .sending import (
    Checker,
    CheckFailedError,
    SendRequest,
    TransportFactory,
    check_approved,
    deliver,
    plan_send,
)
from .store import Store, StoreError

__all__ = [
    "DueRun",
    "Schedule",
    "ScheduleState",
    "Scheduled",
    "cancel_schedule",
    "list_schedules",
    "parse_when",
    "project_zone",
    "run_due",
    "schedule_send",
]


class ScheduleState(enum.StrEnum):
    SCHEDULED = "scheduled"  # waiting for its time
    RUNNING = "running"  # claimed by a runner, being sent
    SENT = "sent"  # everyone has it
    FAILED = "failed"  # the send ran but did not reach everyone (see reason; resumable)
    REFUSED = "refused"  # not sent: the content changed, the check failed, not approved
    MISSED = "missed"  # found past the grace period: not sent
    CANCELLED = "cancelled"


OPEN_STATES = (ScheduleState.SCHEDULED, ScheduleState.RUNNING)


@dataclass(frozen=True)
class Schedule:
    """One scheduled send, as the store holds it."""

    id: int
    issue: str
    due_at: float
    timezone: str
    fingerprint: str
    link_check: bool
    state: ScheduleState
    created_at: float
    created_by: str
    claimed_at: float | None
    claimed_by: str | None
    finished_at: float | None
    reason: str | None
    notified: str | None

    def due_local(self) -> datetime:
        """The time it is due, in the zone it was scheduled in."""
        return datetime.fromtimestamp(self.due_at, _zone_named(self.timezone))


@dataclass(frozen=True)
class Scheduled:
    """What `schedule_send` recorded, with what the user should know about it now."""

    schedule: Schedule
    subject: str
    subscribed: int
    findings: CheckReport  # the check's warnings (an error stops scheduling)
    warnings: tuple[str, ...]  # e.g. an approval still needed before the time


@dataclass(frozen=True)
class DueRun:
    """What `run_due` did with one due schedule."""

    schedule: Schedule  # as it was left (sent, failed, refused, missed)
    sent_now: int = 0


# --- time -----------------------------------------------------------------------------------------


def _zone_named(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return _local_zone()[1]


def _local_zone() -> tuple[str, tzinfo]:
    """The machine's zone: TZ, else /etc/localtime's name, else its current fixed offset."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                return name, ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    fixed = datetime.now().astimezone().tzinfo
    assert fixed is not None
    return (datetime.now().astimezone().strftime("UTC%z"), fixed)


def project_zone(settings: Settings) -> tuple[str, tzinfo]:
    """The project's time zone (`[schedule] timezone`, else the machine's): name and zone."""
    name = settings.schedule.timezone
    if name:
        return name, ZoneInfo(name)
    return _local_zone()


_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def parse_when(text: str, zone_name: str, zone: tzinfo, *, now: float) -> float:
    """`--at` ("2026-12-08 09:00", in `zone`; or ISO 8601 with an offset) as epoch seconds.

    ProjectError for another form, a time that does not exist or happens twice in `zone` (the
    clocks changing), or a time not in the future.
    """
    value = text.strip()
    when: datetime | None = None
    for form in _FORMATS:
        try:
            when = datetime.strptime(value, form)
            break
        except ValueError:
            continue
    if when is None:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise ProjectError(
                f"--at {text!r} is not a time like '2026-12-08 09:00'",
                hint=f"Times are in {zone_name} ([schedule] timezone); or give an offset, "
                "e.g. 2026-12-08T09:00+01:00.",
            )
    if when.tzinfo is None:
        first = when.replace(tzinfo=zone)
        back = first.astimezone(ZoneInfo("UTC")).astimezone(zone)
        if back.replace(tzinfo=None) != when:
            raise ProjectError(
                f"--at {text!r} does not exist in {zone_name} (the clocks go forward)",
                hint="Pick a time outside the hour the clocks skip.",
            )
        if first.utcoffset() != when.replace(tzinfo=zone, fold=1).utcoffset():
            raise ProjectError(
                f"--at {text!r} happens twice in {zone_name} (the clocks go back)",
                hint="Give the offset you mean, e.g. "
                f"{when.strftime('%Y-%m-%dT%H:%M')}{_offset(first)}",
            )
        when = first
    due = when.timestamp()
    if due <= now:
        shown = datetime.fromtimestamp(now, zone).strftime("%Y-%m-%d %H:%M")
        raise ProjectError(
            f"--at {text!r} is not in the future (it is {shown} in {zone_name})",
            hint="To send now, leave out --at.",
        )
    return due


def _offset(when: datetime) -> str:
    text = when.strftime("%z")
    return f"{text[:3]}:{text[3:]}" if text else ""


def _shown(at: float, zone: tzinfo) -> str:
    return datetime.fromtimestamp(at, zone).strftime("%Y-%m-%d %H:%M %Z")


# --- the table ----------------------------------------------------------------------------------

_COLUMNS = (
    "id, issue, due_at, timezone, fingerprint, link_check, state, created_at, created_by,"
    " claimed_at, claimed_by, finished_at, reason, notified"
)
_INSERT = (
    "INSERT INTO schedule_sends (issue, due_at, timezone, fingerprint, link_check, state,"
    " created_at, created_by) VALUES (:issue, :due_at, :timezone, :fingerprint, :link_check,"
    " 'scheduled', :now, :by)"
)
_OPEN_FOR = f"SELECT {_COLUMNS} FROM schedule_sends WHERE issue = :issue AND state IN"
_OPEN_FOR += " ('scheduled', 'running')"
_BY_ID = f"SELECT {_COLUMNS} FROM schedule_sends WHERE id = :id"
_RUNNING = f"SELECT {_COLUMNS} FROM schedule_sends WHERE state = 'running' ORDER BY id"
_DUE = (
    f"SELECT {_COLUMNS} FROM schedule_sends WHERE state = 'scheduled' AND due_at <= :now"
    " ORDER BY due_at, id"
)
# The claim: one UPDATE from `scheduled`; the runner whose UPDATE changed the row owns it.
_CLAIM = (
    "UPDATE schedule_sends SET state = :state, claimed_at = :now, claimed_by = :who,"
    " finished_at = :finished, reason = :reason WHERE id = :id AND state = 'scheduled'"
)
_FINISH = (
    "UPDATE schedule_sends SET state = :state, finished_at = :now, reason = :reason"
    " WHERE id = :id AND state = :from_state"
)
_RETRY = (
    "UPDATE schedule_sends SET state = 'scheduled', claimed_at = NULL, claimed_by = NULL,"
    " reason = :reason WHERE id = :id AND state = 'running' AND claimed_by = :who"
)
# Only the claim found dead: a runner that recovered and claimed it since is left alone.
_FAIL_STALE = (
    "UPDATE schedule_sends SET state = 'failed', finished_at = :now, reason = :reason"
    " WHERE id = :id AND state = 'running' AND claimed_by = :who"
)
_NOTIFIED = "UPDATE schedule_sends SET notified = :notified WHERE id = :id"


def _schedule(row: tuple[object, ...]) -> Schedule:
    def opt_float(value: object) -> float | None:
        return None if value is None else float(str(value))

    return Schedule(
        id=int(str(row[0])),
        issue=str(row[1]),
        due_at=float(str(row[2])),
        timezone=str(row[3]),
        fingerprint=str(row[4]),
        link_check=bool(int(str(row[5]))),
        state=ScheduleState(str(row[6])),
        created_at=float(str(row[7])),
        created_by=str(row[8]),
        claimed_at=opt_float(row[9]),
        claimed_by=None if row[10] is None else str(row[10]),
        finished_at=opt_float(row[11]),
        reason=None if row[12] is None else str(row[12]),
        notified=None if row[13] is None else str(row[13]),
    )


class _Table:
    """The queries of `schedule_sends`, over an open store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def rows(self, sql: str, params: Mapping[str, object]) -> list[Schedule]:
        try:
            with self.store.read() as db:
                return [_schedule(tuple(row)) for row in db.execute(sql, params)]
        except self.store.errors as err:
            raise StoreError(f"{self.store.where}: cannot read the schedules: {err}") from err

    def change(self, sql: str, params: Mapping[str, object]) -> int:
        """Run one write; the number of rows it changed."""
        try:
            with self.store.transaction() as db:
                return db.execute(sql, params).rowcount
        except self.store.errors as err:
            raise StoreError(f"{self.store.where}: cannot record the schedule: {err}") from err

    def get(self, schedule_id: int) -> Schedule:
        (found,) = self.rows(_BY_ID, {"id": schedule_id})
        return found

    def insert(self, params: Mapping[str, object]) -> Schedule:
        try:
            with self.store.transaction() as db:
                taken = [_schedule(tuple(r)) for r in db.execute(_OPEN_FOR, params)]
                if taken:
                    old = taken[0]
                    raise ProjectError(
                        f"'{old.issue}' is already {old.state} for "
                        f"{_shown(old.due_at, _zone_named(old.timezone))}",
                        hint=f"Cancel it first: newsletter schedule cancel {old.issue}",
                    )
                db.execute(_INSERT, params)
        except self.store.errors as err:
            raise StoreError(f"{self.store.where}: cannot record the schedule: {err}") from err
        (found,) = self.rows(_OPEN_FOR, params)
        return found


def _who() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --- the use cases ------------------------------------------------------------------------------


def schedule_send(
    settings: Settings,
    request: SendRequest,
    at: str,
    *,
    now: float,
    by: str = "",
    environ: Mapping[str, str] = os.environ,
    transport_factory: TransportFactory = make_transport,
    checker: Checker = check_reusing,
) -> Scheduled:
    """Check everything now (as `send` does) and record the send of `request.issue` at `at`.

    Raises what `plan_send` raises (the check's errors: `CheckFailedError`), ProjectError for a
    bad `--at`, `--force`, an issue already scheduled, or one already sent with other content.
    An approval still missing is not an error here (it may come before the time): a warning.
    """
    if request.force:
        raise ProjectError(
            "--force cannot be scheduled: a scheduled send goes out only if the check passes",
            hint="Fix what the check finds, or send now with --force.",
        )
    zone_name, zone = project_zone(settings)
    due = parse_when(at, zone_name, zone, now=now)
    plan = plan_send(
        settings,
        request,
        environ=environ,
        transport_factory=transport_factory,
        checker=checker,
        require_approval=False,
    )
    if plan.content_changed:
        raise ProjectError(
            f"'{plan.issue}' was partly sent with other content; a scheduled send would be refused",
            hint=f"Finish that send first: newsletter send {plan.issue}",
        )
    warnings = []
    if settings.sending.require_approval:
        with Approvals(settings.database()) as approvals:
            problem = approval_problem(
                settings.sending, approvals.approvals(plan.issue), plan.template.fingerprint
            )
        if problem is not None:
            warnings.append(f"{problem}, before {_shown(due, zone)}, or it will not be sent")
    with Store.open(settings.database(), purpose="the schedules") as store:
        schedule = _Table(store).insert(
            {
                "issue": plan.issue,
                "due_at": due,
                "timezone": zone_name,
                "fingerprint": plan.template.fingerprint,
                "link_check": 1 if request.link_check else 0,
                "now": now,
                "by": by,
            }
        )
    return Scheduled(schedule, plan.subject, plan.subscribed, plan.findings, tuple(warnings))


def list_schedules(settings: Settings, *, include_done: bool = True) -> list[Schedule]:
    """Every schedule (or only those still to run), by time."""
    where = "" if include_done else " WHERE state IN ('scheduled', 'running')"
    with Store.open(settings.database(), purpose="the schedules") as store:
        return _Table(store).rows(
            f"SELECT {_COLUMNS} FROM schedule_sends{where} ORDER BY due_at, id", {}
        )


def cancel_schedule(settings: Settings, issue: str, *, now: float, stale: bool = False) -> Schedule:
    """Cancel the issue's schedule. A running one is refused unless `stale` (its runner died;
    it is then marked failed, and `newsletter send ISSUE` resumes the send)."""
    name = Path(issue.rstrip("/")).name
    with Store.open(settings.database(), purpose="the schedules") as store:
        table = _Table(store)
        found = table.rows(_OPEN_FOR, {"issue": name})
        if not found:
            raise ProjectError(f"'{name}' is not scheduled", hint="See: newsletter schedule list")
        schedule = found[0]
        if schedule.state is ScheduleState.RUNNING and not stale:
            raise ProjectError(
                f"'{name}' is being sent now (by {schedule.claimed_by}); it cannot be cancelled",
                hint="Stop that process (it stops cleanly); if it died, run: newsletter schedule "
                f"cancel {name} --stale, then resume with: newsletter send {name}",
            )
        host, _, pid = (schedule.claimed_by or "").rpartition(":")
        if stale and host == socket.gethostname() and pid.isdigit() and _alive(int(pid)):
            raise ProjectError(
                f"'{name}' is being sent now by process {pid} of this machine, which is alive",
                hint="Stop that process (it stops cleanly); a stopped send is marked failed.",
            )
        state, reason = ScheduleState.CANCELLED, "cancelled"
        if schedule.state is ScheduleState.RUNNING:
            state = ScheduleState.FAILED
            reason = f"its run ({schedule.claimed_by}) stopped; resume with: newsletter send {name}"
        changed = table.change(
            _FINISH,
            {
                "id": schedule.id,
                "state": state.value,
                "now": now,
                "reason": reason,
                "from_state": schedule.state.value,
            },
        )
        if not changed:
            raise ProjectError(f"'{name}' started or changed meanwhile; see: schedule list")
        return table.get(schedule.id)


def run_due(
    settings: Settings,
    *,
    now: float,
    environ: Mapping[str, str] = os.environ,
    transport_factory: TransportFactory = make_transport,
    checker: Checker = check_reusing,
    clock: Callable[[], float] = time.time,
    stop: threading.Event | None = None,
    progress: Callable[[SendProgress], None] | None = None,
) -> list[DueRun]:
    """Send every schedule due at `now` that this runner claims; report each (sent, refused,
    failed, missed). Schedules another runner claimed are left to it and not reported."""
    grace = settings.schedule.grace_minutes * 60
    who = _who()
    done: list[DueRun] = []
    with Store.open(settings.database(), purpose="the schedules") as store:
        table = _Table(store)
        for schedule in table.rows(_RUNNING, {}):
            stopped = _recover(table, settings, schedule, now, grace, environ, transport_factory)
            if stopped is not None:
                done.append(stopped)
        for schedule in table.rows(_DUE, {"now": now}):
            if stop is not None and stop.is_set():
                break
            late = now - schedule.due_at
            if late > grace:
                zone = _zone_named(schedule.timezone)
                reason = (
                    f"missed: due {_shown(schedule.due_at, zone)}, found "
                    f"{_late(late)} late, past the grace period of "
                    f"{settings.schedule.grace_minutes:g} min; not sent"
                )
                if _claim(table, schedule, ScheduleState.MISSED, who, now, reason):
                    missed = table.get(schedule.id)
                    _notify(table, settings, missed, environ, transport_factory, clock)
                    done.append(DueRun(table.get(schedule.id)))
                continue
            if not _claim(table, schedule, ScheduleState.RUNNING, who, now, None):
                continue  # another runner has it
            done.append(
                _run_one(
                    table,
                    settings,
                    schedule,
                    who=who,
                    environ=environ,
                    transport_factory=transport_factory,
                    checker=checker,
                    clock=clock,
                    stop=stop,
                    progress=progress,
                )
            )
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _recover(
    table: _Table,
    settings: Settings,
    schedule: Schedule,
    now: float,
    grace: float,
    environ: Mapping[str, str],
    transport_factory: TransportFactory,
) -> DueRun | None:
    """A schedule left `running` by a process of this machine that is gone (killed, a power
    cut): within the grace period it goes back to `scheduled`, and this run resumes the send
    (the ledger skips who has it; rows cut off mid-send are uncertain, never resent); later it
    is failed and the reviewers told. Runners on other machines cannot be seen: left alone."""
    host, _, pid = (schedule.claimed_by or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
        return None
    if now - schedule.due_at <= grace:
        reason = f"resuming: its run ({schedule.claimed_by}) stopped part-way"
        table.change(_RETRY, {"id": schedule.id, "reason": reason, "who": schedule.claimed_by})
        return None
    reason = (
        f"failed: its run ({schedule.claimed_by}) stopped part-way, found "
        f"{_late(now - schedule.due_at)} after the time, past the grace period; resume with: "
        f"newsletter send {schedule.issue}"
    )
    params = {"id": schedule.id, "now": now, "reason": reason, "who": schedule.claimed_by}
    if table.change(_FAIL_STALE, params) != 1:
        return None
    _notify(table, settings, table.get(schedule.id), environ, transport_factory, lambda: now)
    return DueRun(table.get(schedule.id))


def _late(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"


def _claim(
    table: _Table,
    schedule: Schedule,
    state: ScheduleState,
    who: str,
    now: float,
    reason: str | None,
) -> bool:
    finished = None if state is ScheduleState.RUNNING else now
    params = {
        "id": schedule.id,
        "state": state.value,
        "now": now,
        "who": who,
        "finished": finished,
        "reason": reason,
    }
    return table.change(_CLAIM, params) == 1


def _run_one(
    table: _Table,
    settings: Settings,
    schedule: Schedule,
    *,
    who: str,
    environ: Mapping[str, str],
    transport_factory: TransportFactory,
    checker: Checker,
    clock: Callable[[], float],
    stop: threading.Event | None,
    progress: Callable[[SendProgress], None] | None,
) -> DueRun:
    """Send one claimed schedule, or refuse it with the reason; the row records either."""
    request = SendRequest(schedule.issue, link_check=schedule.link_check)
    sent_now = 0
    try:
        plan = plan_send(
            settings,
            request,
            environ=environ,
            transport_factory=transport_factory,
            checker=checker,
            require_approval=False,  # checked below, after the more telling content check
        )
        if plan.template.fingerprint != schedule.fingerprint:
            raise ProjectError(
                "the content changed since it was scheduled (fingerprint "
                f"{schedule.fingerprint[:12]} then, {plan.template.fingerprint[:12]} now)"
            )
        check_approved(settings, plan.issue, plan.template.fingerprint)
        report = deliver(plan, stop=stop, progress=progress, clock=clock)
    except TransportUnavailableError as err:
        # The server is down or refused the login. Back to `scheduled`, so the next run tries
        # again (the ledger skips who has it), until the grace period is over (then missed).
        reason = (
            f"waiting: {err.message}; tried at {_shown(clock(), _zone_named(schedule.timezone))}"
        )
        table.change(_RETRY, {"id": schedule.id, "reason": reason, "who": who})
        return DueRun(table.get(schedule.id))
    except CheckFailedError as err:
        found = "; ".join(f.message for f in err.findings.errors[:3])
        state, reason = ScheduleState.REFUSED, f"refused: the check found errors: {found}"
    except ApprovalError as err:
        state, reason = ScheduleState.REFUSED, "refused: " + err.message.split(": ", 1)[-1]
    except NewsletterError as err:
        state, reason = ScheduleState.REFUSED, f"refused: {err.message}"
    except Exception as err:  # recorded, so the schedule never stays "running" for nothing
        state, reason = ScheduleState.FAILED, f"failed: {type(err).__name__}: {err}"
    else:
        sent_now = report.sent_now
        if report.interrupted and stop is not None and stop.is_set():
            # Stopped on purpose (serve shutting down): the next look resumes it, within the
            # grace period, like a run whose process died.
            reason = f"resuming: the run was stopped after sending {sent_now}"
            table.change(_RETRY, {"id": schedule.id, "reason": reason, "who": who})
            return DueRun(table.get(schedule.id), sent_now)
        counts = ", ".join(f"{s.value} {n}" for s, n in report.counts.items() if n)
        if report.outcome.value == "sent":
            state, reason = ScheduleState.SENT, f"sent to {report.total} ({counts})"
        else:
            state = ScheduleState.FAILED
            reason = (
                f"{report.outcome.value}: {counts}"
                f"{'; ' + report.paused_reason if report.paused_reason else ''}; "
                f"see: newsletter status {schedule.issue}"
            )
    table.change(
        _FINISH,
        {
            "id": schedule.id,
            "state": state.value,
            "now": clock(),
            "reason": reason,
            "from_state": ScheduleState.RUNNING.value,
        },
    )
    finished = table.get(schedule.id)
    if state is not ScheduleState.SENT:
        _notify(table, settings, finished, environ, transport_factory, clock)
        finished = table.get(schedule.id)
    return DueRun(finished, sent_now)


# --- telling the reviewers ----------------------------------------------------------------------


@runtime_checkable
class _SendsMime(Protocol):
    """A transport that carries a whole MIME message as it is (SMTP, the outbox)."""

    delivers_mime_as_is: bool

    def send(self, message: OutgoingMessage) -> DeliveryReceipt: ...

    def close(self) -> None: ...


def _notify(
    table: _Table,
    settings: Settings,
    schedule: Schedule,
    environ: Mapping[str, str],
    transport_factory: TransportFactory,
    clock: Callable[[], float],
) -> None:
    """Mail the reviewers why a scheduled send did not go out; record what happened."""
    reviewers = [a for a in (parse_address(r) for r in settings.reviewers) if a is not None]
    if not reviewers:
        note = "not mailed: no reviewers in newsletter.toml"
    else:
        try:
            transport = transport_factory(settings, environ)
        except NewsletterError as err:
            transport = None
            note = f"not mailed: {err.message}"
        if transport is not None:
            if isinstance(transport, _SendsMime) and transport.delivers_mime_as_is:
                note = _mail(transport, settings, schedule, reviewers, clock)
            else:
                note = f"not mailed: the {settings.transport.kind} transport carries only issues"
    table.change(_NOTIFIED, {"id": schedule.id, "notified": note})


def _mail(
    transport: _SendsMime,
    settings: Settings,
    schedule: Schedule,
    reviewers: list[Address],
    clock: Callable[[], float],
) -> str:
    zone = _zone_named(schedule.timezone)
    sender = settings.sender
    reached: list[str] = []
    problems: list[str] = []
    try:
        for reviewer in reviewers:
            message = EmailMessage(policy=SMTP)
            message["From"] = Address(sender.display_name, addr_spec=sender.addr_spec)
            message["To"] = Address(addr_spec=reviewer.addr_spec)
            message["Subject"] = f"Scheduled send of {schedule.issue}: {schedule.state}"
            message["Date"] = format_datetime(datetime.fromtimestamp(clock(), zone))
            message_id = f"<{uuid.uuid4().hex}@{sender.domain}>"
            message["Message-ID"] = message_id
            message["Auto-Submitted"] = "auto-generated"
            message.set_content(
                f"The send of '{schedule.issue}' scheduled for {_shown(schedule.due_at, zone)} "
                f"did not go out.\n\n{schedule.reason}\n\n"
                f"newsletter schedule list    shows every schedule\n"
                f"newsletter status {schedule.issue}    shows the issue's send and approvals\n"
            )
            try:
                transport.send(
                    OutgoingMessage(
                        sender=settings.sending.return_path or sender.addr_spec,
                        recipient=reviewer.addr_spec,
                        message_id=message_id,
                        data=message.as_bytes(),
                        smtputf8=not reviewer.addr_spec.isascii(),
                    )
                )
                reached.append(reviewer.addr_spec)
            except NewsletterError as err:
                problems.append(f"{reviewer.addr_spec}: {err.message}")
    finally:
        transport.close()
    note = f"mailed to {', '.join(reached)}" if reached else "not mailed"
    return note + (f" ({'; '.join(problems)})" if problems else "")
