"""SendGrid transport against a loopback server that plays SendGrid v3 Mail Send.

The fake validates every request against SendGrid's OpenAPI 3.1 spec, applies the substitutions
as SendGrid does, and keeps what each recipient would receive, so the tests compare it with the
message the template personalises for that recipient. What every provider shares (full send,
crash and resume, whole-request failures) is tested once in tests/test_transport_contract.py,
with `SendGridFake` from here.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from newsletter.config import Settings, TransportSettings
from newsletter.delivery.message import MessageTemplate, Personalisation
from newsletter.delivery.transports import make_transport
from newsletter.delivery.transports.base import BatchItem
from newsletter.delivery.transports.sendgrid import SendGridTransport
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

KEY = "SG.test-key"
SEND_SCHEMA = spec_validator(
    "sendgrid/tsg_mail_v3.json",
    "/components/requestBodies/PostMailSend/content/application~1json/schema",
    "oas31",
)


class SendGridFake:
    """Plays SendGrid: checks each request, renders each personalization, answers 202."""

    def __init__(self, server: ProviderFake) -> None:
        self.server = server
        self.scopes = ["mail.send", "suppression.read"]
        self.invalid: set[str] = set()
        self.keep = True
        self.received: dict[str, dict[str, str]] = {}  # address → what it would receive
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        server.handler = self.handle

    def handle(self, request: FakeRequest) -> FakeResponse:
        fake = self.server
        if request.header("authorization") != f"Bearer {KEY}":
            return FakeResponse.json(
                {"errors": [{"message": "The provided authorization grant is invalid, "
                             "expired, or revoked", "field": None, "help": None}]}, 401,
            )  # fmt: skip
        if (request.method, request.path) == ("GET", "/v3/scopes"):
            return FakeResponse.json({"scopes": self.scopes})
        if (request.method, request.path) != ("POST", "/v3/mail/send"):
            return fake.problem(f"unexpected {request.method} {request.path}")
        body = request.json()
        problems = SEND_SCHEMA(body)
        if problems:
            return fake.problem(f"schema: {problems[:3]}")
        personalizations = body["personalizations"]
        if not 1 <= len(personalizations) <= 1000:
            return fake.problem(f"{len(personalizations)} personalizations")
        tracking = body.get("tracking_settings", {})
        for setting in ("click_tracking", "open_tracking", "subscription_tracking"):
            if tracking.get(setting, {}).get("enable") is not False:
                return fake.problem(f"{setting} is not off")
        addresses = [p["to"][0]["email"].lower() for p in personalizations]
        if len(set(addresses)) != len(addresses):
            return fake.problem("an address twice in one request")
        errors = [
            {"message": "Does not contain a valid address.",
             "field": f"personalizations.{n}.to.0.email", "help": None}
            for n, address in enumerate(addresses) if address in self.invalid
        ]  # fmt: skip
        if errors:
            return FakeResponse.json({"errors": errors}, 400)
        content = {part["type"]: part["value"] for part in body["content"]}
        sandbox = body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable", False)
        with self.lock:
            message_id = f"sg-{next(self.ids):06d}"
        for personalization, address in zip(personalizations, addresses, strict=True):
            if len(personalization["to"]) != 1:
                return fake.problem("a personalization for several people")
            subs = personalization.get("substitutions", {})
            if sum(len(k) + len(v) for k, v in subs.items()) > 10_000:
                return fake.problem("substitutions over 10,000 bytes")
            headers = personalization.get("headers", {})
            if "List-Unsubscribe" not in headers:
                return fake.problem("no per-recipient List-Unsubscribe")
            if self.keep:
                self.received[address] = {
                    "subject": substitute(body["subject"], subs),
                    "html": substitute(content["text/html"], subs),
                    "text": substitute(content["text/plain"], subs),
                    "name": personalization["to"][0].get("name", ""),
                    **{f"header:{k}": v for k, v in {**body["headers"], **headers}.items()},
                }
            if not sandbox:
                fake.accept(address, message_id)
        if sandbox:
            return FakeResponse(200)
        return FakeResponse(202, b"", {"X-Message-Id": message_id})


def substitute(text: str, substitutions: dict[str, str]) -> str:
    """One pass over `text`, as SendGrid's legacy substitutions do."""
    if not substitutions:
        return text
    pattern = re.compile("|".join(re.escape(key) for key in substitutions))
    return pattern.sub(lambda found: substitutions[found.group(0)], text)


@pytest.fixture
def server() -> Iterator[ProviderFake]:
    with ProviderFake(hang_seconds=3) as running:
        yield running


@pytest.fixture
def sendgrid(server: ProviderFake) -> SendGridFake:
    return SendGridFake(server)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    return example_template(copy_example_project(tmp_path_factory.mktemp("project")))


def transport_for(server: ProviderFake, **changes: Any) -> SendGridTransport:
    values: dict[str, Any] = {"kind": "sendgrid", "api_url": server.url, "timeout": 0.4}
    values.update(changes)
    return SendGridTransport(TransportSettings(**values), api_key=KEY)


def items_for(template: MessageTemplate, persons: list[Person]) -> list[BatchItem]:
    return [
        BatchItem(p.email, template.personalise(p), Personalisation(template, p)) for p in persons
    ]


HOSTILE = [
    Person("ann@example.org", "Ann"),
    Person("eve@example.org", '<script>alert("x")</script> & [[nl:1:h]] -nl0t-'),
    Person("zoe@example.org", "Zoë Ünal\r\nBcc: spy@example.org"),
    Person("cy@example.org"),
]


def test_each_recipient_receives_exactly_their_own_message(
    server: ProviderFake, sendgrid: SendGridFake, template: MessageTemplate
) -> None:
    transport = transport_for(server)
    results = transport.send_batch(items_for(template, HOSTILE))
    assert [r.receipt.reply if r.receipt else r.error for r in results] == ["sg-000001"] * 4
    assert server.problems == []
    for person in HOSTILE:
        expected = template.content(person)
        got = sendgrid.received[person.email]
        assert got["subject"] == expected.subject
        assert got["html"] == expected.html
        assert got["text"] == expected.text
        assert got["name"] == expected.to.name
        assert got["header:List-Unsubscribe"] == expected.header("List-Unsubscribe")
        assert token_for(SECRET, person.email) in got["header:List-Unsubscribe"]
        assert got["header:List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert got["header:List-Id"] == expected.header("List-Id")
    eve = sendgrid.received["eve@example.org"]
    assert "<script>" not in eve["html"] and "&lt;script&gt;" in eve["html"]
    assert "\r" not in sendgrid.received["zoe@example.org"]["name"]
    (request,) = server.posts()
    body = request.json()
    assert len(body["personalizations"]) == 4
    assert {a["content_id"] for a in body["attachments"]} == {i.cid for i in template.images}
    assert body["mail_settings"] == {"sandbox_mode": {"enable": False}}
    assert body["personalizations"][0]["custom_args"]["newsletter_key"] == "ann@example.org"


def test_sandbox_mode(
    server: ProviderFake, sendgrid: SendGridFake, template: MessageTemplate
) -> None:
    results = transport_for(server, sandbox=True).send_batch(items_for(template, HOSTILE[:2]))
    assert [r.receipt.reply for r in results if r.receipt] == [
        "sandbox:accepted",
        "sandbox:accepted",
    ]
    assert server.posts()[0].json()["mail_settings"]["sandbox_mode"] == {"enable": True}
    assert not server.accepted


def test_invalid_recipient_fails_and_the_rest_are_sent_again(
    server: ProviderFake, sendgrid: SendGridFake, template: MessageTemplate
) -> None:
    sendgrid.invalid.add("eve@example.org")
    results = transport_for(server).send_batch(items_for(template, HOSTILE))
    errors = [r.error for r in results]
    assert isinstance(errors[1], RecipientRejectedError)
    assert "eve@example.org" in str(errors[1]) and "valid address" in str(errors[1])
    assert errors[0] is None and errors[2] is None and errors[3] is None
    assert len(server.posts()) == 2
    assert len(server.posts()[1].json()["personalizations"]) == 3
    assert set(server.accepted) == {"ann@example.org", "zoe@example.org", "cy@example.org"}


NOW = 1_800_000_000.0


# The failures every provider shares (429, 5xx, 401/403, no answer, a dropped connection) are in
# tests/test_transport_contract.py; these are SendGrid's own.
@pytest.mark.parametrize(
    ("fault", "error", "text", "retry_after"),
    [
        (FakeResponse.json({"errors": [{"message": "too many requests", "field": None}]}, 429,
                           {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0",
                            "X-RateLimit-Reset": str(int(NOW) + 12)}),
         TransientDeliveryError, "too many requests", 12.0),
        (FakeResponse.json({"errors": [{"message": "The from address does not match a "
                                        "verified Sender Identity.", "field": "from"}]}, 400),
         PermanentDeliveryError, "verified Sender Identity", None),
        (FakeResponse.json({"errors": [{"message": "content too large"}]}, 413),
         PermanentDeliveryError, "content too large", None),
        (FakeResponse(200, b"{not json"), UncertainDeliveryError, "202 was expected", None),
    ],
    ids=["429-reset", "400-from", "413", "200-garbage"],
)  # fmt: skip
def test_whole_request_failures_are_typed(
    server: ProviderFake,
    sendgrid: SendGridFake,
    template: MessageTemplate,
    fault: FakeResponse,
    error: type[Exception],
    text: str,
    retry_after: float | None,
) -> None:
    server.fail_next(fault)
    transport = SendGridTransport(
        TransportSettings(kind="sendgrid", api_url=server.url, timeout=0.4),
        api_key=KEY,
        clock=lambda: NOW,
    )
    with pytest.raises(error) as caught:
        transport.send_batch(items_for(template, HOSTILE[:2]))
    assert text in str(caught.value)
    if isinstance(caught.value, TransientDeliveryError):
        assert caught.value.retry_after == retry_after
    assert not server.accepted


def test_check(server: ProviderFake, sendgrid: SendGridFake) -> None:
    transport_for(server).check()
    sendgrid.scopes = ["suppression.read"]
    with pytest.raises(TransportUnavailableError, match=r"mail\.send"):
        transport_for(server).check()
    wrong = SendGridTransport(TransportSettings(kind="sendgrid", api_url=server.url), api_key="x")
    with pytest.raises(TransportUnavailableError, match="HTTP 401"):
        wrong.check()


def test_missing_key_is_a_config_error(settings: Settings) -> None:
    configured = replace(settings, transport=TransportSettings(kind="sendgrid"))
    with pytest.raises(ConfigError, match="SENDGRID_API_KEY"):
        make_transport(configured, environ={"SENDGRID_API_KEY": "  "})
    made = make_transport(configured, environ={"SENDGRID_API_KEY": KEY})
    assert isinstance(made, SendGridTransport)
    assert made.api_url == "https://api.sendgrid.com" and KEY not in repr(made)


def test_the_counting_fake_reads_the_same_recipients_as_a_full_parse(
    server: ProviderFake, sendgrid: SendGridFake, template: MessageTemplate
) -> None:
    """bench_store's counting fake finds each personalization's address with one scan of the
    body (tests/workerkit.py): the same list, in order, as parsing the whole request."""
    import json

    from tests.workerkit import sendgrid_recipients

    persons = [*HOSTILE, Person("Mixed.Case@Example.org", "M"), Person("zoë@exämple.org", "Z")]
    transport_for(server).send_batch(items_for(template, persons))
    assert server.problems == []
    (request,) = server.posts()
    body = request.json()
    parsed = [p["to"][0]["email"].lower() for p in body["personalizations"]]
    assert len(parsed) == len(persons)
    assert sendgrid_recipients(request.body) == parsed
    # Escaped addresses are decoded; a body in another layout is parsed whole.
    assert sendgrid_recipients(json.dumps(body, separators=(",", ":")).encode()) == parsed
    assert sendgrid_recipients(json.dumps(body, indent=1).encode()) == parsed
