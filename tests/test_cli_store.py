"""`newsletter store`: migrate, info, and copy from the project's SQLite file into PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.audience import SubscriberStore
from newsletter.cli.commands import app
from newsletter.delivery import leases
from newsletter.delivery.ledger import Ledger, State
from newsletter.errors import NewsletterError
from newsletter.inbox.softbounces import SoftBounces
from newsletter.store import Store
from newsletter.store.admin import describe
from tests.pgserver import PostgresServer


def run(monkeypatch: pytest.MonkeyPatch, project: Path, *args: str) -> tuple[int, str]:
    """Exit status and output (an error's message and hint appended, as the CLI prints them)."""
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, list(args))
    error = result.exception
    if isinstance(error, NewsletterError):
        return error.exit_code, f"{result.stdout}error: {error}\nhint: {error.hint}\n"
    if error is not None and not isinstance(error, SystemExit):
        raise error
    return result.exit_code, result.stdout


def fill(database: Path) -> None:
    """A project store with every kind of row: subscribers, history, a ledger, soft bounces."""
    with Store.open(database) as store:
        subscribers = SubscriberStore(store)
        for i in range(30):
            subscribers.add(f"p{i}@example.org", f"Person {i}", {"city": "Zürich", "n": str(i)})
        subscribers.set_status("p3@example.org", "unsubscribed", source="web")
        ledger = Ledger(store).issue("2026-11")
        ledger.freeze(((f"p{i}@example.org", f"p{i}@example.org") for i in range(10)), "fp")
        ledger.mark_sending(["p0@example.org", "p1@example.org"])
        ledger.mark_sent("p0@example.org", "250 ok", message_id="<m0@example.org>")
        ledger.mark_uncertain("p1@example.org", "connection lost")
        SoftBounces(store).record("p5@example.org", "report-1", "message-1", "4.2.2", 1.0)


def test_copy_to_postgresql_verifies_every_table_and_keeps_the_source(
    monkeypatch: pytest.MonkeyPatch, project: Path, postgres_server: PostgresServer
) -> None:
    monkeypatch.delenv("NEWSLETTER_DATABASE_URL", raising=False)
    fill(project / "newsletter.db")
    with Store.open(project / "newsletter.db") as source:
        before = describe(source).counts
    target = postgres_server.new_store()

    code, out = run(monkeypatch, project, "store", "copy", "--to", target)
    assert code == 0, out
    assert "Every table matches" in out and "subscriber_events" in out

    with Store.open(project / "newsletter.db") as source:
        assert describe(source).counts == before  # nothing deleted from the source
    with Store.open(target) as copied:
        assert describe(copied).counts == before
        issue = Ledger(copied).issue("2026-11")
        assert issue.counts()[State.SENT] == 1 and issue.counts()[State.UNCERTAIN] == 1
        found = SubscriberStore(copied).get("p7@example.org")
        assert found is not None and found.attributes["city"] == "Zürich"
        # Ids go on after the copied ones: a new subscriber gets a new number.
        added = SubscriberStore(copied).add("new@example.org")
        assert added.id == 31

    # The project now uses the copy; `store info` shows it, with its counts.
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", target)
    code, out = run(monkeypatch, project, "store", "info")
    assert code == 0 and "postgresql store at version" in out
    assert "subscribers" in out and "31" in out

    # A second copy into a non-empty target is refused, and nothing changes ...
    monkeypatch.delenv("NEWSLETTER_DATABASE_URL")
    code, out = run(monkeypatch, project, "store", "copy", "--to", target)
    assert code != 0 and "already holds rows" in out and "--replace" in out
    with Store.open(target) as copied:
        assert describe(copied).counts["subscribers"] == 31
    # ... unless asked to replace its rows.
    code, out = run(monkeypatch, project, "store", "copy", "--to", target, "--replace")
    assert code == 0, out
    with Store.open(target) as copied:
        assert describe(copied).counts == before


def test_copy_refuses_a_password_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    code, out = run(
        monkeypatch, project, "store", "copy", "--to", "postgresql://ed:hunter2@db.example.org/n"
    )
    assert code != 0 and "holds a password" in out and "hunter2" not in out


def test_migrate_and_info_on_the_default_sqlite_file(
    monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    monkeypatch.delenv("NEWSLETTER_DATABASE_URL", raising=False)
    code, out = run(monkeypatch, project, "store", "migrate")
    assert code == 0 and "sqlite store at version" in out
    assert (project / "newsletter.db").is_file()
    code, out = run(monkeypatch, project, "store", "info")
    assert code == 0 and "newsletter.db" in out and "ledger_rows" in out


def test_status_lists_the_workers_of_a_send_on_postgresql(
    monkeypatch: pytest.MonkeyPatch, project: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.new_store()
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", url)
    with Ledger(url) as ledger:
        issue = ledger.issue("2026-11")
        issue.freeze([("a@example.org", "a@example.org"), ("b@example.org", "b@example.org")], "f")
        with ledger.lock("2026-11"):
            (claimed,) = leases.claim(ledger, "2026-11", 1, now=time.time())
            issue.mark_sending([claimed.key])
            ledger.database.release(commit=True)
            code, out = run(monkeypatch, project, "status", "2026-11")
            assert code == 6, out  # a send is running: deferred, come back later (README)
            assert "worker process" in out and "sending, 1 in flight" in out
            assert "A send of this issue is running now." in out
            issue.mark_sent(claimed.key, "250 ok")
    code, out = run(monkeypatch, project, "status", "2026-11")
    # b@ is still pending (nobody sent it): not done, so not 0; the worker's lease is finished.
    assert code == 6 and ": finished" in out and "running now" not in out
