"""Sign-up requests and consent records on both store engines (`store_url`), and migration 5."""

from __future__ import annotations

import threading

import pytest

from newsletter.audience import SubscriberStatus, SubscriberStore
from newsletter.audience.consent import (
    MAIL_INTERVAL,
    ConfirmOutcome,
    ConsentStore,
    SignupOutcome,
    SignupRequest,
)
from newsletter.errors import AudienceError
from newsletter.store import Store, migrations

DAY = 86400.0
T0 = 1_800_000_000.0


def ask(consents: ConsentStore, email: str, now: float = T0, **extra: str) -> SignupOutcome:
    request = SignupRequest(email, "form page", "v1", name=extra.pop("name", ""), attributes=extra)
    return consents.request(request, now=now).outcome


SIGNUP_MIGRATION = next(
    m.version for m in migrations.MIGRATIONS if m.description.startswith("sign-up:")
)


def test_migration_5_rebuilds_subscribers_keeping_rows_history_and_ids(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_signup = SIGNUP_MIGRATION - 1
    rows = "SELECT id, key, email, name, attributes, status FROM subscribers ORDER BY id"
    events = "SELECT id, subscriber_key, new_status, source FROM subscriber_events ORDER BY id"
    add = (
        "INSERT INTO subscribers (key, email, name, attributes, status, created_at, updated_at)"
        " VALUES (:key, :key, :name, '{}', :status, 0, 0)"
    )
    event = (
        "INSERT INTO subscriber_events (subscriber_key, at, old_status, new_status, source)"
        " VALUES (:key, 0, NULL, :status, 'cli')"
    )
    with monkeypatch.context() as patch:  # a store as the migrations before sign-up left it
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:before_signup])
        patch.setattr(migrations, "STORE_VERSION", before_signup)
        with Store.open(store_url) as old:
            assert old.version == before_signup
            with old.transaction() as db:
                for n, status in enumerate(["subscribed", "unsubscribed", "bounced", "subscribed"]):
                    values = {"key": f"p{n}@example.org", "name": f"P {n}", "status": status}
                    db.execute(add, values)
                    db.execute(event, values)
                db.execute(add, {"key": "p4@example.org", "name": "P 4", "status": "subscribed"})
            with old.read() as db:
                before = db.execute(rows).fetchall()
                history = db.execute(events).fetchall()
            with pytest.raises(old.errors), old.transaction() as db:  # the old CHECK refuses it
                db.execute(add, {"key": "x@example.org", "name": "", "status": "unconfirmed"})
    with SubscriberStore(store_url) as store:
        assert store.database.version == migrations.STORE_VERSION
        with store.database.read() as db:
            assert db.execute(rows).fetchall() == before
            assert db.execute(events).fetchall() == history
        before_ids = [int(row[0]) for row in before]
        store.set_status("p3@example.org", "unconfirmed", source="cli")
        with pytest.raises(AudienceError):
            store.set_status("p3@example.org", "maybe", source="cli")
        added = store.add("new@example.org")
        assert added.id is not None and added.id > max(before_ids)
        # The history still goes with its subscriber (the rebuilt reference cascades).
        assert store.remove("p1@example.org")
        assert store.events("p1@example.org") == ()
        assert store.count("subscribed") == 3  # p0, p4, new
        with store.database.read() as db:
            indexes = {
                str(row[0])
                for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index'"
                    if store.database.is_sqlite
                    else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
                )
            }
        assert {"subscribers_by_status", "subscriber_events_by_key"} <= indexes


@pytest.fixture
def consents(store_url: str) -> ConsentStore:
    return ConsentStore(SubscriberStore(store_url))


def test_a_new_address_is_unconfirmed_until_the_link_is_followed(consents: ConsentStore) -> None:
    store = consents.subscribers
    request = SignupRequest(
        "Ann@Example.org", "form page", "v1", name="Ann", attributes={"city": "Gent"}
    )
    result = consents.request(request, now=T0)
    assert result.outcome == SignupOutcome.MAIL and result.nonce
    person = store.get("ann@example.org")
    assert person is not None and person.status == SubscriberStatus.UNCONFIRMED
    assert list(store.iter_subscribers()) == []  # never in an audience
    done = consents.confirm(result.nonce, now=T0 + 60, max_age=7 * DAY, source="web sign-up")
    assert done.outcome == ConfirmOutcome.CONFIRMED
    person = store.get("ann@example.org")
    assert person is not None and person.status == SubscriberStatus.SUBSCRIBED
    assert (person.name, dict(person.attributes)) == ("Ann", {"city": "Gent"})
    [consent] = consents.consents("ann@example.org")
    assert (consent.requested_at, consent.confirmed_at) == (T0, T0 + 60)
    assert (consent.source, consent.consent_version, consent.client_hash) == (
        "form page",
        "v1",
        None,
    )
    assert [(e.old_status, e.new_status, e.source) for e in store.events("ann@example.org")] == [
        (None, "unconfirmed", "form page"),
        ("unconfirmed", "subscribed", "web sign-up"),
    ]
    # The link works once: a replay changes nothing and says nothing.
    again = consents.confirm(result.nonce, now=T0 + 120, max_age=7 * DAY, source="web sign-up")
    assert again.outcome == ConfirmOutcome.INVALID
    assert ask(consents, "ann@example.org", now=T0 + 2 * DAY) == SignupOutcome.SUBSCRIBED
    assert len(consents.consents("ann@example.org")) == 1  # no second request, no second mail


def test_at_most_one_confirmation_mail_per_address_per_hour(consents: ConsentStore) -> None:
    outcomes = [ask(consents, "bomb@example.org", now=T0 + i * 60) for i in range(30)]
    assert outcomes.count(SignupOutcome.MAIL) == 1
    assert ask(consents, "BOMB@example.org", now=T0 + MAIL_INTERVAL - 1) == SignupOutcome.LIMITED
    assert ask(consents, "bomb@example.org", now=T0 + MAIL_INTERVAL) == SignupOutcome.MAIL


def test_the_hourly_limit_holds_across_connections_at_once(store_url: str) -> None:
    """Eight workers (each its own connection) ask for the same address at the same moment."""
    outcomes: list[SignupOutcome] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        with SubscriberStore(store_url) as store:
            barrier.wait()
            outcomes.append(ask(ConsentStore(store), "race@example.org"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == sorted([SignupOutcome.MAIL] + [SignupOutcome.LIMITED] * 7)


def test_bounced_and_complained_are_never_mailed_from_a_form(consents: ConsentStore) -> None:
    store = consents.subscribers
    for status in ("bounced", "complained"):
        store.add(f"{status}@example.org")
        store.set_status(f"{status}@example.org", status, source="inbox")
        assert ask(consents, f"{status}@example.org") == SignupOutcome.BLOCKED
        assert consents.consents(f"{status}@example.org") == ()


def test_an_unsubscribed_person_comes_back_only_by_confirming(consents: ConsentStore) -> None:
    store = consents.subscribers
    store.add("gone@example.org", "Gone")
    store.set_status("gone@example.org", "unsubscribed", source="web page")
    result = consents.request(SignupRequest("gone@example.org", "embedded form", "v2"), now=T0)
    assert result.outcome == SignupOutcome.MAIL and result.nonce
    assert store.get("gone@example.org").status == "unsubscribed"  # type: ignore[union-attr]
    done = consents.confirm(result.nonce, now=T0 + 5, max_age=DAY, source="web sign-up")
    assert done.outcome == ConfirmOutcome.CONFIRMED
    person = store.get("gone@example.org")
    assert person is not None and (person.status, person.name) == ("subscribed", "Gone")


def test_expired_requests_cannot_be_confirmed_and_are_purged(consents: ConsentStore) -> None:
    store = consents.subscribers
    old = consents.request(SignupRequest("late@example.org", "form page", "v1"), now=T0)
    fresh = consents.request(SignupRequest("fresh@example.org", "form page", "v1"), now=T0 + DAY)
    store.add("member@example.org")
    store.set_status("member@example.org", "unsubscribed", source="cli")
    back = consents.request(SignupRequest("member@example.org", "form page", "v1"), now=T0)
    assert old.nonce and fresh.nonce and back.nonce
    late = consents.confirm(old.nonce, now=T0 + 2 * DAY + 1, max_age=2 * DAY, source="web")
    assert late.outcome == ConfirmOutcome.INVALID
    assert consents.purge(now=T0 + 2 * DAY + 1, max_age=2 * DAY) == 1
    assert store.get("late@example.org") is None  # and their history and request with them
    assert store.events("late@example.org") == ()
    assert store.get("fresh@example.org") is not None
    member = store.get("member@example.org")
    assert member is not None and member.status == "unsubscribed"  # kept, request gone
    assert consents.consents("member@example.org") == ()
    back_late = consents.confirm(back.nonce, now=T0 + 2 * DAY + 2, max_age=9 * DAY, source="web")
    assert back_late.outcome == ConfirmOutcome.INVALID


def test_remove_erases_consent_records(consents: ConsentStore) -> None:
    result = consents.request(SignupRequest("erase@example.org", "form page", "v1",
                                            client_hash="ab" * 16), now=T0)  # fmt: skip
    assert result.nonce
    consents.confirm(result.nonce, now=T0 + 1, max_age=DAY, source="web sign-up")
    consents.record("erase@example.org", source="cli", consent_version="v1", now=T0 + 2)
    assert len(consents.consents("erase@example.org")) == 2
    assert consents.subscribers.remove("erase@example.org")
    with consents.database.read() as db:
        assert db.execute("SELECT COUNT(*) FROM signup_consents").fetchone()[0] == 0


def test_bad_addresses_and_names_are_refused_before_anything_is_written(
    consents: ConsentStore,
) -> None:
    with pytest.raises(AudienceError):
        ask(consents, "not an address")
    with pytest.raises(AudienceError):
        consents.request(
            SignupRequest("ann@example.org", "form page", "v1", name="Ann\r\nBcc: x@evil.example"),
            now=T0,
        )
    assert consents.subscribers.count() == dict.fromkeys(
        ("subscribed", "unsubscribed", "bounced", "complained", "unconfirmed"), 0
    )


def test_a_store_opened_by_several_processes_keeps_one_schema(store_url: str) -> None:
    Store.open(store_url).close()
    with Store.open(store_url) as store, store.read() as db:
        versions = [r[0] for r in db.execute("SELECT version FROM store_migrations ORDER BY 1")]
    assert versions == [m.version for m in migrations.MIGRATIONS]
