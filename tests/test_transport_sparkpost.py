"""SparkPost transport against a loopback server that plays SparkPost.

The fake validates each transmission against the JSON Schema derived from SparkPost's API
Blueprint, then renders every recipient's message the way SparkPost's template language would
(triple-curly expressions, recipient data before transmission data) and refuses any stray `{{`
or `}}`; the tests compare what it rendered with the message the SMTP path would carry. What every
provider shares (full send, crash and resume, whole-request failures) is tested once in
tests/test_transport_contract.py, with `SparkPostFake` from here.
"""

from __future__ import annotations

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
from newsletter.delivery.transports.sparkpost import (
    EU_API,
    SparkPostTransport,
    escape_static,
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

KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0aabbccdd"
PATH = "/api/v1/transmissions"
SCHEMA = spec_validator(
    "sparkpost/transmission.schema.json",
    "",
    "jsonschema",
    patch=lambda schema: {"allOf": [schema, {"properties": {"recipients": {"maxItems": 1000}}}]},
)
EXPRESSION = re.compile(r"\{\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\}")
# Static text with braces everywhere a template language could trip, next to per-recipient
# values (the item is rendered by Jinja, hence the raw blocks).
BRACES_ITEM = (
    "\n\nTemplates look like {% raw %}{{ name }}, {{{raw}}}, }} and {{lb}}; sets are "
    "{a, b}{c}.{% endraw %} Hi {{ subscriber.first_name | default('there') }}"
    "{% raw %}}{{% endraw %}\n"
)


def render(template: str, data: dict[str, Any], shared: dict[str, Any]) -> tuple[str, list[str]]:
    """`template` rendered as SparkPost would, and the problems (stray curlies, unknown keys).

    A literal brace right next to an expression is a problem too: `{{{{{x}}}` is ambiguous.
    """
    problems: list[str] = []
    out: list[str] = []
    position = 0
    for found in EXPRESSION.finditer(template):
        static = template[position : found.start()]
        if "{{" in static or "}}" in static:
            problems.append(f"stray curlies in {static[-40:]!r}")
        if static and static[-1] in "{}":
            problems.append(f"a brace touches {found.group(0)}")
        if static and position > 0 and static[0] in "{}":
            problems.append(f"a brace follows an expression: {static[:20]!r}")
        key = found.group(1)
        value = data.get(key, shared.get(key))
        if value is None:
            problems.append(f"no value for {key}")
        out += [static, str(value)]
        position = found.end()
    tail = template[position:]
    if "{{" in tail or "}}" in tail:
        problems.append(f"stray curlies in {tail[:40]!r}")
    if tail and position > 0 and tail[0] in "{}":
        problems.append(f"a brace follows an expression: {tail[:20]!r}")
    out.append(tail)
    return "".join(out), problems


class SparkPostFake:
    """Plays SparkPost's transmissions and suppression-list endpoints."""

    def __init__(self, server: ProviderFake) -> None:
        self.server = server
        self.rejected: dict[str, str] = {}  # address → rcpt_to_errors description
        self.rendered: dict[str, dict[str, Any]] = {}
        self.suppressed: list[dict[str, Any]] = []
        self.ids = itertools.count(7_000_000_000_001)
        self.lock = threading.Lock()
        server.handler = self.handle

    def handle(self, request: FakeRequest) -> FakeResponse:
        fake = self.server
        if request.header("authorization") != KEY:
            return FakeResponse.json(
                {"errors": [{"message": "Unauthorized.", "code": "1000"}]}, 401
            )
        # The crash test's child points api_url at the bare server: accept either base.
        path = request.path.removeprefix("/api/v1")
        if request.method == "GET" and path == "/suppression-list":
            return self.suppression_page(request)
        if (request.method, path) != ("POST", "/transmissions"):
            return fake.problem(f"unexpected {request.method} {request.path}")
        if len(request.body) != int(request.header("content-length") or 0):
            return FakeResponse.json({"errors": [{"message": "incomplete"}]}, 400)
        body = request.json()
        problems = SCHEMA(body)
        if problems:
            return fake.problem(f"schema: {problems[:3]}")
        if request.query.get("num_rcpt_errors") != [str(len(body["recipients"]))]:
            return fake.problem(f"num_rcpt_errors {request.query}")
        options = body["options"]
        if options != {"transactional": True, "open_tracking": False, "click_tracking": False}:
            return fake.problem(f"options {options}")
        return self.transmit(body)

    def transmit(self, body: dict[str, Any]) -> FakeResponse:
        fake = self.server
        content = body["content"]
        shared = body.get("substitution_data", {})
        with self.lock:
            transmission = str(next(self.ids))
        accepted = 0
        errors = []
        for recipient in body["recipients"]:
            address = recipient["address"]["email"].lower()
            data = recipient["substitution_data"]
            rendered: dict[str, Any] = {"to": recipient["address"]}
            found: list[str] = []
            for part in ("subject", "html", "text"):
                rendered[part], problems = render(content[part], data, shared)
                found += problems
            rendered["headers"] = {}
            for name, value in content["headers"].items():
                rendered["headers"][name], problems = render(value, data, shared)
                found += problems
            if found:
                return fake.problem(f"{address}: {found[:3]}")
            unsubscribe = rendered["headers"]["List-Unsubscribe"]
            if (
                token_for(SECRET, address) not in unsubscribe
                and "[TEST]" not in rendered["subject"]
            ):
                return fake.problem(f"List-Unsubscribe of {address} is not theirs: {unsubscribe}")
            if address in self.rejected:
                errors.append(
                    {"message": "invalid recipient", "code": "1100",
                     "description": self.rejected[address]}
                )  # fmt: skip
                continue
            accepted += 1
            with self.lock:
                self.rendered[address] = rendered
            fake.accept(address, transmission)
        results: dict[str, Any] = {
            "total_rejected_recipients": len(errors),
            "total_accepted_recipients": accepted,
            "id": transmission,
        }
        answer: dict[str, Any] = {"results": results}
        if errors:
            results["rcpt_to_errors"] = errors
            answer["errors"] = [
                {"message": "transmission created, but with validation errors", "code": "2000"}
            ]
        return FakeResponse.json(answer)

    def suppression_page(self, request: FakeRequest) -> FakeResponse:
        cursor = request.query["cursor"][0] if "cursor" in request.query else "?"
        start = 0 if cursor == "initial" else int(cursor)
        chunk = self.suppressed[start : start + 2]  # two a page
        links = []
        if start + 2 < len(self.suppressed):
            links.append(
                {"href": f"/api/v1/suppression-list?cursor={start + 2}&per_page=1000",
                 "rel": "next"}
            )  # fmt: skip
        return FakeResponse.json(
            {"results": chunk, "links": links, "total_count": len(self.suppressed)}
        )


@pytest.fixture
def server() -> Iterator[ProviderFake]:
    with ProviderFake(hang_seconds=3) as running:
        yield running


@pytest.fixture
def sparkpost(server: ProviderFake) -> SparkPostFake:
    return SparkPostFake(server)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    return example_template(copy_example_project(tmp_path_factory.mktemp("sparkpost")))


@pytest.fixture(scope="module")
def braces_template(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    project = copy_example_project(tmp_path_factory.mktemp("sparkpost-braces"))
    item = sorted((project / "issues" / "2026-11").glob("01-*.md"))[0]
    item.write_text(item.read_text(encoding="utf-8") + BRACES_ITEM, encoding="utf-8")
    return example_template(project)


def settings_for(server: ProviderFake, **changes: Any) -> TransportSettings:
    values: dict[str, Any] = {
        "kind": "sparkpost",
        "api_url": f"{server.url}/api/v1",
        "timeout": 0.4,
        "connections": 2,
    }
    values.update(changes)
    return TransportSettings(**values)


def transport_for(server: ProviderFake, **changes: Any) -> SparkPostTransport:
    return SparkPostTransport(settings_for(server, **changes), api_key=KEY)


def items_for(template: MessageTemplate, persons: list[Person]) -> list[BatchItem]:
    return [
        BatchItem(p.email, template.personalise(p), Personalisation(template, p)) for p in persons
    ]


HOSTILE = [
    # A first name full of template syntax: values are data, SparkPost must not read them.
    Person("ann@example.org", "{{x}}}{{{lb}}}<b>&amp; Ann"),
    Person("bob@example.org", "Bob"),
    Person("cy@example.org"),
]


@pytest.mark.parametrize("which", ["example", "braces"])
def test_every_recipient_renders_to_their_own_message(
    server: ProviderFake,
    sparkpost: SparkPostFake,
    template: MessageTemplate,
    braces_template: MessageTemplate,
    which: str,
) -> None:
    chosen = braces_template if which == "braces" else template
    items = items_for(chosen, HOSTILE)
    results = transport_for(server).send_batch(items)
    assert [r.error for r in results] == [None, None, None]
    assert {r.receipt.reply for r in results if r.receipt} == {"7000000000001"}
    assert server.problems == []
    for item in items:
        expected = Personalisation(chosen, HOSTILE[items.index(item)]).content()
        rendered = sparkpost.rendered[item.message.recipient]
        assert rendered["subject"] == expected.subject
        assert rendered["html"] == expected.html
        assert rendered["text"] == expected.text
        assert rendered["headers"] == dict(expected.headers)
        assert rendered["to"] == (
            {"email": expected.to.email, "name": expected.to.name}
            if expected.to.name
            else {"email": expected.to.email}
        )
    (request,) = server.posts(PATH)
    body = request.json()
    if which == "braces":
        assert body["substitution_data"] == {"lb": "{", "rb": "}"}
        literal = (
            "{{ name }}, {{{raw}}}, }} and {{lb}}; sets are {a, b}{c}. "
            "Hi {{x}}}{{{lb}}}&lt;b&gt;&amp;amp;}"
        )
        assert literal in sparkpost.rendered["ann@example.org"]["html"]
    content = body["content"]
    assert content["from"] == {
        "email": "news@riverside-garden.example.org",
        "name": "Riverside Roots",
    }
    assert content["reply_to"] == "Garden team <team@riverside-garden.example.org>"
    assert content["headers"]["List-Unsubscribe"] == "{{{h0}}}"  # per recipient
    assert content["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert {i["name"] for i in content["inline_images"]} == {x.cid for x in chosen.images}
    assert body["campaign_id"] == "2026-11"
    assert body["options"]["transactional"] is True


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain", "plain"),
        ("a{b}c", "a{b}c"),
        ("{{x}}", "{{{lb}}}{{{lb}}}x{{{rb}}}{{{rb}}}"),
        ("@media{.a{b:c}}", "@media{.a{b:c{{{rb}}}{{{rb}}}"),
        ("{edge}", "{{{lb}}}edge{{{rb}}}"),
        ("{{{", "{{{lb}}}{{{lb}}}{{{lb}}}"),
        ("", ""),
    ],
)
def test_escape_static(text: str, escaped: str) -> None:
    assert escape_static(text) == escaped
    rendered, problems = render(escaped, {}, {"lb": "{", "rb": "}"})
    assert (rendered, problems) == (text, [])


def test_named_rejections_fail_alone_and_unnamed_ones_make_the_batch_uncertain(
    server: ProviderFake, sparkpost: SparkPostFake, template: MessageTemplate
) -> None:
    sparkpost.rejected["bob@example.org"] = "Invalid recipient address bob@example.org"
    results = transport_for(server).send_batch(items_for(template, HOSTILE))
    assert results[0].receipt is not None and results[2].receipt is not None
    assert isinstance(results[1].error, RecipientRejectedError)
    assert "Invalid recipient address bob@example.org (code 1100)" in str(results[1].error)
    # An error that names nobody: SparkPost accepted two of three, and nobody can say which.
    sparkpost.rejected = {"cy@example.org": "address.email is required for each recipient"}
    again = transport_for(server).send_batch(items_for(template, HOSTILE))
    assert all(isinstance(r.error, UncertainDeliveryError) for r in again)
    assert "accepted 2 of 3 recipients without saying which" in str(again[0].error)


# The failures every provider shares (429, 5xx, 401/403, malformed or empty answers, no answer)
# are in tests/test_transport_contract.py; these are SparkPost's own.
@pytest.mark.parametrize(
    ("fault", "error", "text", "retry_after"),
    [
        (FakeResponse.json({"errors": [{"message": "Unauthorized.", "code": "1000"}]}, 401),
         TransportUnavailableError, "Unauthorized.", None),
        (FakeResponse.json({"errors": [{"message": "Exceed Sending Limit (hourly)",
                                        "code": "2101"}]}, 420),
         TransportUnavailableError, "sending limit reached (HTTP 420)", None),
        (FakeResponse.json({"errors": [{"message": "Invalid domain", "code": "7001",
                                        "description": "Unconfigured or unverified sending "
                                        "domain."}]}, 400),
         TransportUnavailableError, "Invalid domain: Unconfigured or unverified", None),
        (FakeResponse.json({"errors": [{"message": "required field is missing", "code": "1400",
                                        "description": "content.from is required"}]}, 422),
         PermanentDeliveryError, "required field is missing: content.from is required", None),
        (FakeResponse.json({"results": {"total_accepted_recipients": 2}}),
         UncertainDeliveryError, "without a transmission id", None),
    ],
    ids=["401-code", "420", "7001", "422", "no-id"],
)  # fmt: skip
def test_whole_request_failures_are_typed(
    server: ProviderFake,
    sparkpost: SparkPostFake,
    template: MessageTemplate,
    fault: FakeResponse,
    error: type[Exception],
    text: str,
    retry_after: float | None,
) -> None:
    server.fail_next(fault)
    with pytest.raises(error) as caught:
        transport_for(server).send_batch(items_for(template, HOSTILE[:2]))
    assert text in str(caught.value)
    if isinstance(caught.value, TransientDeliveryError):
        assert caught.value.retry_after == retry_after
    if isinstance(caught.value, TransportUnavailableError) and "401" in str(caught.value):
        assert "SPARKPOST_API_KEY" in (caught.value.hint or "")
    assert not server.accepted


def test_content_over_the_size_limit_fails_the_batch_without_a_request(
    server: ProviderFake,
    sparkpost: SparkPostFake,
    template: MessageTemplate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from newsletter.delivery.transports import sparkpost as module

    monkeypatch.setattr(module, "MAX_CONTENT_BYTES", 100_000)
    with pytest.raises(PermanentDeliveryError, match="SparkPost takes at most 100,000"):
        transport_for(server).send_batch(items_for(template, HOSTILE))
    assert server.posts() == []


def test_configuration(settings: Any, server: ProviderFake) -> None:
    configured = replace(settings, transport=settings_for(server))
    with pytest.raises(ConfigError) as caught:
        make_transport(configured, environ={})
    assert "SPARKPOST_API_KEY" in str(caught.value)
    made = make_transport(configured, environ={"SPARKPOST_API_KEY": KEY})
    assert isinstance(made, SparkPostTransport) and KEY not in repr(made)
    assert describe_transport(configured) == f"sparkpost {server.url}/api/v1"
    eu = replace(settings, transport=TransportSettings(kind="sparkpost", region="eu"))
    in_eu = make_transport(eu, environ={"SPARKPOST_API_KEY": KEY})
    assert isinstance(in_eu, SparkPostTransport) and in_eu.api_url == EU_API
    wrong = replace(
        settings, transport=TransportSettings(kind="sparkpost", sandbox=True, region="mars")
    )
    with pytest.raises(ConfigError) as problems:
        make_transport(wrong, environ={"SPARKPOST_API_KEY": KEY})
    text = str(problems.value)
    assert "transport.sandbox: SparkPost has no test mode for your own messages" in text
    assert "transport.region: must be 'us' or 'eu' for SparkPost, not 'mars'" in text


def test_test_send_through_sparkpost(
    server: ProviderFake, sparkpost: SparkPostFake, template: MessageTemplate
) -> None:
    results = send_test(
        template, Person("sam@example.org", "Sam"), ["Rita <rita@example.org>"],
        transport_for(server),
    )  # fmt: skip
    assert [r.error for r in results] == [None]
    rendered = sparkpost.rendered["rita@example.org"]
    assert rendered["to"] == {"email": "rita@example.org", "name": "Rita"}
    assert rendered["subject"].startswith("[TEST] ")
    assert "Dear Sam," in rendered["html"]
    assert token_for(SECRET, "sam@example.org") not in str(rendered)
    assert server.problems == []


def test_suppressions_follow_the_cursor(server: ProviderFake, sparkpost: SparkPostFake) -> None:
    sparkpost.suppressed = [
        {"recipient": "b@example.org", "source": "Bounce Rule", "type": "transactional",
         "description": "550: no such user", "updated": "2025-11-02T01:01:01+00:00"},
        {"recipient": "c@example.org", "source": "Spam Complaint", "type": "non_transactional",
         "updated": "2025-11-03T01:01:01+00:00"},
        {"recipient": "u@example.org", "source": "List Unsubscribe", "type": "non_transactional",
         "updated": "2025-11-04T01:01:01+00:00"},
        {"source": "Manually Added"},
    ]  # fmt: skip
    source = transport_for(server).suppression_source()
    found = list(source.fetch(since=datetime(2025, 11, 1, tzinfo=UTC)))
    assert found == [
        Suppression("b@example.org", SuppressionKind.BOUNCE,
                    datetime(2025, 11, 2, 1, 1, 1, tzinfo=UTC), "Bounce Rule: 550: no such user"),
        Suppression("c@example.org", SuppressionKind.COMPLAINT,
                    datetime(2025, 11, 3, 1, 1, 1, tzinfo=UTC), "Spam Complaint"),
        Suppression("u@example.org", SuppressionKind.UNSUBSCRIBE,
                    datetime(2025, 11, 4, 1, 1, 1, tzinfo=UTC), "List Unsubscribe"),
    ]  # fmt: skip
    queries = [r.query for r in server.requests]
    assert queries[0] == {
        "cursor": ["initial"], "per_page": ["1000"], "from": ["2025-11-01T00:00:00+0000"]
    }  # fmt: skip
    assert queries[1] == {"cursor": ["2"], "per_page": ["1000"]}

    def foreign(request: FakeRequest) -> FakeResponse:
        return FakeResponse.json(
            {"results": [{"recipient": "x@example.org"}],
             "links": [{"rel": "next", "href": "https://evil.example/api/v1/suppression-list"}]}
        )  # fmt: skip

    server.handler = foreign
    with pytest.raises(TransportUnavailableError, match="another host"):
        list(source.fetch())


def test_suppression_source_from_settings(settings: Any, server: ProviderFake) -> None:
    configured = replace(settings, transport=settings_for(server))
    assert suppression_source(configured, {"SPARKPOST_API_KEY": KEY}).name == "sparkpost"
