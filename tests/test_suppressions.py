"""Suppression sync: the framework on a real subscriber store, Postmark and SendGrid sources
against loopback fakes whose canned answers follow the providers' specs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NotRequired, TypedDict

import pytest

from newsletter.audience import SubscriberStore
from newsletter.config import Settings, TransportSettings
from newsletter.delivery.suppressions import suppression_source, sync_suppressions
from newsletter.delivery.transports.base import Suppression, SuppressionKind
from newsletter.delivery.transports.postmark import PostmarkSuppressions, PostmarkTransport
from newsletter.delivery.transports.sendgrid import SendGridSuppressions, SendGridTransport
from newsletter.errors import ConfigError, TransportUnavailableError
from tests.providerfake import FakeRequest, FakeResponse, ProviderFake, spec_validator

BOUNCE, COMPLAINT, UNSUB = (
    SuppressionKind.BOUNCE,
    SuppressionKind.COMPLAINT,
    SuppressionKind.UNSUBSCRIBE,
)


@dataclass
class ListSource:
    name: str
    items: list[Suppression]

    def fetch(self, since: datetime | None = None) -> Iterator[Suppression]:
        yield from self.items


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SubscriberStore]:
    with SubscriberStore(tmp_path / "subscribers.db") as opened:
        for n in range(6):
            opened.add(f"p{n}@example.org", f"Person {n}")
        opened.set_status("p5@example.org", "unsubscribed", source="cli")
        yield opened


def test_sync_moves_people_out_of_subscribed_only(store: SubscriberStore) -> None:
    source = ListSource(
        "fakeprovider",
        [
            Suppression("P0@Example.org", BOUNCE, reason="550 no such user"),
            Suppression("p1@example.org", COMPLAINT),
            Suppression("p2@example.org", UNSUB),
            Suppression("p2@example.org", BOUNCE),  # already handled in this sync
            Suppression("p5@example.org", COMPLAINT),  # left already: keeps their status
            Suppression("stranger@example.org", BOUNCE),  # never added
            Suppression("not an address", BOUNCE),
        ],
    )
    report = sync_suppressions(source, store)
    assert dict(report.changed) == {"bounced": 1, "complained": 1, "unsubscribed": 1}
    assert (report.seen, report.unchanged, report.unknown) == (7, 2, 2)
    assert report.changes == (
        ("p0@example.org", "subscribed", "bounced"),
        ("p1@example.org", "subscribed", "complained"),
        ("p2@example.org", "subscribed", "unsubscribed"),
    )
    statuses = {s.email: s.status for s in store.iter_subscribers(None)}
    assert statuses == {
        "p0@example.org": "bounced",
        "p1@example.org": "complained",
        "p2@example.org": "unsubscribed",
        "p3@example.org": "subscribed",
        "p4@example.org": "subscribed",
        "p5@example.org": "unsubscribed",
    }
    assert store.events("p0@example.org")[-1].source == "provider:fakeprovider"
    assert store.get("stranger@example.org") is None
    again = sync_suppressions(source, store)
    assert again.total_changed == 0 and again.unchanged == 5


def test_dry_run_changes_nothing(store: SubscriberStore) -> None:
    report = sync_suppressions(
        ListSource("x", [Suppression("p3@example.org", BOUNCE)]), store, dry_run=True
    )
    assert report.dry_run and report.changes == (("p3@example.org", "subscribed", "bounced"),)
    p3 = store.get("p3@example.org")
    assert p3 is not None and p3.status == "subscribed"


# --- Postmark -------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ProviderFake]:
    with ProviderFake() as running:
        yield running


def postmark_dump(request: FakeRequest) -> FakeResponse:
    if request.header("x-postmark-server-token") != "pm-token":
        return FakeResponse.json({"ErrorCode": 10, "Message": "Bad token"}, 401)
    if request.path != "/message-streams/broadcast/suppressions/dump":
        return FakeResponse.json({"ErrorCode": 1226, "Message": "no such stream"}, 422)
    return FakeResponse.json(
        {
            "Suppressions": [
                {"EmailAddress": "p0@example.org", "SuppressionReason": "HardBounce",
                 "Origin": "Recipient", "CreatedAt": "2026-11-02T08:58:33-05:00"},
                {"EmailAddress": "p1@example.org", "SuppressionReason": "SpamComplaint",
                 "Origin": "Recipient", "CreatedAt": "2026-11-03T10:00:00-05:00"},
                {"EmailAddress": "p2@example.org", "SuppressionReason": "ManualSuppression",
                 "Origin": "Customer", "CreatedAt": "2026-11-04T10:00:00-05:00"},
                {"EmailAddress": "p3@example.org", "SuppressionReason": "SomethingNew",
                 "Origin": "Admin", "CreatedAt": "2026-11-04T10:00:00-05:00"},
            ]
        }
    )  # fmt: skip


def test_postmark_source(server: ProviderFake, store: SubscriberStore) -> None:
    server.handler = postmark_dump
    settings = TransportSettings(kind="postmark", api_url=server.url)
    source = PostmarkTransport(settings, api_key="pm-token").suppression_source()
    assert isinstance(source, PostmarkSuppressions)
    found = list(source.fetch(datetime(2026, 11, 3, tzinfo=UTC)))
    assert server.requests[-1].query == {"fromdate": ["2026-11-03"]}
    # The day filter is Postmark's; the exact time is applied here.
    assert [(s.email, s.kind) for s in found] == [
        ("p1@example.org", COMPLAINT),
        ("p2@example.org", UNSUB),
    ]
    assert found[1].reason == "ManualSuppression (origin: Customer)"
    report = sync_suppressions(source, store)
    assert dict(report.changed) == {"bounced": 1, "complained": 1, "unsubscribed": 1}
    wrong = PostmarkTransport(settings, api_key="nope").suppression_source()
    with pytest.raises(TransportUnavailableError, match="HTTP 401"):
        list(wrong.fetch())


# --- SendGrid -------------------------------------------------------------------------------

SUPPRESSIONS_SPEC = "sendgrid/tsg_suppressions_v3.json"


def response_schema(path: str) -> Callable[[object], list[str]]:
    pointer = f"/paths/{path.replace('/', '~1')}/get/responses/200/content/application~1json/schema"
    return spec_validator(SUPPRESSIONS_SPEC, pointer, "oas31")


class SendGridEntry(TypedDict):
    """One entry of a SendGrid suppression list, as its API answers it."""

    created: int
    email: str
    reason: NotRequired[str]
    status: NotRequired[str]
    ip: NotRequired[str]


class SendGridLists:
    """Plays SendGrid's suppression lists: 1,200 bounces (three pages) and a few others."""

    def __init__(self, server: ProviderFake) -> None:
        self.server = server
        created = 1_790_000_000
        bounces: list[SendGridEntry] = [
            {
                "created": created + n,
                "email": f"b{n}@example.org",
                "reason": "550 5.1.1 user unknown",
                "status": "5.1.1",
            }
            for n in range(1200)
        ]
        bounces.append(
            {"created": created, "email": "p0@example.org", "reason": "550", "status": "5.0.0"}
        )
        self.lists: dict[str, list[SendGridEntry]] = {
            "/v3/suppression/bounces": bounces,
            "/v3/suppression/invalid_emails": [
                {"created": created, "email": "p3@example.org", "reason": "Mail domain invalid"}
            ],
            "/v3/suppression/spam_reports": [
                {"created": created, "email": "p1@example.org", "ip": "10.63.202.100"}
            ],
            "/v3/suppression/unsubscribes": [{"created": created, "email": "p2@example.org"}],
        }  # fmt: skip
        self.schemas = {path: response_schema(path) for path in self.lists}
        server.handler = self.handle

    def handle(self, request: FakeRequest) -> FakeResponse:
        if request.header("authorization") != "Bearer SG.key":
            return FakeResponse.json({"errors": [{"message": "authorization required"}]}, 401)
        entries = self.lists.get(request.path)
        if entries is None or request.method != "GET":
            return self.server.problem(f"unexpected {request.method} {request.path}")
        limit = int(request.query["limit"][0])
        offset = int(request.query.get("offset", ["0"])[0])
        if not 1 <= limit <= 500:
            return self.server.problem(f"limit {limit}")
        since = int(request.query.get("start_time", ["0"])[0])
        page = [e for e in entries if e["created"] >= since][offset : offset + limit]
        problems = self.schemas[request.path](page)
        if problems:
            return self.server.problem(f"canned answer off spec: {problems[:2]}")
        return FakeResponse.json(page)


def test_sendgrid_source_reads_every_page(server: ProviderFake, store: SubscriberStore) -> None:
    SendGridLists(server)
    settings = TransportSettings(kind="sendgrid", api_url=server.url)
    source = SendGridTransport(settings, api_key="SG.key").suppression_source()
    assert isinstance(source, SendGridSuppressions)
    found = list(source.fetch())
    assert len(found) == 1204 and server.problems == []
    assert len({s.email for s in found}) == 1204
    bounce_pages = [r.query["offset"] for r in server.requests if r.path.endswith("/bounces")]
    assert bounce_pages == [["0"], ["500"], ["1000"]]
    report = sync_suppressions(source, store)
    assert dict(report.changed) == {"bounced": 2, "complained": 1, "unsubscribed": 1}
    assert report.unknown == 1200
    assert store.events("p1@example.org")[-1].source == "provider:sendgrid"
    later = list(source.fetch(datetime.fromtimestamp(1_790_000_000 + 1100, UTC)))
    assert sorted(s.email for s in later) == [f"b{n}@example.org" for n in range(1100, 1200)]


def test_suppression_source_from_settings(settings: Settings, server: ProviderFake) -> None:
    configured = replace(
        settings,
        transport=TransportSettings(kind="postmark", api_url=server.url, sandbox=True),
    )
    with pytest.raises(ConfigError, match="POSTMARK_SERVER_TOKEN"):
        suppression_source(configured, {})  # the test token cannot read lists
    source = suppression_source(configured, {"POSTMARK_SERVER_TOKEN": "pm-token"})
    assert isinstance(source, PostmarkSuppressions) and source.transport.api_key == "pm-token"
    other = suppression_source(configured, {"SENDGRID_API_KEY": "SG.key"}, provider="sendgrid")
    assert isinstance(other, SendGridSuppressions)
    assert other.transport.api_url == "https://api.sendgrid.com"
    with pytest.raises(ConfigError, match="'smtp' is not a provider"):
        suppression_source(configured, {}, provider="smtp")
