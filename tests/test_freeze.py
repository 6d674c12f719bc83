"""Freezing an audience (delivery/freeze.py): one pass, short transactions, complete or not at all.

On both engines, with the subscribers in the same store as the ledger, as `send` has them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.audience import Subscriber, SubscriberStore
from newsletter.delivery import freeze
from newsletter.delivery.ledger import Ledger, State
from newsletter.errors import LedgerError
from newsletter.store import Store

REPO = Path(__file__).resolve().parent.parent
FP = "f" * 64
FREEZE_CHILD = """
import sys
from newsletter.delivery.ledger import Ledger
with Ledger(sys.argv[1]) as ledger:
    print(ledger.issue("big").freeze_subscribers("f" * 64).total, flush=True)
"""


def fill(store_url: str, count: int, *, prefix: str = "p") -> None:
    """`count` subscribers, inserted directly (fast), with a city each."""
    with Store.open(store_url) as store, store.transaction() as db:
        db.executemany(
            "INSERT INTO subscribers (key, email, name, attributes, status, created_at,"
            " updated_at) VALUES (:key, :key, :name, :attributes, 'subscribed', 0, 0)",
            [
                {
                    "key": f"{prefix}{n:06d}@example.org",
                    "name": f"P {n}" if n % 1000 else "",
                    "attributes": '{"city": "Gent"}' if n % 2 else '{"city": "Utrecht"}',
                }
                for n in range(count)
            ],
        )


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    with Ledger(store_url) as opened:
        yield opened


def test_freeze_from_the_store_in_chunks(store_url: str, ledger: Ledger) -> None:
    count = 2 * freeze.CHUNK + 7
    fill(store_url, count)
    with SubscriberStore(store_url) as store:
        store.set_status("p000003@example.org", "unsubscribed", source="test")
    issue = ledger.issue("one")
    report = issue.freeze_subscribers(FP)
    assert (report.first, report.received, report.added, report.total) == (
        True,
        count - 1,
        count - 1,
        count - 1,
    )
    keys = [row.key for row in issue.rows()]
    assert keys == sorted(keys)  # freeze order is address order, as before
    assert "p000003@example.org" not in keys
    # A resume: one left, one joined.
    with SubscriberStore(store_url) as store:
        store.set_status("p000004@example.org", "unsubscribed", source="test")
        store.add("zz@example.org")
    again = issue.freeze_subscribers(FP)
    assert (again.first, again.added, again.removed, again.total) == (False, 1, 1, count - 1)


def test_a_where_fragment_narrows_the_audience(store_url: str, ledger: Ledger) -> None:
    fill(store_url, 10)
    issue = ledger.issue("gent")
    report = issue.freeze_subscribers(
        FP, where="s.attributes LIKE :city", params={"city": '%"Gent"%'}
    )
    assert report.total == 5
    assert {row.key for row in issue.rows()} == {f"p{n:06d}@example.org" for n in (1, 3, 5, 7, 9)}


def test_a_refused_check_leaves_no_freeze(store_url: str, ledger: Ledger) -> None:
    fill(store_url, freeze.CHUNK + 2500)
    seen: list[str] = []

    def check(person: Subscriber) -> bool:
        seen.append(person.email)
        return bool(person.name)

    issue = ledger.issue("named")
    with pytest.raises(LedgerError, match="nameless"):
        issue.freeze_subscribers(FP, check=check, refuse=lambda: LedgerError("nameless people"))
    assert len(seen) == freeze.CHUNK + 2500  # everyone was checked, in one pass
    assert issue.fingerprint() is None
    assert sum(issue.counts().values()) == 0
    assert ledger.issues() == []


def test_rows_of_an_unfinished_import_are_not_frozen(store_url: str, ledger: Ledger) -> None:
    fill(store_url, 3)
    with Store.open(store_url) as store, store.transaction() as db:
        db.execute(
            "INSERT INTO subscriber_imports (id, file, host, pid, state, started_at,"
            " heartbeat_at) VALUES (7, 'x.csv', 'h', 1, 'writing', 0, 0)"
        )
        db.execute(
            "INSERT INTO subscribers (key, email, status, created_at, updated_at, import_id)"
            " VALUES ('hidden@example.org', 'hidden@example.org', 'subscribed', 0, 0, 7)"
        )
    assert ledger.issue("x").freeze_subscribers(FP).total == 3


def test_a_freeze_killed_half_way_is_not_usable_and_is_redone(store_url: str) -> None:
    count = 6 * freeze.CHUNK
    fill(store_url, count)
    child = subprocess.Popen(
        [sys.executable, "-c", FREEZE_CHILD, store_url],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    with Ledger(store_url) as ledger:
        issue = ledger.issue("big")
        while sum(issue.counts().values()) < freeze.CHUNK:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        child.kill()
        child.communicate()
        partial = sum(issue.counts().values())
        assert 0 < partial < count
        # Not frozen: no fingerprint, not listed, so nothing sends from it or joins it.
        assert issue.fingerprint() is None
        assert ledger.issues() == []
        # A new content version may replace the never-completed freeze.
        report = issue.freeze_subscribers("e" * 64)
        assert report.total == count
        assert issue.counts()[State.PENDING] == count
        assert issue.fingerprint() == "e" * 64
        assert ledger.issues() == ["big"]


def test_a_head_round_is_complete_and_a_next_round_adds_the_rest(
    store_url: str, ledger: Ledger
) -> None:
    fill(store_url, 250)
    issue = ledger.issue("big")
    head = issue.freeze_subscribers(FP, head=40)
    assert (head.first, head.received, head.total) == (True, 40, 40)
    # Complete: the issue is frozen with its fingerprint, and its rows are the first 40 keys.
    assert issue.fingerprint() == FP and "big" in ledger.issues()
    assert [row.email for row in issue.rows()] == [f"p{n:06d}@example.org" for n in range(40)]
    issue.mark_sending(["p000000@example.org"])
    issue.mark_sent("p000000@example.org", "250 ok")
    written: list[int] = []
    rest = issue.freeze_subscribers(FP, chunk_written=lambda: written.append(1))
    assert (rest.first, rest.added, rest.total) == (False, 210, 250)
    assert written  # told after each committed chunk
    counts = issue.counts()
    assert counts[State.SENT] == 1 and counts[State.PENDING] == 249


def test_a_halted_round_stops_between_chunks_and_the_next_completes_it(
    store_url: str, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(freeze, "CHUNK", 50)
    fill(store_url, 230)
    issue = ledger.issue("big")
    issue.freeze_subscribers(FP, head=10)
    chunks: list[int] = []
    with pytest.raises(freeze.FreezeHalted):
        issue.freeze_subscribers(
            FP, chunk_written=lambda: chunks.append(1), halted=lambda: len(chunks) >= 2
        )
    # Two chunks written, the round left unfinished; the issue stays frozen as it was.
    assert issue._total() == 100 and issue.fingerprint() == FP
    report = issue.freeze_subscribers(FP)
    assert report.total == 230 and issue.counts()[State.PENDING] == 230
