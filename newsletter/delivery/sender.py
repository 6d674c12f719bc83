"""`send_issue`: freeze the audience, then send each recipient at most once, resumably.

The ledger moves forward only after the fact: a row is `sending` (committed) before the network
call, and `sent` after the server accepted it. A crash leaves at worst a few `sending` rows, which
the next run reports as uncertain and does not resend unless asked. This module never prints:
it returns a report and calls the progress callback.

Provider transports with batch endpoints (`BatchTransport`) take the batch path: rows are grouped
into requests of `transport.max_batch`, the whole batch is marked `sending` in one commit before the
request, and each recipient's result (provider id, or error) is recorded after it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeGuard, TypeVar, cast

from ..audience import SubscriberStatus, SubscriberStore
from ..errors import (
    AudienceError,
    DeliveryError,
    LedgerError,
    PermanentDeliveryError,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from .ledger import IssueLedger, Ledger, LedgerRow, State
from .message import MessageTemplate, Personalisation, Recipient
from .ratelimit import Backoff, RateLimiter
from .transports.base import (
    BatchItem,
    BatchResult,
    BatchTransport,
    DeliveryReceipt,
    OutgoingMessage,
    Transport,
)

MAX_LISTED_PROBLEMS = 20
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
    max_attempts: int = 5
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

    @property
    def complete(self) -> bool:
        open_states = (State.PENDING, State.SENDING, State.DEFERRED)
        return not any(self.counts.get(state, 0) for state in open_states)


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
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self, last: str | None) -> SendProgress:
        done = self.sent + self.failed + self.uncertain
        return SendProgress(
            self.total, done, self.sent, self.failed, self.deferred, self.uncertain, last
        )


def check_audience(template: MessageTemplate, audience: Audience) -> int:
    """Every recipient must have every value the issue uses; raise listing who lacks what."""
    problems: list[str] = []
    count = 0
    missing_total = 0
    for _key, recipient in audience.recipients():
        count += 1
        missing = template.missing_values(recipient)
        if missing:
            missing_total += 1
            if len(problems) < MAX_LISTED_PROBLEMS:
                problems.append(f"  {recipient.email}: no value for {', '.join(missing)}")
    if problems:
        more = missing_total - len(problems)
        tail = f"\n  … and {more} more" if more > 0 else ""
        raise AudienceError(
            f"{missing_total} subscriber(s) lack values the issue uses:\n"
            + "\n".join(problems)
            + tail,
            hint="Add '| default(\"…\")' to those values in the issue, or fill them in the list.",
        )
    return count


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
    transport: Transport | BatchTransport,
) -> list[TestSendResult]:
    """Send a `[TEST]` copy personalised for `sample` to each reviewer; nothing is recorded."""
    transport.check()
    results = []
    try:
        for reviewer in reviewers:
            message = template.personalise(sample, test=True, to=reviewer)
            try:
                if is_batch_transport(transport):
                    item = BatchItem(
                        f"test:{reviewer}",
                        message,
                        Personalisation(template, sample, test=True, to=reviewer),
                    )
                    (result,) = transport.send_batch([item])
                    if result.error is not None:
                        raise result.error
                    if result.receipt is None:
                        raise UncertainDeliveryError(f"{transport.name}: no result for {reviewer}")
                    results.append(TestSendResult(reviewer, result.receipt, None))
                else:
                    single = cast(Transport, transport)
                    results.append(TestSendResult(reviewer, single.send(message), None))
            except DeliveryError as err:
                results.append(TestSendResult(reviewer, None, err.message))
    finally:
        transport.close()
    return results


def is_batch_transport(transport: object) -> TypeGuard[BatchTransport]:
    """True for transports with a batch endpoint (provider APIs)."""
    return hasattr(transport, "send_batch") and hasattr(transport, "max_batch")


def send_issue(
    template: MessageTemplate,
    audience: Audience,
    *,
    transport: Transport | BatchTransport,
    ledger: Ledger,
    limiter: RateLimiter | None = None,
    backoff: Backoff | None = None,
    options: SendOptions | None = None,
    clock: Callable[[], float] = time.time,
    stop: threading.Event | None = None,
    progress: Callable[[SendProgress], None] | None = None,
) -> SendReport:
    """Send the issue to everyone in `audience` who has not had it yet.

    A `BatchTransport` is fed batches of up to `max_batch` recipients, `options.concurrency`
    requests at a time; rate limits count recipients.
    """
    options = options or SendOptions()
    limiter = limiter or RateLimiter()
    backoff = backoff or Backoff()
    stop = stop or threading.Event()
    check_audience(template, audience)
    issue_ledger = ledger.issue(template.issue)
    with ledger.lock(template.issue) as run:
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
        frozen = issue_ledger.freeze(
            ((key, recipient.email) for key, recipient in audience.recipients()),
            template.fingerprint,
        )
        transport.check()
        tally = _Tally(options, total=frozen.total)
        already_sent = issue_ledger.counts().get(State.SENT, 0)
        try:
            _run(
                template,
                audience,
                issue_ledger,
                transport,
                limiter,
                backoff,
                options,
                clock,
                stop,
                tally,
                progress,
            )
        finally:
            transport.close()
        counts = issue_ledger.counts()
        return SendReport(
            issue=template.issue,
            total=frozen.total,
            sent_now=tally.sent,
            counts=counts,
            failures=tuple(issue_ledger.failures()),
            uncertain=tuple(issue_ledger.uncertain()),
            recovered_uncertain=run.recovered_uncertain,
            paused_reason=tally.paused_reason,
            interrupted=stop.is_set() and tally.paused_reason is None,
            added_to_audience=frozen.added if not frozen.first else 0,
            removed_from_audience=frozen.removed,
            already_sent=already_sent,
        )


def _run(
    template: MessageTemplate,
    audience: Audience,
    issue_ledger: IssueLedger,
    transport: Transport | BatchTransport,
    limiter: RateLimiter,
    backoff: Backoff,
    options: SendOptions,
    clock: Callable[[], float],
    stop: threading.Event,
    tally: _Tally,
    progress: Callable[[SendProgress], None] | None,
) -> None:
    """Feed due rows to worker threads until nothing is due, then wait for deferred rows."""
    send_rows = _send_batches if is_batch_transport(transport) else _send_rows
    first_pass = True
    while not stop.is_set() and tally.paused_reason is None:
        rows = issue_ledger.todo(
            now=clock(),
            retry_failed=options.retry_failed and first_pass,
            resend_uncertain=options.resend_uncertain and first_pass,
        )
        resend = first_pass and (options.retry_failed or options.resend_uncertain)
        send_rows(
            rows,
            resend,
            template,
            audience,
            issue_ledger,
            transport,
            limiter,
            backoff,
            options,
            clock,
            stop,
            tally,
            progress,
        )
        first_pass = False
        if stop.is_set() or tally.paused_reason is not None or not options.wait_for_deferred:
            return
        deferred = list(issue_ledger.rows(State.DEFERRED))
        if not deferred:
            return
        due = min(row.next_attempt_at or 0.0 for row in deferred)
        wait = due - clock()
        if wait > 0:
            if progress is not None:
                with tally.lock:
                    progress(replace(tally.snapshot(None), waiting_until=due))
            if stop.wait(wait):
                return


def _send_rows(
    rows: Iterator[LedgerRow],
    resend: bool,
    template: MessageTemplate,
    audience: Audience,
    issue_ledger: IssueLedger,
    transport: Transport | BatchTransport,
    limiter: RateLimiter,
    backoff: Backoff,
    options: SendOptions,
    clock: Callable[[], float],
    stop: threading.Event,
    tally: _Tally,
    progress: Callable[[SendProgress], None] | None,
) -> None:

    def report(last: str) -> None:
        if progress is not None:
            progress(tally.snapshot(last))

    def send_one(row: LedgerRow) -> None:
        recipient = audience.recipient(row.key)
        if recipient is None:
            issue_ledger.mark_failed(row.key, "no longer subscribed; not sent")
            with tally.lock:
                tally.failed += 1
                report(row.email)
            return
        message: OutgoingMessage = template.personalise(recipient)
        limiter.acquire()
        issue_ledger.mark_sending(
            [row.key], message_ids={row.key: message.message_id}, resend=resend
        )
        try:
            receipt = cast(Transport, transport).send(message)
        except UncertainDeliveryError as err:
            issue_ledger.mark_uncertain(row.key, err.message)
            outcome, reason = "uncertain", err.message
        except PermanentDeliveryError as err:
            issue_ledger.mark_failed(row.key, err.message)
            outcome, reason = "failed", err.message
        except TransportUnavailableError as err:
            # Not sent: the row goes back to be sent by this or a later run.
            issue_ledger.mark_deferred(row.key, err.message, clock())
            outcome, reason = "unavailable", err.message
        except TransientDeliveryError as err:
            attempts = row.attempts + 1
            if attempts >= options.max_attempts:
                issue_ledger.mark_failed(
                    row.key, f"gave up after {attempts} attempts: {err.message}"
                )
                outcome, reason = "failed", err.message
            else:
                delay = backoff.delay(attempts, retry_after=err.retry_after)
                issue_ledger.mark_deferred(row.key, err.message, clock() + delay)
                if err.retry_after:
                    limiter.pause_for(err.retry_after)
                outcome, reason = "deferred", err.message
        else:
            issue_ledger.mark_sent(row.key, receipt.reply, message_id=message.message_id)
            outcome, reason = "sent", ""
        with tally.lock:
            if outcome == "sent":
                tally.sent += 1
                tally.consecutive_failures = 0
            elif outcome == "failed":
                tally.failed += 1
            elif outcome == "uncertain":
                tally.uncertain += 1
            else:
                tally.deferred += 1
            if outcome in ("deferred", "unavailable"):
                tally.consecutive_failures += 1
                limit_reached = tally.consecutive_failures >= options.pause_after_failures
                if (outcome == "unavailable" or limit_reached) and tally.paused_reason is None:
                    tally.paused_reason = reason
            report(row.email)

    _run_workers(rows, send_one, options.concurrency, lambda: _halted(stop, tally))


def _send_batches(
    rows: Iterator[LedgerRow],
    resend: bool,
    template: MessageTemplate,
    audience: Audience,
    issue_ledger: IssueLedger,
    transport: Transport | BatchTransport,
    limiter: RateLimiter,
    backoff: Backoff,
    options: SendOptions,
    clock: Callable[[], float],
    stop: threading.Event,
    tally: _Tally,
    progress: Callable[[SendProgress], None] | None,
) -> None:
    """The batch path: one request per `max_batch` rows, `concurrency` requests at a time."""
    batcher = cast(BatchTransport, transport)
    size = max(1, batcher.max_batch)
    make_item = _item_maker(template, mime=getattr(batcher, "needs_mime", True))

    def send_batch(batch: list[LedgerRow]) -> None:
        items: list[tuple[LedgerRow, BatchItem]] = []
        refused: list[tuple[str, str]] = []
        for row in batch:
            recipient = audience.recipient(row.key)
            if recipient is None:
                refused.append((row.key, "no longer subscribed; not sent"))
                continue
            try:
                item = make_item(row.key, recipient)
            except AudienceError as err:  # e.g. an address no message can be sent to
                refused.append((row.key, err.message))
                continue
            items.append((row, item))
        if refused:
            issue_ledger.mark_failed_many(refused)
            with tally.lock:
                tally.failed += len(refused)
        if not items:
            return
        limiter.acquire(len(items))
        issue_ledger.mark_sending(
            [row.key for row, _ in items],
            message_ids={item.key: item.message.message_id for _, item in items},
            resend=resend,
        )
        try:
            results = batcher.send_batch([item for _, item in items])
        except DeliveryError as err:
            results = [BatchResult(item.key, error=err) for _, item in items]
        if [result.key for result in results] != [item.key for _, item in items]:
            reason = f"{batcher.name} returned {len(results)} results for {len(items)} messages"
            results = [
                BatchResult(item.key, error=UncertainDeliveryError(reason)) for _, item in items
            ]
        _record_batch(items, results, issue_ledger, limiter, backoff, options, clock, tally)
        if progress is not None:
            with tally.lock:
                progress(tally.snapshot(items[-1][0].email))

    halted = lambda: _halted(stop, tally)  # noqa: E731
    _run_workers(_batched(rows, size, halted), send_batch, options.concurrency, halted)


def _item_maker(template: MessageTemplate, *, mime: bool) -> Callable[[str, Recipient], BatchItem]:
    """Makes the batch item of a recipient: with the whole MIME message, or just its envelope.

    Provider APIs that take structured content declare `needs_mime = False`: their items carry
    the address and Message-ID with empty `data`, and they build what they send from
    `item.content` (whose values are computed here once and reused). Raises `AudienceError`
    for a recipient no message can be made for.
    """

    def make(key: str, recipient: Recipient) -> BatchItem:
        found = Personalisation(template, recipient)
        if mime:
            return BatchItem(key, template.personalise(recipient), found)
        envelope = found.envelope()
        message = OutgoingMessage(
            sender=template.sender,
            recipient=envelope.to.email,
            message_id=envelope.message_id,
            data=b"",
            smtputf8=not envelope.to.email.isascii() or not template.sender.isascii(),
        )
        return BatchItem(key, message, found)

    return make


def _record_batch(
    items: list[tuple[LedgerRow, BatchItem]],
    results: list[BatchResult],
    issue_ledger: IssueLedger,
    limiter: RateLimiter,
    backoff: Backoff,
    options: SendOptions,
    clock: Callable[[], float],
    tally: _Tally,
) -> None:
    """Write each recipient's outcome to the ledger (sent first) and update the tally."""
    sent: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []
    deferred: list[tuple[str, str, float]] = []
    uncertain: list[tuple[str, str]] = []
    unavailable: str | None = None
    transient: str | None = None
    pause = 0.0
    now = clock()
    for (row, _item), result in zip(items, results, strict=True):
        error = result.error
        if error is None and result.receipt is not None:
            sent.append((row.key, result.receipt.reply))
        elif error is None or isinstance(error, UncertainDeliveryError):
            uncertain.append((row.key, _reason(error, "no result for this recipient")))
        elif isinstance(error, PermanentDeliveryError):
            failed.append((row.key, _reason(error)))
        elif isinstance(error, TransportUnavailableError):
            # Not sent: the row goes back to be sent by this or a later run.
            deferred.append((row.key, _reason(error), now))
            unavailable = unavailable or _reason(error)
        elif isinstance(error, TransientDeliveryError):
            attempts = row.attempts + 1
            if attempts >= options.max_attempts:
                failed.append((row.key, f"gave up after {attempts} attempts: {_reason(error)}"))
            else:
                delay = backoff.delay(attempts, retry_after=error.retry_after)
                deferred.append((row.key, _reason(error), now + delay))
                transient = transient or _reason(error)
                pause = max(pause, error.retry_after or 0.0)
        else:
            raise error
    if sent:
        issue_ledger.mark_sent_many(
            sent, message_ids={item.key: item.message.message_id for _, item in items}
        )
    if failed:
        issue_ledger.mark_failed_many(failed)
    if deferred:
        issue_ledger.mark_deferred_many(deferred)
    for key, reason in uncertain:
        issue_ledger.mark_uncertain(key, reason)
    if pause:
        limiter.pause_for(pause)
    with tally.lock:
        tally.sent += len(sent)
        tally.failed += len(failed)
        tally.uncertain += len(uncertain)
        tally.deferred += len(deferred)
        if sent:
            tally.consecutive_failures = 0
        elif deferred:
            # A refused request counts once, however many recipients it carried.
            tally.consecutive_failures += 1
            limit_reached = tally.consecutive_failures >= options.pause_after_failures
            why = unavailable or transient
            if (unavailable or limit_reached) and tally.paused_reason is None:
                tally.paused_reason = why


def _reason(error: Exception | None, default: str = "") -> str:
    if error is None:
        return default
    return error.message if isinstance(error, DeliveryError) else str(error) or default


class StoreAudience:
    """The subscribed people of a `SubscriberStore` as an `Audience`."""

    def __init__(self, store: SubscriberStore) -> None:
        self.store = store

    def recipients(self) -> Iterator[tuple[str, Recipient]]:
        for subscriber in self.store.iter_subscribers(SubscriberStatus.SUBSCRIBED):
            yield subscriber.key, subscriber

    def recipient(self, key: str) -> Recipient | None:
        found = self.store.get(key)
        if found is None or found.status != SubscriberStatus.SUBSCRIBED:
            return None
        return found


def _halted(stop: threading.Event, tally: _Tally) -> bool:
    return stop.is_set() or tally.paused_reason is not None


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
) -> None:
    """Hand `units` to `concurrency` threads through a bounded queue until done or halted.

    Units not started when the run halts are skipped (their rows stay pending for the next run);
    an exception in a worker (a bug, a ledger failure) stops the feed and is raised here.
    """
    work: queue.Queue[_Unit | None] = queue.Queue(maxsize=concurrency * 4)
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            unit = work.get()
            if unit is None:
                return
            if halted() or errors:
                continue
            try:
                handle(unit)
            except BaseException as err:
                errors.append(err)

    threads = [
        threading.Thread(target=worker, name=f"send-{n}", daemon=True) for n in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    try:
        for unit in units:
            if halted() or errors:
                break
            work.put(unit)
    finally:
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
