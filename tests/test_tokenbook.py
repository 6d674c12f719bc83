"""`TokenBook`: opaque unsubscribe tokens read back through the store, on both engines."""

from __future__ import annotations

import threading

import pytest

from newsletter.audience import SubscriberStore, make_token
from newsletter.audience.tokenbook import TokenBook, opaque_token_maker
from newsletter.errors import AudienceError
from newsletter.tokens import ExpiredTokenError

SECRET = b"a long random secret for tests only"
LIST = "news.example.org"
NOW = 1_796_000_000.0
DAY = 86400


def _book(store: SubscriberStore, max_age_days: int = 0) -> TokenBook:
    return TokenBook(
        store.database, SECRET, LIST, max_age_days=max_age_days, clock=lambda: NOW, refill_seconds=0
    )


def test_a_token_names_its_subscriber_until_they_are_removed(store_url: str) -> None:
    with SubscriberStore(store_url) as store:
        store.add("Ann@Example.org")
        store.add("bob@example.org")
        book = _book(store)
        token = book.make("ann@example.ORG")  # any spelling of the address: one key
        assert token == opaque_token_maker(LIST, clock=lambda: NOW)(SECRET, "Ann@Example.org")
        assert book.recipient(token) == "Ann@example.org"
        assert book.recipient(book.make("bob@example.org")) == "bob@example.org"
        # Someone added after the references were written is found on the next miss.
        store.add("carla@example.org")
        assert book.recipient(book.make("carla@example.org")) == "carla@example.org"
        # Removing a subscriber (GDPR erasure) removes their reference with them.
        store.remove("ann@example.org")
        assert book.recipient(token) is None
        with store.database.read() as db:
            rows = db.execute("SELECT subscriber_key FROM unsubscribe_refs").fetchall()
        assert sorted(str(r[0]) for r in rows) == ["bob@example.org", "carla@example.org"]
        # A test copy's token (a reviewer, not a subscriber) names nobody.
        assert book.recipient(book.make("reviewer@example.org")) is None


def test_old_form_forged_expired_and_other_list_tokens(store_url: str) -> None:
    with SubscriberStore(store_url) as store:
        store.add("ann@example.org")
        book = _book(store, max_age_days=30)
        assert book.recipient(make_token(SECRET, "ann@example.org")) == "ann@example.org"
        other = TokenBook(store.database, SECRET, "other.example.org", clock=lambda: NOW)
        with pytest.raises(AudienceError, match="not valid"):
            book.recipient(other.make("ann@example.org"))
        assert book.resolve(other.make("ann@example.org")) is None
        old = TokenBook(store.database, SECRET, LIST, clock=lambda: NOW - 31 * DAY)
        with pytest.raises(ExpiredTokenError):
            book.recipient(old.make("ann@example.org"))
        strict = TokenBook(store.database, SECRET, LIST, clock=lambda: NOW, accept_legacy=False)
        with pytest.raises(AudienceError, match="old form"):
            strict.recipient(make_token(SECRET, "ann@example.org"))
        # A new secret keeps its own references apart from the old secret's.
        renewed = TokenBook(store.database, b"a new secret", LIST, clock=lambda: NOW)
        assert renewed.recipient(renewed.make("ann@example.org")) == "ann@example.org"
        assert book.resolve(renewed.make("ann@example.org")) is None


def test_workers_filling_at_once_write_each_reference_once(store_url: str) -> None:
    with SubscriberStore(store_url) as store:
        for n in range(300):
            store.add(f"reader{n:03d}@example.org")
    errors: list[BaseException] = []
    found: list[str | None] = []
    barrier = threading.Barrier(4)

    def worker(n: int) -> None:
        try:
            with SubscriberStore(store_url) as own:
                book = _book(own)
                barrier.wait()
                found.append(book.recipient(book.make(f"reader{n * 70:03d}@example.org")))
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(f or "" for f in found) == [f"reader{n * 70:03d}@example.org" for n in range(4)]
    with SubscriberStore(store_url) as store, store.database.read() as db:
        assert db.execute("SELECT COUNT(*) FROM unsubscribe_refs").fetchone()[0] == 300
