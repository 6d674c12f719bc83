"""Sending to an audience (issue 14): the frozen audience equals the expression's result computed
here in Python (100,000 subscribers on SQLite, fewer on PostgreSQL), an empty audience is refused,
a resumed send keeps its audience, and the CLI shows it (send, status, check, tag, list, count)."""

from __future__ import annotations

import random
import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from newsletter.audience import SubscriberStore
from newsletter.audience.addresses import address_key
from newsletter.checks import check_issue
from newsletter.checks.model import CheckReport
from newsletter.config import Settings, TransportSettings
from newsletter.content import Issue, load_issue
from newsletter.delivery.ledger import Ledger
from newsletter.delivery.ledgeraudience import (
    AudienceChangedError,
    record_audience,
    recorded_audience,
)
from newsletter.delivery.sender import StoreAudience
from newsletter.errors import AudienceError
from newsletter.render import render_issue
from newsletter.render.model import RenderedIssue
from newsletter.segment import parse_audience
from newsletter.sending import SendRequest, deliver, plan_send
from tests.smtpserver import SmtpTestServer
from tests.test_cli_send import newsletter

ISSUE = "2026-11"

# --- the frozen audience on a big list -------------------------------------------------------

CITIES = ["Utrecht", "utrecht", "Gent", "O'Brien-stad", "Zürich", 'x" OR "1"="1', "Noord, Oost"]
TAGS = ["members", "board", "press", "東京", "ärzte", "partners"]
EXPRESSIONS = [
    "tag:members,-tag:press",
    "tag:board,tag:東京,city=Utrecht,city=Zürich",
    '-tag:members,-tag:ärzte,city="Noord, Oost"',
    'city="x"" OR ""1""=""1"',
    "tag:partners,-tag:board,-tag:press,city=O'Brien-stad",
    "all",
]


@dataclass(frozen=True)
class Person:
    email: str
    city: str
    tags: frozenset[str]
    subscribed: bool


def people(count: int, seed: int = 14) -> list[Person]:
    rng = random.Random(seed)
    return [
        Person(
            email=f"p{number:06d}@example.org",
            city=rng.choice([*CITIES, ""]),
            tags=frozenset(t for t in TAGS if rng.random() < 0.3),
            subscribed=rng.random() < 0.9,
        )
        for number in range(count)
    ]


def write_csv(path: Path, everyone: list[Person]) -> None:
    def quoted(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    lines = ["email,city,tags,status"]
    for person in everyone:
        status = "subscribed" if person.subscribed else "unsubscribed"
        tags = ",".join(sorted(person.tags))
        lines.append(f"{person.email},{quoted(person.city)},{quoted(tags)},{status}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def expected(everyone: list[Person], expression: str) -> set[str]:
    """The audience computed independently: the documented meaning, in plain Python."""
    if expression == "all":
        return {address_key(p.email) for p in everyone if p.subscribed}
    include: set[str] = set()
    exclude: set[str] = set()
    cities: set[str] = set()
    for item in re.findall(r'(?:[^,"]|"(?:[^"]|"")*")+', expression):
        if item.startswith("-tag:"):
            exclude.add(item[5:])
        elif item.startswith("tag:"):
            include.add(item[4:])
        else:
            value = item.removeprefix("city=")
            if value.startswith('"'):
                value = value[1:-1].replace('""', '"')
            cities.add(value)
    return {
        address_key(p.email)
        for p in everyone
        if p.subscribed
        and (not include or p.tags & include)
        and not p.tags & exclude
        and (not cities or p.city in cities)
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("engine", "count"), [("sqlite", 100_000), ("postgresql", 5_000)], ids=["sqlite", "postgresql"]
)
def test_the_frozen_audience_is_the_expressions_result(
    engine: str, count: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if engine == "sqlite":
        url = str(tmp_path / "newsletter.db")
    else:
        url = request.getfixturevalue("postgres_server").new_store()
    everyone = people(count)
    write_csv(tmp_path / "list.csv", everyone)
    with SubscriberStore(url) as store, Ledger(store.database) as ledger:
        report = store.import_csv(tmp_path / "list.csv", strict=True)
        assert report.added == count
        for number, expression in enumerate(EXPRESSIONS):
            segment = parse_audience(expression)
            want = expected(everyone, expression)
            assert want, f"{expression} selects nobody: the test would prove little"
            issue = ledger.issue(f"issue-{number}")
            audience = StoreAudience(store, segment)
            frozen = issue.freeze(
                ((key, r.email) for key, r in audience.recipients()), fingerprint="f"
            )
            assert frozen.total == len(want), expression
            assert {row.key for row in issue.rows()} == want, expression
            assert store.count_segment(segment) == len(want), expression
            # The same condition for a freeze that selects in SQL (one INSERT ... SELECT).
            where, params = audience.sql_filter("s")
            with store.database.read() as db:
                found = db.execute(
                    f"SELECT s.key FROM subscribers s WHERE s.status = 'subscribed' AND {where}",
                    params,
                ).fetchall()
            assert {row[0] for row in found} == want, expression


# --- sending to an audience through the use case ---------------------------------------------


def offline_check(
    issue: Issue, rendered: RenderedIssue, settings: Settings, *, offline: bool
) -> CheckReport:
    return check_issue(issue, rendered, settings, offline=True, spamassassin=None)


READERS = {
    "ann@example.org": ["members"],
    "bob@example.org": ["members", "press"],
    "carol@example.net": ["board"],
    "dan@example.org": [],
}


@pytest.fixture
def base(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The example project (outbox transport) with a signing secret and four tagged readers."""
    monkeypatch.delenv(settings.unsubscribe.secret_env, raising=False)
    (settings.root / ".newsletter-secret").write_text("a-test-signing-secret\n", encoding="utf-8")
    with SubscriberStore(settings.database_path) as store:
        for address, tags in READERS.items():
            store.add(address, address.split("@")[0].title(), {"city": "Gent"})
            if tags:
                store.tag(address, tags)
    return settings


def set_audience(settings: Settings, front: str) -> None:
    path = settings.root / "issues" / ISSUE / "issue.md"
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^audience:.*\n(?:  .*\n)*", "", text)
    path.write_text(text.replace("---\n", f"---\n{front}", 1), encoding="utf-8")


def ledger_emails(settings: Settings) -> list[str]:
    with Ledger(settings.database_path) as ledger:
        return sorted(row.email for row in ledger.issue(ISSUE).rows())


def test_issue_md_audience_is_frozen_and_recorded(base: Settings) -> None:
    set_audience(base, "audience:\n  tags: [members, board]\n  exclude: [press]\n")
    plan = plan_send(base, SendRequest(ISSUE), checker=offline_check)
    assert plan.audience.expression == "tag:board,tag:members,-tag:press"
    assert (plan.audience_size, plan.subscribed) == (2, 4)
    report = deliver(plan)
    assert report.sent_now == 2 and report.complete
    assert ledger_emails(base) == ["ann@example.org", "carol@example.net"]
    with Ledger(base.database_path) as ledger:
        assert recorded_audience(ledger.database, ISSUE) == "tag:board,tag:members,-tag:press"


def test_an_empty_audience_is_refused_and_nothing_recorded(base: Settings) -> None:
    with pytest.raises(AudienceError) as refused:
        plan_send(base, SendRequest(ISSUE, audience="tag:nobody"), checker=offline_check)
    assert refused.value.message == (
        "the audience of '2026-11' (tag:nobody: tagged nobody) has no subscribed subscriber; "
        "nothing was sent"
    )
    with SubscriberStore(base.database_path) as store:
        store.set_status("carol@example.net", "unsubscribed", source="test")
    with pytest.raises(AudienceError, match="has no subscribed subscriber"):
        plan_send(base, SendRequest(ISSUE, audience="board"), checker=offline_check)
    assert ledger_emails(base) == []
    with Ledger(base.database_path) as ledger:
        assert recorded_audience(ledger.database, ISSUE) is None


def test_a_bad_audience_option_names_the_option(base: Settings) -> None:
    with pytest.raises(AudienceError) as refused:
        plan_send(base, SendRequest(ISSUE, audience="members;press"), checker=offline_check)
    assert (
        refused.value.message
        == "--audience 'members;press': tag 'members;press': ';' is not allowed"
    )


def test_a_bad_audience_option_is_reported_before_the_transport_is_tried(base: Settings) -> None:
    with SmtpTestServer() as stopped:
        port = stopped.port  # nothing listens here any more
    unreachable = replace(
        base,
        transport=TransportSettings(kind="smtp", host="127.0.0.1", port=port, security="none"),
    )
    with pytest.raises(AudienceError, match=r"^--audience 'a,,b': .*empty item"):
        plan_send(unreachable, SendRequest(ISSUE, audience="a,,b"), checker=offline_check)


def test_a_resumed_send_keeps_its_audience(base: Settings) -> None:
    plan = plan_send(base, SendRequest(ISSUE, audience="members"), checker=offline_check)
    first = deliver(plan)
    assert first.sent_now == 2
    # Someone tagged since: a resume with the same audience sends them the issue.
    with SubscriberStore(base.database_path) as store:
        store.tag("dan@example.org", ["members"])
    again = plan_send(base, SendRequest(ISSUE, audience="tag:MEMBERS"), checker=offline_check)
    assert deliver(again).sent_now == 1
    with pytest.raises(AudienceChangedError) as refused:
        plan_send(base, SendRequest(ISSUE, audience="board"), checker=offline_check)
    assert refused.value.message == (
        "the send of '2026-11' started with the audience 'tag:members'; this run asks for "
        "'tag:board'. A send keeps its audience until everyone in it has the issue"
    )
    assert refused.value.hint is not None and "--audience 'tag:members'" in refused.value.hint
    # issue.md says everyone now: refused too, and the hint says where the change is.
    with pytest.raises(AudienceChangedError) as changed:
        plan_send(base, SendRequest(ISSUE), checker=offline_check)
    assert changed.value.hint is not None and "issue.md's audience changed" in changed.value.hint
    # The check under the run lock, for a plan made before another run froze another audience.
    stale = plan_send(base, SendRequest(ISSUE, audience="members"), checker=offline_check)
    with pytest.raises(AudienceChangedError):
        deliver(replace(stale, audience=parse_audience("board")))
    assert ledger_emails(base) == ["ann@example.org", "bob@example.org", "dan@example.org"]


def test_a_send_frozen_before_audiences_counts_as_everyone(base: Settings) -> None:
    with Ledger(base.database_path) as ledger:
        ledger.issue("old").freeze([("ann@example.org", "ann@example.org")], fingerprint="f")
        assert recorded_audience(ledger.database, "old") == "all"
        record_audience(ledger.database, "old", "all", now=1.0)
        with pytest.raises(AudienceChangedError, match="started with the audience 'all'"):
            record_audience(ledger.database, "old", "tag:members", now=2.0)
        # Not frozen yet (a run that failed before its freeze): the new audience replaces it.
        record_audience(ledger.database, "new", "tag:board", now=1.0)
        record_audience(ledger.database, "new", "tag:members", now=2.0)
        assert recorded_audience(ledger.database, "new") == "tag:members"


def test_check_warns_about_an_empty_audience(base: Settings) -> None:
    issue_path = base.root / "issues" / ISSUE / "issue.md"
    set_audience(base, "audience:\n  where:\n    citty: Gent\n")
    loaded = load_issue(base.root / "issues" / ISSUE)
    report = check_issue(loaded, render_issue(loaded, base), base, offline=True, spamassassin=None)
    found = [(f.code, f.message, f.file, f.line) for f in report.warnings if "audience" in f.code]
    assert sorted(found) == [
        (
            "audience",
            "no subscriber has the attribute 'citty'; did you mean 'city'?",
            issue_path,
            2,
        ),
        (
            "audience-empty",
            "the audience citty=Gent (citty is 'Gent') has no subscribed subscriber: "
            "a send would be refused",
            issue_path,
            2,
        ),
    ]
    set_audience(base, "audience: members\n")
    loaded = load_issue(base.root / "issues" / ISSUE)
    report = check_issue(loaded, render_issue(loaded, base), base, offline=True, spamassassin=None)
    assert not [f for f in report.findings if "audience" in f.code]


# --- the command line ------------------------------------------------------------------------


def test_cli_tags_audience_send_and_status(project: Path) -> None:
    (project / "list.csv").write_text(
        '"Email Address","First Name",TAGS\n'
        'ann@example.org,Ann,"""Members"""\n'
        'bob@example.org,Bob,"""Members"",""Press"""\n'
        "carol@example.org,Carol,\n",
        encoding="utf-8",
    )

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return newsletter(project, *args, password=None, stdin=stdin)

    imported = run("subscribers", "import", "list.csv", "--tag", "2026")
    assert imported.returncode == 0, imported.stderr
    tagged = run("subscribers", "tag", "carol@example.org", "Board", "members")
    assert tagged.stdout.splitlines() == [
        "Tagged carol@example.org: board, members",
        "Tags of carol@example.org: 2026, board, members",
    ]
    untagged = run("subscribers", "untag", "carol@example.org", "members", "press")
    assert untagged.stdout.splitlines() == [
        "Untagged carol@example.org: members",
        "carol@example.org did not have: press",
        "Tags of carol@example.org: 2026, board",
    ]
    bad = run("subscribers", "tag", "carol@example.org", "a'b")
    assert bad.returncode == 1 and 'tag "a\'b": "\'" is not allowed' in bad.stderr
    listed = run("subscribers", "list", "--tag", "members")
    assert "ann@example.org" in listed.stdout and "carol@example.org" not in listed.stdout
    assert "2026, members, press" in listed.stdout
    counted = run("subscribers", "count")
    assert re.search(r"members\s+2\s+2", counted.stdout), counted.stdout
    assert re.search(r"2026\s+3\s+3", counted.stdout), counted.stdout
    sized = run("subscribers", "count", "--audience", "members,-press")
    assert sized.stdout.strip() == (
        "1 subscribed subscriber in tag:members,-tag:press (tagged members, not tagged press)"
    )

    test_copy = run("send", ISSUE, "--test", "--audience", "members")
    assert test_copy.returncode == 1 and "--audience does not apply to --test" in test_copy.stderr
    empty = run("send", ISSUE, "--audience", "nobody", "--yes")
    assert empty.returncode == 1 and "nothing was sent" in empty.stderr
    declined = run("send", ISSUE, "--audience", "tag:members,-tag:press", stdin="n\n")
    assert re.search(
        r"Audience\s+tag:members,-tag:press \(tagged members, not tagged press\)", declined.stdout
    ), declined.stdout
    assert re.search(r"Recipients\s+1 of 3 subscribed", declined.stdout)
    sent = run("send", ISSUE, "--audience", "tag:members,-tag:press", "--yes")
    assert sent.returncode == 0, sent.stderr
    assert "sent 1 now, 1 of 1 in all" in sent.stdout
    other = run("send", ISSUE, "--audience", "board", "--yes")
    assert other.returncode == 1
    assert "started with the audience 'tag:members,-tag:press'" in other.stderr
    status = run("status", ISSUE)
    assert status.stdout.splitlines()[0] == "Audience: tag:members,-tag:press"
