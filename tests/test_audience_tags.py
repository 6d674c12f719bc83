"""Tags on subscribers and audiences selected from the store (audience/tags.py), on both engines:
tag and untag, imports of Mailchimp/listmonk/our own CSV shapes, export and back, and audiences
with hostile tag names and attribute values matched literally (never as SQL)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from newsletter.audience import ImportProblemsError, SubscriberStore
from newsletter.errors import AudienceError
from newsletter.segment import Segment, SegmentSyntaxError, parse_audience

FIXTURES = Path(__file__).parent / "fixtures" / "csv"


@pytest.fixture
def store(store_url: str) -> SubscriberStore:
    return SubscriberStore(store_url)


def emails(
    store: SubscriberStore, segment: Segment, status: str | None = "subscribed"
) -> list[str]:
    return [s.email for s, _ in store.iter_segment(segment, status)]


def test_tag_and_untag(store: SubscriberStore) -> None:
    store.add("ann@example.org", "Ann")
    change = store.tag("ANN@example.org", ["Members", "board", "members"])
    assert (change.email, change.changed, change.unchanged, change.tags) == (
        "ann@example.org",
        ("members", "board"),
        (),
        ("board", "members"),
    )
    again = store.tag("ann@example.org", ["board", "press"])
    assert (again.changed, again.unchanged) == (("press",), ("board",))
    gone = store.untag("ann@example.org", ["press", "nope"])
    assert (gone.changed, gone.unchanged, gone.tags) == (
        ("press",),
        ("nope",),
        ("board", "members"),
    )
    assert store.tags("ann@example.org") == ("board", "members")
    counts = {c.tag: (c.subscribed, c.total) for c in store.tag_counts()}
    assert counts == {"board": (1, 1), "members": (1, 1)}
    store.set_status("ann@example.org", "unsubscribed", source="test")
    assert {c.tag: (c.subscribed, c.total) for c in store.tag_counts()}["board"] == (0, 1)


def test_tagging_refuses_bad_tags_and_unknown_people(store: SubscriberStore) -> None:
    store.add("ann@example.org")
    with pytest.raises(SegmentSyntaxError, match="';' is not allowed"):
        store.tag("ann@example.org", ["ok", "x;DROP TABLE subscriber_tags"])
    assert store.tags("ann@example.org") == ()  # nothing half-written
    with pytest.raises(AudienceError, match=r"no subscriber bob@example\.org"):
        store.tag("bob@example.org", ["members"])
    with pytest.raises(AudienceError, match="no tag given"):
        store.tag("ann@example.org", [])


def test_removing_a_subscriber_removes_their_tags(store: SubscriberStore) -> None:
    store.add("ann@example.org")
    store.tag("ann@example.org", ["members"])
    assert store.remove("ann@example.org")
    assert store.tag_counts() == []
    store.add("ann@example.org")
    assert store.tags("ann@example.org") == ()


def test_mailchimp_tags_column(store: SubscriberStore, tmp_path: Path) -> None:
    report = store.import_csv(FIXTURES / "mailchimp.csv")
    assert report.added == 2
    assert store.tags("ann.smith@example.org") == ("volunteers",)
    assert store.tags("mary@example.net") == ()
    several = tmp_path / "mailchimp.csv"
    several.write_text(
        '"Email Address",TAGS\n'
        'a@example.org,"""Volunteers"",""Partners & Friends"",""Board Members"""\n'
        "b@example.org,\n",
        encoding="utf-8",
    )
    report = store.import_csv(several)
    assert store.tags("a@example.org") == ("board-members", "partners-friends", "volunteers")
    assert report.warnings == (
        f"{several}:2: tag 'Partners & Friends' imported as 'partners-friends' "
        "(tags are letters, digits, - _ .)",
    )


def test_listmonk_lists_and_a_tags_column(store: SubscriberStore, tmp_path: Path) -> None:
    listmonk = tmp_path / "listmonk.csv"
    listmonk.write_text(
        "email,name,attributes,lists\n"
        'jo@example.org,Jo,"{""city"": ""Gent""}","[{""id"": 1, ""name"": ""Default list""},'
        ' {""id"": 3, ""name"": ""Board""}]"\n'
        'kim@example.org,Kim,"{}","Opt-in list"\n',
        encoding="utf-8",
    )
    store.import_csv(listmonk)
    assert store.tags("jo@example.org") == ("board", "default-list")
    assert store.tags("kim@example.org") == ("opt-in-list",)
    jo = store.get("jo@example.org")
    assert jo is not None and dict(jo.attributes) == {"city": "Gent"}
    plain = tmp_path / "plain.csv"
    plain.write_text('email,tags\nkim@example.org,"members, press"\n', encoding="utf-8")
    store.import_csv(plain, tags=["imported-2026"])
    # An import adds tags; it never takes any away.
    assert store.tags("kim@example.org") == ("imported-2026", "members", "opt-in-list", "press")


def test_an_import_refuses_a_bad_tag_by_line_and_a_bad_option_before_reading(
    store: SubscriberStore, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        'email,tags\nann@example.org,members\nbob@example.org,"ok,\x1b[2J"\n'
        'carol@example.org,"!!!"\n',
        encoding="utf-8",
    )
    with pytest.raises(ImportProblemsError) as raised:
        store.import_csv(bad, strict=True)
    assert [str(p) for p in raised.value.problems] == [
        "line 3: tag '\\x1b[2J' holds the control character '\\x1b'",
        "line 4: tag '!!!' has no letter or digit",
    ]
    assert store.count("subscribed") == 0  # strict: nothing imported
    report = store.import_csv(bad)
    assert report.added == 1 and len(report.problems) == 2
    assert store.tags("ann@example.org") == ("members",)
    with pytest.raises(SegmentSyntaxError, match="'/' is not allowed"):
        store.import_csv(bad, tags=["a/b"])


def test_export_writes_tags_and_imports_back(store: SubscriberStore, tmp_path: Path) -> None:
    store.add("ann@example.org", "Ann", {"city": "Gent"})
    store.add("bob@example.org", "Bob")
    store.tag("ann@example.org", ["members", "board"])
    out = io.StringIO(newline="")
    assert store.export_csv(out) == 2
    assert out.getvalue().splitlines() == [
        "email,name,status,tags,city",
        'ann@example.org,Ann,subscribed,"board,members",Gent',
        "bob@example.org,Bob,subscribed,,",
    ]
    path = tmp_path / "export.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    with SubscriberStore(tmp_path / "other.db") as other:
        other.import_csv(path)
        assert other.tags("ann@example.org") == ("board", "members")
        assert other.tags("bob@example.org") == ()


HOSTILE = [
    "O'Brien",
    "'; DROP TABLE subscribers; --",
    '" OR "1"="1',
    "Zürich",
    "東京",
    "a,b",
    "50%",
    ":seg_t0",
    "%(seg_t0)s",
    "\u202eevil",
    "line\nbreak",
]


def test_hostile_attribute_values_match_literally(store: SubscriberStore) -> None:
    for number, value in enumerate(HOSTILE):
        store.add(f"p{number}@example.org", attributes={"city": value})
    store.add("other@example.org", attributes={"city": "Gent"})
    for number, value in enumerate(HOSTILE):
        if "\n" in value:
            continue  # a line break can be stored but never asked for (control character)
        segment = Segment.of(where={"city": [value]})
        assert emails(store, segment) == [f"p{number}@example.org"], value
        assert store.count_segment(parse_audience(segment.expression)) == 1
    everyone = store.count("subscribed")
    assert everyone == len(HOSTILE) + 1
    assert store.count_segment(Segment()) == everyone  # the tables are all still there


def test_hostile_tag_names_are_refused_or_kept_as_data(store: SubscriberStore) -> None:
    store.add("ann@example.org")
    store.add("bob@example.org")
    for bad in ["x' OR '1'='1", "a); DELETE FROM subscribers; --", "a\x00b", "<script>"]:
        with pytest.raises(SegmentSyntaxError):
            store.tag("ann@example.org", [bad])
    store.tag("ann@example.org", ["東京", "ärzte", "or.1-1_"])
    assert emails(store, parse_audience("tag:東京")) == ["ann@example.org"]
    assert emails(store, parse_audience("-tag:ÄRZTE")) == ["bob@example.org"]
    assert emails(store, parse_audience("or.1-1_")) == ["ann@example.org"]
    assert store.count("subscribed") == 2


def test_segments_select_subscribed_people_only(store: SubscriberStore) -> None:
    people = {
        "a@example.org": ({"city": "Utrecht"}, ["members"]),
        "b@example.org": ({"city": "Utrecht"}, ["members", "press"]),
        "c@example.org": ({"city": "Gent"}, ["members"]),
        "d@example.org": ({"city": "utrecht"}, ["board"]),
        "e@example.org": ({}, []),
        "f@example.org": ({"city": "Utrecht"}, ["members"]),
    }
    for email, (attributes, tags) in people.items():
        store.add(email, attributes=attributes)
        if tags:
            store.tag(email, tags)
    store.set_status("f@example.org", "unsubscribed", source="test")
    assert emails(store, parse_audience("members")) == [
        "a@example.org",
        "b@example.org",
        "c@example.org",
    ]
    assert emails(store, parse_audience("members,-press,city=Utrecht")) == ["a@example.org"]
    assert emails(store, parse_audience("members,board")) == [
        "a@example.org",
        "b@example.org",
        "c@example.org",
        "d@example.org",
    ]
    assert emails(store, parse_audience("-members")) == ["d@example.org", "e@example.org"]
    # Exact text: `utrecht` is not `Utrecht`.
    assert emails(store, parse_audience("city=utrecht")) == ["d@example.org"]
    assert emails(store, parse_audience("city=Utrecht,city=Gent")) == [
        "a@example.org",
        "b@example.org",
        "c@example.org",
    ]
    assert emails(store, parse_audience("members"), status=None)[-1] == "f@example.org"
    assert store.count_segment(parse_audience("nobody")) == 0


def test_audience_pages_are_complete(store: SubscriberStore, tmp_path: Path) -> None:
    """More than one page (1000) of a sparse audience: nobody skipped or repeated."""
    rng = random.Random(14)
    wanted = set()
    rows = ["email,tags"]
    for number in range(2500):
        email = f"p{number:05d}@example.org"
        tagged = rng.random() < 0.5
        rows.append(f"{email},{'members' if tagged else ''}")
        if tagged:
            wanted.add(email)
    csv_path = tmp_path / "many.csv"
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    store.import_csv(csv_path)
    selected = [
        s.email for s, tags in store.iter_segment(parse_audience("members"), with_tags=True)
    ]
    assert len(selected) == len(set(selected)) == len(wanted)
    assert set(selected) == wanted
    assert store.count_segment(parse_audience("members")) == len(wanted)


def test_counts_leave_out_an_import_still_writing_and_any_in_segment_agrees(
    store: SubscriberStore,
) -> None:
    store.add("ann@example.org", "Ann")
    members = parse_audience("tag:members")
    assert store.count("subscribed") == 1 and store.count_segment() == 1
    assert store.any_in_segment() and not store.any_in_segment(members)
    # Rows of an import that is still writing, as the importer leaves them between chunks.
    with store.database.transaction() as db:
        db.execute(
            "INSERT INTO subscriber_imports (id, file, host, pid, state, started_at,"
            " heartbeat_at) VALUES (77, 'big.csv', 'here', 1, 'writing', 0, 0)"
        )
        db.execute(
            "INSERT INTO subscribers (key, email, name, attributes, status, created_at,"
            " updated_at, import_id) VALUES ('bob@example.org', 'bob@example.org', 'Bob', '{}',"
            " 'subscribed', 0, 0, 77)"
        )
    assert store.count("subscribed") == 1 and store.count_segment() == 1
    store.remove("ann@example.org")
    assert store.count("subscribed") == 0 and not store.any_in_segment()
    with store.database.transaction() as db:
        db.execute("UPDATE subscriber_imports SET state = 'done' WHERE id = 77")
    assert store.count("subscribed") == 1 and store.count_segment() == 1
    assert store.any_in_segment()
