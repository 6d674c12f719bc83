"""The batch path of send_issue, and the provider content API of message.py it feeds.

`RecordingBatchTransport` is a small real implementation of the BatchTransport protocol (no
network): it checks the ledger from a second connection while each batch is "on the wire" and
answers each recipient as the test script says. The HTTP providers are tested against loopback
servers in tests/test_transport_*.py.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.delivery.ledger import Ledger, LedgerRow, State
from newsletter.delivery.message import (
    HTML,
    SUBJECT,
    TEXT,
    Mailbox,
    MessageTemplate,
    Personalisation,
    SlotContext,
)
from newsletter.delivery.ratelimit import Backoff, RateLimiter
from newsletter.delivery.sender import SendOptions, SendReport, send_issue, send_test
from newsletter.delivery.transports.base import BatchItem, BatchResult, DeliveryReceipt
from newsletter.errors import (
    AudienceError,
    DeliveryError,
    PermanentDeliveryError,
    RecipientRejectedError,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from tests.conftest import copy_example_project
from tests.sendkit import SECRET, ListAudience, Person, example_template, people, token_for

FAST = Backoff(base=0.01, cap=0.02)


def nonzero(counts: dict[State, int]) -> dict[State, int]:
    return {state: n for state, n in counts.items() if n}


Script = Callable[[BatchItem, int], Exception | None]  # (item, attempt number) → error or None


class RecordingBatchTransport:
    """Takes batches, records who got what, answers per the script; checks the ledger."""

    name = "recording"
    needs_mime = True
    delivers_mime_as_is = False
    signals_handover = False
    hands_over_each = False

    def __init__(
        self,
        database: Path,
        issue: str,
        *,
        max_batch: int = 7,
        script: Script | None = None,
        whole: Callable[[int], DeliveryError | None] | None = None,
    ) -> None:
        self.max_batch = max_batch
        self.script = script or (lambda item, attempt: None)
        self.whole = whole or (lambda request: None)
        self.database = database
        self.issue = issue
        self.batches: list[list[str]] = []
        self.accepted: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.not_sending: list[str] = []
        self.lock = threading.Lock()
        self.closed = 0

    def check(self) -> None:
        return

    def send_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        assert 0 < len(items) <= self.max_batch
        with self.lock:
            self.batches.append([item.key for item in items])
            request = len(self.batches)
        # The whole batch is `sending` (committed) before the request goes out.
        with Ledger(self.database) as other:
            issue = other.issue(self.issue)
            for item in items:
                row = issue.row(item.key)
                if row is None or row.state != State.SENDING:
                    self.not_sending.append(item.key)
        error = self.whole(request)
        if error is not None:
            raise error
        results = []
        for item in items:
            assert isinstance(item.content, Personalisation)
            assert item.message.recipient == item.content.recipient.email
            with self.lock:
                self.attempts[item.key] += 1
                attempt = self.attempts[item.key]
            failure = self.script(item, attempt)
            if failure is None:
                with self.lock:
                    self.accepted[item.key] += 1
                results.append(
                    BatchResult(item.key, DeliveryReceipt(item.message.recipient, f"id-{item.key}"))
                )
            else:
                results.append(BatchResult(item.key, error=failure))
        return results

    def close(self) -> None:
        self.closed += 1


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    # Rendered once for the module: the template holds no per-recipient state.
    return example_template(copy_example_project(tmp_path_factory.mktemp("project")))


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "newsletter.db"


def run(
    template: MessageTemplate,
    audience: ListAudience,
    transport: RecordingBatchTransport,
    database: Path,
    *,
    limiter: RateLimiter | None = None,
    clock: Callable[[], float] = time.time,
    max_attempts: int = 5,
    pause_after_failures: int = 10,
) -> tuple[SendReport, dict[str, LedgerRow]]:
    options = SendOptions(max_attempts=max_attempts, pause_after_failures=pause_after_failures)
    with Ledger(database) as ledger:
        report = send_issue(
            template,
            audience,
            transport=transport,
            ledger=ledger,
            backoff=FAST,
            limiter=limiter,
            clock=clock,
            options=options,
        )
        rows = {row.email: row for row in ledger.issue(template.issue).rows()}
    return report, rows


# --- the batch path -------------------------------------------------------------------------


def test_batches_of_max_batch_each_recipient_once(
    template: MessageTemplate, database: Path
) -> None:
    audience = ListAudience(people(100))
    transport = RecordingBatchTransport(database, template.issue, max_batch=7)
    seen: list[int] = []
    with Ledger(database) as ledger:
        report = send_issue(
            template,
            audience,
            transport=transport,
            ledger=ledger,
            options=SendOptions(concurrency=3),
            progress=lambda update: seen.append(update.sent),
        )
        rows = {row.email: row for row in ledger.issue(template.issue).rows()}
    assert report.complete and report.sent_now == 100
    assert sorted(len(batch) for batch in transport.batches) == [2] + [7] * 14
    assert set(transport.accepted) == set(audience.people)
    assert set(transport.accepted.values()) == {1}
    assert transport.not_sending == []
    assert all(row.reply == f"id-{row.key}" and row.attempts == 1 for row in rows.values())
    assert all(row.message_id and row.message_id.startswith("<2026-11.") for row in rows.values())
    assert seen and max(seen) == 100
    assert transport.closed == 1


def test_per_recipient_outcomes(template: MessageTemplate, database: Path) -> None:
    def script(item: BatchItem, attempt: int) -> Exception | None:
        match item.key:
            case "reader00001@example.org":
                return RecipientRejectedError("inactive recipient")
            case "reader00002@example.org" if attempt < 3:
                return TransientDeliveryError("try later")
            case "reader00003@example.org":
                return UncertainDeliveryError("lost")
            case "reader00004@example.org":
                return TransientDeliveryError("always later")
        return None

    transport = RecordingBatchTransport(database, template.issue, script=script)
    report, rows = run(template, ListAudience(people(20)), transport, database, max_attempts=4)
    assert report.complete
    assert rows["reader00001@example.org"].state == State.FAILED
    assert rows["reader00001@example.org"].last_error == "inactive recipient"
    assert rows["reader00002@example.org"].state == State.SENT
    assert rows["reader00002@example.org"].attempts == 3
    assert rows["reader00003@example.org"].state == State.UNCERTAIN
    assert transport.attempts["reader00003@example.org"] == 1, "uncertain is never resent"
    assert rows["reader00004@example.org"].state == State.FAILED
    assert (rows["reader00004@example.org"].last_error or "").startswith("gave up after 4")
    assert nonzero(report.counts) == {State.SENT: 17, State.FAILED: 2, State.UNCERTAIN: 1}


def test_whole_batch_uncertain_marks_every_key(template: MessageTemplate, database: Path) -> None:
    transport = RecordingBatchTransport(
        database,
        template.issue,
        whole=lambda n: UncertainDeliveryError("timeout after send") if n == 2 else None,
    )
    report, rows = run(template, ListAudience(people(21)), transport, database)
    uncertain = [email for email, row in rows.items() if row.state == State.UNCERTAIN]
    assert sorted(uncertain) == sorted(transport.batches[1])
    assert nonzero(report.counts) == {State.SENT: 14, State.UNCERTAIN: 7}
    again, _ = run(template, ListAudience(people(21)), transport, database)
    assert again.sent_now == 0 and len(transport.batches) == 3


def test_unavailable_pauses_and_resume_completes(template: MessageTemplate, database: Path) -> None:
    down = [True]
    transport = RecordingBatchTransport(
        database,
        template.issue,
        whole=lambda n: TransportUnavailableError("key refused") if down[0] else None,
    )
    report, rows = run(template, ListAudience(people(30)), transport, database)
    assert report.paused_reason == "key refused"
    assert report.counts.get(State.SENT, 0) == 0 and not transport.accepted
    assert all(row.state in (State.PENDING, State.DEFERRED) for row in rows.values())
    down[0] = False
    resumed, rows = run(template, ListAudience(people(30)), transport, database)
    assert resumed.complete and nonzero(resumed.counts) == {State.SENT: 30}
    assert set(transport.accepted.values()) == {1}


def test_repeated_refused_requests_pause_after_n_requests(
    template: MessageTemplate, database: Path
) -> None:
    transport = RecordingBatchTransport(
        database, template.issue, whole=lambda n: TransientDeliveryError("HTTP 503")
    )
    report, _ = run(template, ListAudience(people(70)), transport, database, pause_after_failures=3)
    assert report.paused_reason == "HTTP 503"
    # Each refused request counts once, not once per recipient it carried.
    assert 3 <= len(transport.batches) <= 4


def test_rate_limit_counts_recipients_and_retry_after_pauses(
    template: MessageTemplate, database: Path
) -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(per_second=10, clock=lambda: now[0], sleep=sleep)
    transport = RecordingBatchTransport(
        database,
        template.issue,
        max_batch=5,
        whole=lambda n: TransientDeliveryError("429", retry_after=30) if n == 2 else None,
    )
    report, _ = run(
        template,
        ListAudience(people(15)),
        transport,
        database,
        limiter=limiter,
        clock=lambda: now[0],  # the deferred batch is due once the limiter's pause is over
    )
    assert report.complete and nonzero(report.counts) == {State.SENT: 15}
    # 20 recipients acquired at 10/s (15 + 5 sent again), and a 30 s pause after the 429.
    assert sum(slept) == pytest.approx(30 + 1.5, abs=0.6)
    assert any(s >= 25 for s in slept)


def test_people_who_left_or_cannot_be_sent_to(template: MessageTemplate, database: Path) -> None:
    audience = ListAudience([*people(10), Person("bad address@example.org")])

    def whole(request: int) -> None:
        if request == 1:  # someone of the second batch unsubscribes during the run
            audience.leave("reader00008@example.org")

    transport = RecordingBatchTransport(database, template.issue, whole=whole)
    report, rows = run(template, audience, transport, database)
    # Who left is dropped from the send, not failed (issue 15, D21).
    assert "reader00008@example.org" not in rows
    assert report.removed_from_audience == 1 and report.total == 10
    assert rows["bad address@example.org"].state == State.FAILED
    assert "not an address" in (rows["bad address@example.org"].last_error or "")
    assert "reader00008@example.org" not in transport.accepted
    assert nonzero(report.counts) == {State.SENT: 9, State.FAILED: 1}


def test_wrong_result_keys_make_the_batch_uncertain(
    template: MessageTemplate, database: Path
) -> None:
    class Shuffled(RecordingBatchTransport):
        def send_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
            return list(reversed(super().send_batch(items)))

    transport = Shuffled(database, template.issue, max_batch=3)
    report, _ = run(template, ListAudience(people(3)), transport, database)
    assert nonzero(report.counts) == {State.UNCERTAIN: 3}


def test_stop_finishes_the_batch_in_flight(template: MessageTemplate, database: Path) -> None:
    stop = threading.Event()
    transport = RecordingBatchTransport(database, template.issue, max_batch=10)
    with Ledger(database) as ledger:
        report = send_issue(
            template,
            ListAudience(people(200)),
            transport=transport,
            ledger=ledger,
            stop=stop,
            progress=lambda update: stop.set() if update.sent >= 30 else None,
        )
    assert report.interrupted and 30 <= report.counts[State.SENT] < 200
    assert report.counts.get(State.SENDING, 0) == 0
    resumed, _ = run(template, ListAudience(people(200)), transport, database)
    assert resumed.complete and set(transport.accepted.values()) == {1}


def test_test_send_through_a_batch_transport(template: MessageTemplate, database: Path) -> None:
    class Quiet(RecordingBatchTransport):
        def send_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
            (item,) = items
            assert isinstance(item.content, Personalisation)
            assert item.content.test and item.content.to == "rita@example.org"
            if "bad" in item.key:
                return [BatchResult(item.key, error=PermanentDeliveryError("refused"))]
            return [BatchResult(item.key, DeliveryReceipt(item.message.recipient, "ok"))]

    results = send_test(
        template,
        Person("sam@example.org", "Sam"),
        ["rita@example.org"],
        Quiet(database, template.issue),
    )
    assert [(r.recipient, r.error) for r in results] == [("rita@example.org", None)]


# --- the provider content API ---------------------------------------------------------------

HOSTILE = [
    Person("ann@example.org", "Ann"),
    Person("eve@example.org", "<img src=x onerror=\"alert(1)\"> & 'q'"),
    Person("zoe@example.org", "Zoë Ünal\r\nBcc: spy@example.org\u2028X"),
    Person("nul@example.org", "a\x00b\tc"),
    Person("cy@example.org"),
]


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@pytest.mark.parametrize("person", HOSTILE, ids=lambda p: p.email)
def test_content_matches_the_mime_message(template: MessageTemplate, person: Person) -> None:
    content = template.content(person)
    mime = parsed(template.personalise(person).data)
    html_part = mime.get_body(("html",))
    text_part = mime.get_body(("plain",))
    assert html_part is not None and text_part is not None
    assert content.html == html_part.get_content().replace("\r\n", "\n")
    assert content.text.rstrip("\n") == text_part.get_content().replace("\r\n", "\n").rstrip("\n")
    assert content.subject == mime["Subject"]
    assert content.message_id == mime["Message-ID"]
    assert content.to == Mailbox(person.email, mime["To"].addresses[0].display_name)
    assert content.header("list-unsubscribe") == " ".join(mime["List-Unsubscribe"].split())
    assert content.header("List-Id") == mime["List-Id"]
    assert content.sender.formatted() == str(mime["From"])
    for name, value in content.headers:
        assert "\r" not in value and "\n" not in value, name
    assert "<img src=x" not in content.html and "\x00" not in content.text


@pytest.mark.parametrize("test", [False, True])
def test_provider_template_plus_values_is_the_content(
    template: MessageTemplate, test: bool
) -> None:
    def placeholder(index: int, context: SlotContext) -> str:
        return f"%%{index}.{context}%%"

    shared = template.provider_template(placeholder, test=test)
    assert {context for _, context in shared.keys} <= {SUBJECT, HTML, TEXT}
    assert "%%" in shared.html and "%%" in shared.text
    for person in HOSTILE:
        to = "Rita <rita@example.org>" if test else None
        values = template.slot_values(person, test=test, to=to)
        assert set(values) == set(shared.keys)

        def fill(text: str, values: dict[tuple[int, SlotContext], str] = values) -> str:
            for (index, context), value in values.items():
                text = text.replace(placeholder(index, context), value)
            return text

        content = template.content(person, test=test, to=to)
        assert fill(shared.subject) == content.subject
        assert fill(shared.html) == content.html
        assert fill(shared.text) == content.text
    # first_name is the first word of the name: here `<img`, escaped in html only.
    eve = template.slot_values(HOSTILE[1])
    assert sorted(v for (_, c), v in eve.items() if c != SUBJECT and "img" in v) == [
        "&lt;img",
        "<img",
    ]


def test_test_content_goes_to_the_reviewer(template: MessageTemplate) -> None:
    sample = Person("sam@example.org", "Sam")
    content = template.content(sample, test=True, to="Rita <rita@example.org>")
    assert content.to == Mailbox("rita@example.org", "Rita")
    assert content.subject.startswith("[TEST] ")
    assert token_for(SECRET, "rita@example.org") in (content.header("List-Unsubscribe") or "")
    assert token_for(SECRET, "sam@example.org") not in content.html + content.text
    assert ".test." in content.message_id
    with pytest.raises(AudienceError, match="not an email address"):
        template.content(sample, test=True, to="rita@example.org\r\nBcc: x@y")


def test_missing_values_and_bad_addresses(project: Path) -> None:
    item = project / "issues" / "2026-11" / "03-winter-roster.md"
    item.write_text(item.read_text() + "\nYour plot: {{ subscriber.plot }}\n", encoding="utf-8")
    template = example_template(project)
    with pytest.raises(AudienceError, match=r"b@example\.org: no value for subscriber\.plot"):
        template.slot_values(Person("b@example.org"))
    with pytest.raises(AudienceError, match=r"b@example\.org: no value for subscriber\.plot"):
        template.content(Person("b@example.org"))
    assert "7" in template.content(Person("a@example.org", "A", {"plot": "7"})).text
    with pytest.raises(AudienceError, match="not an address"):
        template.envelope(Person("a b@example.org"))


@pytest.mark.parametrize(
    ("name", "formatted"),
    [
        ("", "a@example.org"),
        ("Ann", "Ann <a@example.org>"),
        ("Lee, <x@y>", '"Lee, <x@y>" <a@example.org>'),
        ('Quo"te', '"Quo\\"te" <a@example.org>'),
        ("Søren", "Søren <a@example.org>"),
    ],
)
def test_mailbox_formatted(name: str, formatted: str) -> None:
    assert Mailbox("a@example.org", name).formatted() == formatted
    assert email.utils.getaddresses([formatted])[0][1] == "a@example.org"
