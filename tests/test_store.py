"""The store layer on real SQLite files: pragmas, transactions, migrations, release 0.1's files.

tests/fixtures/release-0.1.db was written by release 0.1's own code
(tests/fixtures/make_release_db.py); every test works on a copy.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from newsletter.audience.store import SubscriberStore
from newsletter.delivery.ledger import Ledger, State
from newsletter.errors import AudienceError, LedgerError
from newsletter.inbox import SoftBounces
from newsletter.store import (
    MIGRATIONS,
    POSTGRESQL,
    SQLITE,
    STORE_VERSION,
    Store,
    StoreError,
)
from newsletter.store.dialect import to_pyformat

RELEASE_0_1 = Path(__file__).parent / "fixtures" / "release-0.1.db"
TABLES = ("subscribers", "subscriber_events", "ledger_issues", "ledger_rows", "inbox_soft_bounces")
ADDED = {
    "store_migrations",
    "ledger_leases",
    "archive_issues",
    "archive_blobs",
    "archive_files",
    "subscriber_tags",
    "ledger_audiences",
    "click_links",
    "schedule_sends",
    "schedule_approvals",
    "schedule_test_sends",
    "subscriber_imports",
    "unsubscribe_refs",
    "signup_consents",
}
START = 1_767_225_600.0  # the fixture's clock


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "newsletter.db"


@pytest.fixture
def release_db(tmp_path: Path) -> Path:
    copy = tmp_path / "newsletter.db"
    shutil.copyfile(RELEASE_0_1, copy)
    return copy


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every data table, in id order, read with plain sqlite3."""
    con = sqlite3.connect(path)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}
    finally:
        con.close()


def schema(path: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        con.close()


def migrations(path: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT * FROM store_migrations ORDER BY version").fetchall()
    finally:
        con.close()


def pragma(path: Path, name: str) -> object:
    con = sqlite3.connect(path)
    try:
        return con.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        con.close()


# --- opening ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("durable", "synchronous"), [(False, 1), (True, 2)])
def test_pragmas(path: Path, durable: bool, synchronous: int) -> None:
    with Store.open(path, durable=durable, busy_timeout=2.5) as store:
        db = store.connection
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA synchronous").fetchone() == (synchronous,)
        assert db.execute("PRAGMA foreign_keys").fetchone() == (1,)
        assert db.execute("PRAGMA busy_timeout").fetchone() == (2500,)
        assert store.dialect is SQLITE
        assert store.path == path


def test_a_file_that_is_not_a_database(path: Path) -> None:
    path.write_bytes(b"not a database at all " * 200)
    with pytest.raises(StoreError, match=f"^{path}: cannot open the database: file is not a"):
        Store.open(path)
    with pytest.raises(StoreError, match="cannot open the send ledger"):
        Store.open(path, purpose="the send ledger")


def test_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the database: unable to open"):
        Store.open(tmp_path / "nowhere" / "newsletter.db")


# --- transactions -------------------------------------------------------------------------------


def test_a_transaction_commits_or_rolls_back(path: Path) -> None:
    with Store.open(path) as store:
        with store.transaction() as db:
            db.execute("CREATE TABLE t (x INTEGER)")
            db.execute("INSERT INTO t (x) VALUES (:x)", {"x": 1})
        with pytest.raises(RuntimeError), store.transaction() as db:
            db.execute("INSERT INTO t (x) VALUES (:x)", {"x": 2})
            raise RuntimeError("half-way")
        assert not store.connection.in_transaction
        with store.read() as db:
            assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
        # A failing statement rolls the whole transaction back.
        with pytest.raises(sqlite3.IntegrityError), store.transaction() as db:
            db.executemany("INSERT INTO t (x) VALUES (:x)", [{"x": 3}, {"x": 4}])
            db.execute("INSERT INTO subscriber_events (subscriber_key, at, new_status, source)"
                       " VALUES ('nobody', 0, 'subscribed', 'test')")  # fmt: skip
        with store.read() as db:
            assert db.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_a_transaction_takes_the_write_lock_at_once(path: Path) -> None:
    with Store.open(path) as first, Store.open(path, busy_timeout=0.05) as second:
        with first.transaction() as db:
            db.execute("INSERT INTO ledger_issues VALUES ('i', 'fp', 0, 1, 0, 1)")
            # BEGIN IMMEDIATE: the second writer is refused before it reads anything ...
            with pytest.raises(sqlite3.OperationalError, match="locked"), second.transaction():
                pass
            # ... while readers go on (WAL) and see only what is committed.
            with second.read() as other:
                assert other.execute("SELECT COUNT(*) FROM ledger_issues").fetchone() == (0,)
        with second.read() as other:
            assert other.execute("SELECT COUNT(*) FROM ledger_issues").fetchone() == (1,)


def test_threads_share_one_store(path: Path) -> None:
    with Store.open(path) as store:

        def work(n: int) -> None:
            for i in range(50):
                with store.transaction() as db:
                    db.execute(
                        "INSERT INTO ledger_issues VALUES (:issue, 'fp', 0, 1, 0, 1)",
                        {"issue": f"{n}-{i}"},
                    )

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with store.read() as db:
            assert db.execute("SELECT COUNT(*) FROM ledger_issues").fetchone() == (200,)


# --- migrations ---------------------------------------------------------------------------------


def test_a_new_file_gets_every_table(path: Path) -> None:
    with Store.open(path) as store:
        assert store.version == STORE_VERSION
    tables = {name for kind, name, _ in schema(path) if kind == "table"}
    assert tables == {*TABLES, *ADDED}
    assert [(v, d) for v, d, _ in migrations(path)] == [
        (m.version, m.description) for m in MIGRATIONS
    ]
    # Mirrored so that release 0.1 refuses the file instead of writing to it.
    assert pragma(path, "user_version") == STORE_VERSION


def test_migrating_twice_changes_nothing(path: Path) -> None:
    Store.open(path).close()
    before = (schema(path), migrations(path))
    with Store.open(path) as store:
        assert store.version == STORE_VERSION
    assert (schema(path), migrations(path)) == before


def test_an_up_to_date_store_opens_while_another_process_writes(path: Path) -> None:
    Store.open(path).close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        with Store.open(path, busy_timeout=0.05) as store:  # no write needed, none attempted
            assert store.version == STORE_VERSION
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_processes_opening_a_new_file_at_once_migrate_it_once(path: Path) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_it() -> None:
        barrier.wait()
        try:
            Store.open(path).close()
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [row[0] for row in migrations(path)] == [m.version for m in MIGRATIONS]


@pytest.mark.parametrize(
    ("setup", "found"),
    [
        ("INSERT INTO store_migrations VALUES (99, 'from the future', 0)", "store version 99"),
        ("PRAGMA user_version = 7", None),  # the mirror is never read once the table exists
    ],
)
def test_a_newer_store_is_refused(path: Path, setup: str, found: str | None) -> None:
    Store.open(path).close()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(setup)
    con.close()
    if found is None:
        Store.open(path).close()
        return
    with pytest.raises(StoreError) as caught:
        Store.open(path)
    assert str(caught.value) == (
        f"{path}: the database was written by a newer version of newsletter ({found}; this "
        f"version knows up to store version {STORE_VERSION})"
    )
    assert caught.value.hint == "Upgrade newsletter to work with this project."
    with pytest.raises(AudienceError, match="the subscriber database was written by a newer"):
        SubscriberStore(path)
    with pytest.raises(LedgerError, match="the send ledger was written by a newer"):
        Ledger(path)


@pytest.mark.parametrize(
    ("setup", "found"),
    [
        ("PRAGMA user_version = 2", "subscriber schema version 2"),
        (
            "CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO ledger_meta VALUES ('schema_version', '2')",
            "send ledger schema version 2",
        ),
    ],
)
def test_a_file_newer_than_release_0_1_is_refused_and_left_alone(
    path: Path, setup: str, found: str
) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(setup)
    con.close()
    before = schema(path)
    with pytest.raises(StoreError, match=f"newer version of newsletter \\({found};"):
        Store.open(path)
    assert schema(path) == before  # the refused migration was rolled back whole


def test_a_release_0_1_file_with_only_a_ledger(path: Path) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(
        "CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO ledger_meta VALUES ('schema_version', '1');"
        "CREATE TABLE ledger_issues (issue TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,"
        " frozen_at REAL NOT NULL, freeze_round INTEGER NOT NULL, updated_at REAL NOT NULL);"
        "CREATE TABLE ledger_rows (id INTEGER PRIMARY KEY, issue TEXT NOT NULL, key TEXT NOT NULL,"
        " email TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
        " last_error TEXT, reply TEXT, message_id TEXT, next_attempt_at REAL,"
        " updated_at REAL NOT NULL, seen_round INTEGER NOT NULL, UNIQUE (issue, key));"
        "INSERT INTO ledger_issues VALUES ('old', 'fp', 1, 1, 1);"
    )
    con.close()
    Store.open(path).close()
    assert [(v, d) for v, d, _ in migrations(path)] == [
        (1, "subscribers and their status history"),
        (2, "the send ledger (from release 0.1)"),
        *[(m.version, m.description) for m in MIGRATIONS[2:]],
    ]
    with Ledger(path) as ledger:
        assert ledger.issues() == ["old"]


# --- a file written by release 0.1 --------------------------------------------------------------


def test_release_0_1_fixture_is_what_release_0_1_wrote() -> None:
    assert pragma(RELEASE_0_1, "user_version") == 1
    con = sqlite3.connect(RELEASE_0_1)
    try:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert names == {*TABLES, "ledger_meta"}
        meta = con.execute("SELECT * FROM ledger_meta").fetchall()
        assert meta == [("schema_version", "1")]
    finally:
        con.close()


def test_release_0_1_file_migrates_without_loss(release_db: Path) -> None:
    before = dump(release_db)
    assert {t: len(rows) for t, rows in before.items()} == {
        "subscribers": 13,
        "subscriber_events": 18,
        "ledger_issues": 2,
        "ledger_rows": 10,
        "inbox_soft_bounces": 3,
    }
    with Store.open(release_db) as store:
        assert store.version == STORE_VERSION
    after = dump(release_db)
    # Later migrations add columns, empty in old rows (the lease a `sending` row is held under,
    # when a deferred row was first deferred, the import a subscriber came with), except each
    # issue's completed freeze round: a release 0.1 freeze was one transaction, so complete.
    for table, rows in before.items():
        width = len(rows[0])
        extra = [row[width:] for row in after[table]]
        if table == "ledger_issues":
            assert all(e == (row[3],) for e, row in zip(extra, after[table], strict=True))
        else:
            assert {value for values in extra for value in values} <= {None}, table
        after[table] = [row[:width] for row in after[table]]
    assert after == before  # not one row rewritten
    from_release = [m for m in MIGRATIONS if m.version <= 3]
    assert [(v, d) for v, d, _ in migrations(release_db)] == [
        (m.version, f"{m.description} (from release 0.1)") for m in from_release
    ] + [(m.version, m.description) for m in MIGRATIONS if m.version > 3]
    tables = {name for kind, name, _ in schema(release_db) if kind == "table"}
    assert tables == {*TABLES, *ADDED}  # ledger_meta is gone
    assert pragma(release_db, "user_version") == STORE_VERSION
    migrated = (schema(release_db), migrations(release_db))
    Store.open(release_db).close()
    assert (schema(release_db), migrations(release_db)) == migrated  # twice: nothing more


def test_release_0_1_subscribers_and_history_read_through_the_new_api(release_db: Path) -> None:
    with SubscriberStore(release_db) as store:
        assert store.count() == {
            "subscribed": 9,
            "unsubscribed": 2,
            "bounced": 1,
            "complained": 1,
            "unconfirmed": 0,
        }
        every = {s.email: s for s in store.iter_subscribers(None)}
        assert len(every) == 13
        jorg = store.get("JÖRG@BÜCHER.DE")
        assert jorg is not None and jorg.email == "jörg@bücher.de"
        assert jorg.name == "Jörg Bücher 書店" and jorg.first_name == "Jörg"
        assert jorg.needs_smtputf8 and jorg.ascii_email is None
        zoe = store.get("zoe.muller@EXAMPLE.org")
        assert zoe is not None and zoe.email == "Zoe.Muller@example.org"
        assert dict(zoe.attributes) == {"city": "Zürich"} and zoe.name == "Zoë Müller"
        carol = every["carol@example.org"]
        assert (
            carol.status == "bounced" and carol.attributes["address"] == "Kerkstraat 1\n9000 Gent"
        )
        assert every["dave@example.org"].status == "complained"
        assert every["lou@example.org"].status == "unsubscribed"
        kim = every["kim@example.org"]
        assert dict(kim.attributes) == {
            "favourite_colour": "green",
            "first_name": "Kim",
            "last_name": "Lee",
        }
        history = store.events("eve@example.org")
        assert [(e.old_status, e.new_status, e.source) for e in history] == [
            (None, "subscribed", "add"),
            ("subscribed", "unsubscribed", "web page"),
            ("unsubscribed", "subscribed", "cli"),
        ]
        assert history[0].at == START + 6
        assert [e.source for e in store.events("carol@example.org")] == [
            "add",
            "inbox: hard bounce 5.1.1",
        ]
        # The migrated store takes writes, and the cascade from subscribers to history still holds.
        store.set_status("ann@example.org", "unsubscribed", source="test")
        assert store.remove("bob@example.org")
        assert store.events("bob@example.org") == ()
        assert store.count("subscribed") == 8


def test_release_0_1_ledgers_read_through_the_new_api(release_db: Path) -> None:
    with Ledger(release_db) as ledger:
        assert ledger.issues() == ["2026-01", "2026-02"]
        first = ledger.issue("2026-01")
        assert first.fingerprint() == "a" * 64
        assert first.counts() == {
            State.PENDING: 1,
            State.SENDING: 1,
            State.SENT: 2,
            State.FAILED: 2,
            State.DEFERRED: 1,
            State.UNCERTAIN: 1,
        }
        ann = first.row("ann@example.org")
        assert ann is not None and ann.state is State.SENT
        assert ann.reply == "250 2.0.0 Ok: queued as 4Z1kQ2"
        assert ann.message_id == "<1.ann@news.example.org>"
        zoe = first.row("zoe.muller@example.org")
        assert zoe is not None and zoe.email == "Zoe.Muller@example.org"
        assert (zoe.reply, zoe.message_id) == ("pm-7f3c2a", "<1.zoe@news.example.org>")
        jorg = first.row("jörg@bücher.de")
        assert jorg is not None and jorg.state is State.FAILED and jorg.attempts == 0
        assert jorg.last_error == "SMTPUTF8 is not offered by the server"
        frank = first.row("frank@example.org")
        assert frank is not None and frank.state is State.DEFERRED
        assert frank.last_error == "451 4.7.1 greylisted"
        assert frank.next_attempt_at is not None and frank.next_attempt_at > START + 900
        assert [r.key for r in first.failures()] == ["jörg@bücher.de", "ivy@example.org"]
        # No run holds the lock: the crashed run's `sending` row counts as uncertain ...
        assert [r.key for r in first.uncertain()] == ["eve@example.org", "hank@example.org"]
        assert [r.key for r in first.todo(now=START)] == ["gina@example.org"]
        assert [r.key for r in first.todo(now=START + 10_000)] == [
            "frank@example.org",
            "gina@example.org",
        ]
        # ... and the next run's lock turns it into an explicit one.
        with first.lock() as run:
            assert run.recovered_uncertain == 1
        hank = first.row("hank@example.org")
        assert hank is not None and hank.state is State.UNCERTAIN
        second = ledger.issue("2026-02")
        assert second.fingerprint() == "c" * 64
        frank2 = second.row("frank@example.org")
        assert frank2 is not None and frank2.state is State.SENT and frank2.attempts == 2
        assert (frank2.reply, frank2.message_id) == ("250 ok", "<2.frank@news.example.org>")
        # The migrated ledger takes new work.
        second.mark_sending(["ann@example.org"])
        second.mark_sent("ann@example.org", "250 ok")
        assert second.counts()[State.SENT] == 2


def test_release_0_1_soft_bounces_read_through_the_new_api(release_db: Path) -> None:
    bounces = SoftBounces(release_db)
    try:
        assert bounces.count("gina@example.org", since=0) == 2
        assert bounces.count("gina@example.org", since=START + 15) == 1
        assert bounces.count("hank@example.org", since=0) == 1
        bounces.record("gina@example.org", "<r1@mx>", "<1.gina@news>", "4.2.2", START + 40)
        assert bounces.count("gina@example.org", since=0) == 2  # the same report, not again
    finally:
        bounces.close()
    with Store.open(release_db) as store:  # one store shared by every table's owner
        shared = SoftBounces(store)
        shared.record("hank@example.org", "<r4@mx>", "<2.hank@news>", None, START + 50)
        shared.close()  # leaves the shared store open
        assert SoftBounces(store).count("hank@example.org", since=START + 40) == 1
        with SubscriberStore(store) as subscribers:
            assert subscribers.count("bounced") == 1


# --- the dialect seam ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("named", "pyformat"),
    [
        ("WHERE a = :a AND b > :b_2", "WHERE a = %(a)s AND b > %(b_2)s"),
        ("SELECT x::text FROM t WHERE y = :y", "SELECT x::text FROM t WHERE y = %(y)s"),
        ("SELECT ':not', '50%' WHERE z LIKE :z", "SELECT ':not', '50%%' WHERE z LIKE %(z)s"),
        ('SELECT "odd:name" FROM t WHERE k = :k', 'SELECT "odd:name" FROM t WHERE k = %(k)s'),
        ("UPDATE t SET n = n % 2 WHERE id = :id", "UPDATE t SET n = n %% 2 WHERE id = %(id)s"),
        ("SELECT unnest(%(keys)b) WHERE a = :a", "SELECT unnest(%(keys)b) WHERE a = %(a)s"),
        ("SELECT '%(keys)b'", "SELECT '%%(keys)b'"),
    ],
)  # fmt: skip
def test_named_parameters_for_a_pyformat_driver(named: str, pyformat: str) -> None:
    assert to_pyformat(named) == pyformat
    assert POSTGRESQL.query(named) == pyformat
    assert SQLITE.query(named) is named  # SQLite takes them as written: no cost per call


def test_every_migration_renders_for_both_engines() -> None:
    for migration in MIGRATIONS:
        for statement in migration.statements:
            sqlite_sql = SQLITE.ddl(statement)
            postgresql_sql = POSTGRESQL.ddl(statement)
            assert "{" not in sqlite_sql.replace("'{}'", "")
            assert " REAL" not in postgresql_sql and "INTEGER PRIMARY KEY" not in postgresql_sql
    subscribers = SQLITE.ddl(MIGRATIONS[0].statements[0])
    assert "id INTEGER PRIMARY KEY," in subscribers and "DEFAULT '{}'" in subscribers
