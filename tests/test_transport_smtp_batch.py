"""SmtpTransport.send_batch: one thread carries a batch over several connections at once.

Against aiosmtpd (tests/smtpserver.py): what a slow or failing transaction on one connection
does to the others, which messages are handed over together, and that each item gets its own
result, in order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import pytest

from newsletter.delivery.transports.base import (
    BatchItem,
    BatchResult,
    OutgoingMessage,
    handing_over_each,
)
from newsletter.errors import (
    NotStartedError,
    RecipientRejectedError,
    TransientDeliveryError,
    UncertainDeliveryError,
)
from tests.smtpserver import SmtpTestServer
from tests.test_transport_smtp_pipelining import transport_for

SENDER = "news@example.org"
DATA = b"From: news@example.org\r\nSubject: x\r\n\r\nHello\r\n"


def items(count: int) -> list[BatchItem]:
    """Items with only what the transport reads (key and message)."""
    made = []
    for number in range(count):
        recipient = f"reader{number}@example.org"
        message = OutgoingMessage(SENDER, recipient, f"<{number}@x>", DATA, False, True, False)
        made.append(BatchItem(f"k{number}", message, None))  # type: ignore[arg-type]
    return made


@pytest.fixture(params=[True, False], ids=["pipelining", "lock-step"])
def server(request: pytest.FixtureRequest) -> Iterator[SmtpTestServer]:
    with SmtpTestServer(pipelining=bool(request.param)) as running:
        yield running


class Handovers:
    """What the transport said, call by call: the keys handed over and the keys accepted."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def __call__(self, keys: Sequence[str], accepted: Sequence[BatchResult]) -> None:
        self.calls.append((list(keys), [result.key for result in accepted]))

    def handed(self) -> list[str]:
        return [key for keys, _ in self.calls for key in keys]


def test_a_slow_transaction_holds_up_only_its_own_connection(server: SmtpTestServer) -> None:
    # The first message's DATA is answered after 1 s; the other connections go on meanwhile.
    server.delay("data", 1.0, transaction=1)
    transport = transport_for(server.port, connections=3)
    handovers = Handovers()
    started = time.monotonic()
    with handing_over_each(handovers):
        results = transport.send_batch(items(9))
    took = time.monotonic() - started
    transport.close()
    assert [result.key for result in results] == [f"k{n}" for n in range(9)]
    assert all(result.receipt is not None and result.error is None for result in results)
    assert sorted(handovers.handed()) == sorted(f"k{n}" for n in range(9))  # each once
    # Sent one after the other, k0 would be handed over first; here it waits for its 354
    # while the other connections carry the rest.
    assert handovers.handed()[-1] == "k0", handovers.calls
    assert 1.0 <= took < 3.0
    assert server.connections == 3
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(
        f"reader{n}@example.org" for n in range(9)
    )


def test_accepted_messages_are_reported_with_the_next_handover(server: SmtpTestServer) -> None:
    transport = transport_for(server.port, connections=1)
    handovers = Handovers()
    with handing_over_each(handovers):
        transport.send_batch(items(3))
    transport.close()
    # One connection: each message is handed over when the one before it was accepted.
    assert handovers.calls == [(["k0"], []), (["k1"], ["k0"]), (["k2"], ["k1"])]


def test_each_item_gets_its_own_result_in_order(server: SmtpTestServer) -> None:
    server.reject_recipient("reader1@example.org")
    server.defer("rcpt", recipient="reader3@example.org")
    server.drop_after_data(recipient="reader4@example.org")
    transport = transport_for(server.port, connections=2)
    results = transport.send_batch(items(6))
    transport.close()
    kinds = [type(r.error) if r.error else "sent" for r in results]
    assert [r.key for r in results] == [f"k{n}" for n in range(6)]
    assert kinds == [
        "sent",
        RecipientRejectedError,
        "sent",
        TransientDeliveryError,
        UncertainDeliveryError,
        "sent",
    ]
    delivered = sorted(m.rcpt_tos[0] for m in server.messages)
    # reader4's message reached the server before the connection dropped: it counts there.
    assert delivered == [f"reader{n}@example.org" for n in (0, 2, 4, 5)]


def test_a_lost_connection_is_replaced_for_the_rest_of_the_batch(server: SmtpTestServer) -> None:
    server.reply_421(transaction=2)
    transport = transport_for(server.port, connections=1)
    results = transport.send_batch(items(4))
    transport.close()
    assert [type(r.error) if r.error else "sent" for r in results] == [
        "sent",
        TransientDeliveryError,
        "sent",
        "sent",
    ]
    assert server.connections == 2


def test_a_silent_server_times_out_one_message_not_the_batch(server: SmtpTestServer) -> None:
    server.delay("data_end", 3.0, transaction=1)
    transport = transport_for(server.port, connections=2, timeout=1.0)
    results = transport.send_batch(items(4))
    transport.close()
    first = results[0].error
    assert isinstance(first, UncertainDeliveryError) and "timed out" in first.message
    assert all(r.receipt is not None for r in results[1:])


def test_a_stopping_send_begins_no_more_messages(server: SmtpTestServer) -> None:
    transport = transport_for(server.port, connections=1)
    handovers = Handovers()
    with handing_over_each(handovers, lambda: len(handovers.calls) >= 2):
        results = transport.send_batch(items(5))
    transport.close()
    assert [r.receipt is not None for r in results] == [True, True, False, False, False]
    assert all(isinstance(r.error, NotStartedError) for r in results[2:])
    assert server.transactions == 2


def test_a_failing_handover_sends_no_body_on_any_connection(server: SmtpTestServer) -> None:
    transport = transport_for(server.port, connections=3)

    def refuse(keys: Sequence[str], accepted: Sequence[BatchResult]) -> None:
        raise RuntimeError("the ledger cannot be written")

    with handing_over_each(refuse), pytest.raises(RuntimeError):
        transport.send_batch(items(6))
    time.sleep(0.2)
    assert server.messages == []
    # The connections in the middle of a transaction were dropped; the transport goes on.
    results = transport.send_batch(items(2))
    transport.close()
    assert all(r.receipt is not None for r in results)
    assert len(server.messages) == 2


class Supply:
    """`more_items`: `count` more items in chunks of `chunk`, and when each chunk was asked for
    (how many results the batch had then, read from the handovers so far)."""

    def __init__(self, count: int, chunk: int, handovers: Handovers) -> None:
        self.left = items(count + 100)[100:]  # keys k100, k101, ... (no clash with the batch's)
        self.chunk = chunk
        self.handovers = handovers
        self.asked_after: list[int] = []  # messages handed over when each chunk was asked for

    def __call__(self) -> list[BatchItem]:
        self.asked_after.append(len(self.handovers.handed()))
        taken, self.left = self.left[: self.chunk], self.left[self.chunk :]
        return taken


def test_a_batch_takes_in_more_items_while_its_last_messages_finish(
    server: SmtpTestServer,
) -> None:
    transport = transport_for(server.port, connections=3)
    handovers = Handovers()
    supply = Supply(20, 5, handovers)
    with handing_over_each(handovers, more=supply):
        results = transport.send_batch(items(6))
    transport.close()
    keys = [f"k{n}" for n in range(6)] + [f"k{n}" for n in range(100, 120)]
    # One result per item given and per item added, in that order; each sent once.
    assert [result.key for result in results] == keys
    assert all(result.receipt is not None for result in results)
    assert sorted(handovers.handed()) == sorted(keys)
    assert len(server.messages) == 26
    # Asked while messages were still under way (fewer left to begin than connections), not
    # once the batch had run dry: 4 chunks of 5 and the empty answer that ended the batch.
    assert len(supply.asked_after) == 5
    assert supply.asked_after[0] < 6
    assert server.connections == 3


def test_a_batch_stops_growing_at_its_first_failure(server: SmtpTestServer) -> None:
    server.reject_recipient("reader2@example.org")
    transport = transport_for(server.port, connections=1)
    handovers = Handovers()
    supply = Supply(50, 2, handovers)
    with handing_over_each(handovers, more=supply):
        results = transport.send_batch(items(3))
    transport.close()
    # k2 was refused: what the batch had then (k100, k101, asked for while k1 was under way)
    # is still sent, and nothing more is asked for, so the sender can pause between batches.
    assert [r.key for r in results] == ["k0", "k1", "k2", "k100", "k101"]
    assert isinstance(results[2].error, RecipientRejectedError)
    assert len(supply.asked_after) == 1


def test_a_stopping_send_asks_for_no_more_items(server: SmtpTestServer) -> None:
    transport = transport_for(server.port, connections=2)
    handovers = Handovers()
    supply = Supply(50, 4, handovers)
    with handing_over_each(handovers, lambda: len(handovers.handed()) >= 6, supply):
        results = transport.send_batch(items(4))
    transport.close()
    begun = [r for r in results if not isinstance(r.error, NotStartedError)]
    assert len(begun) == len(server.messages) >= 6
    assert len(results) == 4 + 4 * len(supply.asked_after)
    assert all(handed < 6 for handed in supply.asked_after), supply.asked_after
