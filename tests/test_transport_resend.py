"""Resend transport against a loopback server that plays Resend and checks every request.

The fake validates each body against Resend's own OpenAPI 3.1 schema (plus the documented
batch rules the schema lacks: at most 100 emails, no attachments), answers batches in
permissive mode as Resend does, and keeps Idempotency-Keys so a repeated request is answered
from its record instead of being sent again. What every provider shares (full send, crash and
resume, whole-request failures) is tested once in tests/test_transport_contract.py, with
`ResendFake` and `publish_images` from here.
"""

from __future__ import annotations

import email.header
import email.utils
import hashlib
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from newsletter.audience import SubscriberStore
from newsletter.config import Settings, TransportSettings
from newsletter.delivery.message import MessageTemplate, Personalisation
from newsletter.delivery.sender import send_test
from newsletter.delivery.suppressions import SuppressionKind, sync_suppressions
from newsletter.delivery.transports import describe_transport, make_transport
from newsletter.delivery.transports.base import BatchItem
from newsletter.delivery.transports.resend import (
    ResendSuppressions,
    ResendTransport,
    batch_idempotency_key,
    batch_outcomes,
    sandbox_address,
)
from newsletter.errors import (
    ConfigError,
    PermanentDeliveryError,
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
from tests.sendkit import SECRET, Person, example_template, token_for

KEY = "re_test_key"
SEND_SCHEMA = spec_validator(
    "resend/resend.yaml",
    "/paths/~1emails/post/requestBody/content/application~1json/schema",
    "oas31",
)
BATCH_SCHEMA = spec_validator(
    "resend/resend.yaml",
    "/paths/~1emails~1batch/post/requestBody/content/application~1json/schema",
    "oas31",
    # Resend's batch limit is documented, not in the schema.
    patch=lambda schema: {"allOf": [schema, {"maxItems": 100}]},
)
# The fake's canned answers are checked against Resend's response schema too.
SUPPRESSIONS_ANSWER = spec_validator(
    "resend/resend.yaml", "/components/schemas/ListSuppressionsResponseSuccess", "oas31"
)
BASE_URL = "https://riverside-garden.example.org/newsletter/"


class ResendFake:
    """Plays Resend: `/emails`, `/emails/batch` (permissive), `/domains`, idempotency keys."""

    def __init__(self, server: ProviderFake, *, restricted: bool = True) -> None:
        self.server = server
        self.restricted = restricted
        self.invalid: set[str] = set()
        self.keys: dict[str, tuple[str, FakeResponse]] = {}  # key → (body digest, answer)
        self.replayed = 0
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        self.received: dict[str, dict[str, Any]] = {}
        self.suppressions: list[dict[str, Any]] = []
        server.handler = self.handle

    def handle(self, request: FakeRequest) -> FakeResponse:
        fake = self.server
        auth = request.header("authorization")
        if auth is None:
            return _error(401, "missing_api_key", "Missing API key in the authorization header.")
        if auth != f"Bearer {KEY}":
            return _error(403, "invalid_api_key", "API key is invalid")
        if (request.method, request.path) == ("GET", "/domains"):
            if self.restricted:
                return _error(401, "restricted_api_key", "This API key is restricted to only "
                              "send emails")  # fmt: skip
            return FakeResponse.json({"object": "list", "data": []})
        if (request.method, request.path) == ("GET", "/suppressions"):
            return self._suppressions(request)
        if request.method != "POST" or request.path not in ("/emails", "/emails/batch"):
            return fake.problem(f"unexpected {request.method} {request.path}")
        if not (request.header("content-type") or "").startswith("application/json"):
            return fake.problem("content type is not JSON")
        key = request.header("idempotency-key")
        if not key or len(key) > 256:
            return fake.problem(f"bad Idempotency-Key {key!r}")
        digest = hashlib.sha256(request.body).hexdigest()
        with self.lock:
            seen = self.keys.get(key)
        if seen is not None:
            if seen[0] != digest:
                return _error(
                    409,
                    "invalid_idempotent_request",
                    "Same idempotency key used with a different request payload.",
                )
            with self.lock:
                self.replayed += 1
            return seen[1]
        answer = self._send(request)
        if answer.status == 200:
            with self.lock:
                self.keys[key] = (digest, answer)
        return answer

    def _suppressions(self, request: FakeRequest) -> FakeResponse:
        if self.restricted:
            return _error(401, "restricted_api_key", "This API key is restricted to only "
                          "send emails")  # fmt: skip
        limit = int(request.query.get("limit", ["20"])[0])
        if not 1 <= limit <= 100:
            return self.server.problem(f"limit {limit}")
        start = 0
        if "after" in request.query:
            ids = [entry["id"] for entry in self.suppressions]
            start = ids.index(request.query["after"][0]) + 1
        page = self.suppressions[start : start + limit]
        answer = {"object": "list", "has_more": start + limit < len(self.suppressions),
                  "data": page}  # fmt: skip
        problems = SUPPRESSIONS_ANSWER(answer)
        if problems:
            return self.server.problem(f"answer schema: {problems[:3]}")
        return FakeResponse.json(answer)

    def _send(self, request: FakeRequest) -> FakeResponse:
        fake = self.server
        body = request.json()
        batch = request.path == "/emails/batch"
        problems = BATCH_SCHEMA(body) if batch else SEND_SCHEMA(body)
        if problems:
            return fake.problem(f"schema: {problems[:3]}")
        emails = body if batch else [body]
        if batch:
            if request.header("x-batch-validation") != "permissive":
                return fake.problem("batch without x-batch-validation: permissive")
            if any("attachments" in e or "scheduled_at" in e for e in emails):
                return fake.problem("attachments or scheduled_at in a batch")
        data: list[dict[str, str]] = []
        errors: list[dict[str, Any]] = []
        for index, message in enumerate(emails):
            if len(message["to"]) != 1:
                return fake.problem("an email for several people")
            if '"' in message["to"][0] or '"' in " ".join(message.get("reply_to", [])):
                return fake.problem("a quoted display name (Resend refuses those)")
            headers = message.get("headers", {})
            if "List-Unsubscribe" not in headers:
                return fake.problem("no per-recipient List-Unsubscribe")
            name, address = email.utils.parseaddr(message["to"][0])
            address = address.lower()
            if address in self.invalid:
                errors.append({"index": index, "message": "Invalid `to` field."})
                continue
            cids = {a.get("content_id") for a in message.get("attachments", [])}
            for cid in _cids(message["html"]):
                if cid not in cids:
                    return fake.problem(f"cid:{cid} without an inline attachment")
            with self.lock:
                email_id = f"re-{next(self.ids):06d}"
                self.received[address] = {**message, "name": _decoded(name)}
            fake.accept(address, email_id)
            data.append({"id": email_id})
        if not batch:
            if errors:
                return _error(422, "validation_error", errors[0]["message"])
            return FakeResponse.json(data[0])
        answer: dict[str, Any] = {"data": data}
        if errors:
            answer["errors"] = errors
        return FakeResponse.json(answer)


def _error(status: int, name: str, message: str) -> FakeResponse:
    return FakeResponse.json({"statusCode": status, "name": name, "message": message}, status)


def _cids(html: str) -> set[str]:
    found = set()
    for part in html.split('src="cid:')[1:]:
        found.add(part.split('"', 1)[0])
    return found


def _decoded(name: str) -> str:
    return str(email.header.make_header(email.header.decode_header(name))) if name else ""


@pytest.fixture
def server() -> Iterator[ProviderFake]:
    with ProviderFake(hang_seconds=3) as running:
        yield running


@pytest.fixture
def resend(server: ProviderFake) -> ResendFake:
    return ResendFake(server)


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


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    project = copy_example_project(tmp_path_factory.mktemp("embedded") / "project")
    template = example_template(project)
    assert template.images
    return template


def settings_for(server: ProviderFake, **changes: Any) -> TransportSettings:
    values: dict[str, Any] = {"kind": "resend", "api_url": server.url, "timeout": 0.4}
    values.update(changes)
    return TransportSettings(**values)


def transport_for(server: ProviderFake, **changes: Any) -> ResendTransport:
    return ResendTransport(settings_for(server, **changes), api_key=KEY)


def items_for(template: MessageTemplate, persons: list[Person]) -> list[BatchItem]:
    return [
        BatchItem(p.email, template.personalise(p), Personalisation(template, p)) for p in persons
    ]


def test_batch_carries_each_recipients_own_email(
    server: ProviderFake, resend: ResendFake, hosted: MessageTemplate
) -> None:
    persons = [
        Person("ann@example.org", "Ann <Admin>, Esq."),
        Person("bob@example.org", "Bøb"),
        Person("cy@example.org"),
    ]
    transport = transport_for(server)
    results = transport.send_batch(items_for(hosted, persons))
    transport.close()
    assert [r.error for r in results] == [None, None, None]
    assert [r.receipt.reply for r in results if r.receipt] == ["re-000001", "re-000002",
                                                                 "re-000003"]  # fmt: skip
    (request,) = server.posts("/emails/batch")
    key = request.header("idempotency-key")
    assert key == batch_idempotency_key(
        hosted.fingerprint, [hosted.envelope(p).message_id for p in persons]
    )
    sent = request.json()
    assert [len(x["to"]) for x in sent] == [1, 1, 1]
    # A name that needs quotes goes as an encoded word; it still decodes to the name.
    assert resend.received["ann@example.org"]["name"] == "Ann <Admin>, Esq."
    assert resend.received["bob@example.org"]["name"] == "Bøb"
    assert sent[2]["to"] == ["cy@example.org"]
    first = sent[0]
    assert first["from"] == "Riverside Roots <news@riverside-garden.example.org>"
    assert first["reply_to"] == ["Garden team <team@riverside-garden.example.org>"]
    assert first["tags"] == [{"name": "issue", "value": "2026-11"}]
    assert "Dear Ann," in first["html"] and "Dear Ann," in first["text"]
    assert "Dear gardener," in sent[2]["html"]
    assert BASE_URL in first["html"] and "cid:" not in first["html"]
    for person, message in zip(persons, sent, strict=True):
        headers = message["headers"]
        token = token_for(SECRET, person.email)
        assert token in headers["List-Unsubscribe"] and "mailto:" in headers["List-Unsubscribe"]
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert headers["List-Id"].endswith("<riverside-roots.riverside-garden.example.org>")
        assert token in message["html"] and token in message["text"]
    assert server.problems == []


def test_embedded_images_go_one_email_a_request_with_inline_attachments(
    server: ProviderFake, resend: ResendFake, embedded: MessageTemplate
) -> None:
    persons = [Person("ann@example.org", "Ann"), Person("bob@example.org", "Bob")]
    results = transport_for(server).send_batch(items_for(embedded, persons))
    assert [r.receipt.reply for r in results if r.receipt] == ["re-000001", "re-000002"]
    assert server.posts("/emails/batch") == []
    singles = server.posts("/emails")
    assert len(singles) == 2
    for person, request in zip(persons, singles, strict=True):
        body = request.json()
        assert body["to"] == [f"{person.name} <{person.email}>"]
        inline = {a["content_id"]: a for a in body["attachments"]}
        assert set(inline) == {image.cid for image in embedded.images}
        assert all(a["content"] and a["content_type"].startswith("image/") for a in inline.values())
        assert request.header("idempotency-key") == batch_idempotency_key(
            embedded.fingerprint, [embedded.envelope(person).message_id]
        )
    assert server.problems == []


def test_refused_address_fails_alone_and_the_ids_stay_in_order(
    server: ProviderFake, resend: ResendFake, hosted: MessageTemplate
) -> None:
    resend.invalid.add("bob@example.org")
    persons = [Person("ann@example.org"), Person("bob@example.org"), Person("cy@example.org")]
    results = transport_for(server).send_batch(items_for(hosted, persons))
    assert results[0].receipt is not None and results[0].receipt.reply == "re-000001"
    assert results[2].receipt is not None and results[2].receipt.reply == "re-000002"
    assert isinstance(results[1].error, RecipientRejectedError)
    assert "bob@example.org" in str(results[1].error)
    assert "Invalid `to` field" in str(results[1].error)
    assert dict(server.accepted) == {"ann@example.org": 1, "cy@example.org": 1}


def test_internationalised_address_is_refused_before_sending(
    server: ProviderFake, resend: ResendFake, hosted: MessageTemplate
) -> None:
    persons = [Person("ann@example.org"), Person("jürgen@example.org")]
    results = transport_for(server).send_batch(items_for(hosted, persons))
    assert results[0].receipt is not None
    assert isinstance(results[1].error, RecipientRejectedError)
    assert "internationalised" in str(results[1].error)
    (request,) = server.posts()
    assert len(request.json()) == 1


# The failures every provider shares (429, 5xx, 401/403, malformed or empty answers, no answer)
# are in tests/test_transport_contract.py; these are Resend's own.
@pytest.mark.parametrize(
    ("fault", "error", "text", "retry_after"),
    [
        (FakeResponse.json({"name": "rate_limit_exceeded", "message": "slow"}, 429,
                           {"retry-after": "2", "ratelimit-reset": "9"}),
         TransientDeliveryError, "retry after 2s", 2.0),
        (FakeResponse.json({"name": "rate_limit_exceeded", "message": "slow"}, 429,
                           {"ratelimit-limit": "5", "ratelimit-remaining": "0",
                            "ratelimit-reset": "1"}),
         TransientDeliveryError, "retry after 1s", 1.0),
        (_error(429, "daily_quota_exceeded", "You have reached your daily email quota"),
         TransportUnavailableError, "quota used up", None),
        (_error(403, "validation_error", "The example.org domain is not verified."),
         TransportUnavailableError, "not verified", None),
        (_error(422, "validation_error", "Invalid `from` field."), PermanentDeliveryError,
         "Invalid `from` field", None),
        (_error(409, "invalid_idempotent_request", "Same idempotency key used with a "
                "different request payload."), UncertainDeliveryError, "may have been sent",
         None),
        (_error(409, "concurrent_idempotent_requests", "still in progress"),
         TransientDeliveryError, "still being processed", 1.0),
        (FakeResponse.json({"data": [{"id": "x"}]}), UncertainDeliveryError,
         "1 ids and 0 errors for 2 emails", None),
        (FakeResponse.json({"data": [{"id": "x"}], "errors": [{"index": 7, "message": "?"}]}),
         UncertainDeliveryError, "unknown email", None),
    ],
    ids=["429-retry-after-first", "429-ratelimit-reset", "429-daily-quota", "403-domain",
         "422", "409-idempotency", "409-concurrent", "short", "bad-index"],
)  # fmt: skip
def test_whole_request_failures_are_typed(
    server: ProviderFake,
    resend: ResendFake,
    hosted: MessageTemplate,
    fault: FakeResponse,
    error: type[Exception],
    text: str,
    retry_after: float | None,
) -> None:
    server.fail_next(fault)
    transport = transport_for(server)
    with pytest.raises(error) as caught:
        transport.send_batch(items_for(hosted, [Person("a@example.org"), Person("b@x.org")]))
    assert isinstance(caught.value, error)
    assert text in str(caught.value)
    if isinstance(caught.value, TransientDeliveryError):
        assert caught.value.retry_after == retry_after
    assert not server.accepted


def test_a_retried_request_is_not_sent_twice(
    server: ProviderFake, resend: ResendFake, hosted: MessageTemplate
) -> None:
    """The answer is lost after Resend queued the emails; the retry carries the same key."""
    persons = [Person("ann@example.org"), Person("bob@example.org")]
    transport = transport_for(server)
    first = transport.send_batch(items_for(hosted, persons))
    # Same batch again (as after a lost answer): Resend answers from its record.
    again = transport.send_batch(items_for(hosted, persons))
    assert [r.receipt for r in first] == [r.receipt for r in again]
    assert resend.replayed == 1
    assert dict(server.accepted) == {"ann@example.org": 1, "bob@example.org": 1}
    keys = {r.header("idempotency-key") for r in server.posts()}
    assert len(keys) == 1
    # Another batch gets another key.
    transport.send_batch(items_for(hosted, [Person("cy@example.org")]))
    assert len({r.header("idempotency-key") for r in server.posts()}) == 2


def test_batch_outcomes_map_ids_around_refusals() -> None:
    answer = {"data": [{"id": "a"}, {"id": "c"}], "errors": [{"index": 1, "message": "bad"}]}
    outcomes = batch_outcomes(answer, 3)
    assert outcomes == ["a", "bad", "c"]
    assert [type(x).__name__ for x in outcomes] == ["str", "Refusal", "str"]
    with pytest.raises(UncertainDeliveryError):
        batch_outcomes({"data": [{"id": "a"}, {"id": ""}]}, 2)
    with pytest.raises(UncertainDeliveryError):
        batch_outcomes([{"id": "a"}], 1)


def test_sandbox_sends_every_email_to_resends_test_address(
    server: ProviderFake, resend: ResendFake, hosted: MessageTemplate, settings: Settings
) -> None:
    persons = [Person("ann@example.org", "Ann"), Person("jürgen@example.org", "Jürgen")]
    results = transport_for(server, sandbox=True).send_batch(items_for(hosted, persons))
    assert all(r.receipt is not None for r in results)
    (request,) = server.posts()
    to = [message["to"][0] for message in request.json()]
    assert to == [f"Ann <{sandbox_address('ann@example.org')}>",
                  f"Jürgen <{sandbox_address('jürgen@example.org')}>"]  # fmt: skip
    assert all(address.startswith("delivered+") for address in server.accepted)
    assert "ann@example.org" not in server.accepted
    # The headers are still the subscriber's own: a dry run of the real thing.
    assert token_for(SECRET, "ann@example.org") in request.json()[0]["headers"]["List-Unsubscribe"]
    configured = replace(settings, transport=settings_for(server, sandbox=True))
    assert "delivered+" in describe_transport(configured)


def test_check(server: ProviderFake, resend: ResendFake) -> None:
    transport_for(server).check()  # a sending-only key: 401 restricted_api_key is fine
    resend.restricted = False
    transport_for(server).check()
    bad = ResendTransport(settings_for(server), api_key="re_wrong")
    with pytest.raises(TransportUnavailableError, match="HTTP 403") as caught:
        bad.check()
    assert "RESEND_API_KEY" in (caught.value.hint or "")
    assert "re_wrong" not in str(caught.value) and "re_wrong" not in repr(bad)


def test_configuration(settings: Settings, server: ProviderFake) -> None:
    configured = replace(settings, transport=settings_for(server))
    with pytest.raises(ConfigError) as caught:
        make_transport(configured, environ={})
    assert "RESEND_API_KEY" in str(caught.value) and "transport.api_key_env" in str(caught.value)
    made = make_transport(configured, environ={"RESEND_API_KEY": KEY})
    assert isinstance(made, ResendTransport) and made.max_batch == 100
    assert made.auth_headers() == {"Authorization": f"Bearer {KEY}"}
    own = replace(settings, transport=settings_for(server, api_key_env="MY_RESEND"))
    assert isinstance(make_transport(own, environ={"MY_RESEND": KEY}), ResendTransport)
    assert describe_transport(configured) == f"resend {server.url}"
    default = replace(settings, transport=TransportSettings(kind="resend"))
    assert describe_transport(default) == "resend https://api.resend.com"


def test_test_send(server: ProviderFake, resend: ResendFake, hosted: MessageTemplate) -> None:
    results = send_test(
        hosted, Person("sam@example.org", "Sam"), ["Rita <rita@example.org>"], transport_for(server)
    )
    assert [r.error for r in results] == [None]
    (message,) = server.posts()[-1].json()
    assert message["to"] == ["Rita <rita@example.org>"]
    assert message["subject"].startswith("[TEST] ")
    assert "Dear Sam," in message["html"]
    assert token_for(SECRET, "sam@example.org") not in json.dumps(message)


def test_suppressions_are_synced_into_the_store(
    server: ProviderFake, resend: ResendFake, tmp_path: Path
) -> None:
    origins = ["bounce", "complaint", "manual"]
    resend.suppressions = [
        {"id": f"s-{n:03d}", "email": f"P{n}@example.org", "origin": origins[n % 3],
         "source_id": f"em-{n}", "created_at": f"2026-11-{1 + n % 28:02d} 10:00:00.000+00"}
        for n in range(230)
    ]  # fmt: skip
    source = transport_for(server).suppression_source()
    assert isinstance(source, ResendSuppressions)
    with pytest.raises(TransportUnavailableError, match="full-access key"):
        list(source.fetch())
    resend.restricted = False
    found = list(source.fetch())
    assert len(found) == 230 and len(server.requests) == 1 + 3  # pages of 100 by cursor
    assert server.requests[-1].query == {"limit": ["100"], "after": ["s-199"]}
    assert [(s.email, s.kind) for s in found[:3]] == [
        ("P0@example.org", SuppressionKind.BOUNCE),
        ("P1@example.org", SuppressionKind.COMPLAINT),
        ("P2@example.org", SuppressionKind.UNSUBSCRIBE),
    ]
    assert found[0].at == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    recent = list(source.fetch(datetime(2026, 11, 28, tzinfo=UTC)))
    assert {s.email for s in recent} == {f"P{n}@example.org" for n in range(230) if n % 28 == 27}
    with SubscriberStore(tmp_path / "subscribers.db") as store:
        for n in range(4):
            store.add(f"p{n}@example.org")
        store.add("stays@example.org")
        report = sync_suppressions(source, store)
        assert dict(report.changed) == {"bounced": 2, "complained": 1, "unsubscribed": 1}
        assert report.unknown == 226
        stays = store.get("stays@example.org")
        assert stays is not None and stays.status == "subscribed"
        assert store.events("p1@example.org")[-1].source == "provider:resend"
    assert server.problems == []
