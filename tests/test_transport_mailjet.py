"""Mailjet transport against a loopback server that plays Mailjet's Send API v3.1.

Mailjet publishes no machine-readable spec; the fake validates every body against the JSON
Schema written from Mailjet's Send API documentation (tests/specs/mailjet/), enforces the rules
the schema cannot express (forbidden headers, one recipient per message, inline images for every
`cid:`), and answers per message as Mailjet does: HTTP 400 with `Messages[i].Status` "error" for
the refused ones and "success" with a MessageID for the rest. What every provider shares (full
send, crash and resume, whole-request failures) is tested once in
tests/test_transport_contract.py, with `MailjetFake` from here.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from newsletter.config import Settings, TransportSettings
from newsletter.delivery.ledger import Ledger, State
from newsletter.delivery.message import Mailbox, MessageContent, MessageTemplate, Personalisation
from newsletter.delivery.ratelimit import Backoff
from newsletter.delivery.sender import send_issue, send_test
from newsletter.delivery.transports import describe_transport, mailjet, make_transport
from newsletter.delivery.transports.base import BatchItem
from newsletter.delivery.transports.mailjet import (
    MailjetTransport,
    message_outcome,
    message_payload,
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
from tests.sendkit import SECRET, ListAudience, Person, example_template, people, token_for

KEY, SECRET_KEY = "mj-public", "mj-private"
AUTH = "Basic " + base64.b64encode(f"{KEY}:{SECRET_KEY}".encode()).decode()
SEND_SCHEMA = spec_validator("mailjet/send-v3.1.schema.json")
FAST = Backoff(base=0.01, cap=0.02)
# Headers that have a message property instead (send-0011 when set in Headers).
FORBIDDEN = {"from", "sender", "to", "cc", "bcc", "subject", "reply-to", "x-mj-customid",
             "x-mj-eventpayload", "x-mailjet-campaign", "x-mailjet-trackopen",
             "x-mailjet-trackclick", "x-mj-templateid", "x-mj-templatelanguage", "x-mj-vars",
             "x-mailjet-prio", "x-mailjet-deduplicatecampaign"}  # fmt: skip


class MailjetFake:
    """Plays `POST /v3.1/send` and `GET /v3/REST/user`."""

    def __init__(self, server: ProviderFake) -> None:
        self.server = server
        self.invalid: set[str] = set()
        self.sender_allowed = True
        self.sandboxed: list[str] = []
        self.received: dict[str, dict[str, Any]] = {}
        self.sizes: list[int] = []
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        server.handler = self.handle

    def handle(self, request: FakeRequest) -> FakeResponse:
        fake = self.server
        if request.header("authorization") != AUTH:
            return FakeResponse.json(
                {"ErrorIdentifier": "e1", "ErrorCode": "mj-0015", "StatusCode": 401,
                 "ErrorMessage": "API key authentication/authorization failure."}, 401,
            )  # fmt: skip
        if (request.method, request.path) == ("GET", "/v3/REST/user"):
            return FakeResponse.json({"Count": 1, "Data": [{"ID": 1}], "Total": 1})
        if (request.method, request.path) != ("POST", "/v3.1/send"):
            return fake.problem(f"unexpected {request.method} {request.path}")
        with self.lock:
            self.sizes.append(len(request.body))
        body = request.json()
        problems = SEND_SCHEMA(body)
        if problems:
            return fake.problem(f"schema: {problems[:3]}")
        if "Globals" in body:
            return fake.problem("Globals used")
        sandbox = body.get("SandboxMode") is True
        results: list[dict[str, Any]] = []
        for message in body["Messages"]:
            result = self._message(message, sandbox)
            if result is None:
                return fake.problem(f"bad message {json.dumps(message)[:200]}")
            results.append(result)
        failed = any(result["Status"] == "error" for result in results)
        return FakeResponse.json({"Messages": results}, 400 if failed else 200)

    def _message(self, message: dict[str, Any], sandbox: bool) -> dict[str, Any] | None:
        if len(message["To"]) != 1 or message.get("TemplateLanguage"):
            return None
        if message.get("TrackOpens") != "disabled" or message.get("TrackClicks") != "disabled":
            return None
        for key in ("From", "Subject", "HTMLPart", "TextPart"):
            if not message.get(key):
                return None
        headers = message.get("Headers", {})
        if "List-Unsubscribe" not in headers:
            return None
        forbidden = [name for name in headers if name.lower() in FORBIDDEN]
        if forbidden:
            return _error("send-0011", 400, f"{forbidden[0]} is forbidden in Headers",
                          [f'Headers["{forbidden[0]}"]'])  # fmt: skip
        inline = {a["ContentID"] for a in message.get("InlinedAttachments", [])}
        if set(re.findall(r'src="cid:([^"]+)"', message["HTMLPart"])) - inline:
            return None
        if not self.sender_allowed:
            return _error("send-0008", 403, f'"{message["From"]["Email"]}" is not an '
                          "authorized sender", ["From"])  # fmt: skip
        address = message["To"][0]["Email"].lower()
        if address in self.invalid:
            return _error("mj-0013", 400, f'"{address}" is an invalid email address.',
                          ["To[0].Email"])  # fmt: skip
        with self.lock:
            message_id = 288230376151700000 + next(self.ids)
            self.received[address] = message
        if sandbox:
            self.sandboxed.append(address)
        else:
            self.server.accept(address, str(message_id))
        return {
            "Status": "success",
            "CustomID": "",
            "To": [{"Email": message["To"][0]["Email"], "MessageUUID": f"uuid-{message_id}",
                    "MessageID": message_id,
                    "MessageHref": f"https://api.mailjet.com/v3/REST/message/{message_id}"}],
            "Cc": [],
            "Bcc": [],
        }  # fmt: skip


def _error(code: str, status: int, text: str, related: list[str]) -> dict[str, Any]:
    return {
        "Status": "error",
        "Errors": [{"ErrorIdentifier": "f987008f", "ErrorCode": code, "StatusCode": status,
                    "ErrorMessage": text, "ErrorRelatedTo": related}],
    }  # fmt: skip


@pytest.fixture
def server() -> Iterator[ProviderFake]:
    with ProviderFake(hang_seconds=3) as running:
        yield running


@pytest.fixture
def fake(server: ProviderFake) -> MailjetFake:
    return MailjetFake(server)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    """Rendered once for the module (templates are immutable): rendering takes ~0.5 s."""
    project = copy_example_project(tmp_path_factory.mktemp("example") / "project")
    found = example_template(project)
    assert found.images  # the example issue embeds its images
    return found


def settings_for(server: ProviderFake, **changes: Any) -> TransportSettings:
    values: dict[str, Any] = {"kind": "mailjet", "api_url": server.url, "timeout": 0.4}
    values.update(changes)
    return TransportSettings(**values)


def transport_for(server: ProviderFake, **changes: Any) -> MailjetTransport:
    return MailjetTransport(settings_for(server, **changes), api_key=KEY, secret_key=SECRET_KEY)


def items_for(template: MessageTemplate, persons: list[Person]) -> list[BatchItem]:
    return [
        BatchItem(p.email, template.personalise(p), Personalisation(template, p)) for p in persons
    ]


def test_messages_carry_each_recipients_own_content(
    server: ProviderFake, fake: MailjetFake, template: MessageTemplate
) -> None:
    persons = [
        Person("ann@example.org", "Ann <Admin>, Esq."),
        Person("bob@example.org", "Bob"),
        Person("cy@example.org"),
    ]
    transport = transport_for(server)
    results = transport.send_batch(items_for(template, persons))
    transport.close()
    assert [r.error for r in results] == [None, None, None]
    assert [r.receipt.reply for r in results if r.receipt] == [
        "288230376151700001", "288230376151700002", "288230376151700003"
    ]  # fmt: skip
    (request,) = server.posts("/v3.1/send")
    body = request.json()
    assert body["SandboxMode"] is False
    first = body["Messages"][0]
    assert first["To"] == [{"Email": "ann@example.org", "Name": "Ann <Admin>, Esq."}]
    assert body["Messages"][2]["To"] == [{"Email": "cy@example.org"}]
    assert first["From"] == {"Email": "news@riverside-garden.example.org",
                             "Name": "Riverside Roots"}  # fmt: skip
    assert first["ReplyTo"] == {"Email": "team@riverside-garden.example.org",
                                "Name": "Garden team"}  # fmt: skip
    assert first["CustomCampaign"] == "2026-11"
    assert "Dear Ann," in first["HTMLPart"] and "Dear Ann," in first["TextPart"]
    assert "Dear gardener," in body["Messages"][2]["HTMLPart"]
    cids = {a["ContentID"] for a in first["InlinedAttachments"]}
    assert cids == {image.cid for image in template.images}
    for person, message in zip(persons, body["Messages"], strict=True):
        headers = message["Headers"]
        token = token_for(SECRET, person.email)
        assert token in headers["List-Unsubscribe"] and "mailto:" in headers["List-Unsubscribe"]
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "List-Id" in headers
        assert token in message["HTMLPart"] and token in message["TextPart"]
    assert server.problems == []


def test_a_refused_address_fails_alone(
    server: ProviderFake, fake: MailjetFake, template: MessageTemplate
) -> None:
    fake.invalid.add("bob@example.org")
    persons = [Person("ann@example.org"), Person("bob@example.org"), Person("cy@example.org")]
    results = transport_for(server).send_batch(items_for(template, persons))
    assert results[0].receipt is not None and results[2].receipt is not None
    assert results[2].receipt.reply == "288230376151700002"
    assert isinstance(results[1].error, RecipientRejectedError)
    assert "bob@example.org" in str(results[1].error) and "mj-0013" in str(results[1].error)
    assert dict(server.accepted) == {"ann@example.org": 1, "cy@example.org": 1}


def test_sender_not_allowed_stops_the_run(
    server: ProviderFake, fake: MailjetFake, template: MessageTemplate, tmp_path: Path
) -> None:
    fake.sender_allowed = False
    results = transport_for(server).send_batch(items_for(template, [Person("ann@example.org")]))
    assert isinstance(results[0].error, TransportUnavailableError)
    assert "send-0008" in str(results[0].error)
    with Ledger(tmp_path / "ledger.db") as ledger:
        report = send_issue(
            template, ListAudience(people(120)), transport=transport_for(server), ledger=ledger,
            backoff=FAST,
        )  # fmt: skip
    assert report.paused_reason is not None and "send-0008" in report.paused_reason
    assert report.counts[State.SENT] == 0 and report.counts[State.FAILED] == 0


@pytest.mark.parametrize(
    ("errors", "expected", "text"),
    [
        ([{"ErrorCode": "mj-0013", "StatusCode": 400, "ErrorMessage": "bad address",
           "ErrorRelatedTo": ["To"]}], RecipientRejectedError, "mj-0013: bad address"),
        ([{"ErrorCode": "send-0011", "StatusCode": 400, "ErrorMessage": "forbidden header",
           "ErrorRelatedTo": ['Headers["List-Id"]']}], PermanentDeliveryError, "send-0011"),
        ([{"ErrorCode": "send-0008", "StatusCode": 403, "ErrorMessage": "not authorized",
           "ErrorRelatedTo": ["From"]}], TransportUnavailableError, "not authorized"),
        ([{"ErrorCode": "mj-0016", "StatusCode": 429, "ErrorMessage": "slow down"}],
         TransientDeliveryError, "slow down"),
        ([{"ErrorCode": "mj-0000", "StatusCode": 500, "ErrorMessage": "oops"}],
         TransientDeliveryError, "server error"),
    ],
    ids=["address", "content", "sender", "rate", "server"],
)  # fmt: skip
def test_message_errors_are_classified(
    errors: list[dict[str, Any]], expected: type[Exception], text: str
) -> None:
    outcome = message_outcome({"Status": "error", "Errors": errors}, "ann@example.org")
    assert type(outcome) is expected and text in str(outcome)
    assert message_outcome({"Status": "success", "To": [{"Email": "ANN@example.org",
                                                         "MessageID": 7}]},
                           "ann@example.org") == "7"  # fmt: skip
    missing = message_outcome({"Status": "success", "To": []}, "ann@example.org")
    assert isinstance(missing, UncertainDeliveryError)
    assert isinstance(message_outcome("?", "ann@example.org"), UncertainDeliveryError)


def test_what_mailjet_cannot_carry_is_an_error() -> None:
    content = MessageContent(
        sender=Mailbox("news@example.org", "News"),
        to=Mailbox("ann@example.org"),
        reply_to=None,
        subject="S" * 256,
        html="<p>Hi</p>",
        text="Hi",
        headers=(("List-Unsubscribe", "<https://example.org/u?t=1>"),),
        message_id="<1@example.org>",
    )
    with pytest.raises(PermanentDeliveryError, match="at most 255"):
        message_payload(content, issue="x")
    fine = message_payload(replace(content, subject="Hello"), issue="x")
    assert "ReplyTo" not in fine and "InlinedAttachments" not in fine
    assert SEND_SCHEMA({"Messages": [fine]}) == []


# The failures every provider shares (429, 5xx, 401/403, malformed or empty answers, no answer)
# are in tests/test_transport_contract.py; these are Mailjet's own.
@pytest.mark.parametrize(
    ("fault", "error", "text", "retry_after"),
    [
        (FakeResponse.json({"ErrorIdentifier": "x", "ErrorCode": "mj-0002", "StatusCode": 400,
                            "ErrorMessage": "Malformed JSON, please review the syntax"}, 400),
         PermanentDeliveryError, "Malformed JSON, please review", None),
        (FakeResponse.json({"Messages": [{"Status": "success"}]}), UncertainDeliveryError,
         "expected 2 results", None),
    ],
    ids=["400-global", "short"],
)  # fmt: skip
def test_whole_request_failures_are_typed(
    server: ProviderFake,
    fake: MailjetFake,
    template: MessageTemplate,
    fault: FakeResponse,
    error: type[Exception],
    text: str,
    retry_after: float | None,
) -> None:
    server.fail_next(fault)
    with pytest.raises(error) as caught:
        transport_for(server).send_batch(
            items_for(template, [Person("a@example.org"), Person("b@example.org")])
        )
    assert text in str(caught.value)
    if isinstance(caught.value, TransientDeliveryError):
        assert caught.value.retry_after == retry_after
    assert not server.accepted


def test_large_batches_are_split_by_size(
    server: ProviderFake,
    fake: MailjetFake,
    template: MessageTemplate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mailjet, "MAX_REQUEST_BYTES", 1_000_000)
    persons = [Person(f"p{n:02d}@example.org") for n in range(12)]
    results = transport_for(server).send_batch(items_for(template, persons))
    assert all(r.receipt is not None for r in results)
    assert len(server.posts()) > 1 and max(fake.sizes) < 1_000_000
    sent = [m["To"][0]["Email"] for r in server.posts() for m in r.json()["Messages"]]
    assert sent == [p.email for p in persons]


def test_sandbox(
    server: ProviderFake, fake: MailjetFake, template: MessageTemplate, settings: Settings
) -> None:
    results = transport_for(server, sandbox=True).send_batch(
        items_for(template, [Person("ann@example.org")])
    )
    assert results[0].receipt is not None
    assert server.posts()[0].json()["SandboxMode"] is True
    assert fake.sandboxed == ["ann@example.org"] and not server.accepted
    configured = replace(settings, transport=settings_for(server, sandbox=True))
    assert "sandbox" in describe_transport(configured)


def test_check_and_configuration(
    server: ProviderFake, fake: MailjetFake, settings: Settings
) -> None:
    transport_for(server).check()
    bad = MailjetTransport(settings_for(server), api_key=KEY, secret_key="wrong-secret")
    with pytest.raises(TransportUnavailableError, match="HTTP 401") as caught:
        bad.check()
    assert "MAILJET_API_KEY" in (caught.value.hint or "")
    assert "MAILJET_SECRET_KEY" in (caught.value.hint or "")
    assert "wrong-secret" not in str(caught.value) and "wrong-secret" not in repr(bad)
    configured = replace(settings, transport=settings_for(server))
    with pytest.raises(ConfigError, match="MAILJET_API_KEY"):
        make_transport(configured, environ={"MAILJET_SECRET_KEY": SECRET_KEY})
    with pytest.raises(ConfigError, match="MAILJET_SECRET_KEY"):
        make_transport(configured, environ={"MAILJET_API_KEY": KEY})
    made = make_transport(
        configured, environ={"MAILJET_API_KEY": KEY, "MAILJET_SECRET_KEY": SECRET_KEY}
    )
    assert isinstance(made, MailjetTransport) and made.max_batch == 50
    assert made.auth_headers() == {"Authorization": AUTH}
    made.check()
    default = replace(settings, transport=TransportSettings(kind="mailjet"))
    assert describe_transport(default) == "mailjet https://api.mailjet.com"


def test_test_send(server: ProviderFake, fake: MailjetFake, template: MessageTemplate) -> None:
    results = send_test(
        template, Person("sam@example.org", "Sam"), ["Rita <rita@example.org>"],
        transport_for(server),
    )  # fmt: skip
    assert [r.error for r in results] == [None]
    (message,) = server.posts()[-1].json()["Messages"]
    assert message["To"] == [{"Email": "rita@example.org", "Name": "Rita"}]
    assert message["Subject"].startswith("[TEST] ")
    assert token_for(SECRET, "sam@example.org") not in json.dumps(message)
