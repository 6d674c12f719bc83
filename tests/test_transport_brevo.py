"""Brevo transport against a loopback server that plays Brevo's `/v3/smtp/email`.

The fake validates every body against Brevo's own spec (Swagger 2.0, `sendSmtpEmail`), keeps
idempotency keys for 30 minutes as Brevo does (a repeated key is refused with
`duplicate_parameter` and not sent), honours `X-Sib-Sandbox: drop`, and records what each
recipient would receive. What every provider shares (full send, crash and resume,
whole-request failures) is tested once in tests/test_transport_contract.py, with `BrevoFake`
from here.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from newsletter.audience import SubscriberStore
from newsletter.config import Settings, TransportSettings
from newsletter.delivery.ledger import Ledger, State
from newsletter.delivery.message import Mailbox, MessageContent, MessageTemplate, Personalisation
from newsletter.delivery.ratelimit import Backoff
from newsletter.delivery.sender import send_issue, send_test
from newsletter.delivery.suppressions import SuppressionKind, sync_suppressions
from newsletter.delivery.transports import describe_transport, make_transport
from newsletter.delivery.transports.base import BatchItem
from newsletter.delivery.transports.brevo import (
    MAX_NAME,
    BrevoSuppressions,
    BrevoTransport,
    email_payload,
    idempotency_key,
)
from newsletter.errors import (
    ConfigError,
    RecipientRejectedError,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from tests.conftest import copy_example_project
from tests.providerfake import (
    FakeRequest,
    FakeResponse,
    ProviderFake,
    spec_validator,
)
from tests.sendkit import SECRET, ListAudience, Person, example_template, people, token_for

KEY = "xkeysib-test"
SEND_SCHEMA = spec_validator(
    "brevo/swagger.yaml", "/paths/~1smtp~1email/post/parameters/0/schema", "swagger2"
)
# The fake's canned answers are checked against Brevo's response schema too.
BLOCKED_ANSWER = spec_validator(
    "brevo/swagger.yaml", "/definitions/getTransacBlockedContacts", "swagger2"
)
FAST = Backoff(base=0.01, cap=0.02)


class BrevoFake:
    """Plays Brevo's transactional email endpoint and `GET /v3/account`."""

    def __init__(self, server: ProviderFake) -> None:
        self.server = server
        self.invalid: set[str] = set()
        self.keys: set[str] = set()
        self.sandboxed: list[str] = []
        self.received: dict[str, dict[str, Any]] = {}
        self.blocked: list[dict[str, Any]] = []
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        server.handler = self.handle

    def handle(self, request: FakeRequest) -> FakeResponse:
        fake = self.server
        if request.header("api-key") != KEY:
            return FakeResponse.json({"code": "unauthorized", "message": "Key not found"}, 401)
        if (request.method, request.path) == ("GET", "/v3/account"):
            return FakeResponse.json({"email": "team@example.org", "plan": [{"type": "free"}]})
        if (request.method, request.path) == ("GET", "/v3/smtp/blockedContacts"):
            return self._blocked(request)
        if (request.method, request.path) != ("POST", "/v3/smtp/email"):
            return fake.problem(f"unexpected {request.method} {request.path}")
        if not (request.header("content-type") or "").startswith("application/json"):
            return fake.problem("content type is not JSON")
        body = request.json()
        problems = SEND_SCHEMA(body)
        if problems:
            return fake.problem(f"schema: {problems[:3]}")
        if "messageVersions" in body or len(body.get("to", [])) != 1:
            return fake.problem("not one recipient a request")
        if "attachment" in body:
            return fake.problem("attachments sent")
        for who in (body["sender"], body["to"][0], body.get("replyTo", {})):
            if len(who.get("name", "")) > MAX_NAME:
                return fake.problem(f"name over {MAX_NAME} characters")
        headers = body.get("headers", {})
        if "List-Unsubscribe" not in headers:
            return fake.problem("no List-Unsubscribe header")
        if not all(str(value).isascii() for value in headers.values()):
            return fake.problem("a non-ASCII header value")
        key = headers.get("idempotencyKey", "")
        try:
            uuid.UUID(key)
        except ValueError:
            return fake.problem(f"idempotencyKey {key!r} is not a UUID")
        with self.lock:
            if key in self.keys:
                return FakeResponse.json(
                    {"code": "duplicate_parameter", "message": "idempotencyKey already used"}, 400
                )
            self.keys.add(key)
        address = body["to"][0]["email"].lower()
        if address in self.invalid:
            return FakeResponse.json(
                {"code": "invalid_parameter", "message": "email is not valid in to"}, 400
            )
        with self.lock:
            message_id = f"<2026{next(self.ids):06d}.1@smtp-relay.mailin.fr>"
            self.received[address] = body
        if headers.get("X-Sib-Sandbox") == "drop":
            self.sandboxed.append(address)
        else:
            fake.accept(address, message_id)
        return FakeResponse.json({"messageId": message_id}, 201)

    def _blocked(self, request: FakeRequest) -> FakeResponse:
        query = {name: values[0] for name, values in request.query.items()}
        limit, offset = int(query.get("limit", "50")), int(query.get("offset", "0"))
        if not 0 <= limit <= 100 or ("startDate" in query) != ("endDate" in query):
            return self.server.problem(f"bad query {query}")
        rows = sorted(self.blocked, key=lambda c: str(c["blockedAt"]))
        if query.get("sort", "desc") == "desc":
            rows.reverse()
        if "startDate" in query:
            rows = [
                c for c in rows
                if query["startDate"] <= c["blockedAt"][:10] <= query["endDate"]
            ]  # fmt: skip
        answer: dict[str, Any] = {"count": len(rows)}
        if rows:  # Brevo leaves `contacts` out when there are none
            answer["contacts"] = rows[offset : offset + limit]
        problems = BLOCKED_ANSWER(answer)
        if problems:
            return self.server.problem(f"answer schema: {problems[:3]}")
        return FakeResponse.json(answer)


@pytest.fixture
def server() -> Iterator[ProviderFake]:
    with ProviderFake(hang_seconds=3) as running:
        yield running


@pytest.fixture
def brevo(server: ProviderFake) -> BrevoFake:
    return BrevoFake(server)


def publish_images(project: Path) -> Path:
    """Turn on base_url in the example project: images are published, not embedded."""
    config = project / "newsletter.toml"
    config.write_text(config.read_text().replace("# base_url = ", "base_url = "))
    return project


@pytest.fixture(scope="module")
def hosted(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    """Rendered once for the module (templates are immutable): rendering takes ~0.5 s."""
    project = copy_example_project(tmp_path_factory.mktemp("hosted") / "project")
    template = example_template(publish_images(project))
    assert not template.images
    return template


def settings_for(server: ProviderFake, **changes: Any) -> TransportSettings:
    values: dict[str, Any] = {"kind": "brevo", "api_url": server.url, "timeout": 0.4}
    values.update(changes)
    return TransportSettings(**values)


def transport_for(server: ProviderFake, **changes: Any) -> BrevoTransport:
    return BrevoTransport(settings_for(server, **changes), api_key=KEY)


def item_for(template: MessageTemplate, person: Person) -> BatchItem:
    return BatchItem(person.email, template.personalise(person), Personalisation(template, person))


def test_each_recipient_is_one_request_with_its_own_headers(
    server: ProviderFake, brevo: BrevoFake, hosted: MessageTemplate
) -> None:
    long_name = "Anna-Maria " + "von " * 20 + "Ende"
    persons = [Person("ann@example.org", long_name), Person("bob@example.org", "Bøb, <b>")]
    transport = transport_for(server)
    assert transport.max_batch == 1
    results = [transport.send_batch([item_for(hosted, p)])[0] for p in persons]
    transport.close()
    assert [r.receipt.reply for r in results if r.receipt] == [
        "<2026000001.1@smtp-relay.mailin.fr>",
        "<2026000002.1@smtp-relay.mailin.fr>",
    ]
    assert len(server.posts("/v3/smtp/email")) == 2
    ann, bob = brevo.received["ann@example.org"], brevo.received["bob@example.org"]
    assert ann["to"] == [{"email": "ann@example.org", "name": long_name[:69].rstrip() + "…"}]
    assert bob["to"] == [{"email": "bob@example.org", "name": "Bøb, <b>"}]
    assert ann["sender"] == {"email": "news@riverside-garden.example.org",
                             "name": "Riverside Roots"}  # fmt: skip
    assert ann["replyTo"] == {"email": "team@riverside-garden.example.org", "name": "Garden team"}
    assert ann["tags"] == ["2026-11"]
    assert "Dear Anna-Maria," in ann["htmlContent"] and "Dear Bøb," in bob["textContent"]
    for person, body in ((persons[0], ann), (persons[1], bob)):
        headers = body["headers"]
        token = token_for(SECRET, person.email)
        assert token in headers["List-Unsubscribe"] and "mailto:" in headers["List-Unsubscribe"]
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert headers["idempotencyKey"] == idempotency_key(
            hosted.fingerprint, hosted.envelope(person).message_id
        )
        assert "X-Sib-Sandbox" not in headers
        assert token in body["htmlContent"] and token in body["textContent"]
    assert server.problems == []


def test_embedded_images_stop_the_run_before_anything_is_sent(
    server: ProviderFake, brevo: BrevoFake, project: Path, tmp_path: Path
) -> None:
    embedded = example_template(project)
    assert embedded.images
    with pytest.raises(TransportUnavailableError, match="embedded images") as caught:
        transport_for(server).send_batch([item_for(embedded, Person("ann@example.org"))])
    assert "base_url" in (caught.value.hint or "")
    with Ledger(tmp_path / "ledger.db") as ledger:
        report = send_issue(
            embedded,
            ListAudience(people(5)),
            transport=transport_for(server),
            ledger=ledger,
            backoff=FAST,
        )
    assert report.paused_reason is not None and "embedded images" in report.paused_reason
    assert report.counts[State.SENT] == 0
    assert server.posts() == []


def test_what_brevo_cannot_carry_is_an_error() -> None:
    content = MessageContent(
        sender=Mailbox("news@example.org", "N" * 71),
        to=Mailbox("ann@example.org"),
        reply_to=None,
        subject="Hello",
        html="<p>Hi</p>",
        text="Hi",
        headers=(("List-Unsubscribe", "<https://example.org/u?t=1>"),),
        message_id="<1@example.org>",
    )
    with pytest.raises(TransportUnavailableError, match="longer than 70"):
        email_payload(content, issue="x", idempotency="k")
    unicode_header = replace(
        content,
        sender=Mailbox("news@example.org", "News"),
        headers=(("List-Unsubscribe", "<https://exämple.org/u?t=1>"),),
    )
    with pytest.raises(TransportUnavailableError, match="not ASCII"):
        email_payload(unicode_header, issue="x", idempotency="k")
    fine = replace(unicode_header, headers=content.headers)
    body = email_payload(fine, issue="x", idempotency="k", sandbox=True)
    assert body["headers"] == {
        "List-Unsubscribe": "<https://example.org/u?t=1>",
        "idempotencyKey": "k",
        "X-Sib-Sandbox": "drop",
    }
    assert "replyTo" not in body and body["to"] == [{"email": "ann@example.org"}]


def test_refused_recipient(server: ProviderFake, brevo: BrevoFake, hosted: MessageTemplate) -> None:
    brevo.invalid.add("bob@example.org")
    (result,) = transport_for(server).send_batch([item_for(hosted, Person("bob@example.org"))])
    assert isinstance(result.error, RecipientRejectedError)
    assert "bob@example.org" in str(result.error) and "invalid_parameter" in str(result.error)


# The failures every provider shares (429, 5xx, 401/403, malformed or empty answers, no answer)
# are in tests/test_transport_contract.py; these are Brevo's own.
@pytest.mark.parametrize(
    ("fault", "error", "text", "retry_after"),
    [
        (FakeResponse.json({"code": "too_many_requests", "message": "Too many requests"}, 429,
                           {"x-sib-ratelimit-limit": "1000", "x-sib-ratelimit-remaining": "0",
                            "x-sib-ratelimit-reset": "3"}),
         TransientDeliveryError, "retry after 3s", 3.0),
        (FakeResponse.json({"code": "not_enough_credits", "message": "Not enough credits"}, 402),
         TransportUnavailableError, "Not enough credits", None),
        (FakeResponse.json({"code": "account_under_validation",
                            "message": "Your account is under validation"}, 400),
         TransportUnavailableError, "under validation", None),
        (FakeResponse.json({"code": "duplicate_parameter", "message": "duplicate"}, 400),
         UncertainDeliveryError, "already requested", None),
        (FakeResponse.json({"messageIds": []}, 201), UncertainDeliveryError,
         "without a messageId", None),
    ],
    ids=["429-sib-reset", "402", "400-validation", "400-duplicate", "no-id"],
)  # fmt: skip
def test_request_failures_are_typed(
    server: ProviderFake,
    brevo: BrevoFake,
    hosted: MessageTemplate,
    fault: FakeResponse,
    error: type[Exception],
    text: str,
    retry_after: float | None,
) -> None:
    server.fail_next(fault)
    with pytest.raises(error) as caught:
        transport_for(server).send_batch([item_for(hosted, Person("a@example.org"))])
    assert text in str(caught.value)
    if isinstance(caught.value, TransientDeliveryError):
        assert caught.value.retry_after == retry_after
    assert not server.accepted


def test_a_repeated_request_is_not_sent_twice(
    server: ProviderFake, brevo: BrevoFake, hosted: MessageTemplate
) -> None:
    """The answer was lost after Brevo took the email: the retry has the same key."""
    transport = transport_for(server)
    (first,) = transport.send_batch([item_for(hosted, Person("ann@example.org"))])
    assert first.receipt is not None
    with pytest.raises(UncertainDeliveryError, match="probably sent"):
        transport.send_batch([item_for(hosted, Person("ann@example.org"))])
    assert dict(server.accepted) == {"ann@example.org": 1}
    keys = [r.json()["headers"]["idempotencyKey"] for r in server.posts()]
    assert keys[0] == keys[1]
    # A test send is a new message every time: a new key.
    send_test(hosted, Person("ann@example.org"), ["rita@example.org"], transport)
    send_test(hosted, Person("ann@example.org"), ["rita@example.org"], transport)
    assert server.accepted["rita@example.org"] == 2


def test_sandbox(
    server: ProviderFake, brevo: BrevoFake, hosted: MessageTemplate, settings: Settings
) -> None:
    (result,) = transport_for(server, sandbox=True).send_batch(
        [item_for(hosted, Person("ann@example.org"))]
    )
    assert result.receipt is not None
    assert brevo.sandboxed == ["ann@example.org"] and not server.accepted
    assert server.posts()[0].json()["headers"]["X-Sib-Sandbox"] == "drop"
    configured = replace(settings, transport=settings_for(server, sandbox=True))
    assert "sandbox" in describe_transport(configured)


def test_check_and_configuration(
    server: ProviderFake, brevo: BrevoFake, settings: Settings
) -> None:
    transport_for(server).check()
    bad = BrevoTransport(settings_for(server), api_key="xkeysib-wrong")
    with pytest.raises(TransportUnavailableError, match="HTTP 401") as caught:
        bad.check()
    assert "BREVO_API_KEY" in (caught.value.hint or "")
    assert "xkeysib-wrong" not in str(caught.value) and "xkeysib-wrong" not in repr(bad)
    configured = replace(settings, transport=settings_for(server))
    with pytest.raises(ConfigError, match="BREVO_API_KEY"):
        make_transport(configured, environ={})
    made = make_transport(configured, environ={"BREVO_API_KEY": KEY})
    assert isinstance(made, BrevoTransport) and made.auth_headers() == {"api-key": KEY}
    default = replace(settings, transport=TransportSettings(kind="brevo"))
    assert describe_transport(default) == "brevo https://api.brevo.com"


def test_blocked_contacts_are_synced_into_the_store(
    server: ProviderFake, brevo: BrevoFake, tmp_path: Path
) -> None:
    codes = ["hardBounce", "contactFlaggedAsSpam", "unsubscribedViaEmail", "adminBlocked",
             "unsubscribedViaApi"]  # fmt: skip
    brevo.blocked = [
        {"email": f"p{n}@example.org", "senderEmail": "news@riverside-garden.example.org",
         "reason": {"code": codes[n % 5], "message": codes[n % 5]},
         "blockedAt": f"2026-11-{1 + n % 28:02d}T12:{n % 60:02d}:00Z"}
        for n in range(250)
    ]  # fmt: skip
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC).timestamp()
    transport = BrevoTransport(settings_for(server), api_key=KEY, clock=lambda: now)
    source = transport.suppression_source()
    assert isinstance(source, BrevoSuppressions)
    found = list(source.fetch())
    assert sorted(s.email for s in found) == sorted(f"p{n}@example.org" for n in range(250))
    assert len(server.requests) == 3  # 100 + 100 + 50, oldest first
    assert server.requests[0].query == {"limit": ["100"], "offset": ["0"], "sort": ["asc"]}
    kinds = {s.email: s.kind for s in found}
    assert [kinds[f"p{n}@example.org"] for n in range(5)] == [
        SuppressionKind.BOUNCE, SuppressionKind.COMPLAINT, SuppressionKind.UNSUBSCRIBE,
        SuppressionKind.UNSUBSCRIBE, SuppressionKind.UNSUBSCRIBE,
    ]  # fmt: skip
    recent = list(source.fetch(datetime(2026, 11, 28, tzinfo=UTC)))
    assert server.requests[-1].query["startDate"] == ["2026-11-28"]
    assert server.requests[-1].query["endDate"] == ["2026-11-30"]
    assert {s.email for s in recent} == {f"p{n}@example.org" for n in range(250) if n % 28 == 27}
    brevo.blocked = []
    assert list(source.fetch()) == []
    brevo.blocked = [
        {"email": "P1@Example.org", "senderEmail": "news@riverside-garden.example.org",
         "reason": {"code": "contactFlaggedAsSpam"}, "blockedAt": "2026-11-02T10:00:00Z"},
    ]  # fmt: skip
    with SubscriberStore(tmp_path / "subscribers.db") as store:
        store.add("p1@example.org")
        store.add("p2@example.org")
        report = sync_suppressions(source, store)
        assert dict(report.changed) == {"complained": 1}
        p2 = store.get("p2@example.org")
        assert p2 is not None and p2.status == "subscribed"
    wrong = BrevoTransport(settings_for(server), api_key="nope").suppression_source()
    with pytest.raises(TransportUnavailableError, match="HTTP 401"):
        list(wrong.fetch())
    assert server.problems == []


NASTY = [
    Person("ann@example.org", 'Ann "The \\ Admin" </script><b>'),
    Person("bob@example.org", "Bøb\u2028Ünïcode\t\x01 😀 &amp;"),
    Person("cy@example.org"),
    Person("dee@example.org", " \t Dee \r\n"),
    Person("long@example.org", "Anna-Maria " + "von " * 20 + "Ende"),
]


@pytest.mark.parametrize("sandbox", [False, True], ids=["live", "sandbox"])
@pytest.mark.parametrize("test", [False, True], ids=["send", "test-copy"])
def test_encoded_payload_is_the_payload(hosted: MessageTemplate, test: bool, sandbox: bool) -> None:
    """The body spliced from pieces encoded once per issue parses to exactly the one built
    field by field, whatever the recipient's values hold."""
    transport = BrevoTransport(
        TransportSettings(kind="brevo", api_url="http://127.0.0.1:9", sandbox=sandbox),
        api_key=KEY,
    )
    for person in NASTY:
        found = Personalisation(hosted, person, test=test, to="rita@example.org" if test else None)
        item = BatchItem(person.email, hosted.personalise(person), found)
        content = found.content()
        built = email_payload(
            content,
            issue=hosted.issue,
            idempotency=idempotency_key(hosted.fingerprint, content.message_id),
            sandbox=sandbox,
        )
        assert json.loads(transport.encoded_payload(item)) == built
