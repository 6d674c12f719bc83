"""`newsletter reconcile`: uncertain rows settled by asking the provider, against loopback
servers that play Postmark and Mailgun (search endpoints checked against their own specs), the
outbox, and the CLI."""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from newsletter.config import TransportSettings
from newsletter.delivery.ledger import Ledger, State
from newsletter.delivery.message import MessageTemplate
from newsletter.delivery.reconcile import reconcile_issue
from newsletter.delivery.sender import SendOptions, send_issue, send_test
from newsletter.delivery.transports.base import SentLookup, Verdict
from newsletter.delivery.transports.mailgun import MailgunTransport
from newsletter.delivery.transports.outbox import OutboxSentLookup, OutboxTransport
from newsletter.delivery.transports.postmark import PostmarkTransport
from tests.providerfake import DROP, SPECS, FakeRequest, FakeResponse, ProviderFake, _document
from tests.sendkit import ListAudience, example_template, people
from tests.test_transport_mailgun import DOMAIN, KEY, MailgunFake
from tests.test_transport_postmark import TOKEN, PostmarkFake

REPO = Path(__file__).resolve().parent.parent
SENDER = f"news@{DOMAIN}"
LATER = 3600.0  # past every provider's indexing delay, within what it keeps


def query_parameters(spec: str, path: str) -> set[str]:
    """The query parameters the provider's own spec declares for GET `path`."""
    operation = _document(SPECS / spec)["paths"][path]["get"]
    return {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}


POSTMARK_SEARCH = query_parameters("postmark/server.yml", "/messages/outbound")
MAILGUN_EVENTS = query_parameters("mailgun/openapi.yaml", "/v3/{domain_name}/events")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    from tests.conftest import copy_example_project

    return example_template(copy_example_project(tmp_path_factory.mktemp("project")))


class Losing:
    """Wraps a provider fake: POSTs for `lose_after` addresses are processed (the provider
    accepts them) but the answer is lost; for `lose_before` they are dropped unprocessed."""

    def __init__(self, inner: Any, server: ProviderFake) -> None:
        self.inner = inner
        self.lose_after: set[str] = set()
        self.lose_before: set[str] = set()
        server.handler = self.handle

    def addresses(self, request: FakeRequest) -> set[str]:
        if request.path.endswith("/email/batch"):
            return {email.utils.parseaddr(m["To"])[1].lower() for m in request.json()}
        if request.path.endswith("/messages.mime"):
            return {to.lower() for to in request.form().get("to", [])}
        return set()

    def handle(self, request: FakeRequest) -> Any:
        if request.method != "POST":
            return self.inner.handle(request)
        found = self.addresses(request)
        if found & self.lose_before:
            return DROP
        answer = self.inner.handle(request)
        return DROP if found & self.lose_after else answer


class SearchablePostmark(PostmarkFake):
    """PostmarkFake that also answers `GET /messages/outbound` from what it accepted."""

    def __init__(self, server: ProviderFake) -> None:
        super().__init__(server)
        self.outbound: list[dict[str, Any]] = []
        self.searches: list[dict[str, list[str]]] = []

    def handle(self, request: FakeRequest) -> FakeResponse:
        if request.method == "GET" and request.path == "/messages/outbound":
            return self.search(request)
        answer = super().handle(request)
        if request.method == "POST" and answer.status == 200:
            for message, result in zip(request.json(), json.loads(answer.body), strict=True):
                if result.get("ErrorCode") == 0:
                    self.outbound.append({**message, "MessageID": result["MessageID"]})
        return answer

    def search(self, request: FakeRequest) -> FakeResponse:
        if request.header("x-postmark-server-token") != self.token:
            return FakeResponse.json({"ErrorCode": 10, "Message": "no token"}, 401)
        query = request.query
        self.searches.append(query)
        unknown = set(query) - POSTMARK_SEARCH
        if unknown or not {"count", "offset"} <= set(query) or int(query["count"][0]) > 500:
            return self.server.problem(f"search parameters {sorted(query)}")
        recipient = query.get("recipient", [""])[0].lower()
        tag = query.get("tag", [None])[0]
        found = [
            m
            for m in self.outbound
            if email.utils.parseaddr(m["To"])[1].lower() == recipient
            and (tag is None or m.get("Tag") == tag)
        ]
        offset, count = int(query["offset"][0]), int(query["count"][0])
        page = found[offset : offset + count]
        return FakeResponse.json(
            {
                "TotalCount": len(found),
                "Messages": [
                    {
                        "MessageID": m["MessageID"],
                        "Tag": m.get("Tag"),
                        "To": [{"Email": email.utils.parseaddr(m["To"])[1], "Name": None}],
                        "Recipients": [email.utils.parseaddr(m["To"])[1]],
                        "Subject": m["Subject"],
                        "Status": "Sent",
                        "Metadata": m.get("Metadata", {}),
                    }
                    for m in page
                ],
            }
        )


class SearchableMailgun(MailgunFake):
    """MailgunFake that also answers `GET /v3/{domain}/events` with `accepted` events."""

    def __init__(self, server: ProviderFake) -> None:
        super().__init__(server)
        self.events: list[dict[str, Any]] = []

    def send(self, fields: dict[str, list[str]], data: bytes, domain: str) -> FakeResponse:
        answer = super().send(fields, data, domain)
        if answer.status == 200:
            parsed = email.parser.BytesParser(policy=email.policy.SMTP).parsebytes(data)
            self.events.append(
                {
                    "id": f"ev{len(self.events)}",
                    "event": "accepted",
                    "recipient": fields["to"][0],
                    "timestamp": time.time(),
                    "message": {"headers": {"message-id": str(parsed["Message-ID"]).strip("<>")}},
                }
            )
        return answer

    def handle(self, request: FakeRequest) -> FakeResponse:
        parts = request.path.strip("/").split("/")
        if request.method == "GET" and parts[2:] == ["events"] and len(parts) == 3:
            unknown = set(request.query) - MAILGUN_EVENTS
            if unknown or int(request.query.get("limit", ["300"])[0]) > 300:
                return self.server.problem(f"events parameters {sorted(request.query)}")
            wanted = request.query.get("message-id", [""])[0]
            recipient = request.query.get("recipient", [""])[0].lower()
            items = [
                e
                for e in self.events
                if e["message"]["headers"]["message-id"] == wanted
                and e["recipient"].lower() == recipient
            ]
            return FakeResponse.json({"items": items, "paging": {}})
        return super().handle(request)


def provider_settings(kind: str, server: ProviderFake) -> TransportSettings:
    return TransportSettings(kind=kind, api_url=server.url, timeout=0.5, connections=1)


def settle(
    database: Path, template: MessageTemplate, lookup: SentLookup, *, at: float
) -> dict[Verdict, set[str]]:
    with Ledger(database) as ledger:
        report = reconcile_issue(ledger, template.issue, lookup, sender=SENDER, clock=lambda: at)
    found: dict[Verdict, set[str]] = {verdict: set() for verdict in Verdict}
    for finding in report.findings:
        found[finding.verdict].add(finding.key)
    return found


def states(database: Path, issue: str) -> dict[str, State]:
    with Ledger(database) as ledger:
        return {row.email: row.state for state in State for row in ledger.issue(issue).rows(state)}


def test_postmark_uncertain_rows_are_settled_and_the_resend_reaches_each_once(
    template: MessageTemplate, tmp_path: Path
) -> None:
    database = tmp_path / "newsletter.db"
    with ProviderFake(hang_seconds=2) as server:
        postmark = SearchablePostmark(server)
        losing = Losing(postmark, server)
        transport = PostmarkTransport(provider_settings("postmark", server), api_key=TOKEN)
        everyone = people(12)
        # A reviewer who is also a subscriber got a test copy: it must not count as theirs.
        reviewer = everyone[7]
        send_test(template, everyone[0], [reviewer.email], transport)
        losing.lose_after = {p.email for p in everyone[:6]}  # Postmark took them; reply lost
        with Ledger(database) as ledger:
            send_issue(
                template,
                ListAudience(everyone[:6]),
                transport=transport,
                ledger=ledger,
                options=SendOptions(max_attempts=1),
            )
        losing.lose_after = set()
        losing.lose_before = {p.email for p in everyone[6:]}  # never reached Postmark
        with Ledger(database) as ledger:
            send_issue(
                template,
                ListAudience(everyone),
                transport=transport,
                ledger=ledger,
                options=SendOptions(max_attempts=1),
            )
        assert set(states(database, template.issue).values()) == {State.UNCERTAIN}

        # Too soon: Postmark's search may lag, so "not found" settles nothing yet.
        soon = settle(database, template, transport.sent_lookup(), at=time.time())
        assert soon[Verdict.SENT] == {p.email for p in everyone[:6]}
        assert soon[Verdict.NOT_SENT] == set() and len(soon[Verdict.UNKNOWN]) == 6
        later = settle(database, template, transport.sent_lookup(), at=time.time() + LATER)
        assert later[Verdict.NOT_SENT] == {p.email for p in everyone[6:]}
        assert later[Verdict.SENT] == set(), "settled rows are not asked about again"
        rows = states(database, template.issue)
        assert {a for a, s in rows.items() if s is State.SENT} == {p.email for p in everyone[:6]}
        assert {a for a, s in rows.items() if s is State.PENDING} == {p.email for p in everyone[6:]}

        losing.lose_before = set()
        with Ledger(database) as ledger:
            report = send_issue(
                template, ListAudience(everyone), transport=transport, ledger=ledger
            )
        assert report.complete and report.sent_now == 6
        real = Counter(
            email.utils.parseaddr(m["To"])[1].lower()
            for m in postmark.outbound
            if m["Metadata"].get("test") != "yes"
        )
        assert real == Counter({p.email: 1 for p in everyone}), "each subscriber exactly once"
        assert server.problems == []
        assert all("tag" in q and "recipient" in q for q in postmark.searches)


def test_postmark_message_without_our_key_stays_uncertain(
    template: MessageTemplate, tmp_path: Path
) -> None:
    """A message of the issue to the address but without `newsletter_key` (sent by an earlier
    version) may be this row's: never "not sent", so never a duplicate."""
    database = tmp_path / "newsletter.db"
    with ProviderFake(hang_seconds=2) as server:
        postmark = SearchablePostmark(server)
        losing = Losing(postmark, server)
        transport = PostmarkTransport(provider_settings("postmark", server), api_key=TOKEN)
        person = people(1)[0]
        losing.lose_after = {person.email}
        with Ledger(database) as ledger:
            send_issue(
                template,
                ListAudience([person]),
                transport=transport,
                ledger=ledger,
                options=SendOptions(max_attempts=1),
            )
        for message in postmark.outbound:
            message["Metadata"] = {"issue": template.issue}
        found = settle(database, template, transport.sent_lookup(), at=time.time() + LATER)
    assert found[Verdict.UNKNOWN] == {person.email}
    assert states(database, template.issue) == {person.email: State.UNCERTAIN}


def test_mailgun_uncertain_rows_are_settled_from_accepted_events(
    template: MessageTemplate, tmp_path: Path
) -> None:
    database = tmp_path / "newsletter.db"
    with ProviderFake(hang_seconds=2) as server:
        mailgun = SearchableMailgun(server)
        losing = Losing(mailgun, server)
        transport = MailgunTransport(provider_settings("mailgun", server), api_key=KEY)
        everyone = people(6)
        losing.lose_after = {p.email for p in everyone[:3]}
        losing.lose_before = {p.email for p in everyone[3:]}
        with Ledger(database) as ledger:
            send_issue(
                template,
                ListAudience(everyone),
                transport=transport,
                ledger=ledger,
                options=SendOptions(max_attempts=1),
            )
        assert set(states(database, template.issue).values()) == {State.UNCERTAIN}
        soon = settle(database, template, transport.sent_lookup(), at=time.time() + 60)
        assert soon[Verdict.SENT] == {p.email for p in everyone[:3]}
        assert soon[Verdict.UNKNOWN] == {p.email for p in everyone[3:]}, "events still settle"
        later = settle(database, template, transport.sent_lookup(), at=time.time() + LATER)
        assert later[Verdict.NOT_SENT] == {p.email for p in everyone[3:]}
        too_old = time.time() + 2 * 86400
        losing.lose_before = set()
        assert settle(database, template, transport.sent_lookup(), at=too_old) == {
            verdict: set() for verdict in Verdict
        }
        with Ledger(database) as ledger:
            report = send_issue(
                template, ListAudience(everyone), transport=transport, ledger=ledger
            )
        assert report.complete and report.sent_now == 3
        assert mailgun.server.accepted == Counter({p.email: 1 for p in everyone})
        assert server.problems == []


def test_outbox_uncertain_rows_are_settled_by_the_files(
    template: MessageTemplate, tmp_path: Path
) -> None:
    database = tmp_path / "newsletter.db"
    outbox = tmp_path / "outbox"
    transport = OutboxTransport(outbox)
    written, lost = people(2)
    with Ledger(database) as ledger:
        issue = ledger.issue(template.issue)
        issue.freeze([(p.email, p.email) for p in (written, lost)], template.fingerprint)
        for person in (written, lost):
            message = template.personalise(person)
            issue.mark_sending([person.email], message_ids={person.email: message.message_id})
            if person is written:
                transport.send(message)
            issue.mark_uncertain(person.email, "the run stopped")
    found = settle(database, template, OutboxSentLookup(outbox), at=time.time())
    assert found[Verdict.SENT] == {written.email} and found[Verdict.NOT_SENT] == {lost.email}
    assert states(database, template.issue) == {
        written.email: State.SENT,
        lost.email: State.PENDING,
    }


def newsletter(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_SECRET"] = "a-test-signing-secret"
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_reconcile_command(project: Path) -> None:
    """The example project sends to its outbox: a row left uncertain is settled by the CLI."""
    settings_template = example_template(project)
    person = people(1)[0]
    with Ledger(project / "newsletter.db") as ledger:
        issue = ledger.issue(settings_template.issue)
        issue.freeze([(person.email, person.email)], settings_template.fingerprint)
        message = settings_template.personalise(person)
        issue.mark_sending([person.email], message_ids={person.email: message.message_id})
        issue.mark_uncertain(person.email, "the run stopped")
    dry = newsletter(project, "reconcile", settings_template.issue, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "not_sent: " + person.email in dry.stdout and "would become pending" in dry.stdout
    done = newsletter(project, "reconcile", settings_template.issue)
    assert done.returncode == 0 and "1 now pending" in done.stdout
    again = newsletter(project, "reconcile", settings_template.issue)
    assert "no uncertain recipients" in again.stdout

    config = project / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace('kind = "outbox"', 'kind = "smtp"\nhost = "127.0.0.1"'), encoding="utf-8"
    )
    smtp = newsletter(project, "reconcile", settings_template.issue)
    assert smtp.returncode == 1
    assert "an SMTP server cannot be asked what it accepted" in smtp.stderr
    assert "newsletter.toml" in smtp.stderr and "transport.kind" in smtp.stderr
