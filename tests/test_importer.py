"""`subscribers import` at size (audience/importer.py): short transactions, all or nothing.

Real processes: the import runs in a child process that is paused (SIGSTOP) or killed
(SIGKILL) half-way, on both engines; and beside a real send to a loopback SMTP server
(issue 15, D1).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.audience import ImportProblemsError, SubscriberStatus, SubscriberStore
from newsletter.audience.importer import CHUNK, clean_abandoned
from newsletter.delivery.ledger import Ledger, State
from newsletter.delivery.ratelimit import Backoff
from newsletter.delivery.sender import SendOptions, StoreAudience, send_issue
from newsletter.errors import AudienceError
from newsletter.store import Store, StoreError
from tests.sendkit import example_template, smtp_transport
from tests.smtpserver import SmtpTestServer

REPO = Path(__file__).resolve().parent.parent
IMPORT_CHILD = """
import sys
from pathlib import Path
from newsletter.audience import SubscriberStore
with SubscriberStore(sys.argv[1]) as store:
    print(store.import_csv(Path(sys.argv[2])).added, flush=True)
"""


def write_csv(path: Path, rows: int, *, prefix: str = "reader", start: int = 0) -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name,city\n")
        for n in range(start, start + rows):
            out.write(f"{prefix}{n:07d}@example.org,Reader {n},Utrecht\n")
    return path


def start_import(store_url: str, csv: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", IMPORT_CHILD, store_url, str(csv)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def writing_rows(store_url: str) -> int:
    """Rows an unfinished import has written so far (invisible to readers)."""
    with Store.open(store_url) as store, store.read() as db:
        found = db.execute(
            "SELECT COUNT(*) FROM subscribers WHERE import_id IN"
            " (SELECT id FROM subscriber_imports WHERE state = 'writing')"
        ).fetchone()
    return int(found[0])


def wait_for_chunks(store_url: str, child: subprocess.Popen[str], at_least: int) -> None:
    """Until the child import has committed `at_least` rows (not its last chunk)."""
    deadline = time.monotonic() + 240
    while writing_rows(store_url) < at_least:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the import never started writing"
        time.sleep(0.05)


@pytest.fixture
def seeded(store_url: str) -> Iterator[str]:
    with SubscriberStore(store_url) as store:
        for n in range(3):
            store.add(f"old{n}@example.org", f"Old {n}")
    yield store_url


def test_an_import_is_invisible_until_complete_and_blocks_nobody(
    seeded: str, tmp_path: Path
) -> None:
    rows = 4 * CHUNK
    child = start_import(seeded, write_csv(tmp_path / "list.csv", rows))
    try:
        wait_for_chunks(seeded, child, CHUNK)
        with SubscriberStore(seeded) as store:
            assert store.count(SubscriberStatus.SUBSCRIBED) == 3
            assert store.get("reader0000000@example.org") is None
            assert [s.email for s in store.iter_subscribers(None)][-1] == "old2@example.org"
        # Between two chunks the import holds no lock: paused at a random moment, a write that
        # waits at most 0.2 s gets through within a few tries (never, were it one transaction).
        wrote = False
        for _ in range(20):
            os.kill(child.pid, signal.SIGSTOP)
            try:
                with (
                    Store.open(seeded, busy_timeout=0.2) as db,
                    SubscriberStore(db) as store,
                ):
                    store.set_status("old1@example.org", "unsubscribed", source="test")
                    wrote = True
                    break
            except (AudienceError, StoreError):  # opening, too, may meet a chunk
                os.kill(child.pid, signal.SIGCONT)
                time.sleep(0.1)
        assert wrote
        os.kill(child.pid, signal.SIGCONT)
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        assert int(out) == rows
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
    with SubscriberStore(seeded) as store:
        assert store.count(SubscriberStatus.SUBSCRIBED) == rows + 2
        assert store.events("reader0000000@example.org")[0].source == "import list.csv"


def test_a_killed_import_leaves_nothing_and_the_next_one_everything(
    seeded: str, tmp_path: Path
) -> None:
    rows = 3 * CHUNK
    csv = write_csv(tmp_path / "list.csv", rows)
    child = start_import(seeded, csv)
    wait_for_chunks(seeded, child, CHUNK)
    child.kill()
    child.communicate()
    with SubscriberStore(seeded) as store:
        assert store.count() == {
            "subscribed": 3,
            "unsubscribed": 0,
            "bounced": 0,
            "complained": 0,
            "unconfirmed": 0,
        }
        assert store.get("reader0000000@example.org") is None
        # Run again: the dead import's rows are undone first, then the whole file goes in.
        report = store.import_csv(csv)
        assert report.added == rows
        assert store.count(SubscriberStatus.SUBSCRIBED) == rows + 3
    with Store.open(seeded) as db, db.read() as connection:
        left = connection.execute(
            "SELECT COUNT(*) FROM subscriber_imports WHERE state = 'writing'"
        ).fetchone()[0]
        events = connection.execute("SELECT COUNT(*) FROM subscriber_events").fetchone()[0]
    assert left == 0
    assert events == rows + 3  # one "subscribed" event each, none left from the killed run
    assert writing_rows(seeded) == 0


def test_strict_finds_duplicates_before_writing_anything(store_url: str, tmp_path: Path) -> None:
    csv = tmp_path / "dup.csv"
    csv.write_text("email,name\na@example.org,A\nb@example.org,B\nA@Example.org,A again\n")
    with SubscriberStore(store_url) as store:
        with pytest.raises(ImportProblemsError, match=r"dup.csv:4: duplicate of line 2"):
            store.import_csv(csv, strict=True)
        assert store.count(SubscriberStatus.SUBSCRIBED) == 0
        report = store.import_csv(csv)
        assert (report.added, [p.line for p in report.problems]) == (2, [4])


def test_an_unsubscribe_during_the_import_is_honoured(store_url: str, tmp_path: Path) -> None:
    """The file's values for people already on the list are applied against what is stored
    when the import completes, not when it was read."""
    with SubscriberStore(store_url) as store:
        store.add("reader0000001@example.org", "Early")
    child = start_import(store_url, write_csv(tmp_path / "list.csv", 2 * CHUNK))
    try:
        wait_for_chunks(store_url, child, 1)
        with SubscriberStore(store_url) as store:
            store.set_status("reader0000001@example.org", "unsubscribed", source="serve")
        _out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
    finally:
        child.kill()
    with SubscriberStore(store_url) as store:
        person = store.get("reader0000001@example.org")
        assert person is not None
        assert (person.status, person.name) == ("unsubscribed", "Reader 1")


def test_abandoned_imports_of_live_processes_are_left_alone(store_url: str) -> None:
    with Store.open(store_url) as store:
        with store.transaction() as db:
            db.execute(
                "INSERT INTO subscriber_imports (file, host, pid, state, started_at,"
                " heartbeat_at) VALUES ('x.csv', 'elsewhere', 1, 'writing', :now, :now)",
                {"now": time.time()},
            )
        assert clean_abandoned(store) == []  # another host, heartbeat fresh
        assert clean_abandoned(store, now=time.time() + 3600) != []  # silent for an hour


def test_an_import_beside_a_send_neither_blocks_nor_shows_half(
    tmp_path: Path, project: Path
) -> None:
    """Issue 15, D1: a big import while a send runs. The send (whose writes may wait 5 s for
    the database, never retried) completes with every message sent and recorded; it froze
    either none or all of the import; the import is complete afterwards."""
    store_url = str(tmp_path / "newsletter.db")
    audience = 200
    with SubscriberStore(store_url) as store:
        for n in range(audience):
            store.add(f"person{n:04d}@example.org", f"Person {n}")
    rows = 12 * CHUNK
    template = example_template(project)
    child = start_import(store_url, write_csv(tmp_path / "big.csv", rows))
    try:
        wait_for_chunks(store_url, child, 1)
        with (
            SmtpTestServer() as server,
            SubscriberStore(store_url) as store,
            Ledger(store_url, busy_timeout=5.0, busy_retry=0.0) as ledger,
        ):
            report = send_issue(
                template,
                StoreAudience(store),
                transport=smtp_transport(server.port),
                ledger=ledger,
                backoff=Backoff(base=0.05, cap=0.1),
                options=SendOptions(concurrency=2),
            )
            counts = ledger.issue(template.issue).counts()
            received = len(server.messages)
        _out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
    finally:
        child.kill()
    total = sum(counts.values())
    assert total in (audience, audience + rows), total  # all of the import, or none of it
    assert counts[State.SENT] == total == received
    assert report.complete and not report.failures and not report.uncertain
    with SubscriberStore(store_url) as store:
        assert store.count(SubscriberStatus.SUBSCRIBED) == audience + rows
