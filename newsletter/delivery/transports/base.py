"""The seam between the sender and whatever carries a message: SMTP, a folder, a provider API."""

from __future__ import annotations

from dataclasses import dataclass
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
