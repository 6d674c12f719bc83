"""`send_issue`: freeze the audience, then send each recipient at most once, resumably.

The ledger moves forward only after the fact: a row is `sending` (committed) before the network
call, and `sent` after the server accepted it. A crash leaves at worst a few `sending` rows, which
the next run reports as uncertain and does not resend unless asked. This module never prints:
it returns a report and calls the progress callback.

There is one delivery loop. Rows are grouped into batches of `transport.max_batch` (one for the
outbox, up to a provider's batch size for provider APIs, a few per connection for SMTP),
`options.concurrency` batches at a time (one for SMTP, which carries a batch over all its
connections itself); a batch is marked `sending` in one commit before it is handed over (SMTP:
each message as its DATA is accepted, with the messages accepted since), and each recipient's
result is recorded after it. `_classify` decides what every result means (sent,
failed, deferred, uncertain, transport unavailable), the same for every transport.

About 800 lines, kept in one module on purpose: it is the one delivery loop, and what each
result means (`_classify`), when a row is marked `sending` and when the run pauses are rules of
that loop; split apart, the order of those steps (the crash guarantees) would be read in
several files. Claiming rows for several workers lives in `leases`.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from ..audience import Subscriber, SubscriberStatus, SubscriberStore
from ..audience.tags import segment_filter
from ..errors import (
    AudienceError,
    DeliveryError,
    LedgerError,
    NewsletterError,
    NotStartedError,
    PermanentDeliveryError,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from ..segment import EVERYONE, Segment
from ..store import Params
from . import leases
from .content import OutgoingMessage, Recipient
from .freeze import FreezeHalted
from .ledger import FreezeReport, IssueLedger, Ledger, LedgerRow, State
from .ledgeraudience import record_audience
from .message import MessageTemplate, Personalisation
from .ratelimit import Backoff, RateLimiter
from .transports.base import (
    BatchItem,
    BatchResult,
    DeliveryReceipt,
    Transport,
    handing_over,
    handing_over_each,
)

MAX_LISTED_PROBLEMS = 20
# A subscriber with an address and nothing else: lacks every value an issue could require.
_NOBODY = Subscriber(email="nobody@example.invalid")
_Unit = TypeVar("_Unit")


class Audience(Protocol):
    """Who gets the issue: the subscribed recipients, and a fresh look-up at send time."""

    def recipients(self) -> Iterator[tuple[str, Recipient]]:
        """(key, recipient) for everyone who should get the issue now, in a stable order."""
        ...

    def recipient(self, key: str) -> Recipient | None:
        """The recipient if still subscribed, else None (they left since the audience froze)."""
        ...


@dataclass(frozen=True)
class SendOptions:
    concurrency: int = 1
    max_attempts: int | None = 5  # None: no cap; `retry_for` decides
    # Deferred rows are given up (failed) this many seconds after their first deferral.
    retry_for: float | None = None
    # How long a run waits for deferred rows to come due; later ones are left for a next run.
    max_wait: float | None = None
    pause_after_failures: int = 10
    retry_failed: bool = False
    resend_uncertain: bool = False
    accept_changed_content: bool = False
    wait_for_deferred: bool = True


@dataclass(frozen=True)
class SendProgress:
    total: int
    done: int
    sent: int
    failed: int
    deferred: int
    uncertain: int
    last_recipient: str | None = None
    waiting_until: float | None = None


@dataclass(frozen=True)
class SendReport:
    issue: str
    total: int
    sent_now: int
    counts: dict[State, int]
    failures: tuple[LedgerRow, ...] = ()
    uncertain: tuple[LedgerRow, ...] = ()
    recovered_uncertain: int = 0
    paused_reason: str | None = None
    interrupted: bool = False
    added_to_audience: int = 0
    removed_from_audience: int = 0
    already_sent: int = 0
    next_attempt_at: float | None = None  # the earliest deferred row's next try, if any
    gave_up: int = 0  # deferred rows failed because `retry_for` had passed

    @property
    def complete(self) -> bool:
        open_states = (State.PENDING, State.SENDING, State.DEFERRED)
        return not any(self.counts.get(state, 0) for state in open_states)

    @property
    def outcome(self) -> RunOutcome:
        """What is left, the most pressing first (`RunOutcome.SENT`: nothing)."""
        stopped = self.paused_reason is not None or self.interrupted
        return run_outcome(self.counts, stopped=stopped)


class RunOutcome(enum.Enum):
    """Where a send stands after a run, the most pressing state first (the CLI's exit status)."""

    SENT = "sent"  # every recipient has the issue
    PAUSED = "paused"  # the run stopped early (sender refused, stop asked): run it again
    UNCERTAIN = "uncertain"  # some messages may or may not have been delivered
    DEFERRED = "deferred"  # some wait for a retry (or were not reached yet)
    FAILED = "failed"  # some failed permanently; everyone else has the issue


def run_outcome(counts: Mapping[State, int], *, stopped: bool = False) -> RunOutcome:
    """The outcome of a send from its ledger counts; `stopped` when the run ended early."""
    if stopped:
        return RunOutcome.PAUSED
    if counts.get(State.UNCERTAIN, 0) or counts.get(State.SENDING, 0):
        return RunOutcome.UNCERTAIN
    if counts.get(State.PENDING, 0) or counts.get(State.DEFERRED, 0):
        return RunOutcome.DEFERRED
    if counts.get(State.FAILED, 0):
        return RunOutcome.FAILED
    return RunOutcome.SENT


@dataclass(frozen=True)
class DryRunReport:
    issue: str
    messages: int
    total_bytes: int
    largest_bytes: int


@dataclass(frozen=True)
class TestSendResult:
    recipient: str
    receipt: DeliveryReceipt | None
    error: str | None


class _Once:
    """Runs `action` the first time it is called from any thread; the others wait for it.
    An action that failed fails every later call the same way (nothing may be handed over)."""

    def __init__(self, action: Callable[[], None] | None) -> None:
        self._action = action
        self._lock = threading.Lock()
        self._done = action is None
        self._error: NewsletterError | None = None

    def __call__(self) -> None:
        if self._done and self._error is None:
            return
        with self._lock:
            if self._error is not None:
                raise self._error
            if not self._done and self._action is not None:
                try:
                    self._action()
                except NewsletterError as err:
                    self._error = err
                    raise
                self._done = True


@dataclass
class _Tally:
    """Counters shared by the worker threads, and the pause decision."""

    options: SendOptions
    total: int
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    uncertain: int = 0
    consecutive_failures: int = 0
    paused_reason: str | None = None
    removed: int = 0  # left (unsubscribed) during the run
    gave_up: int = 0  # deferred past `retry_for`, failed in this run
    # The same permanent reply for recipients in a row: the reply and the rows it failed.
    streak_reply: str | None = None
    streak: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self, last: str | None) -> SendProgress:
        done = self.sent + self.failed + self.uncertain
        return SendProgress(
            self.total, done, self.sent, self.failed, self.deferred, self.uncertain, last
        )


class _AudienceCheck:
    """Who lacks values the issue uses: seen one recipient at a time, refused all at once."""

    def __init__(self, template: MessageTemplate) -> None:
        self.template = template
        self.problems: list[str] = []
        self.count = 0
        self.missing_total = 0

    def see(self, recipient: Recipient) -> bool:
        """Whether `recipient` has every value the issue needs (else remembered)."""
        self.count += 1
        missing = self.template.missing_values(recipient)
        if not missing:
            return True
        self.missing_total += 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(f"  {recipient.email}: no value for {', '.join(missing)}")
        return False

    def error(self) -> AudienceError:
        more = self.missing_total - len(self.problems)
        tail = f"\n  … and {more} more" if more > 0 else ""
        return AudienceError(
            f"{self.missing_total} subscriber(s) lack values the issue uses:\n"
            + "\n".join(self.problems)
            + tail,
            hint="Add '| default(\"…\")' to those values in the issue, or fill them in the list.",
        )


def check_audience(template: MessageTemplate, audience: Audience) -> int:
    """Every recipient must have every value the issue uses; raise listing who lacks what."""
    check = _AudienceCheck(template)
    for _key, recipient in audience.recipients():
        check.see(recipient)
    if check.problems:
        raise check.error()
    return check.count


def _needs_values(template: MessageTemplate) -> bool:
    """Whether any recipient could lack a value the issue uses (else the check is skipped)."""
    return bool(template.missing_values(_NOBODY))


def _freeze(
    template: MessageTemplate,
    audience: Audience,
    issue_ledger: IssueLedger,
    *,
    head: int | None = None,
) -> FreezeReport:
    """Check and freeze the audience in one pass. The store's subscribers are copied inside the
    engine, a key range per short transaction, checked in the same pass when the issue needs
    values; any other audience is checked, then streamed in. `head`: only a first round of
    that many (`_starts_early`)."""
    if isinstance(audience, StoreAudience) and _same_store(audience, issue_ledger):
        check = _AudienceCheck(template)
        return issue_ledger.freeze_subscribers(
            template.fingerprint,
            check=check.see if _needs_values(template) else None,
            refuse=check.error,
            where=audience.where,
            params=audience.params,
            head=head,
        )
    check_audience(template, audience)
    return issue_ledger.freeze(
        ((key, recipient.email) for key, recipient in audience.recipients()),
        template.fingerprint,
    )


# People frozen as a complete first round before the first message of a big first send; the
# rest are frozen while those are sent (`_starts_early`), this many per transaction.
EARLY_HEAD = 1_000
EARLY_CHUNK = 2_000


def _starts_early(template: MessageTemplate, audience: Audience, issue_ledger: IssueLedger) -> bool:
    """Whether the send starts after a first round of `EARLY_HEAD` people, the rest frozen by a
    second round in the background (`_BackgroundFreeze`), instead of after the whole freeze
    (seconds for 100k people, tens for 1M). Only where that changes no guarantee:

    - nobody can be refused (the issue needs no per-recipient value), because a refusal must
      come before the first message, and only the whole audience tells;
    - the first freeze of the issue (a resumed send has its audience frozen already and
      freezes only newcomers), from the subscriber store the ledger lives in;
    - SQLite, one sending process (PostgreSQL workers claim rows and join a frozen audience:
      they would stop early on a partly frozen one).
    """
    return (
        isinstance(audience, StoreAudience)
        and _same_store(audience, issue_ledger)
        and issue_ledger.ledger.database.is_sqlite
        and not _needs_values(template)
        and issue_ledger.fingerprint() is None
    )


class _BackgroundFreeze:
    """The second freeze round of an early start, in a thread beside the sending threads.

    It begins once the first message is marked `sending` (or the first rows ran out), so the
    first message does not wait behind it. Its chunks are small write transactions on the
    ledger's own connection and lock, which the sending threads take for their marks: they
    queue on that lock instead of polling SQLite's busy handler, and after each chunk the round
    leaves the database to them for as long as the chunk held it (so sending keeps at least
    half its pace, and the freeze takes at most twice its time). Sending follows it
    (`IssueLedger.following`): rows are sent as their chunk commits. It stops between chunks
    when the run halts; an error pauses the run (the rows frozen so far are sent; the next run
    freezes the rest).
    """

    def __init__(
        self, template: MessageTemplate, audience: StoreAudience, ledger: Ledger, issue: str
    ) -> None:
        self._template = template
        self._audience = audience
        self._ledger = ledger
        self._issue = issue
        self._chunk = threading.Event()
        self._done = threading.Event()
        self._halted: Callable[[], bool] = lambda: False
        self._sized: Callable[[int], None] = lambda size: None
        self.report: FreezeReport | None = None
        self.error: LedgerError | None = None
        self._thread = threading.Thread(target=self._run, name="freeze", daemon=True)
        self._begun = False
        self._cancelled = False
        self._begin_lock = threading.Lock()
        self._since = 0.0

    def arm(self, halted: Callable[[], bool], sized: Callable[[int], None]) -> None:
        """`halted()` stops the round between chunks; `sized(n)` gets the audience's size once
        counted (for progress)."""
        self._halted = lambda: self._cancelled or halted()
        self._sized = sized

    def begin(self) -> None:
        """Start the round (once; later calls do nothing)."""
        with self._begin_lock:
            if self._begun:
                return
            self._begun = True
        self._thread.start()

    def _run(self) -> None:
        try:
            if self._halted():
                raise FreezeHalted(self._issue)
            segment = self._audience.segment
            # Its own connection: the senders look recipients up through the audience's.
            with SubscriberStore(self._audience.store.database.location) as store:
                self._sized(store.count_segment(segment))
            self._since = time.monotonic()
            self.report = self._ledger.issue(self._issue).freeze_subscribers(
                self._template.fingerprint,
                where=self._audience.where,
                params=self._audience.params,
                chunk=EARLY_CHUNK,
                chunk_written=self._written,
                halted=self._halted,
            )
        except NewsletterError as err:
            self.error = (
                err if isinstance(err, LedgerError) else LedgerError(err.message, hint=err.hint)
            )
        finally:
            self._done.set()

    def _written(self) -> None:
        """After a chunk: tell the follower, then let the senders write as long as it took."""
        self._chunk.set()
        time.sleep(min(time.monotonic() - self._since, 0.5))
        self._since = time.monotonic()

    def finished(self) -> bool:
        return self._done.is_set()

    def wait_for_chunk(self) -> None:
        self.begin()
        self._chunk.wait(0.05)
        self._chunk.clear()

    def join(self) -> None:
        """Begin if not begun (it stops at once when halted), and wait for the end."""
        self.begin()
        self._thread.join()

    def cancel(self) -> None:
        """The run ends: stop at the next chunk if running, never begin."""
        with self._begin_lock:
            self._cancelled = True
            begun, self._begun = self._begun, True
        if begun:
            self._thread.join()


def _same_store(audience: StoreAudience, issue_ledger: IssueLedger) -> bool:
    """Whether the subscribers live in the ledger's database (so SQL can copy them over)."""
    mine, theirs = audience.store.database.location, issue_ledger.ledger.database.location
    if mine.path is not None and theirs.path is not None:
        return mine.path.resolve() == theirs.path.resolve()
    return (mine.engine, mine.conninfo) == (theirs.engine, theirs.conninfo)


def dry_run(template: MessageTemplate, audience: Audience) -> DryRunReport:
    """Personalise every message without sending or recording anything."""
    check_audience(template, audience)
    messages = total = largest = 0
    for _key, recipient in audience.recipients():
        size = len(template.personalise(recipient).data)
        messages += 1
        total += size
        largest = max(largest, size)
    return DryRunReport(template.issue, messages, total, largest)


def send_test(
    template: MessageTemplate,
    sample: Recipient,
    reviewers: list[str],
    transport: Transport,
) -> list[TestSendResult]:
    """Send a `[TEST]` copy personalised for `sample` to each reviewer; nothing is recorded."""
    transport.check()
    results = []
    try:
        for reviewer in reviewers:
            try:
                item = make_item(
                    template, f"test:{reviewer}", sample, mime=True, test=True, to=reviewer
                )
                (result,) = _handed_over(transport, [item])
                if result.error is not None:
                    raise result.error
                if result.receipt is None:
                    raise UncertainDeliveryError(f"{transport.name}: no result for {reviewer}")
                results.append(TestSendResult(reviewer, result.receipt, None))
            except DeliveryError as err:
                results.append(TestSendResult(reviewer, None, err.message))
    finally:
        transport.close()
    return results


def make_item(
    template: MessageTemplate,
    key: str,
    recipient: Recipient,
    *,
    mime: bool,
    test: bool = False,
    to: str | None = None,
) -> BatchItem:
    """The batch item of a recipient: with the whole MIME message, or just its envelope.

    Transports without `needs_mime` get the address and Message-ID with empty `data` and build
    what they send from `item.content` (whose values are computed here once and reused).
    Raises `AudienceError` for a recipient no message can be made for.
    """
    found = Personalisation(template, recipient, test=test, to=to)
    if mime:
        return BatchItem(key, template.personalise(recipient, test=test, to=to), found)
    envelope = found.envelope()
    message = OutgoingMessage(
        sender=template.sender,
        recipient=envelope.to.email,
        message_id=envelope.message_id,
        data=b"",
        smtputf8=not envelope.to.email.isascii() or not template.sender.isascii(),
    )
    return BatchItem(key, message, found)


def send_issue(
    template: MessageTemplate,
    audience: Audience,
    *,
    transport: Transport,
    ledger: Ledger,
    limiter: RateLimiter | None = None,
    backoff: Backoff | None = None,
    options: SendOptions | None = None,
    clock: Callable[[], float] = time.time,
    stop: threading.Event | None = None,
    progress: Callable[[SendProgress], None] | None = None,
    before_first_handover: Callable[[], None] | None = None,
    audience_expression: str | None = None,
) -> SendReport:
    """Send the issue to everyone in `audience` who has not had it yet.

    `audience_expression` (`Segment.expression`) is recorded with the ledger before the freeze:
    a resumed send with another one is refused (`AudienceChangedError`) before anything is sent.

    The transport is fed batches of up to `max_batch` recipients, `options.concurrency` batches
    at a time; rate limits count recipients. Setting `stop` finishes the batches in flight and
    returns (the rest stays pending for the next run).

    `before_first_handover` runs once per run, just before the first message is handed to the
    transport (not at all when nothing is to be sent): the send use case freezes the archive
    there, so the web version and hosted images exist before any message can arrive. If it
    raises a `NewsletterError`, nothing is handed over and the run pauses with its message.
    """
    options = options or SendOptions()
    stop = stop or threading.Event()
    issue_ledger = ledger.issue(template.issue)
    with ledger.lock(template.issue) as lock:
        stored = issue_ledger.fingerprint()
        if stored is not None and stored != template.fingerprint:
            if not options.accept_changed_content:
                counts = issue_ledger.counts()
                raise LedgerError(
                    f"the content of '{template.issue}' changed since its send started "
                    f"({counts.get(State.SENT, 0)} already sent)",
                    hint="Confirm to send the changed version to the rest, or restore the content.",
                )
            issue_ledger.set_fingerprint(template.fingerprint)
        if audience_expression is not None:
            record_audience(ledger.database, template.issue, audience_expression, now=clock())
        background: _BackgroundFreeze | None = None
        with leases.first_freeze(ledger, template.issue, now=clock()) as first:
            if first and _starts_early(template, audience, issue_ledger):
                assert isinstance(audience, StoreAudience)
                frozen = _freeze(template, audience, issue_ledger, head=EARLY_HEAD)
                if frozen.received >= EARLY_HEAD:  # else that was everyone
                    background = _BackgroundFreeze(template, audience, ledger, template.issue)
            else:
                # On PostgreSQL, a worker joining a send in progress uses the frozen audience.
                frozen = (
                    _freeze(template, audience, issue_ledger) if first else _joined(issue_ledger)
                )
        transport.check()
        run = _Run(
            template=template,
            audience=audience,
            ledger=issue_ledger,
            transport=transport,
            limiter=limiter or RateLimiter(),
            backoff=backoff or Backoff(),
            options=options,
            clock=clock,
            stop=stop,
            tally=_Tally(
                options,
                total=frozen.total,
                deferred=issue_ledger.counts().get(State.DEFERRED, 0),
            ),
            progress=progress,
            claiming=not ledger.database.is_sqlite,
            first_handover=_Once(before_first_handover),
            background=background,
        )
        already_sent = issue_ledger.counts().get(State.SENT, 0)
        try:
            if background is not None:
                background.arm(run.halted, functools.partial(_sized, run.tally))
            _run_passes(run)
        finally:
            if background is not None:
                background.cancel()  # done by now, unless the run ended with an error
            transport.close()
        if background is not None:
            frozen = _after_background(issue_ledger, frozen, background, run.tally.removed)
        tally = run.tally
        deferred = issue_ledger.deferred()
        return SendReport(
            issue=template.issue,
            total=frozen.total - tally.removed,
            sent_now=tally.sent,
            counts=issue_ledger.counts(),
            failures=tuple(issue_ledger.failures()),
            uncertain=tuple(issue_ledger.uncertain()),
            recovered_uncertain=lock.recovered_uncertain,
            paused_reason=tally.paused_reason,
            interrupted=stop.is_set() and tally.paused_reason is None,
            added_to_audience=frozen.added if not frozen.first else 0,
            removed_from_audience=frozen.removed + tally.removed,
            already_sent=already_sent,
            next_attempt_at=deferred.next_attempt_at,
            gave_up=tally.gave_up,
        )


@dataclass(frozen=True)
class _Run:
    """Everything one send needs, handed to each step instead of a dozen arguments."""

    template: MessageTemplate
    audience: Audience
    ledger: IssueLedger
    transport: Transport
    limiter: RateLimiter
    backoff: Backoff
    options: SendOptions
    clock: Callable[[], float]
    stop: threading.Event
    tally: _Tally
    progress: Callable[[SendProgress], None] | None
    claiming: bool = False  # PostgreSQL: rows are claimed batch by batch (`leases.claim`)
    first_handover: _Once | None = None
    # An early start's second freeze round, followed by the first pass (`_starts_early`).
    background: _BackgroundFreeze | None = None
    # Per sending thread: `sent` rows accepted but not yet written (group commit, see `_record`).
    held: threading.local = field(default_factory=threading.local)

    def halted(self) -> bool:
        return self.stop.is_set() or self.tally.paused_reason is not None

    def report(self, last: str | None) -> None:
        """Call the progress callback (with the tally's lock held by the caller), once per
        batch: callers may act on every report (stop after N); a display limits its own rate."""
        if self.progress is not None:
            self.progress(self.tally.snapshot(last))

    @property
    def groups_commits(self) -> bool:
        """Messages that go one by one (the outbox) or several at once over connections (SMTP):
        a message's `sent` is written with the next `sending`, in one commit (see `_record`)."""
        return self.transport.max_batch == 1 or self.transport.hands_over_each

    @property
    def threads(self) -> int:
        """Sending threads: one when the transport carries a batch over all its connections
        itself (SMTP), else `options.concurrency` batches at a time."""
        return 1 if self.transport.hands_over_each else max(1, self.options.concurrency)

    def batch_size(self) -> int:
        """Rows per batch. A transport that carries a batch over its connections at once gets
        no more than `pause_after_failures` (a run pauses between batches: a relay refusing
        everyone sees at most twice that many tries), and no more than `options.concurrency`
        under a rate limit (no burst beyond what that many threads sent before) or when rows
        are claimed (PostgreSQL: a claimed batch is marked `sending` whole at its first
        handover, so a crash leaves at most that many uncertain)."""
        size = max(1, self.transport.max_batch)
        if not self.transport.hands_over_each:
            return size
        size = min(size, max(1, self.options.pause_after_failures))
        if self.claiming or not self.limiter.unlimited:
            size = min(size, max(1, self.options.concurrency))
        return size


def _run_passes(run: _Run) -> None:
    """Send every due row, then wait for deferred rows to come due and send them, until done."""
    options = run.options
    first_pass = True
    stay_until: float | None = None
    while not run.halted():
        _give_up_expired(run)
        rows = run.ledger.todo(
            now=run.clock(),
            retry_failed=options.retry_failed and first_pass,
            resend_uncertain=options.resend_uncertain and first_pass,
        )
        if first_pass and run.background is not None:
            # A first freeze still writing (nothing was deferred, failed or uncertain yet).
            rows = run.ledger.following(run.background.finished, run.background.wait_for_chunk)
        resend = first_pass and (options.retry_failed or options.resend_uncertain)
        size = run.batch_size()
        if run.claiming:
            _run_claiming(run, size, _resent_states(options) if resend else ())
        else:
            units = _Units(_batched(rows, size, run.halted))
            _run_workers(
                units,
                functools.partial(_send_batch, run, resend=resend, more=units.take),
                run.threads,
                run.halted,
                finish=functools.partial(_flush_held, run),
            )
        first_pass = False
        if run.background is not None:
            run.background.join()  # halted: it stops at its next chunk
            _background_done(run, run.background)
        if run.halted() or not options.wait_for_deferred:
            return
        deferred = list(run.ledger.rows(State.DEFERRED))
        if not deferred:
            return
        due = min(row.next_attempt_at or 0.0 for row in deferred)
        if stay_until is None and options.max_wait is not None:
            stay_until = run.clock() + options.max_wait
        if stay_until is not None and due > stay_until:
            return  # the next try is for a later run (`send` again, cron: see the README)
        wait = due - run.clock()
        if wait > 0:
            if run.progress is not None:
                with run.tally.lock:
                    run.progress(replace(run.tally.snapshot(None), waiting_until=due))
            if run.stop.wait(wait):
                return


def _background_done(run: _Run, background: _BackgroundFreeze) -> None:
    """The whole audience is frozen (or the round stopped): the true total, or the pause."""
    error = background.error
    with run.tally.lock:
        if background.report is not None:
            run.tally.total = background.report.total
        stopped = error is None or isinstance(error, FreezeHalted)
        if not stopped and error is not None and run.tally.paused_reason is None:
            run.tally.paused_reason = f"the audience could not be frozen: {error.message}"


def _sized(tally: _Tally, size: int) -> None:
    with tally.lock:
        tally.total = max(size, tally.total)


def _after_background(
    issue_ledger: IssueLedger, head: FreezeReport, background: _BackgroundFreeze, removed: int
) -> FreezeReport:
    """The freeze report of an early start: a first freeze of everyone the rounds froze (the
    rows there are now, and the `removed` ones this run took out because they had left)."""
    total = sum(issue_ledger.counts().values()) + removed
    report = background.report
    received = head.received if report is None else report.received
    gone = head.removed + (0 if report is None else report.removed)
    return FreezeReport(head.issue, True, received, total, gone, total)


def _give_up_expired(run: _Run) -> None:
    """Fail the deferred rows whose first deferral is more than `retry_for` ago."""
    if run.options.retry_for is None:
        return
    given_up = run.ledger.give_up_deferred(
        run.clock() - run.options.retry_for, _duration(run.options.retry_for)
    )
    if given_up:
        with run.tally.lock:
            run.tally.gave_up += given_up
            run.tally.failed += given_up
            run.tally.deferred = max(run.tally.deferred - given_up, 0)


def _duration(seconds: float) -> str:
    """`36 h`, `2 d`, `90 min`: how long deferred mail was retried, for the reason recorded."""
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g} d"
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min"


def _send_batch(
    run: _Run,
    batch: list[LedgerRow],
    resend: bool,
    commit: Callable[[], None] | None = None,
    more: Callable[[], list[LedgerRow]] | None = None,
) -> None:
    """`_send_one_batch`, pausing the run (not aborting it) when the ledger cannot be written
    even after waiting for other writers: rows stay where the ledger last had them (`sending`
    rows are reported uncertain, never resent), so nothing delivered is misclassified."""
    try:
        _send_one_batch(run, batch, resend, commit, more)
    except LedgerError as err:
        _pause_for_ledger(run, err)


def _pause_for_ledger(run: _Run, err: LedgerError) -> None:
    with run.tally.lock:
        if run.tally.paused_reason is None:
            run.tally.paused_reason = f"the send ledger cannot be written: {err.message}"


def _take_held(run: _Run) -> list[tuple[str, str, str | None]]:
    """This thread's accepted messages whose `sent` is not written yet (emptied)."""
    held: list[tuple[str, str, str | None]] = getattr(run.held, "sent", [])
    run.held.sent = []
    return held


def _flush_held(run: _Run) -> None:
    """Write this thread's held `sent` rows now (the thread ends, or is about to wait)."""
    held = _take_held(run)
    if held:
        try:
            run.ledger.record(sent=held)
        except LedgerError as err:  # they stay `sending`: reported uncertain, never resent
            _pause_for_ledger(run, err)


def _items_for(run: _Run, batch: list[LedgerRow]) -> list[tuple[LedgerRow, BatchItem]]:
    """The message of each row whose recipient is still subscribed; who left is taken out of
    the ledger, and a recipient no message can be made for is failed."""
    items: list[tuple[LedgerRow, BatchItem]] = []
    refused: list[tuple[str, str]] = []
    left: list[str] = []
    mime = run.transport.needs_mime
    for row in batch:
        recipient = run.audience.recipient(row.key)
        if recipient is None:
            left.append(row.key)
            continue
        try:
            item = make_item(run.template, row.key, recipient, mime=mime)
        except AudienceError as err:  # e.g. an address no message can be sent to
            refused.append((row.key, err.message))
            continue
        items.append((row, item))
    removed = run.ledger.remove_left(left) if left else 0
    if refused:
        run.ledger.mark_failed_many(refused)
    if removed or refused:
        with run.tally.lock:
            run.tally.failed += len(refused)
            run.tally.removed += removed
            run.tally.total -= removed
            if not items:
                run.report(batch[-1].email)
    return items


# The most items one batch may grow to (`transports.base.more_items`): a bound on the outcomes
# a batch keeps until its end (its messages' bytes are let go once they are handed over).
_GROWN_BATCH = 1000


def _send_one_batch(
    run: _Run,
    batch: list[LedgerRow],
    resend: bool,
    commit: Callable[[], None] | None,
    more: Callable[[], list[LedgerRow]] | None = None,
) -> None:
    """One request: wait for the rate limit, then skip who left, hand over, record.

    The subscription is looked up after the rate-limit wait, right before the message is made
    (issue 15, D6). Rows are marked `sending` at the transport's point of no return when it
    signals one (`transports.base.handover`), else just before the call (D16). `commit`: the
    rows were claimed in a transaction held open (PostgreSQL, `leases.claim`); it is committed
    with the `sending` mark, or at the end when nothing was handed over. `more`: the next rows
    (none when there are no more); a transport carrying a batch over several connections takes
    them in while its last messages finish (`more_items`), when nothing limits the rate.
    """
    if not run.limiter.unlimited or run.limiter.paused_until is not None:
        _flush_held(run)  # about to wait: accepted messages are not left `sending` meanwhile
        run.limiter.acquire(len(batch))
        more = None  # each batch waits for its turn
    items = _items_for(run, batch)
    if not items:
        if commit is not None:
            commit()
        return
    if run.first_handover is not None:
        try:
            run.first_handover()
        except NewsletterError as err:
            if commit is not None:
                commit()  # claimed, never marked `sending`: still pending; the locks go
            with run.tally.lock:
                if run.tally.paused_reason is None:
                    run.tally.paused_reason = err.message
            return
    keys = [row.key for row, _ in items]
    position = {key: at for at, key in enumerate(keys)}  # where each key's item is in `items`

    def message_id(key: str) -> str:
        return items[position[key]][1].message.message_id

    marked: set[str] = set()
    recorded: set[str] = set()  # accepted, and written with a later mark of this batch

    def mark(handed: Sequence[str] = keys, accepted: Sequence[BatchResult] = ()) -> None:
        # Messages accepted a moment ago (held, or of this batch) go in the same commit as
        # this `sending`.
        held = _take_held(run)
        done: list[tuple[str, str, str | None]] = [
            (result.key, result.receipt.reply, message_id(result.key))
            for result in accepted
            if result.receipt is not None
        ]
        try:
            run.ledger.record(
                sending=[(key, message_id(key)) for key in handed],
                sent=held + done,
                resend=resend,
            )
        except BaseException:
            run.held.sent = held + _take_held(run)
            raise
        if commit is not None:
            commit()  # `sending` is durable before the server can have the message
        marked.update(handed)
        if done:
            now_done = {key for key, _, _ in done}
            recorded.update(now_done)
            _count_sent(run, [items[position[key]][0] for key, _, _ in done], done[-1][0])
        if run.background is not None:
            run.background.begin()  # the first message goes first; the rest freezes now

    # Resent rows (failed, uncertain) are marked first: their refusals have no pending to fall to.
    late = run.transport.signals_handover and not resend
    handing = [item for _, item in items]
    if late and run.transport.hands_over_each and commit is None:

        def grow() -> list[BatchItem]:
            """The next rows' items, added to this batch (none: it ends with what it has)."""
            while more is not None and len(items) < _GROWN_BATCH and not run.halted():
                rows = more()
                if not rows:
                    return []
                added = _items_for(run, rows)
                if not added:
                    continue  # every row of those had left, or no message could be made
                for row, item in added:
                    position[item.key] = len(items)
                    items.append((row, item))
                    handing.append(item)
                return [item for _, item in added]
            return []

        def marking(handed: Sequence[str], accepted: Sequence[BatchResult]) -> None:
            mark(handed, accepted)
            for key in handed:  # the server has it now: only its key and Message-ID are kept
                at = position[key]
                handing[at] = _without_bytes(handing[at])
                items[at] = (items[at][0], handing[at])

        # Each message is marked as it is handed over; a claimed batch (PostgreSQL) is marked
        # whole at its first handover, since the commit of a mark ends the claim's row locks.
        with handing_over_each(marking, run.halted, grow if more is not None else None):
            results = _handed_over(run.transport, handing)
    elif late:
        with handing_over(mark):
            results = _handed_over(run.transport, handing)
    else:
        mark()
        results = _handed_over(run.transport, handing)
    unmarked = [
        r.key
        for r in results
        if r.key not in marked and (r.receipt is not None or _maybe_sent(r.error))
    ]
    if unmarked:
        mark(unmarked)  # a transport that did not signal: the rows must pass through `sending`
    # Not begun because the run is stopping: left as they are, for the next run.
    outcomes = [
        (entry, result)
        for entry, result in zip(items, results, strict=True)
        if result.key not in recorded and not isinstance(result.error, NotStartedError)
    ]
    for was_marked in (True, False):
        part = [pair for pair in outcomes if (pair[1].key in marked) is was_marked]
        if part:
            _record(run, [e for e, _ in part], [r for _, r in part], marked=was_marked)
    if commit is not None:
        commit()  # outcomes of a batch refused before its handover


def _without_bytes(item: BatchItem) -> BatchItem:
    """`item` without its message's bytes (what `_record` needs of it is the Message-ID)."""
    message = item.message
    return BatchItem(
        item.key,
        OutgoingMessage(message.sender, message.recipient, message.message_id, b""),
        item.content,
    )


def _maybe_sent(error: Exception | None) -> bool:
    return error is None or isinstance(error, UncertainDeliveryError)


def _resent_states(options: SendOptions) -> tuple[State, ...]:
    return ((State.FAILED,) if options.retry_failed else ()) + (
        (State.UNCERTAIN,) if options.resend_uncertain else ()
    )


def _joined(issue_ledger: IssueLedger) -> FreezeReport:
    """The freeze report of a worker that joins a send another worker froze."""
    total = sum(issue_ledger.counts().values())
    return FreezeReport(issue_ledger.name, False, 0, 0, 0, total)


def _run_claiming(run: _Run, size: int, states: Sequence[State]) -> None:
    """`options.concurrency` threads, each with a connection of its own, claiming a batch
    (`leases.claim`: locked in a transaction held open until its handover) and sending it,
    until nothing is due or the run halts. A batch is claimed only when a thread is free to send
    it, and is `sending` only from its handover, so a dead worker leaves uncertain at most what
    it had handed over."""
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            own = run.ledger.ledger.own_connection()
        except BaseException as err:
            errors.append(err)
            return
        mine = replace(run, ledger=own.issue(run.ledger.name))

        def commit() -> None:
            try:
                own.database.release(commit=True)
            except own.database.errors as err:  # the run pauses; the rows stay as stored
                raise LedgerError(
                    f"issue '{run.ledger.name}': cannot commit a batch: {err}"
                ) from err

        cursor = leases.ClaimCursor()
        try:
            while not run.halted() and not errors:
                batch = leases.claim(
                    own, run.ledger.name, size, now=run.clock(), states=states, cursor=cursor
                )
                if not batch:
                    return
                try:
                    _send_batch(mine, batch, resend=bool(states), commit=commit)
                finally:
                    with contextlib.suppress(*own.database.errors):
                        own.database.release(commit=False)  # failed before its handover
        except BaseException as err:
            errors.append(err)
        finally:
            _flush_held(mine)
            own.close()

    threads = [
        threading.Thread(target=worker, name=f"send-{n}", daemon=True) for n in range(run.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _handed_over(transport: Transport, items: Sequence[BatchItem]) -> list[BatchResult]:
    """`transport.send_batch(items)`, with an error for the whole batch given to each item, and
    an answer that does not match the items made uncertain for each."""
    try:
        results = transport.send_batch(items)
    except DeliveryError as err:
        return [BatchResult(item.key, error=err) for item in items]
    if [result.key for result in results] != [item.key for item in items]:
        reason = f"{transport.name} returned {len(results)} results for {len(items)} messages"
        return [BatchResult(item.key, error=UncertainDeliveryError(reason)) for item in items]
    return results


class Outcome(enum.Enum):
    SENT = "sent"
    FAILED = "failed"
    DEFERRED = "deferred"  # try again at `retry_at`
    UNCERTAIN = "uncertain"  # may have been delivered: never resent unless asked
    UNAVAILABLE = "unavailable"  # not sent, and the transport cannot work now: pause the run


@dataclass(frozen=True)
class Classified:
    """What one recipient's result means for the ledger and the run."""

    kind: Outcome
    reason: str = ""
    reply: str = ""  # SENT: the server's reply or the provider's id
    retry_at: float = 0.0  # DEFERRED / UNAVAILABLE: when the row is due again
    pause: float = 0.0  # seconds the server asked everyone to wait (retry-after)


def _classify(
    result: BatchResult,
    *,
    attempts: int,
    options: SendOptions,
    backoff: Backoff,
    now: float,
) -> Classified:
    """What `result` means, for a row that had `attempts` tries before this one.

    The one place that decides: a receipt is sent; no answer or `UncertainDeliveryError` is
    uncertain; a permanent error fails; an unavailable transport defers the row to now (it was
    not sent) and pauses the run; a transient error defers with backoff until `max_attempts`.
    Any other exception is a bug and is raised.
    """
    error = result.error
    if error is None and result.receipt is not None:
        return Classified(Outcome.SENT, reply=result.receipt.reply)
    if error is None or isinstance(error, UncertainDeliveryError):
        return Classified(Outcome.UNCERTAIN, _reason(error, "no result for this recipient"))
    if isinstance(error, PermanentDeliveryError):
        return Classified(Outcome.FAILED, _reason(error))
    if isinstance(error, TransportUnavailableError):
        return Classified(Outcome.UNAVAILABLE, _reason(error), retry_at=now)
    if isinstance(error, TransientDeliveryError):
        tries = attempts + 1
        if options.max_attempts is not None and tries >= options.max_attempts:
            return Classified(Outcome.FAILED, f"gave up after {tries} attempts: {_reason(error)}")
        delay = backoff.delay(tries, retry_after=error.retry_after)
        return Classified(
            Outcome.DEFERRED, _reason(error), retry_at=now + delay, pause=error.retry_after or 0.0
        )
    raise error


def _record(
    run: _Run,
    items: list[tuple[LedgerRow, BatchItem]],
    results: list[BatchResult],
    *,
    marked: bool = True,
) -> None:
    """Write each recipient's outcome to the ledger (sent first) and update the tally.

    `marked`: the rows were marked `sending` (else the server refused before the handover).
    """
    if run.groups_commits and len(results) == 1 and results[0].error is None:
        receipt = results[0].receipt
        if receipt is not None:
            _record_sent(run, items[0], receipt.reply)
            return
    now = run.clock()
    found = [
        (
            row,
            item,
            _classify(
                result, attempts=row.attempts, options=run.options, backoff=run.backoff, now=now
            ),
        )
        for (row, item), result in zip(items, results, strict=True)
    ]
    by_kind: dict[Outcome, list[tuple[LedgerRow, BatchItem, Classified]]] = {
        kind: [entry for entry in found if entry[2].kind is kind] for kind in Outcome
    }
    sent = by_kind[Outcome.SENT]
    deferred = by_kind[Outcome.DEFERRED]
    unavailable = by_kind[Outcome.UNAVAILABLE]
    waiting = deferred + unavailable
    accepted: list[tuple[str, str, str | None]] = [
        (row.key, outcome.reply, item.message.message_id) for row, item, outcome in sent
    ]
    if run.groups_commits and len(accepted) == len(found):
        # Group commit: written with this thread's next `sending` mark (one commit for both),
        # or when the thread ends or is about to wait. Until then the row stays `sending`: a
        # crash in between leaves it uncertain, as a crash during its own send would have.
        run.held.sent = _take_held(run) + accepted
    else:
        # Every outcome of the batch (and this thread's held `sent` rows) in one transaction.
        run.ledger.record(
            sent=_take_held(run) + accepted,
            failed=[(row.key, outcome.reason) for row, _, outcome in by_kind[Outcome.FAILED]],
            deferred=[(row.key, outcome.reason, outcome.retry_at) for row, _, outcome in deferred],
            # Not sent, and not the recipient's fault: back to pending for the next run.
            released=[(row.key, outcome.reason) for row, _, outcome in unavailable],
            uncertain=[(row.key, outcome.reason) for row, _, outcome in by_kind[Outcome.UNCERTAIN]],
            tried=not marked,
        )
    pause = max((outcome.pause for _, _, outcome in waiting), default=0.0)
    if pause:
        run.limiter.pause_for(pause)
    tally = run.tally
    with tally.lock:
        tally.sent += len(sent)
        tally.failed += len(by_kind[Outcome.FAILED])
        tally.uncertain += len(by_kind[Outcome.UNCERTAIN])
        # "retrying" is how many wait now: rows that were deferred and got an answer leave it.
        was_deferred = sum(1 for row, _ in items if row.state is State.DEFERRED)
        tally.deferred = max(tally.deferred + len(deferred) - was_deferred, 0)
        if sent:
            tally.consecutive_failures = 0
        elif waiting:
            # A refused request counts once, however many recipients it carried; over SMTP
            # every message is a request of its own.
            tally.consecutive_failures += len(waiting) if run.transport.hands_over_each else 1
            limit_reached = tally.consecutive_failures >= run.options.pause_after_failures
            if (unavailable or limit_reached) and tally.paused_reason is None:
                tally.paused_reason = (unavailable or waiting)[0][2].reason
        _follow_streak(run, found)
        run.report(items[-1][0].email)


def _follow_streak(run: _Run, found: list[tuple[LedgerRow, BatchItem, Classified]]) -> None:
    """Pause on the same permanent reply for `pause_after_failures` recipients in a row.

    A relay that refuses every recipient alike ("550 5.7.1 Relaying denied") refuses the
    sender, not them: the run pauses and the rows of the streak go back to pending, before the
    whole list is failed. Replies about the mailbox itself (5.1.x, 5.2.x) never count: a list
    may hold several dead addresses in a row. Called with the tally's lock held.
    """
    tally = run.tally
    for row, _, outcome in found:
        if outcome.kind is Outcome.SENT:
            tally.streak_reply, tally.streak = None, []
            continue
        if outcome.kind is not Outcome.FAILED:
            continue
        reply = _streak_reply(outcome.reason, row.email)
        if reply is None or reply != tally.streak_reply:
            tally.streak_reply, tally.streak = reply, []
        if reply is not None:
            tally.streak.append(row.key)
    limit = max(run.options.pause_after_failures, 1)
    if tally.streak_reply is None or len(tally.streak) < limit:
        return
    if tally.paused_reason is None:
        tally.paused_reason = (
            f"the same refusal for {len(tally.streak)} recipients in a row: "
            f"{tally.streak_reply}; it looks like a refusal of the sender, so nobody was "
            "failed for it"
        )
    run.ledger.release_many([(key, tally.paused_reason) for key in tally.streak])
    tally.failed -= len(tally.streak)
    tally.streak_reply, tally.streak = None, []


_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def _streak_reply(reason: str, email: str) -> str | None:
    """The server's reply in `reason` with the recipient's address taken out, or None when it
    is about the mailbox (enhanced status 5.1.x or 5.2.x) or no permanent reply at all."""
    found = re.search(r"\b5\d\d[ -].*$", reason)
    if found is None or reason.startswith("gave up after"):
        return None
    reply = found.group(0)
    status = _ENHANCED.search(reply)
    if status is not None and status.group(2) in ("1", "2"):
        return None
    return re.sub(re.escape(email), "<recipient>", reply, flags=re.IGNORECASE)


def _reason(error: Exception | None, default: str = "") -> str:
    if error is None:
        return default
    return error.message if isinstance(error, DeliveryError) else str(error) or default


class StoreAudience:
    """The subscribed people of a `SubscriberStore` in `segment` (default: all) as an
    `Audience`. For the freeze, the segment is SQL (`audience.tags.segment_filter`) over the
    subscribers table aliased `s`: `where` and `params`."""

    def __init__(self, store: SubscriberStore, segment: Segment = EVERYONE) -> None:
        self.store = store
        self.segment = segment
        where, params = ("", {}) if segment.everyone else self.sql_filter("s")
        self.where = where
        self.params: Mapping[str, Any] = dict(params)

    def sql_filter(self, table: str = "subscribers") -> tuple[str, Params]:
        """The segment as a SQL condition on `table` (the subscribers table or its alias) and
        its bound parameters, for a freeze that selects in SQL (`INSERT ... SELECT ... WHERE
        status = 'subscribed' AND <condition>`); `1 = 1` for everyone."""
        return segment_filter(self.segment, self.store.database.dialect, table=table)

    def recipients(self) -> Iterator[tuple[str, Recipient]]:
        if self.segment.everyone:
            for subscriber in self.store.iter_subscribers(SubscriberStatus.SUBSCRIBED):
                yield subscriber.key, subscriber
            return
        for subscriber, _tags in self.store.iter_segment(self.segment):
            yield subscriber.key, subscriber

    def recipient(self, key: str) -> Recipient | None:
        found = self.store.get(key)
        if found is None or found.status != SubscriberStatus.SUBSCRIBED:
            return None
        return found


def _record_sent(run: _Run, entry: tuple[LedgerRow, BatchItem], reply: str) -> None:
    """`_record` of the common case, one message accepted with its `sent` held for the next
    commit: the same outcome without classifying every kind of result (once per message)."""
    row, item = entry
    held = _take_held(run)
    held.append((row.key, reply, item.message.message_id))
    run.held.sent = held
    _count_sent(run, [row], row.key)


def _count_sent(run: _Run, rows: Sequence[LedgerRow], last: str) -> None:
    """The tally of `rows` accepted (their `sent` written or held); `last` the latest key."""
    tally = run.tally
    with tally.lock:
        tally.sent += len(rows)
        was_deferred = sum(1 for row in rows if row.state is State.DEFERRED)
        tally.deferred = max(tally.deferred - was_deferred, 0)
        tally.consecutive_failures = 0
        tally.streak_reply, tally.streak = None, []  # `_follow_streak` of a sent message
        run.report(next((row.email for row in rows if row.key == last), rows[-1].email))


class _Units:
    """Batches of rows, taken by the sending threads in turn and, by a batch under way, as more
    of its own (`_send_one_batch`'s `more`): one lock, so no two take the same rows."""

    def __init__(self, units: Iterator[list[LedgerRow]]) -> None:
        self._units = units
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[list[LedgerRow]]:
        return self

    def __next__(self) -> list[LedgerRow]:
        with self._lock:
            return next(self._units)

    def take(self) -> list[LedgerRow]:
        """The next batch of rows, or none when there are no more (or the run halts)."""
        with self._lock:
            return next(self._units, [])


def _batched(
    rows: Iterator[LedgerRow], size: int, halted: Callable[[], bool]
) -> Iterator[list[LedgerRow]]:
    """Rows in lists of `size`; stops early (dropping a partial list) once the run halts."""
    batch: list[LedgerRow] = []
    for row in rows:
        if halted():
            return
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _run_workers(
    units: Iterable[_Unit],
    handle: Callable[[_Unit], None],
    concurrency: int,
    halted: Callable[[], bool],
    finish: Callable[[], None] | None = None,
) -> None:
    """`concurrency` threads take `units` in turn from the one iterator until done or halted.

    Each thread takes its next unit itself (under a lock) when it is free: no feeding thread,
    no queue, so no hand-off and wake-up of another thread per message. Units not taken when
    the run halts are skipped (their rows stay pending for the next run); an exception in a
    worker or from `units` (a bug, a ledger failure) stops every thread and is raised here.
    """
    source = iter(units)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def take() -> list[_Unit]:
        """The next unit (a list of one), or none when done or halted."""
        with lock:
            if halted() or errors:
                return []
            return list(itertools.islice(source, 1))

    def worker() -> None:
        try:
            while unit := take():
                handle(unit[0])
        except BaseException as err:
            errors.append(err)
        if finish is not None:
            try:
                finish()
            except BaseException as err:
                errors.append(err)

    threads = [
        threading.Thread(target=worker, name=f"send-{n}", daemon=True) for n in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
