"""Postmark transport against a loopback server that plays Postmark and checks every request.

What every provider shares (full send, crash and resume, whole-request failures) is tested once
in tests/test_transport_contract.py, with `PostmarkFake` from here; this file keeps what only
Postmark does.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from newsletter.config import TransportSettings
from newsletter.delivery.message import MessageTemplate, Personalisation
from newsletter.delivery.sender import send_test
from newsletter.delivery.transports import describe_transport, make_transport
from newsletter.delivery.transports.base import BatchItem
from newsletter.delivery.transports.postmark import TEST_TOKEN, PostmarkTransport
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

TOKEN = "pm-test-token"
BATCH_SCHEMA = spec_validator(
    "postmark/server.yml",
    "/paths/~1email~1batch/post/requestBody/content/application~1json/schema",
    "oas30",
    patch=lambda schema: {"allOf": [schema, {"maxItems": 500}]},
)


class PostmarkFake:
    """Plays Postmark: checks each batch request, answers per message like the real API."""

    def __init__(self, server: ProviderFake, token: str = TOKEN) -> None:
        self.server = server
        self.token = token
        self.inactive: set[str] = set()
        self.stream_handling = "None"
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        server.handler = self.handle

    def handle(self, request: FakeRequest) -> FakeResponse:
        fake = self.server
        if request.header("x-postmark-server-token") != self.token:
            return FakeResponse.json(
                {"ErrorCode": 10, "Message": "No Account or Server API tokens were supplied"}, 401
            )
        if request.method == "GET" and request.path.startswith("/message-streams/"):
            stream = request.path.rsplit("/", 1)[1]
            if stream != "broadcast":
                return FakeResponse.json({"ErrorCode": 1226, "Message": "stream not found"}, 422)
            config = {"UnsubscribeHandlingType": self.stream_handling}
            return FakeResponse.json({"ID": stream, "SubscriptionManagementConfiguration": config})
        if (request.method, request.path) != ("POST", "/email/batch"):
            return fake.problem(f"unexpected {request.method} {request.path}")
        if not (request.header("content-type") or "").startswith("application/json"):
            return fake.problem("content type is not JSON")
        body = request.json()
        problems = BATCH_SCHEMA(body)
        if problems:
            return fake.problem(f"schema: {problems[:3]}")
        answers = []
        for message in body:
            for key in ("From", "To", "Subject", "HtmlBody", "TextBody", "MessageStream"):
                if not message.get(key):
                    return fake.problem(f"message without {key}")
            if message.get("TrackLinks") != "None" or message.get("TrackOpens") is not False:
                return fake.problem("tracking is not off")
            names = [h["Name"] for h in message["Headers"]]
            if "List-Unsubscribe" not in names:
                return fake.problem("no List-Unsubscribe header")
            address = email.utils.parseaddr(message["To"])[1].lower()
            if address in self.inactive:
                answers.append(
                    {
                        "ErrorCode": 406,
                        "Message": "You tried to send to recipient(s) that have been marked "
                        "as inactive.",
                    }
                )
                continue
            with self.lock:
                message_id = f"pm-{next(self.ids):08d}"
            fake.accept(address, message_id)
            answers.append(
                {"ErrorCode": 0, "Message": "OK", "MessageID": message_id, "To": message["To"]}
            )
        return FakeResponse.json(answers)


@pytest.fixture
def server() -> Iterator[ProviderFake]:
    with ProviderFake(hang_seconds=3) as running:
        yield running


@pytest.fixture
def postmark(server: ProviderFake) -> PostmarkFake:
    return PostmarkFake(server)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    return example_template(copy_example_project(tmp_path_factory.mktemp("project")))


def settings_for(server: ProviderFake, **changes: Any) -> TransportSettings:
    values: dict[str, Any] = {
        "kind": "postmark",
        "api_url": server.url,
        "timeout": 0.4,
        "connections": 2,
    }
    values.update(changes)
    return TransportSettings(**values)


def transport_for(server: ProviderFake, **changes: Any) -> PostmarkTransport:
    return PostmarkTransport(settings_for(server, **changes), api_key=TOKEN)


def items_for(template: MessageTemplate, persons: list[Person]) -> list[BatchItem]:
    return [
        BatchItem(p.email, template.personalise(p), Personalisation(template, p)) for p in persons
    ]


def test_batch_carries_each_recipients_own_message(
    server: ProviderFake, postmark: PostmarkFake, template: MessageTemplate
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
    assert [r.receipt.reply for r in results if r.receipt] == ["pm-00000001", "pm-00000002",
                                                                 "pm-00000003"]  # fmt: skip
    (request,) = server.posts("/email/batch")
    user_agent = request.header("user-agent")
    assert user_agent is not None and user_agent.startswith("newsletter/")
    sent = request.json()
    first = sent[0]
    # The name stays a name: quoted, never a second recipient.
    assert email.utils.getaddresses([first["To"]]) == [("Ann <Admin>, Esq.", "ann@example.org")]
    assert first["From"] == "Riverside Roots <news@riverside-garden.example.org>"
    assert first["ReplyTo"] == "Garden team <team@riverside-garden.example.org>"
    assert first["MessageStream"] == "broadcast"
    assert "Dear Ann," in first["HtmlBody"] and "Dear Ann," in first["TextBody"]
    assert "Dear gardener," in sent[2]["HtmlBody"]  # the template's default
    for person, message in zip(persons, sent, strict=True):
        headers = {h["Name"]: h["Value"] for h in message["Headers"]}
        token = token_for(SECRET, person.email)
        assert token in headers["List-Unsubscribe"] and "mailto:" in headers["List-Unsubscribe"]
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert token in message["HtmlBody"] and token in message["TextBody"]
    cids = {a["ContentID"] for a in first["Attachments"]}
    assert cids == {f"cid:{image.cid}" for image in template.images}
    assert all(f"cid:{image.cid}" in first["HtmlBody"] for image in template.images[:1])
    assert server.problems == []


def test_inactive_recipient_fails_alone(
    server: ProviderFake, postmark: PostmarkFake, template: MessageTemplate
) -> None:
    postmark.inactive.add("bob@example.org")
    persons = [Person("ann@example.org"), Person("bob@example.org"), Person("cy@example.org")]
    results = transport_for(server).send_batch(items_for(template, persons))
    assert results[0].receipt is not None and results[2].receipt is not None
    assert isinstance(results[1].error, RecipientRejectedError)
    assert "bob@example.org" in str(results[1].error) and "406" in str(results[1].error)


# The failures every provider shares (429, 5xx, 401/403, malformed or empty answers, no answer)
# are in tests/test_transport_contract.py; these are Postmark's own.
@pytest.mark.parametrize(
    ("fault", "error", "text", "retry_after"),
    [
        (FakeResponse.json({"ErrorCode": 300, "Message": "Invalid 'To' address"}, 422),
         PermanentDeliveryError, "Invalid 'To' address", None),
        (FakeResponse.json({"ErrorCode": 405, "Message": "Not allowed to send"}, 422),
         TransportUnavailableError, "Not allowed to send", None),
        (FakeResponse.json([]), UncertainDeliveryError, "expected 2 results", None),
    ],
    ids=["422-invalid", "422-account", "short"],
)  # fmt: skip
def test_whole_request_failures_are_typed(
    server: ProviderFake,
    postmark: PostmarkFake,
    template: MessageTemplate,
    fault: FakeResponse,
    error: type[Exception],
    text: str,
    retry_after: float | None,
) -> None:
    server.fail_next(fault)
    transport = transport_for(server)
    with pytest.raises(error) as caught:
        transport.send_batch(items_for(template, [Person("a@example.org"), Person("b@x.org")]))
    assert isinstance(caught.value, error)
    assert text in str(caught.value)
    if isinstance(caught.value, TransientDeliveryError):
        assert caught.value.retry_after == retry_after
    assert not server.accepted


def test_check(server: ProviderFake, postmark: PostmarkFake) -> None:
    transport_for(server).check()
    postmark.stream_handling = "Postmark"
    with pytest.raises(TransportUnavailableError, match="second List-Unsubscribe"):
        transport_for(server).check()
    with pytest.raises(TransportUnavailableError, match="stream 'news'"):
        transport_for(server, message_stream="news").check()
    bad = PostmarkTransport(settings_for(server), api_key="wrong")
    with pytest.raises(TransportUnavailableError, match="HTTP 401") as caught:
        bad.check()
    assert "POSTMARK_SERVER_TOKEN" in (caught.value.hint or "")
    assert "wrong" not in str(caught.value) and "wrong" not in repr(bad)


def test_configuration(settings: Any, server: ProviderFake, template: MessageTemplate) -> None:
    from dataclasses import replace

    configured = replace(settings, transport=settings_for(server))
    with pytest.raises(ConfigError) as caught:
        make_transport(configured, environ={})
    assert "POSTMARK_SERVER_TOKEN" in str(caught.value)
    assert "transport.api_key_env" in str(caught.value)
    own = replace(configured, transport=settings_for(server, api_key_env="PM_TOKEN"))
    made = make_transport(own, environ={"PM_TOKEN": TOKEN})
    assert isinstance(made, PostmarkTransport) and made.api_key == TOKEN
    assert describe_transport(configured) == (f"postmark {server.url}, message stream 'broadcast'")
    # Sandbox: Postmark's test token, no variable needed, nothing delivered.
    sandbox = replace(configured, transport=settings_for(server, sandbox=True))
    tester = make_transport(sandbox, environ={})
    assert isinstance(tester, PostmarkTransport) and tester.api_key == TEST_TOKEN
    assert "sandbox" in describe_transport(sandbox)
    PostmarkFake(server, token=TEST_TOKEN)
    tester.check()
    (result,) = tester.send_batch(items_for(template, [Person("a@example.org")]))
    assert result.receipt is not None and result.receipt.reply.startswith("sandbox:pm-")
    assert server.posts()[-1].header("x-postmark-server-token") == TEST_TOKEN


def test_test_send_through_postmark(
    server: ProviderFake, postmark: PostmarkFake, template: MessageTemplate
) -> None:
    results = send_test(
        template, Person("sam@example.org", "Sam"), ["Rita <rita@example.org>"],
        transport_for(server),
    )  # fmt: skip
    assert [r.error for r in results] == [None]
    (message,) = server.posts()[-1].json()
    assert message["To"] == "Rita <rita@example.org>"
    assert message["Subject"].startswith("[TEST] ")
    assert "Dear Sam," in message["HtmlBody"]
    assert token_for(SECRET, "sam@example.org") not in str(message)


NASTY = [
    Person("ann@example.org", 'Ann "The \\ Admin" </script><b>'),
    Person("bob@example.org", "Bøb\u2028Ünïcode\t\x01 😀 &amp;"),
    Person("cy@example.org"),
    Person("dee@example.org", " \t Dee \r\n"),
]


@pytest.mark.parametrize("linked", [False, True], ids=["embedded", "linked"])
@pytest.mark.parametrize("test", [False, True], ids=["send", "test-copy"])
def test_encoded_payload_is_the_payload(tmp_path: Any, linked: bool, test: bool) -> None:
    """The batch body spliced from pieces encoded once per issue parses to exactly the message
    built field by field, whatever the recipient's values hold (quotes, backslashes, markup,
    line separators, controls, emoji)."""
    project = copy_example_project(tmp_path / "project")
    if linked:  # base_url set: images are published and linked, nothing is attached
        toml = project / "newsletter.toml"
        text = toml.read_text(encoding="utf-8")
        assert "# base_url = " in text
        toml.write_text(text.replace("# base_url = ", "base_url = ", 1), encoding="utf-8")
    template = example_template(project)
    transport = PostmarkTransport(
        TransportSettings(kind="postmark", api_url="http://127.0.0.1:9"), api_key=TOKEN
    )
    for person in NASTY:
        found = Personalisation(
            template, person, test=test, to="rita@example.org" if test else None
        )
        item = BatchItem(person.email, template.personalise(person), found)
        content = found.content()
        built = transport.payload(content, item)
        assert json.loads(transport.encoded_payload(item)) == built
        assert ("Attachments" in built) is not linked


def test_messages_over_postmarks_size_limit_are_refused_alone(
    server: ProviderFake,
    postmark: PostmarkFake,
    template: MessageTemplate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The limit counts bodies and attachments (not the JSON around them): a message exactly at
    it is sent, one a byte over is refused without a request, the others go out."""
    from newsletter.delivery.transports import postmark as module

    persons = [Person("ann@example.org", "Ann"), Person("longer-name@example.org", "Bartholomew")]
    items = items_for(template, persons)
    sizes = [module.message_size(Personalisation(template, p).content()) for p in persons]
    assert sizes[0] < sizes[1]
    monkeypatch.setattr(module, "MAX_MESSAGE_BYTES", sizes[0])
    transport = transport_for(server)
    results = transport.send_batch(items)
    transport.close()
    assert results[0].receipt is not None
    assert isinstance(results[1].error, PermanentDeliveryError)
    assert f"the message is {sizes[1]:,} bytes" in results[1].error.message
    (request,) = server.posts("/email/batch")
    assert [m["To"] for m in request.json()] == ["Ann <ann@example.org>"]
