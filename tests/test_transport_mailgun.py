"""Mailgun transport against a loopback server that plays Mailgun and checks every request.

What every provider shares (full send, crash and resume, whole-request failures) is tested once
in tests/test_transport_contract.py, with `MailgunFake` from here; this file keeps what only
Mailgun does.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import email.utils
import itertools
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from newsletter.config import TransportSettings
from newsletter.delivery.message import MessageTemplate, Personalisation
from newsletter.delivery.sender import send_test
from newsletter.delivery.suppressions import Suppression, SuppressionKind, suppression_source
from newsletter.delivery.transports import describe_transport, make_transport
from newsletter.delivery.transports.base import BatchItem
from newsletter.delivery.transports.mailgun import EU_API, MailgunTransport
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
from tests.sendkit import SECRET, Person, example_template, token_for

KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
DOMAIN = "riverside-garden.example.org"  # the example project's From domain
MIME_PATH = f"/v3/{DOMAIN}/messages.mime"
MIME_POINTER = (
    "/paths/~1v3~1{domain_name}~1messages.mime/post/requestBody/content/multipart~1form-data/schema"
)
MIME_SCHEMA = spec_validator("mailgun/openapi.yaml", MIME_POINTER, "oas31")


def multipart(request: FakeRequest) -> tuple[dict[str, list[str]], dict[str, bytes]]:
    """(text fields, file fields → bytes) of a multipart/form-data body.

    Split by hand rather than with the email package: a full-send test parses a thousand
    85 KB bodies, and `email.parser` would make the fake the bottleneck.
    """
    content_type = request.header("content-type") or ""
    found = re.search(r'boundary="?([^";]+)"?', content_type)
    assert content_type.startswith("multipart/form-data") and found, content_type
    delimiter = b"--" + found.group(1).encode()
    body = request.body
    assert body.startswith(delimiter) and body.rstrip().endswith(delimiter + b"--")
    fields: dict[str, list[str]] = {}
    files: dict[str, bytes] = {}
    for chunk in body.split(b"\r\n" + delimiter)[:-1]:
        part = chunk[len(delimiter) + 2 :] if chunk.startswith(delimiter) else chunk[2:]
        head, _, payload = part.partition(b"\r\n\r\n")
        disposition = re.search(rb'name="([^"]*)"(?:; filename="([^"]*)")?', head)
        assert disposition is not None, head
        name = disposition.group(1).decode()
        if disposition.group(2) is not None:
            files[name] = payload
        else:
            fields.setdefault(name, []).append(payload.decode("utf-8"))
    return fields, files


def header_block(data: bytes) -> dict[str, str]:
    """The top-level headers of a message (unfolded; names lower-cased)."""
    head = data.partition(b"\r\n\r\n")[0].decode("utf-8")
    unfolded = re.sub(r"\r\n[ \t]+", " ", head)
    return {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in unfolded.split("\r\n"))
    }


def as_spec_object(fields: dict[str, list[str]], files: dict[str, bytes]) -> dict[str, Any]:
    """Form fields as the JSON object the spec's schema describes (arrays where it says so)."""
    arrays = {"to", "o:tag"}
    body: dict[str, Any] = {
        name: values if name in arrays or len(values) > 1 else values[0]
        for name, values in fields.items()
    }
    body.update({name: "<binary>" for name in files})
    return body


class MailgunFake:
    """Plays Mailgun: Basic auth, domain tracking settings, messages.mime, suppression lists."""

    def __init__(self, server: ProviderFake, *, testmode: bool = False) -> None:
        self.server = server
        self.testmode = testmode
        self.domains = {DOMAIN: False}  # domain → unsubscribe tracking active
        self.bounced: set[str] = set()  # answered 400 like an invalid address
        self.suppressed: dict[str, list[dict[str, Any]]] = {}
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        server.handler = self.handle

    def handle(self, request: FakeRequest) -> FakeResponse:
        fake = self.server
        expected = "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
        if request.header("authorization") != expected:
            return FakeResponse(401, b"Forbidden")
        parts = request.path.strip("/").split("/")
        if request.method == "GET" and request.path == "/v4/domains":
            return FakeResponse.json({"items": [{"name": DOMAIN}], "total_count": 1})
        if request.method == "GET" and parts[:2] == ["v3", "domains"] and parts[3:] == ["tracking"]:
            if parts[2] not in self.domains:
                return FakeResponse.json({"message": "Domain not found"}, 404)
            active = self.domains[parts[2]]
            return FakeResponse.json(
                {
                    "tracking": {
                        "open": {"active": True},
                        "click": {"active": True},
                        "unsubscribe": {"active": active, "html_footer": "", "text_footer": ""},
                    }
                }
            )
        if request.method == "GET" and len(parts) == 3 and parts[2] in self.suppressed:
            return self.suppression_page(request, parts[1], parts[2])
        if request.method != "POST" or not request.path.endswith("/messages.mime"):
            return fake.problem(f"unexpected {request.method} {request.path}")
        if parts[1] not in self.domains:
            return FakeResponse.json({"message": "Domain not found"}, 404)
        if len(request.body) != int(request.header("content-length") or 0):
            # The client died mid-upload (the crash test kills it): nothing to check or send.
            return FakeResponse.json({"message": "incomplete request"}, 400)
        fields, files = multipart(request)
        problems = MIME_SCHEMA(as_spec_object(fields, files))
        if problems:
            return fake.problem(f"schema: {problems[:3]}")
        return self.send(fields, files["message"], parts[1])

    def send(self, fields: dict[str, list[str]], data: bytes, domain: str) -> FakeResponse:
        fake = self.server
        (to,) = fields["to"]
        for option in ("o:tracking", "o:tracking-clicks", "o:tracking-opens"):
            if fields.get(option) != ["no"]:
                return fake.problem(f"{option} is not 'no'")
        if (fields.get("o:testmode") == ["yes"]) != self.testmode:
            return fake.problem(f"o:testmode is {fields.get('o:testmode')}")
        headers = header_block(data)
        if email.utils.parseaddr(headers["to"])[1].lower() != to.lower():
            return fake.problem(f"To header {headers['to']} is not the envelope {to}")
        unsubscribe = headers.get("list-unsubscribe", "")
        if token_for(SECRET, to) not in unsubscribe and "[TEST]" not in headers["subject"]:
            return fake.problem(f"List-Unsubscribe of {to} is not theirs: {unsubscribe}")
        if to.lower() in self.bounced:
            return FakeResponse.json({"message": "'to' parameter is not a valid address."}, 400)
        with self.lock:
            message_id = f"<20261127.{next(self.ids):06d}@{domain}>"
        fake.accept(to, message_id)
        return FakeResponse.json({"id": message_id, "message": "Queued. Thank you."})

    def suppression_page(self, request: FakeRequest, domain: str, kind: str) -> FakeResponse:
        entries = self.suppressed[kind]
        page = int(request.query.get("page", ["0"])[0])
        limit = int(request.query["limit"][0])
        chunk = entries[page * 2 : page * 2 + 2]  # two a page, to exercise paging
        assert limit == 1000
        base = self.server.url
        return FakeResponse.json(
            {
                "items": chunk,
                "paging": {
                    "next": f"{base}/v3/{domain}/{kind}?limit=1000&page={page + 1}",
                    "first": f"{base}/v3/{domain}/{kind}?limit=1000",
                },
            }
        )


@pytest.fixture
def server() -> Iterator[ProviderFake]:
    with ProviderFake(hang_seconds=3) as running:
        yield running


@pytest.fixture
def mailgun(server: ProviderFake) -> MailgunFake:
    return MailgunFake(server)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    # Rendered once for the module: the template holds no per-recipient state.
    return example_template(copy_example_project(tmp_path_factory.mktemp("mailgun")))


def settings_for(server: ProviderFake, **changes: Any) -> TransportSettings:
    values: dict[str, Any] = {
        "kind": "mailgun",
        "api_url": server.url,
        "timeout": 0.4,
        "connections": 2,
    }
    values.update(changes)
    return TransportSettings(**values)


def transport_for(server: ProviderFake, **changes: Any) -> MailgunTransport:
    return MailgunTransport(settings_for(server, **changes), api_key=KEY)


def item_for(template: MessageTemplate, person: Person) -> BatchItem:
    return BatchItem(person.email, template.personalise(person), Personalisation(template, person))


def test_each_recipient_gets_the_exact_smtp_message(
    server: ProviderFake, mailgun: MailgunFake, template: MessageTemplate
) -> None:
    transport = transport_for(server)
    results = []
    items = [item_for(template, Person(f"{n}@example.org", f"Reader {n}")) for n in "abc"]
    for item in items:
        results += transport.send_batch([item])
    transport.close()
    assert [r.error for r in results] == [None, None, None]
    assert [r.receipt.reply for r in results if r.receipt] == [
        f"<20261127.{n:06d}@{DOMAIN}>" for n in (1, 2, 3)
    ]
    posts = server.posts(MIME_PATH)
    assert len(posts) == 3
    for item, request in zip(items, posts, strict=True):
        fields, files = multipart(request)
        assert files["message"] == item.message.data  # byte for byte what SMTP would send
        assert fields["to"] == [item.message.recipient]
        assert "o:testmode" not in fields
    # One tracking check for the domain, before the first message.
    gets = [r.path for r in server.requests if r.method == "GET"]
    assert gets == [f"/v3/domains/{DOMAIN}/tracking"]
    assert server.requests[0].method == "GET"
    assert server.problems == []


def test_configured_domain_and_sandbox_test_mode(
    server: ProviderFake, template: MessageTemplate
) -> None:
    fake = MailgunFake(server, testmode=True)
    fake.domains["mg.example.net"] = False
    transport = transport_for(server, domain="mg.example.net", sandbox=True)
    transport.check()
    (result,) = transport.send_batch([item_for(template, Person("ann@example.org"))])
    assert result.receipt is not None and result.receipt.reply.endswith("@mg.example.net>")
    (request,) = server.posts()
    assert request.path == "/v3/mg.example.net/messages.mime"
    assert multipart(request)[0]["o:testmode"] == ["yes"]
    assert server.problems == []


def test_unsubscribe_tracking_on_stops_before_anything_is_sent(
    server: ProviderFake, mailgun: MailgunFake, template: MessageTemplate
) -> None:
    mailgun.domains[DOMAIN] = True
    transport = transport_for(server, domain=DOMAIN)
    with pytest.raises(TransportUnavailableError, match="unsubscribe tracking is on") as caught:
        transport.check()
    assert "tracking/unsubscribe" in (caught.value.hint or "")
    # Without a configured domain the first send checks the From domain the same way.
    with pytest.raises(TransportUnavailableError, match="unsubscribe tracking is on"):
        transport_for(server).send_batch([item_for(template, Person("ann@example.org"))])
    assert server.posts() == []


def test_unknown_domain_and_bad_key(server: ProviderFake, mailgun: MailgunFake) -> None:
    with pytest.raises(TransportUnavailableError, match=r"domain 'nope\.example'") as caught:
        transport_for(server, domain="nope.example").check()
    assert "region = 'eu'" in (caught.value.hint or "")
    bad = MailgunTransport(settings_for(server), api_key="wrong")
    with pytest.raises(TransportUnavailableError, match="HTTP 401") as refused:
        bad.check()
    assert "MAILGUN_API_KEY" in (refused.value.hint or "")
    assert "wrong" not in str(refused.value) and "wrong" not in repr(bad)
    transport_for(server).check()  # no domain: the key is checked with /v4/domains
    assert server.requests[-1].path == "/v4/domains"


# The failures every provider shares (429, 5xx, 401/403, malformed or empty answers, no answer)
# are in tests/test_transport_contract.py; these are Mailgun's own.
@pytest.mark.parametrize(
    ("fault", "error", "text", "retry_after"),
    [
        (FakeResponse.json({"message": "Domain riverside-garden.example.org is not allowed to "
                            "send: account-requests-per-sec limit exceeded, try again after 120 "
                            "seconds"}, 429),
         TransientDeliveryError, "rate limited", 120.0),
        (FakeResponse(401, b"Forbidden"), TransportUnavailableError, "Forbidden", None),
        (FakeResponse.json({"message": "Domain not found"}, 404),
         TransportUnavailableError, "Domain not found", None),
        (FakeResponse(200, b"Mailgun Magnificent API"), TransportUnavailableError,
         "does not lead to the messages endpoint", None),
        (FakeResponse.json({"message": "Queued. Thank you."}), UncertainDeliveryError,
         "without a message id", None),
    ],
    ids=["429-message", "401-plain", "404", "magnificent", "no-id"],
)  # fmt: skip
def test_whole_request_failures_are_typed(
    server: ProviderFake,
    mailgun: MailgunFake,
    template: MessageTemplate,
    fault: FakeResponse,
    error: type[Exception],
    text: str,
    retry_after: float | None,
) -> None:
    transport = transport_for(server)
    transport.check()
    server.fail_next(fault, when=lambda request: request.method == "POST")
    with pytest.raises(error) as caught:
        transport.send_batch([item_for(template, Person("a@example.org"))])
    assert text in str(caught.value)
    if isinstance(caught.value, TransientDeliveryError):
        assert caught.value.retry_after == retry_after
    assert not server.accepted


def test_refused_recipient_is_a_per_recipient_failure(
    server: ProviderFake, mailgun: MailgunFake, template: MessageTemplate
) -> None:
    mailgun.bounced.add("bad@example.org")
    (result,) = transport_for(server).send_batch([item_for(template, Person("bad@example.org"))])
    assert isinstance(result.error, RecipientRejectedError)
    assert "bad@example.org" in str(result.error) and "not a valid address" in str(result.error)


def test_configuration(settings: Any, server: ProviderFake) -> None:
    configured = replace(settings, transport=settings_for(server))
    with pytest.raises(ConfigError) as caught:
        make_transport(configured, environ={})
    assert "MAILGUN_API_KEY" in str(caught.value) and "transport.api_key_env" in str(caught.value)
    made = make_transport(configured, environ={"MAILGUN_API_KEY": KEY})
    assert isinstance(made, MailgunTransport) and made.api_key == KEY
    assert describe_transport(configured) == f"mailgun {server.url}"
    eu = replace(settings, transport=TransportSettings(kind="mailgun", region="EU"))
    assert describe_transport(eu) == f"mailgun {EU_API}"
    in_eu = make_transport(eu, environ={"MAILGUN_API_KEY": KEY})
    assert isinstance(in_eu, MailgunTransport) and in_eu.api_url == EU_API
    wrong = replace(
        settings, transport=TransportSettings(kind="mailgun", region="asia", domain="a/b")
    )
    with pytest.raises(ConfigError) as problems:
        make_transport(wrong, environ={"MAILGUN_API_KEY": KEY})
    assert "transport.region: must be 'us' or 'eu'" in str(problems.value)
    assert "transport.domain: 'a/b' is not a Mailgun sending domain" in str(problems.value)


def test_test_send_through_mailgun(
    server: ProviderFake, mailgun: MailgunFake, template: MessageTemplate
) -> None:
    results = send_test(
        template, Person("sam@example.org", "Sam"), ["Rita <rita@example.org>"],
        transport_for(server),
    )  # fmt: skip
    assert [r.error for r in results] == [None]
    fields, files = multipart(server.posts()[-1])
    assert fields["to"] == ["rita@example.org"]
    message = email.parser.BytesParser(policy=email.policy.SMTP).parsebytes(files["message"])
    assert str(message["Subject"]).startswith("[TEST] ")
    assert token_for(SECRET, "sam@example.org") not in files["message"].decode()
    assert server.problems == []


def test_suppressions_follow_paging_on_the_api_host_only(
    server: ProviderFake, mailgun: MailgunFake
) -> None:
    mailgun.suppressed = {
        "bounces": [
            {"address": f"b{n}@example.org", "code": "550", "error": "No such mailbox",
             "created_at": f"Thu, 1{n} Dec 2025 01:49:40 UTC"} for n in range(3)
        ],
        "unsubscribes": [{"address": "u@example.org", "tags": ["*"],
                          "created_at": "Fri, 12 Dec 2025 08:00:00 UTC"}],
        "complaints": [{"address": "c@example.org", "created_at": "not a date"}],
    }  # fmt: skip
    source = transport_for(server, domain=DOMAIN).suppression_source()
    assert source.name == "mailgun"
    found = list(source.fetch())
    assert found[0] == Suppression(
        "b0@example.org",
        SuppressionKind.BOUNCE,
        datetime(2025, 12, 10, 1, 49, 40, tzinfo=UTC),
        "550 No such mailbox",
    )
    assert [(s.email, s.kind) for s in found[1:]] == [
        ("b1@example.org", SuppressionKind.BOUNCE),
        ("b2@example.org", SuppressionKind.BOUNCE),
        ("u@example.org", SuppressionKind.UNSUBSCRIBE),
        ("c@example.org", SuppressionKind.COMPLAINT),
    ]
    pages = [r.query.get("page", ["0"])[0] for r in server.requests if "bounces" in r.path]
    assert pages == ["0", "1", "2"]  # two a page, then the empty page ends the list
    # `since` keeps the newer entries (and those without a readable date).
    later = list(source.fetch(since=datetime(2025, 12, 11, 12, 0, tzinfo=UTC)))
    assert [s.email for s in later] == ["b2@example.org", "u@example.org", "c@example.org"]

    def foreign(request: FakeRequest) -> FakeResponse:
        return FakeResponse.json(
            {"items": [{"address": "x@example.org"}], "paging": {"next": "https://evil.example/x"}}
        )

    server.handler = foreign
    with pytest.raises(TransportUnavailableError, match="another host"):
        list(source.fetch())
    assert all("evil" not in r.path for r in server.requests)


def test_suppressions_need_the_domain(settings: Any, server: ProviderFake) -> None:
    configured = replace(settings, transport=settings_for(server))
    with pytest.raises(ConfigError, match=r"transport\.domain"):
        suppression_source(configured, {"MAILGUN_API_KEY": KEY})
    with_domain = replace(settings, transport=settings_for(server, domain=DOMAIN, sandbox=True))
    source = suppression_source(with_domain, {"MAILGUN_API_KEY": KEY})
    assert source.name == "mailgun"
