"""The store layer on both engines (`store_url`): opening, migrating, transactions, errors.

test_store.py holds what only SQLite has (pragmas, its file, release 0.1's files).
"""

from __future__ import annotations

import threading

import pytest

from newsletter.audience import SubscriberStore
from newsletter.delivery.ledger import Ledger
from newsletter.errors import AudienceError, LedgerError
from newsletter.store import MIGRATIONS, POSTGRESQL, SQLITE, STORE_VERSION, Store, StoreError
from tests.pgserver import PostgresServer

TABLES = {
    "subscribers",
    "subscriber_events",
    "ledger_issues",
    "ledger_rows",
    "ledger_leases",
    "inbox_soft_bounces",
    "archive_issues",
    "archive_blobs",
    "archive_files",
    "click_links",
    "store_migrations",
    "subscriber_tags",
    "ledger_audiences",
    "schedule_sends",
    "schedule_approvals",
    "schedule_test_sends",
    "subscriber_imports",
    "unsubscribe_refs",
    "signup_consents",
}


def tables(store: Store) -> set[str]:
    with store.read() as db:
        return {str(row[0]) for row in db.execute(store.dialect.tables)} - {"import_keys"}


def test_a_new_store_gets_every_table(store_url: str) -> None:
    with Store.open(store_url) as store:
        assert store.version == STORE_VERSION
        assert store.dialect is (SQLITE if store.is_sqlite else POSTGRESQL)
        assert tables(store) == TABLES
        with store.read() as db:
            rows = db.execute("SELECT version, description FROM store_migrations ORDER BY 1")
            assert [tuple(r) for r in rows] == [(m.version, m.description) for m in MIGRATIONS]


def test_migrating_twice_changes_nothing(store_url: str) -> None:
    Store.open(store_url).close()
    with Store.open(store_url) as store, store.read() as db:
        assert db.execute("SELECT COUNT(*) FROM store_migrations").fetchone()[0] == len(MIGRATIONS)


def test_workers_opening_a_new_store_at_once_migrate_it_once(store_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_it() -> None:
        barrier.wait()
        try:
            Store.open(store_url).close()
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Store.open(store_url) as store, store.read() as db:
        versions = [r[0] for r in db.execute("SELECT version FROM store_migrations ORDER BY 1")]
    assert versions == [m.version for m in MIGRATIONS]


def test_a_transaction_commits_or_rolls_back(store_url: str) -> None:
    with Store.open(store_url) as store:
        with store.transaction() as db:
            db.execute("CREATE TABLE t (x INTEGER, note TEXT)")
            # A literal `%` and a `:word` inside quotes are text, not parameters.
            db.execute("INSERT INTO t (x, note) VALUES (:x, '100% :sure')", {"x": 1})
        with pytest.raises(RuntimeError), store.transaction() as db:
            db.execute("INSERT INTO t (x) VALUES (:x)", {"x": 2})
            raise RuntimeError("half-way")
        assert not store.connection.in_transaction
        with store.read() as db:
            assert [tuple(r) for r in db.execute("SELECT x, note FROM t")] == [(1, "100% :sure")]
        # A failing statement (a foreign key) rolls the whole transaction back.
        with pytest.raises(store.errors), store.transaction() as db:
            db.executemany("INSERT INTO t (x) VALUES (:x)", [{"x": 3}, {"x": 4}])
            db.execute(
                "INSERT INTO subscriber_events (subscriber_key, at, new_status, source)"
                " VALUES ('nobody', 0, 'subscribed', 'test')"
            )
        assert not store.connection.in_transaction
        with store.read() as db:
            assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1


def test_executemany_counts_every_row(store_url: str) -> None:
    with Store.open(store_url) as store, store.transaction() as db:
        db.execute("CREATE TABLE t (x INTEGER)")
        db.executemany("INSERT INTO t (x) VALUES (:x)", [{"x": i} for i in range(5)])
        assert db.executemany("UPDATE t SET x = x + 1 WHERE x >= :x", [{"x": 3}, {"x": 0}]).rowcount
        assert db.execute("DELETE FROM t WHERE x > :x", {"x": 2}).rowcount == 3


def test_threads_share_one_store(store_url: str) -> None:
    with Store.open(store_url) as store:

        def work(n: int) -> None:
            for i in range(25):
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
            assert db.execute("SELECT COUNT(*) FROM ledger_issues").fetchone()[0] == 100


def test_a_newer_store_is_refused(store_url: str) -> None:
    with Store.open(store_url) as store, store.read() as db:
        db.execute("INSERT INTO store_migrations VALUES (99, 'from the future', 0)")
    with pytest.raises(StoreError) as caught:
        Store.open(store_url)
    where = store.where
    assert str(caught.value) == (
        f"{where}: the database was written by a newer version of newsletter (store version 99;"
        f" this version knows up to store version {STORE_VERSION})"
    )
    with pytest.raises(AudienceError, match="the subscriber database was written by a newer"):
        SubscriberStore(store_url)
    with pytest.raises(LedgerError, match="the send ledger was written by a newer"):
        Ledger(store_url)


def test_a_server_that_refuses_is_a_store_error_without_the_password(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_server.url("no_such_database").replace(
        "postgresql://", "postgresql://newsletter:hunter2@"
    )
    url = url.replace("&user=newsletter", "")
    with pytest.raises(StoreError) as caught:
        Store.open(url, purpose="the send ledger")
    message = str(caught.value)
    assert "cannot open the send ledger" in message and "no_such_database" in message
    assert "hunter2" not in message and "***" in message
