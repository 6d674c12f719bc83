"""The seam between the sender and whatever carries a message: SMTP, a folder, a provider API."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class OutgoingMessage:
    """One fully personalised message, ready for the wire.

    `data` is the whole RFC 5322 message (headers and body, CRLF line ends). `smtputf8` is true
    when the envelope or headers need SMTPUTF8 (an internationalised address).
    """

    sender: str
    recipient: str
    message_id: str
    data: bytes
    smtputf8: bool = False


@dataclass(frozen=True)
class DeliveryReceipt:
    """What the transport learnt when the message was accepted (server reply or provider id)."""

    recipient: str
    reply: str


class Transport(Protocol):
    """Carries messages. `send` may be called from several threads at once."""

    name: str

    def check(self) -> None:
        """Prove the transport can work (connect, authenticate) before the first message.

        Raises `TransportUnavailableError` with a reason a user can act on.
        """

    def send(self, message: OutgoingMessage) -> DeliveryReceipt:
        """Hand one message over.

        Raises `TransientDeliveryError`, `PermanentDeliveryError` (`RecipientRejectedError`),
        `UncertainDeliveryError` or `TransportUnavailableError`.
        """

    def close(self) -> None:
        """Release connections; the transport may be used again afterwards."""


@dataclass(frozen=True)
class BatchItem:
    """One recipient of a batch: its ledger key and its personalised message.

    Provider transports that take structured JSON rather than MIME get what they need from
    `content` (filled in by the sender from the message template; see message.py).
    """

    key: str
    message: OutgoingMessage
    content: object | None = None


@dataclass(frozen=True)
class BatchResult:
    """The outcome for one recipient of a batch: a receipt, or the error for that recipient."""

    key: str
    receipt: DeliveryReceipt | None = None
    error: Exception | None = None


class BatchTransport(Protocol):
    """Carries many messages per request (provider batch endpoints).

    `send_batch` returns one result per item (partial failures are per-recipient errors:
    PermanentDeliveryError / RecipientRejectedError / TransientDeliveryError). It raises for
    the whole batch: TransientDeliveryError (429, 5xx, network error before the request was
    sent; `retry_after` set from the provider's signal), UncertainDeliveryError (timeout or
    connection lost after the request was sent), TransportUnavailableError (bad API key, ...).
    """

    name: str
    max_batch: int

    def check(self) -> None: ...

    def send_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]: ...

    def close(self) -> None: ...


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
