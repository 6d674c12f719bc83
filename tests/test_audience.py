"""The subscriber store on both engines (`store_url`): adding, statuses, history, CSV files."""

from __future__ import annotations

import io
import re
import sqlite3
import threading
from collections.abc import Iterator
from email.headerregistry import Address
from pathlib import Path

import pytest

from newsletter.audience import store as audience_store
from newsletter.audience.csvfile import ColumnMapping, ImportProblemsError, RowProblem
from newsletter.audience.model import Subscriber, SubscriberStatus
from newsletter.audience.store import SubscriberStore
from newsletter.delivery.ledger import Ledger
from newsletter.delivery.mime import address_value
from newsletter.errors import AudienceError
from newsletter.store import STORE_VERSION

FIXTURES = Path(__file__).parent / "fixtures" / "csv"


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_url: str, clock: Clock) -> Iterator[SubscriberStore]:
    with SubscriberStore(store_url, clock=clock) as opened:
        yield opened


def write(tmp_path: Path, text: str, name: str = "list.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def stored(store: SubscriberStore, email: str) -> Subscriber:
    """The subscriber stored under `email`; fails the test when there is none."""
    found = store.get(email)
    assert found is not None, f"{email} is not in the store"
    return found


def emails(store: SubscriberStore, status: str | None = "subscribed") -> list[str]:
    return [s.email for s in store.iter_subscribers(status)]


# --- the store ----------------------------------------------------------------------------------


def test_add_get_and_case_insensitive_duplicates(store: SubscriberStore) -> None:
    added = store.add("Ann.Smith@Example.org", "Ann Smith", {"City": "Gent"})
    assert added.email == "Ann.Smith@example.org"
    assert dict(added.attributes) == {"city": "Gent"}
    assert added.status == SubscriberStatus.SUBSCRIBED
    assert added.id is not None
    assert store.get("ANN.SMITH@EXAMPLE.ORG") == added
    again = store.add("ann.smith@example.org", "", {"plan": "paid"})
    assert again.id == added.id
    assert again.email == "ann.smith@example.org"  # the latest spelling is kept
    assert again.name == "Ann Smith"  # an empty name leaves the stored one alone
    assert dict(again.attributes) == {"city": "Gent", "plan": "paid"}
    assert store.count() == {
        "subscribed": 1,
        "unsubscribed": 0,
        "bounced": 0,
        "complained": 0,
        "unconfirmed": 0,
    }
    assert store.get("nobody@example.org") is None
    assert store.get("not an address") is None


def test_names_are_stored_as_given_but_line_breaks_are_refused(store: SubscriberStore) -> None:
    hostile = "<script>alert('x')</script> \"Søren\" <a@b.org>"
    assert store.add("s@example.org", hostile).name == hostile
    with pytest.raises(AudienceError, match=r"the name 'Eve\\r\\nBcc: x@y.org' contains a line"):
        store.add("eve@example.org", "Eve\r\nBcc: x@y.org")
    assert store.get("eve@example.org") is None


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"email": "x"}, "attribute 'email' would hide the subscriber's email"),
        ({"Name": "x"}, "attribute 'Name' would hide the subscriber's name"),
        ({"???": "x"}, "attribute name '???' has no letters or digits"),
    ],
)
def test_bad_attribute_names(
    store: SubscriberStore, attributes: dict[str, str], message: str
) -> None:
    with pytest.raises(AudienceError, match=re.escape(message)):
        store.add("a@example.org", attributes=attributes)


def test_status_changes_are_recorded_and_not_undone_by_add(
    store: SubscriberStore, clock: Clock
) -> None:
    store.add("ann@example.org", "Ann")
    clock.now += 60
    changed = store.set_status("ANN@example.org", "unsubscribed", source="link")
    assert changed.status == "unsubscribed"
    assert store.set_status("ann@example.org", "unsubscribed", source="again").status == (
        "unsubscribed"
    )
    kept = store.add("ann@example.org", "Ann Smith")
    assert (kept.status, kept.name) == ("unsubscribed", "Ann Smith")
    clock.now += 60
    back = store.add("ann@example.org", resubscribe=True, source="asked by phone")
    assert back.status == "subscribed"
    history = store.events("ann@example.org")
    assert [(e.at, e.old_status, e.new_status, e.source) for e in history] == [
        (1_700_000_000.0, None, "subscribed", "add"),
        (1_700_000_060.0, "subscribed", "unsubscribed", "link"),
        (1_700_000_120.0, "unsubscribed", "subscribed", "asked by phone"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("email", "status", "source", "message"),
    [
        ("nobody@example.org", "bounced", "smtp", "no subscriber nobody@example.org"),
        ("ann@example.org", "gone", "x", "unknown status 'gone' (use subscribed, unsubscribed"),
        ("ann@example.org", "bounced", " ", "a status change needs a source"),
    ],
)
def test_set_status_refusals(
    store: SubscriberStore, email: str, status: str, source: str, message: str
) -> None:
    store.add("ann@example.org")
    with pytest.raises(AudienceError, match=re.escape(message)):
        store.set_status(email, status, source=source)
    assert stored(store, "ann@example.org").status == "subscribed"


def test_remove_erases_the_subscriber_and_their_history(store: SubscriberStore) -> None:
    store.add("ann@example.org")
    store.set_status("ann@example.org", "bounced", source="smtp 550")
    assert store.remove("ANN@example.org") is True
    assert store.remove("ann@example.org") is False
    assert store.get("ann@example.org") is None
    assert store.events("ann@example.org") == ()
    with store.database.read() as db:
        assert db.execute("SELECT COUNT(*) FROM subscriber_events").fetchone()[0] == 0


def test_remove_erases_the_address_from_every_ledger_and_the_soft_bounces(
    store: SubscriberStore,
) -> None:
    """Issue 15, D15: `remove` is an erasure (GDPR): no table keeps the address."""
    if not store.database.is_sqlite:
        # The proof reads the whole file with sqlite3's dump; the erasing SQL is the same.
        pytest.skip("the proof dumps the SQLite file; the erasure is engine-independent SQL")
    store.add("ann@example.org")
    store.add("bob@example.org")
    with Ledger(store.path) as ledger:
        for issue in ("2026-10", "2026-11"):
            ledger.issue(issue).freeze(
                [("ann@example.org", "ann@example.org"), ("bob@example.org", "bob@example.org")],
                "fp",
            )
    db = sqlite3.connect(store.path)
    with db:
        db.execute(
            "INSERT INTO inbox_soft_bounces (subscriber_key, report_id, message_key, status, at)"
            " VALUES ('ann@example.org', 'r1', 'm1', '4.2.2', 1.0)"
        )
    assert store.remove("Ann@Example.org") is True
    dump = "\n".join(db.iterdump())
    assert "ann@example.org" not in dump.lower()
    assert dump.count("bob@example.org") >= 3, "only the removed address goes"


def test_iteration_streams_in_address_order_by_status(
    store: SubscriberStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audience_store, "_PAGE", 3)  # several pages from a small list
    for address in ["d@example.org", "B@example.org", "a@example.org", "e@example.org",
                    "c@example.org", "f@example.org", "g@example.org"]:  # fmt: skip
        store.add(address)
    store.set_status("c@example.org", "complained", source="fbl")
    assert emails(store) == [
        "a@example.org",
        "B@example.org",
        "d@example.org",
        "e@example.org",
        "f@example.org",
        "g@example.org",
    ]
    assert emails(store, "complained") == ["c@example.org"]
    assert len(emails(store, None)) == 7
    assert store.count("subscribed") == 6
    assert store.count("complained") == 1
    # Changing the store between pages neither fails nor repeats anyone.
    seen = []
    for subscriber in store.iter_subscribers():
        seen.append(subscriber.email)
        store.set_status(subscriber.email, "unsubscribed", source="test")
    assert seen == emails(store, "unsubscribed")


def test_one_store_shared_by_threads(store: SubscriberStore) -> None:
    def work(number: int) -> None:
        for index in range(40):
            store.add(f"t{number}-{index}@example.org")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.count("subscribed") == 160


def test_schema_version_and_settings(tmp_path: Path) -> None:
    path = tmp_path / "newsletter.db"
    SubscriberStore(path).close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT MAX(version) FROM store_migrations").fetchone()[0] == STORE_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    with SubscriberStore(path) as reopened:  # migrating twice is harmless
        reopened.add("a@example.org")
    with SubscriberStore(path) as reopened:
        assert reopened.count("subscribed") == 1


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newsletter.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(AudienceError) as caught:
        SubscriberStore(path)
    assert str(caught.value) == (
        f"{path}: the subscriber database was written by a newer version of newsletter "
        f"(subscriber schema version 99; this version knows up to store version {STORE_VERSION})"
    )
    assert caught.value.hint == "Upgrade newsletter to work with this project."


def test_a_broken_database_is_named(tmp_path: Path) -> None:
    path = tmp_path / "newsletter.db"
    path.write_bytes(b"this is not a database, just text" * 100)
    with pytest.raises(AudienceError, match=f"{path}: cannot open the subscriber database"):
        SubscriberStore(path)


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = SubscriberStore(tmp_path / "newsletter.db")
    store.close()
    store.close()
    with pytest.raises(AudienceError, match="cannot count the subscribers"):
        store.count()


# --- CSV import: layouts ------------------------------------------------------------------------


def test_mailchimp_export(store: SubscriberStore) -> None:
    report = store.import_csv(FIXTURES / "mailchimp.csv")
    assert (report.added, report.problems) == (2, ())
    ann = store.get("ann.smith@example.org")
    assert ann is not None
    assert (ann.email, ann.name, ann.first_name, ann.last_name) == (
        "Ann.Smith@example.org",
        "Ann Smith",
        "Ann",
        "Smith",
    )
    assert ann.attributes["address"] == "12 Main Street\r\nSpringfield"
    assert ann.attributes["member_rating"] == "2"
    # Mailchimp's TAGS column gives tags, not an attribute (issue 14).
    assert "tags" not in ann.attributes
    assert store.tags("ann.smith@example.org") == ("volunteers",)
    assert "optin_ip" not in ann.attributes  # empty cells are not stored
    mary = store.get("mary@example.net")
    assert mary is not None
    assert (mary.name, mary.first_name, mary.last_name) == (
        "Mary Ann van Dijk",
        "Mary Ann",
        "van Dijk",
    )
    assert mary.attributes["notes"] == "likes tulips"


def test_mailchimp_unsubscribed_export_does_not_subscribe_anyone(
    store: SubscriberStore, tmp_path: Path
) -> None:
    store.add("gone@example.org", "Gone Away")
    report = store.import_csv(FIXTURES / "mailchimp_unsubscribed.csv")
    assert (report.added, report.updated) == (0, 1)
    assert stored(store, "gone@example.org").status == "unsubscribed"
    fresh = SubscriberStore(tmp_path / "other.db")
    fresh.import_csv(FIXTURES / "mailchimp_unsubscribed.csv")
    assert emails(fresh) == []
    assert emails(fresh, "unsubscribed") == ["gone@example.org"]
    fresh.close()


def test_substack_export(store: SubscriberStore) -> None:
    report = store.import_csv(FIXTURES / "substack.csv")
    assert report.added == 2
    patron = store.get("patron@example.com")
    assert patron is not None
    assert patron.name == ""
    assert dict(patron.attributes) == {
        "active_subscription": "true",
        "expiry": "2025-04-01T10:00:00.000Z",
        "plan": "yearly",
        "email_disabled": "false",
        "created_at": "2024-04-02T11:00:00.000Z",
    }


def test_listmonk_json_attributes(store: SubscriberStore, tmp_path: Path) -> None:
    assert store.import_csv(FIXTURES / "listmonk.csv").added == 2
    jo = store.get("jo@example.org")
    assert jo is not None
    assert jo.name == "Jo Janssens"
    assert dict(jo.attributes) == {"city": "Gent", "projects": "3", "tags": '["a", "b"]'}
    bad = write(tmp_path, 'email,attributes\nx@example.org,"{not json"\ny@example.org,"[1]"\n')
    report = store.import_csv(bad)
    assert [str(p) for p in report.problems] == [
        "line 2: the attributes are not valid JSON (Expecting property name enclosed in double "
        "quotes)",
        'line 3: the attributes must be a JSON object like {"city": "Gent"}',
    ]


def test_plain_layout(store: SubscriberStore) -> None:
    report = store.import_csv(FIXTURES / "plain.csv")
    assert report.added == 2
    assert [(s.email, s.name) for s in store.iter_subscribers()] == [
        ("alex@example.org", ""),
        ("sam@example.org", "Sam Lee"),
    ]


@pytest.mark.parametrize(
    ("text", "delimiter", "name"),
    [
        ("\ufeffE-Mail;Naam;Stad\nann@example.org;Ann;Gent\n", None, "Ann"),
        ("EMAIL\tNAME\tSTAD\r\nann@example.org\tAnn\tGent\r\n", None, "Ann"),
        ('email;name;stad\nann@example.org;"Ann, the first";Gent\n', None, "Ann, the first"),
        ('"e,mail;x";name;stad\nann@example.org;Ann;Gent\n', None, "Ann"),
        ("email|name|stad\nann@example.org|Ann|Gent\n", "|", "Ann"),
    ],
)
def test_bom_headers_and_delimiters(
    store: SubscriberStore, tmp_path: Path, text: str, delimiter: str | None, name: str
) -> None:
    mapping = ColumnMapping(email="e,mail;x") if text.startswith('"e,') else None
    report = store.import_csv(write(tmp_path, text), delimiter=delimiter, mapping=mapping)
    assert (report.added, report.problems) == (1, ())
    ann = store.get("ann@example.org")
    assert ann is not None
    assert ann.name == name
    assert dict(ann.attributes) == {"stad": "Gent"}


def test_a_bad_delimiter_is_refused(store: SubscriberStore, tmp_path: Path) -> None:
    path = write(tmp_path, "email\n")
    with pytest.raises(AudienceError, match="the delimiter must be one character, not ';;'"):
        store.import_csv(path, delimiter=";;")


def test_utf16_from_excel(store: SubscriberStore, tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffemail\tname\nzoë@example.org\tZoë\n", encoding="utf-16-le")
    assert store.import_csv(path).added == 1
    assert stored(store, "zoë@example.org").name == "Zoë"


def test_a_file_that_is_not_utf8_is_refused_with_its_line(
    store: SubscriberStore, tmp_path: Path
) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("email,name\nann@example.org,Ann\nzoe@example.org,Zoë\n".encode("cp1252"))
    with pytest.raises(AudienceError) as caught:
        store.import_csv(path, encoding="utf-8")
    assert caught.value.message == f"{path}:3: the file is not utf-8 text (byte 0xEB)"
    # Without --encoding a file that is not even Windows-1252 is refused, with both ways out.
    path.write_bytes(b"email,name\nann@example.org,Ann\x81\n")
    with pytest.raises(AudienceError) as caught:
        store.import_csv(path)
    assert caught.value.message == f"{path}:2: the file is not UTF-8 text (byte 0x81)"
    assert "CSV UTF-8" in (caught.value.hint or "")
    assert "--encoding" in (caught.value.hint or "")
    assert store.count("subscribed") == 0


def test_column_mapping_overrides_detection(store: SubscriberStore, tmp_path: Path) -> None:
    path = write(
        tmp_path, "Email,Work Mail,Prénom,Nom de famille\nold@example.org,ann@work.org,Ann,De Wit\n"
    )
    mapping = ColumnMapping(email="work mail", first_name="PRÉNOM", last_name="nom_de_famille")
    report = store.import_csv(path, mapping=mapping)
    assert report.added == 1
    ann = store.get("ann@work.org")
    assert ann is not None
    assert (ann.name, ann.first_name, ann.last_name) == ("Ann De Wit", "Ann", "De Wit")
    assert ann.attributes["email_2"] == "old@example.org"  # never hides the real address


@pytest.mark.parametrize(
    ("text", "mapping", "message"),
    [
        ("Naam,Adres\nAnn,ann@example.org\n", None,
         "{path}: no email column; the header has 'Naam', 'Adres'"),
        ("ann@example.org,Ann\nbob@example.org,Bob\n", None,
         "{path}: no email column; the header has 'ann@example.org', 'Ann'"),
        ("email,name\n", ColumnMapping(email="mail address"),
         "{path}: no column 'mail address' for the email; the header has 'email', 'name'"),
        ("email,name\n", ColumnMapping(first_name="voornaam"),
         "{path}: no column 'voornaam' for the first name; the header has 'email', 'name'"),
        ("Email,Email Address\n", None,
         "{path}: both 'Email' and 'Email Address' look like the email column"),
        ("", None, "{path}: the file has no header line (it is empty)"),
        ("\n\n", None, "{path}: the file has no header line (it is empty)"),
    ],
)  # fmt: skip
def test_layout_errors_name_the_file_and_headers(
    store: SubscriberStore,
    tmp_path: Path,
    text: str,
    mapping: ColumnMapping | None,
    message: str,
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(AudienceError) as caught:
        store.import_csv(path, mapping=mapping)
    assert caught.value.message == message.format(path=path)


def test_headerless_file_gets_a_hint(store: SubscriberStore, tmp_path: Path) -> None:
    with pytest.raises(AudienceError) as caught:
        store.import_csv(write(tmp_path, "ann@example.org,Ann\n"))
    assert (
        caught.value.hint
        == "The first line must be a header naming the columns, e.g. 'email,name'."
    )


def test_missing_file(store: SubscriberStore, tmp_path: Path) -> None:
    with pytest.raises(AudienceError, match=f"^{tmp_path / 'nope.csv'}: no such file$"):
        store.import_csv(tmp_path / "nope.csv")


# --- CSV import: hostile rows -------------------------------------------------------------------

HOSTILE = (
    "email,name,notes\n"  # 1
    'good@example.org,"Ann\n'  # 2
    'Smith?",ok\n'  # 3 (a line break in the name)
    '"injected@example.org\r\n'  # 4
    'Bcc: x@y.org",Eve,\n'  # 5
    "not-an-address,Nobody,\n"  # 6
    ",No Email,\n"  # 7
    '"Good@Example.org ",Duplicate,"first\n'  # 8
    'wins"\n'  # 9
    "<script>@example.org,x,\n"  # 10
    'xss@example.org,"<script>alert(1)</script>",\n'  # 11
    "\n"  # 12 (blank: ignored)
    "jörg@exämple.de,Jörg,\n"  # 13
    "用户@例子.广告,用户,\n"  # 14
    "too@example.org,many,fields,here\n"  # 15
    'quote@example.org,"bad"quote,\n'  # 16
    'ok@example.org,Okay,"multi\nline\nnote"\n'  # 17-19
    "GOOD@example.org,Again,\n"  # 20
    "last@example.org,Last,\n"  # 21
)

HOSTILE_PROBLEMS = [
    RowProblem(2, "the name 'Ann\\nSmith?' contains a line break"),
    RowProblem(4, "the email address 'injected@example.org\\r\\nBcc: x@y.org' contains a line "
               "break"),
    RowProblem(6, "'not-an-address' is not a valid email address: An email address must have an "
               "@-sign."),
    RowProblem(7, "empty email address"),
    RowProblem(10, "'<script>@example.org' is not a valid email address: There can't be "
                "anything after the email address."),
    RowProblem(15, "4 fields but the header has 3 (an unquoted delimiter in a value?)"),
    RowProblem(16, "malformed quoting: ',' expected after '\"'"),
    RowProblem(20, "duplicate of line 8 (GOOD@example.org)"),
]  # fmt: skip


def test_hostile_rows_are_reported_by_physical_line(store: SubscriberStore, tmp_path: Path) -> None:
    report = store.import_csv(write(tmp_path, HOSTILE))
    # Line 8 is the first valid good@ row (line 2 had a bad name), so it wins over line 20.
    assert list(report.problems) == HOSTILE_PROBLEMS
    assert report.added == 6
    assert emails(store) == [
        "Good@example.org",
        "jörg@exämple.de",
        "last@example.org",
        "ok@example.org",
        "xss@example.org",
        "用户@例子.广告",
    ]
    assert stored(store, "good@example.org").name == "Duplicate"
    assert stored(store, "good@example.org").attributes["notes"] == "first\nwins"
    assert stored(store, "xss@example.org").name == "<script>alert(1)</script>"
    assert stored(store, "ok@example.org").attributes["notes"] == "multi\nline\nnote"
    assert stored(store, "jörg@exämple.de").needs_smtputf8


def test_malformed_quoting_spanning_lines(store: SubscriberStore, tmp_path: Path) -> None:
    text = (
        'email,name\n"a@example.org,Ann\nb@example.org,Bob\nc@example.org,"C" x\nd@example.org,D\n'
    )
    report = store.import_csv(write(tmp_path, text))
    assert [str(p) for p in report.problems] == [
        "line 2: malformed quoting: ',' expected after '\"' (lines 2-4 skipped)"
    ]
    assert emails(store) == ["d@example.org"]
    report = store.import_csv(write(tmp_path, 'email,name\nx@example.org,"open\n', "open.csv"))
    assert [str(p) for p in report.problems] == [
        "line 2: malformed quoting: unexpected end of data"
    ]


def test_strict_mode_imports_nothing(store: SubscriberStore, tmp_path: Path) -> None:
    path = write(tmp_path, HOSTILE)
    with pytest.raises(ImportProblemsError) as caught:
        store.import_csv(path, strict=True)
    assert caught.value.problems == tuple(HOSTILE_PROBLEMS)
    lines = caught.value.message.splitlines()
    assert lines[0] == f"{path}: 8 problems; nothing was imported"
    assert lines[1] == f"  {path}:2: the name 'Ann\\nSmith?' contains a line break"
    assert store.count() == {
        "subscribed": 0,
        "unsubscribed": 0,
        "bounced": 0,
        "complained": 0,
        "unconfirmed": 0,
    }


def test_strict_error_lists_at_most_twenty(store: SubscriberStore, tmp_path: Path) -> None:
    path = write(tmp_path, "email\n" + "bad\n" * 25)
    with pytest.raises(ImportProblemsError) as caught:
        store.import_csv(path, strict=True)
    lines = caught.value.message.splitlines()
    assert len(lines) == 22
    assert lines[-1] == "  ... and 5 more"
    assert len(caught.value.problems) == 25


# --- CSV import: existing subscribers ------------------------------------------------------------


def test_reimport_never_resubscribes_unless_asked(store: SubscriberStore, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "email,name,city\nann@example.org,Ann,Gent\nbob@example.org,Bob,\n"
        "cat@example.org,Cat,Brugge\ndan@example.org,Dan,\n",
    )
    assert store.import_csv(path).added == 4
    store.set_status("ann@example.org", "unsubscribed", source="link")
    store.set_status("bob@example.org", "bounced", source="smtp 550")
    store.set_status("cat@example.org", "complained", source="fbl")
    path.write_text(
        "email,name,city\nANN@example.org,Ann Smith,Gent\nbob@example.org,Bob,\n"
        "cat@example.org,Cat,Brugge\ndan@example.org,Dan,Antwerpen\neve@example.org,Eve,\n"
    )
    report = store.import_csv(path)
    assert (report.added, report.updated, report.unchanged, report.kept_unsubscribed) == (
        1,
        1,
        0,
        3,
    )
    assert report.describe() == "1 added, 1 updated, 0 unchanged, 3 kept unsubscribed"
    assert emails(store) == ["dan@example.org", "eve@example.org"]
    ann = store.get("ann@example.org")
    assert ann is not None
    assert (ann.status, ann.name, ann.email) == ("unsubscribed", "Ann Smith", "ANN@example.org")
    report = store.import_csv(path, resubscribe=True)
    assert (report.resubscribed, report.unchanged, report.kept_unsubscribed) == (3, 2, 0)
    assert len(emails(store)) == 5
    assert store.events("bob@example.org")[-1].source == "import list.csv"


def test_an_import_records_each_change_in_the_history(
    store: SubscriberStore, tmp_path: Path, clock: Clock
) -> None:
    store.add("old@example.org", source="cli")
    clock.now += 60
    path = write(
        tmp_path,
        "email,status\nnew@example.org,\ngone@example.org,unsubscribed\nold@example.org,bounced\n",
    )
    assert store.import_csv(path).added == 2

    def history(email: str) -> list[tuple[float, str | None, str, str]]:
        return [(e.at, e.old_status, e.new_status, e.source) for e in store.events(email)]

    now, source = clock.now, "import list.csv"
    assert history("new@example.org") == [(now, None, "subscribed", source)]
    assert history("gone@example.org") == [(now, None, "unsubscribed", source)]
    assert history("old@example.org") == [
        (now - 60, None, "subscribed", "cli"),
        (now, "subscribed", "bounced", source),
    ]
    assert store.import_csv(path).unchanged == 3
    assert len(history("new@example.org")) == 1  # nothing changed, nothing recorded


def test_status_column_may_unsubscribe_but_not_resubscribe(
    store: SubscriberStore, tmp_path: Path
) -> None:
    store.add("ann@example.org")
    store.add("bob@example.org")
    store.set_status("bob@example.org", "unsubscribed", source="link")
    path = write(
        tmp_path,
        "email,status\nann@example.org,Unsubscribed\nbob@example.org,subscribed\n"
        "new@example.org,blocklisted\nnew2@example.org,enabled\nodd@example.org,maybe\n",
    )
    report = store.import_csv(path)
    assert [str(p) for p in report.problems] == [
        "line 6: unknown status 'maybe' (use subscribed, unsubscribed, bounced, complained, "
        "unconfirmed)"
    ]
    assert (report.added, report.updated, report.kept_unsubscribed) == (2, 1, 1)
    assert emails(store) == ["new2@example.org"]
    assert emails(store, "unsubscribed") == [
        "ann@example.org",
        "bob@example.org",
        "new@example.org",
    ]


def test_export_then_import_round_trip(store: SubscriberStore, tmp_path: Path) -> None:
    store.add("ann@example.org", 'Ann "the" Smith, Jr.', {"city": "Gent", "note": "two\nlines"})
    store.add("jörg@exämple.de", "Jörg", {"first_name": "Jörg", "last_name": "Müller"})
    store.add("eq@example.org", '=HYPERLINK("x")')
    store.add("bob@example.org")
    store.set_status("bob@example.org", "bounced", source="smtp")
    out = io.StringIO()
    assert store.export_csv(out) == 4
    text = out.getvalue()
    assert text.splitlines()[0] == "email,name,status,city,first_name,last_name,note"
    path = write(tmp_path, text, "export.csv")
    with SubscriberStore(tmp_path / "copy.db") as copy:
        report = copy.import_csv(path, strict=True)
        assert report.added == 4
        assert list(copy.iter_subscribers(None)) == [
            s.__class__(s.email, s.name, s.attributes, s.status, c.id)
            for s, c in zip(store.iter_subscribers(None), copy.iter_subscribers(None), strict=True)
        ]
    subscribed_only = io.StringIO()
    assert store.export_csv(subscribed_only, "subscribed") == 3
    assert "bob@example.org" not in subscribed_only.getvalue()


@pytest.mark.slow
def test_100k_rows_import_with_one_duplicate_reported(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as out:
        out.write("Email Address,First Name,Last Name,City\n")
        for index in range(100_000):
            out.write(f"Reader.{index}@Example{index % 50}.org,Reader{index},Smith,Gent\n")
        out.write("READER.7@example7.org,Dup,Dup,Gent\n")
    with SubscriberStore(tmp_path / "newsletter.db") as store:
        report = store.import_csv(path)
        assert report.added == 100_000
        assert [str(p) for p in report.problems] == [
            "line 100002: duplicate of line 9 (READER.7@example7.org)"
        ]
        assert store.count("subscribed") == 100_000
        again = store.import_csv(path)
        assert again.unchanged == 100_000


# --- names: given name, particles (tussenvoegsel, von), family name ------------------------------


def test_dutch_tussenvoegsel_column_is_kept(store: SubscriberStore, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "E-mailadres;Voornaam;Tussenvoegsel;Achternaam\n"
        "jan@example.org;Jan;van der;Berg\npiet@example.org;Piet;;Jansen\n",
    )
    assert store.import_csv(path).added == 2
    jan = stored(store, "jan@example.org")
    assert (jan.name, jan.first_name, jan.last_name) == ("Jan van der Berg", "Jan", "van der Berg")
    assert jan.value("particle") == "van der"
    assert jan.value("family_name") == "Berg"
    piet = stored(store, "piet@example.org")
    assert (piet.name, piet.last_name) == ("Piet Jansen", "Jansen")


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        ("Jan van der Berg", "Jan", "van der Berg"),
        ("Anna Maria van Dijk", "Anna Maria", "van Dijk"),
        ("Richard von Weizsäcker", "Richard", "von Weizsäcker"),
        ("Karl-Theodor zu Guttenberg", "Karl-Theodor", "zu Guttenberg"),
        ("Vincent van Gogh", "Vincent", "van Gogh"),
        ("Maya Jansen", "Maya", "Jansen"),
        ("Madonna", "Madonna", ""),
    ],
)
def test_full_names_split_at_the_particle(name: str, first: str, last: str) -> None:
    subscriber = Subscriber(email="x@example.org", name=name)
    assert (subscriber.first_name, subscriber.last_name) == (first, last)


def test_names_reach_the_to_header_and_templates(store: SubscriberStore, tmp_path: Path) -> None:
    path = write(
        tmp_path, "email,Voornaam,Tussenvoegsel,Achternaam\njan@example.org,Jan,van der,Berg\n"
    )
    store.import_csv(path)
    jan = stored(store, "jan@example.org")
    header = address_value("To", jan.name, Address(addr_spec=jan.email))
    assert header == '"Jan van der Berg" <jan@example.org>' or header == (
        "Jan van der Berg <jan@example.org>"
    )
    assert jan.as_dict()["last_name"] == "van der Berg"


# --- encodings --------------------------------------------------------------------------------


def test_encoding_option_reads_cp1252(store: SubscriberStore, tmp_path: Path) -> None:
    path = write(tmp_path, "email;naam\nzoe@example.org;Zoë Café\n", encoding="cp1252")
    report = store.import_csv(path, encoding="cp1252")
    assert report.added == 1 and report.warnings == ()
    assert stored(store, "zoe@example.org").name == "Zoë Café"


def test_cp1252_is_guessed_with_a_warning_naming_the_guess(
    store: SubscriberStore, tmp_path: Path
) -> None:
    path = write(tmp_path, "email;naam\nzoe@example.org;Zoë “Zo” Müller – €5\n", encoding="cp1252")
    report = store.import_csv(path)
    assert stored(store, "zoe@example.org").name == "Zoë “Zo” Müller – €5"
    assert any("Windows-1252" in w and "--encoding" in w for w in report.warnings)


def test_an_unknown_encoding_is_named(store: SubscriberStore, tmp_path: Path) -> None:
    path = write(tmp_path, "email\na@example.org\n")
    with pytest.raises(AudienceError) as caught:
        store.import_csv(path, encoding="klingon")
    assert "klingon" in caught.value.message
