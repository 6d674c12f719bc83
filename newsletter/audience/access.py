"""Everything the store holds about one person (a GDPR access request), and the consent export.

`person_record` gathers the subscriber row, its status history, its sign-up requests and consent
records, the issues sent to the address (the send ledgers) and the soft bounces read from the
inbox. `export_consent_csv` is `export` with the consent columns of each person's latest
confirmed consent.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from ..errors import AudienceError
from .addresses import lookup_key
from .consent import Consent, ConsentStore
from .csvfile import formula_safe
from .model import StatusEvent, Subscriber
from .store import SubscriberStore

__all__ = ["CONSENT_COLUMNS", "PersonRecord", "export_consent_csv", "iso", "person_record"]

CONSENT_COLUMNS = (
    "consent_source",
    "consent_version",
    "consent_requested_at",
    "consent_confirmed_at",
)
_TIMES = "SELECT created_at, updated_at FROM subscribers WHERE key = :key"
_DELIVERIES = (
    "SELECT issue, state, attempts, message_id, updated_at FROM ledger_rows"
    " WHERE key = :key ORDER BY updated_at, issue"
)
_BOUNCES = (
    "SELECT report_id, status, at FROM inbox_soft_bounces WHERE subscriber_key = :key ORDER BY at"
)
_LATEST = (
    "SELECT subscriber_key, source, consent_version, requested_at, confirmed_at"
    " FROM signup_consents WHERE confirmed_at IS NOT NULL ORDER BY confirmed_at, id"
)


def iso(at: float | None) -> str:
    """An epoch time as ISO 8601 in UTC (seconds), "" for None."""
    if at is None:
        return ""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Delivery:
    issue: str
    state: str
    attempts: int
    message_id: str | None
    at: float


@dataclass(frozen=True)
class SoftBounce:
    report_id: str
    status: str | None
    at: float


@dataclass(frozen=True)
class PersonRecord:
    """All the store holds about one address."""

    subscriber: Subscriber
    created_at: float
    updated_at: float
    history: tuple[StatusEvent, ...]
    consents: tuple[Consent, ...]
    deliveries: tuple[Delivery, ...]
    soft_bounces: tuple[SoftBounce, ...]

    def as_json(self) -> dict[str, Any]:
        """The record as plain JSON values (times in ISO 8601 UTC)."""
        person = self.subscriber
        return {
            "email": person.email,
            "name": person.name,
            "status": str(person.status),
            "attributes": dict(person.attributes),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "history": [
                {"at": iso(e.at), "from": e.old_status, "to": e.new_status, "source": e.source}
                for e in self.history
            ],
            "consent": [
                {
                    "requested_at": iso(c.requested_at),
                    "confirmed_at": iso(c.confirmed_at) or None,
                    "source": c.source,
                    "consent_version": c.consent_version,
                    "client_address_hash": c.client_hash,
                    "confirmation_mailed_at": iso(c.mailed_at) or None,
                    "fields": dict(c.fields),
                }
                for c in self.consents
            ],
            "deliveries": [
                {
                    "issue": d.issue,
                    "state": d.state,
                    "attempts": d.attempts,
                    "message_id": d.message_id,
                    "at": iso(d.at),
                }
                for d in self.deliveries
            ],
            "soft_bounces": [
                {"report_id": b.report_id, "status": b.status, "at": iso(b.at)}
                for b in self.soft_bounces
            ],
        }


def person_record(store: SubscriberStore, email: str) -> PersonRecord | None:
    """What the store holds about `email`, or None when the address is not on the list."""
    person = store.get(email)
    if person is None:
        return None
    key = lookup_key(email)
    database = store.database
    try:
        with database.read() as db:
            times = db.execute(_TIMES, {"key": key}).fetchone()
            deliveries = db.execute(_DELIVERIES, {"key": key}).fetchall()
            bounces = db.execute(_BOUNCES, {"key": key}).fetchall()
    except database.errors as err:
        raise AudienceError(f"{database.where}: cannot read about {email.strip()}: {err}") from err
    return PersonRecord(
        subscriber=person,
        created_at=float(times[0]) if times else 0.0,
        updated_at=float(times[1]) if times else 0.0,
        history=store.events(email),
        consents=ConsentStore(store).consents(email),
        deliveries=tuple(
            Delivery(str(r[0]), str(r[1]), int(r[2]), r[3], float(r[4])) for r in deliveries
        ),
        soft_bounces=tuple(SoftBounce(str(r[0]), r[1], float(r[2])) for r in bounces),
    )


def _latest_consents(store: SubscriberStore) -> dict[str, tuple[str, str, float, float]]:
    database = store.database
    try:
        with database.read() as db:
            rows = db.execute(_LATEST).fetchall()
    except database.errors as err:
        raise AudienceError(f"{database.where}: cannot read the consent records: {err}") from err
    return {str(r[0]): (str(r[1]), str(r[2]), float(r[3]), float(r[4])) for r in rows}


def export_consent_csv(store: SubscriberStore, out: TextIO, status: str | None = None) -> int:
    """`SubscriberStore.export_csv` plus the columns of each person's latest confirmed consent
    (empty for people with none recorded, e.g. imported before consent was kept)."""
    consents = _latest_consents(store)
    keys: set[str] = set()
    for person in store.iter_subscribers(status):
        keys.update(person.attributes)
    attribute_keys = sorted(keys)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        ["email", "name", "status", *map(formula_safe, attribute_keys), *CONSENT_COLUMNS]
    )
    written = 0
    people: Iterable[Subscriber] = store.iter_subscribers(status)
    for person in people:
        source, version, requested, confirmed = consents.get(person.key, ("", "", None, None))
        writer.writerow(
            [
                formula_safe(person.email),
                formula_safe(person.name),
                person.status,
                *(formula_safe(person.attributes.get(k, "")) for k in attribute_keys),
                formula_safe(source),
                formula_safe(version),
                iso(requested),
                iso(confirmed),
            ]
        )
        written += 1
    return written
