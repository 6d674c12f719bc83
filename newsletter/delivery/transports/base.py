"""The seam between the sender and whatever carries a message: SMTP, a folder, a provider API.

Every transport implements one protocol, `Transport`: it takes batches (`send_batch`) of at most
`max_batch` items. A transport that carries one message at a time (SMTP, the outbox) is a batch
of one (`max_batch = 1`, see `send_one_by_one`), so the sender has a single delivery loop.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..content import OutgoingMessage
from ..message import Personalisation

__all__ = [
    "BatchItem",
    "BatchResult",
    "DeliveryReceipt",
    "OutgoingMessage",
    "Suppression",
    "SuppressionKind",
    "SuppressionSource",
    "Transport",
    "handing_over",
    "handing_over_each",
    "handover",
    "handover_each",
    "more_items",
    "send_one_by_one",
    "stopping",
]


@dataclass(frozen=True)
class DeliveryReceipt:
    """What the transport learnt when the message was accepted (server reply or provider id)."""

    recipient: str
    reply: str


@dataclass(frozen=True)
class BatchItem:
    """One recipient of a batch: its ledger key, its message and its personalisation.

    `message` always carries the sender, address and Message-ID; its `data` (the whole MIME
    message) is filled only for transports with `needs_mime`. Transports that take structured
    content build it from `content` (whose values are computed once and shared; see message.py).
    """

    key: str
    message: OutgoingMessage
    content: Personalisation


@dataclass(frozen=True)
class BatchResult:
    """The outcome for one recipient of a batch: a receipt, or the error for that recipient."""

    key: str
    receipt: DeliveryReceipt | None = None
    error: Exception | None = None


class Transport(Protocol):
    """Carries messages, in batches of at most `max_batch`. Methods may be called from several
    threads at once.

    `send_batch` returns one result per item, in order (partial failures are per-recipient errors:
    PermanentDeliveryError / RecipientRejectedError / TransientDeliveryError). It raises for the
    whole batch: TransientDeliveryError (429, 5xx, network error before the request was sent;
    `retry_after` set from the server's signal), PermanentDeliveryError, UncertainDeliveryError
    (timeout or connection lost after the request was sent), TransportUnavailableError (bad
    password or API key, server down, ...).
    """

    @property
    def name(self) -> str:
        """A short name for messages ("smtp", "postmark", ...)."""
        ...

    @property
    def max_batch(self) -> int:
        """The most items one `send_batch` call takes (1: one message at a time)."""
        ...

    @property
    def needs_mime(self) -> bool:
        """True when the transport sends `item.message.data`; the sender then builds the MIME
        message (about 0.1 ms a recipient). False: `data` is empty and the transport builds what
        it sends from `item.content`."""
        ...

    @property
    def delivers_mime_as_is(self) -> bool:
        """True when our MIME bytes reach the receiving server unchanged and nobody else signs
        them (SMTP, the outbox): a `[dkim]` signature is then ours to add. Provider APIs sign
        with their own keys and may rebuild headers, so they say False."""
        ...

    @property
    def signals_handover(self) -> bool:
        """True when `send_batch` calls `handover()` at the last moment before the server could
        have the message (SMTP after the 354 to DATA, HTTP before the request is written); the
        sender then marks rows `sending` only then. False: they are marked before `send_batch`."""
        ...

    @property
    def hands_over_each(self) -> bool:
        """True when `send_batch` carries its items over several connections at once in the
        calling thread (SMTP) and calls `handover_each(keys, accepted)` for the items about to
        reach the server, several times a batch; the sender then marks each row `sending` only
        then, and gives a batch to one thread at a time. False: one `handover()` per batch."""
        ...

    def check(self) -> None:
        """Prove the transport can work (connect, authenticate) before the first message.

        Raises `TransportUnavailableError` with a reason a user can act on.
        """
        ...

    def send_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        """Hand `items` over: one result per item, in order (see the class docstring)."""
        ...

    def close(self) -> None:
        """Release connections; the transport may be used again afterwards."""
        ...


def send_one_by_one(
    send: Callable[[OutgoingMessage], DeliveryReceipt], items: Sequence[BatchItem]
) -> list[BatchResult]:
    """`send_batch` for a transport that carries one message at a time (`max_batch = 1`).

    An error raised by `send` is raised for the whole batch (which is that one message), so the
    sender classifies it exactly as a whole-request error of a provider.
    """
    return [BatchResult(item.key, receipt=send(item.message)) for item in items]


# --- the point of no return -------------------------------------------------------------------
#
# The ledger marks a row `sending` so that a crash cannot cause a duplicate; marked too early, a
# crash while connecting reports as uncertain a message the server never saw (issue 15, D16).
# A transport with `signals_handover = True` calls `handover()` at the last moment before the
# server could have the message (SMTP: after MAIL, RCPT and DATA were accepted, before the
# body; HTTP: just before the request is written), and the sender marks the rows there.
# Transports without the attribute are marked before `send_batch`, as before.

_handover = threading.local()


@contextlib.contextmanager
def handing_over(callback: Callable[[], None]) -> Iterator[None]:
    """While the block runs in this thread, the first `handover()` calls `callback`."""
    previous = getattr(_handover, "callback", None)
    _handover.callback = callback
    try:
        yield
    finally:
        _handover.callback = previous


def handover() -> None:
    """Say that the message is about to reach the server (once per batch; no-op outside a send).

    If the callback raises (the ledger could not record it), the transport must not send.
    """
    callback = getattr(_handover, "callback", None)
    if callback is not None:
        _handover.callback = None
        callback()


# A transport that carries several messages of a batch at once (`hands_over_each`) says which
# ones are about to reach the server, each key once, and which have been accepted since it last
# said so (`accepted`, results with a receipt): the sender writes both in one commit, so a
# crash leaves `sending` only what was in flight or accepted a moment ago.
HandoverEach = Callable[[Sequence[str], Sequence[BatchResult]], None]


# Such a transport may also ask for more items while its batch is under way (`more_items`),
# when few are left to begin: the connections then go on without waiting at the batch's end
# for its last messages and for the next batch to be made.
MoreItems = Callable[[], Sequence["BatchItem"]]


@contextlib.contextmanager
def handing_over_each(
    callback: HandoverEach,
    halted: Callable[[], bool] | None = None,
    more: MoreItems | None = None,
) -> Iterator[None]:
    """While the block runs in this thread, every `handover_each(...)` calls `callback`,
    `stopping()` asks `halted` (the run is stopping: begin no more messages), and
    `more_items()` asks `more` for the next items of the batch."""
    previous = (
        getattr(_handover, "each", None),
        getattr(_handover, "halted", None),
        getattr(_handover, "more", None),
    )
    _handover.each, _handover.halted, _handover.more = callback, halted, more
    try:
        yield
    finally:
        _handover.each, _handover.halted, _handover.more = previous


def more_items() -> Sequence[BatchItem]:
    """Items to add to the batch under way in this thread (none: the batch ends with what it
    has). A transport asks only while every item of the batch so far was accepted or is still
    under way, so a run pauses after failures as soon as it would between batches; it returns
    one result per item it was given and per item added, in that order."""
    more: MoreItems | None = getattr(_handover, "more", None)
    return () if more is None else more()


def stopping() -> bool:
    """True when the send this thread serves is stopping: a transport carrying several
    messages at once begins no more and gives the rest `NotStartedError`."""
    halted: Callable[[], bool] | None = getattr(_handover, "halted", None)
    return halted is not None and halted()


def handover_each(keys: Sequence[str], accepted: Sequence[BatchResult] = ()) -> None:
    """Say that the messages of `keys` are about to reach the server, and that `accepted`
    were taken since the last call. Without a `handing_over_each` callback it is `handover()`
    (a batch's single signal). If the callback raises, none of `keys` may be sent."""
    each: HandoverEach | None = getattr(_handover, "each", None)
    if each is not None:
        each(keys, accepted)
    else:
        handover()


# --- suppression lists: the seam between provider transports and delivery/suppressions.py --------


class SuppressionKind(enum.StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


@dataclass(frozen=True)
class Suppression:
    """One address the provider will not (or should not) send to, and why."""

    email: str
    kind: SuppressionKind
    at: datetime | None = None
    reason: str = ""


class SuppressionSource(Protocol):
    """A provider's suppression list, read page by page."""

    name: str

    def fetch(self, since: datetime | None = None) -> Iterator[Suppression]:
        """Every suppression (added at or after `since`, when given).

        Raises `TransportUnavailableError` (bad key, unreachable) or another `DeliveryError`.
        """
        ...


# --- asking the provider what happened: the seam for `newsletter reconcile` -------------------


class Verdict(enum.StrEnum):
    SENT = "sent"  # the provider has the message: it was accepted
    NOT_SENT = "not_sent"  # the provider certainly never had it: safe to send again
    UNKNOWN = "unknown"  # the provider cannot tell (yet): the row stays uncertain


@dataclass(frozen=True)
class SentQuery:
    """One uncertain row to ask about: its recipient, our Message-ID, the sender, and when
    (Unix seconds) the row was handed over, so a lookup can bound its search in time."""

    key: str
    email: str
    message_id: str | None
    sender: str
    handed_over_at: float


@dataclass(frozen=True)
class Finding:
    """What the provider said about one query: a verdict and the evidence (its id, or why)."""

    key: str
    verdict: Verdict
    evidence: str


class SentLookup(Protocol):
    """A provider's record of accepted messages, searchable per recipient.

    `settle_after`: seconds after the hand-over before "not found" is believed (the provider's
    search lags behind its API); `keeps_for`: how long the provider keeps the record (after
    that, "not found" proves nothing).
    """

    name: str
    settle_after: float
    keeps_for: float

    def look_up(self, issue: str, query: SentQuery) -> Finding:
        """SENT with the provider's id when it has the message, else NOT_SENT (or UNKNOWN when
        it cannot tell). Raises `TransportUnavailableError` (bad key, unreachable) or another
        `DeliveryError`."""
        ...
