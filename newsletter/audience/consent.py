"""Sign-up requests and proof of consent (`signup_consents`), on the subscriber store.

One row per request to be on the list: from the form page, an embedded form, an import or the
CLI. A request from a form is confirmed by following a signed link (double opt-in); the row then
holds when it was asked for and confirmed, which consent text was shown, and, only when the
project turns it on, a keyed hash of the client's address. Rows go with their subscriber when
`remove` erases them (the foreign key cascades).

Every decision and its write happen in one transaction with the subscriber's row locked
(`FOR UPDATE` on PostgreSQL; SQLite's write lock covers the whole file), so the limit of one
confirmation mail per address per hour holds across workers and servers.
"""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import AudienceError
from .addresses import address_key, check_name, clean_attributes, lookup_key, normalise_address
from .model import Subscriber, SubscriberStatus
from .store import SubscriberStore

__all__ = [
    "MAIL_INTERVAL",
    "ConfirmOutcome",
    "Confirmation",
    "Consent",
    "ConsentStore",
    "SignupOutcome",
    "SignupRequest",
    "SignupResult",
]

MAIL_INTERVAL = 3600.0  # at most one confirmation mail per address in this many seconds

_COLUMNS = "id, requested_at, confirmed_at, source, consent_version, client_hash, mailed_at, fields"
_SUBSCRIBER = "SELECT id, email, name, attributes, status FROM subscribers WHERE key = :key"
_NEW_SUBSCRIBER = (
    "INSERT INTO subscribers (key, email, name, attributes, status, created_at, updated_at)"
    " VALUES (:key, :email, :name, :attributes, 'unconfirmed', :now, :now)"
    # Two servers asked for one new address at once: the second waits for the first's commit,
    # then finds its row (and its mail within the hour).
    " ON CONFLICT (key) DO NOTHING"
)
_EVENT = (
    "INSERT INTO subscriber_events (subscriber_key, at, old_status, new_status, source)"
    " VALUES (:key, :at, :old, :new, :source)"
)
_LAST_MAIL = "SELECT MAX(mailed_at) FROM signup_consents WHERE subscriber_key = :key"
_NEW_REQUEST = (
    "INSERT INTO signup_consents (subscriber_key, requested_at, confirmed_at, source,"
    " consent_version, client_hash, nonce, mailed_at, fields)"
    " VALUES (:key, :now, :confirmed, :source, :version, :client, :nonce, :mailed, :fields)"
)
_BY_NONCE = (
    f"SELECT {_COLUMNS}, subscriber_key FROM signup_consents"
    " WHERE nonce = :nonce AND confirmed_at IS NULL"
)
_CONFIRM = "UPDATE signup_consents SET confirmed_at = :now, nonce = NULL WHERE id = :id"
_CONFIRM_SUBSCRIBER = (
    "UPDATE subscribers SET status = 'subscribed', name = :name, attributes = :attributes,"
    " updated_at = :now WHERE key = :key"
)
_OF_SUBSCRIBER = (
    f"SELECT {_COLUMNS} FROM signup_consents WHERE subscriber_key = :key ORDER BY requested_at, id"
)
# The people an import subscribed (added, or subscribed again with --resubscribe): their
# consent is the editor's import, recorded at the time of its history event.
_IMPORTED = (
    "INSERT INTO signup_consents (subscriber_key, requested_at, confirmed_at, source, fields)"
    " SELECT e.subscriber_key, e.at, e.at, e.source, '{}' FROM subscriber_events e"
    " WHERE e.source = :source AND e.at >= :since AND e.new_status = 'subscribed'"
    " AND NOT EXISTS (SELECT 1 FROM signup_consents c WHERE c.subscriber_key = e.subscriber_key"
    " AND c.source = e.source AND c.requested_at = e.at)"
)
# Unconfirmed people whose every request is older than the cut-off: removed with their rows.
_PURGE_PEOPLE = (
    "DELETE FROM subscribers WHERE status = 'unconfirmed' AND NOT EXISTS (SELECT 1 FROM"
    " signup_consents c WHERE c.subscriber_key = subscribers.key AND c.requested_at >= :cutoff)"
)
# Expired requests of people who stay (they unsubscribed once and never confirmed coming back).
_PURGE_REQUESTS = (
    "DELETE FROM signup_consents WHERE confirmed_at IS NULL AND requested_at < :cutoff"
)


class SignupOutcome(enum.StrEnum):
    """What a sign-up request led to; the public answer is the same for every one."""

    MAIL = "mail"  # a confirmation mail is to be sent (`SignupResult.nonce`)
    SUBSCRIBED = "subscribed"  # already on the list: nothing sent, no second welcome
    BLOCKED = "blocked"  # bounced or complained: never mailed from a public form
    LIMITED = "limited"  # a confirmation mail went to this address within the hour


class ConfirmOutcome(enum.StrEnum):
    CONFIRMED = "confirmed"  # now subscribed: send the welcome message
    ALREADY = "already"  # was subscribed already (another link): no second welcome
    INVALID = "invalid"  # unknown, used, purged, or expired
    BLOCKED = "blocked"  # bounced or complained meanwhile: stays so


@dataclass(frozen=True)
class SignupRequest:
    """A request to be on the list, as a form sent it (values still to be checked)."""

    email: str
    source: str
    consent_version: str
    name: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    client_hash: str | None = None


@dataclass(frozen=True)
class SignupResult:
    outcome: SignupOutcome
    email: str
    nonce: str | None = None


@dataclass(frozen=True)
class Confirmation:
    outcome: ConfirmOutcome
    subscriber: Subscriber | None = None


@dataclass(frozen=True)
class Consent:
    """One request to be on the list and, once confirmed, the proof of consent."""

    id: int
    requested_at: float
    confirmed_at: float | None
    source: str
    consent_version: str
    client_hash: str | None
    mailed_at: float | None
    fields: Mapping[str, str]

    @property
    def confirmed(self) -> bool:
        return self.confirmed_at is not None


def _consent(row: tuple[Any, ...]) -> Consent:
    return Consent(
        int(row[0]), float(row[1]), None if row[2] is None else float(row[2]), str(row[3]),
        str(row[4]), row[5], None if row[6] is None else float(row[6]), json.loads(row[7]),
    )  # fmt: skip


def _subscriber(row: tuple[Any, ...]) -> Subscriber:
    return Subscriber(
        email=row[1], name=row[2], attributes=json.loads(row[3]), status=row[4], id=row[0]
    )


class ConsentStore:
    """Sign-up requests and consent records beside a `SubscriberStore` (sharing its store)."""

    def __init__(self, subscribers: SubscriberStore) -> None:
        self.subscribers = subscribers
        self.database = subscribers.database

    def _locked(self, db: Any, key: str) -> tuple[Any, ...] | None:
        found: tuple[Any, ...] | None = db.execute(
            _SUBSCRIBER + self.database.dialect.lock_row, {"key": key}
        ).fetchone()
        return found

    def request(
        self, request: SignupRequest, *, now: float, mail_interval: float = MAIL_INTERVAL
    ) -> SignupResult:
        """Record a request from a form; whether to mail a confirmation link.

        Raises AudienceError for an address or name that cannot be stored (the caller answers
        the form with the problem: that reveals nothing about the list).
        """
        address = normalise_address(request.email)
        name = check_name(request.name)
        attributes = dict(clean_attributes(request.attributes))
        key = address_key(address)
        try:
            with self.database.transaction() as db:
                found = self._locked(db, key)
                if found is None:
                    inserted = db.execute(
                        _NEW_SUBSCRIBER,
                        {"key": key, "email": address, "name": name, "now": now,
                         "attributes": json.dumps(attributes, sort_keys=True)},
                    ).rowcount  # fmt: skip
                    if inserted:
                        event = {"key": key, "at": now, "old": None, "new": "unconfirmed"}
                        db.execute(_EVENT, {**event, "source": request.source})
                    else:
                        found = self._locked(db, key)
                if found is not None:
                    status = found[4]
                    if status == SubscriberStatus.SUBSCRIBED:
                        return SignupResult(SignupOutcome.SUBSCRIBED, address)
                    if status in (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED):
                        # A bounced address fails again (and hurts the sender's reputation); a
                        # complaint means the person marked our mail as spam. Mailing either
                        # because someone typed the address into a form is what mail bombs and
                        # spam reports are made of: the editors decide, not the form.
                        return SignupResult(SignupOutcome.BLOCKED, address)
                    # Unconfirmed (asked before) or unsubscribed (coming back): the status
                    # changes only when the link is followed.
                    last = db.execute(_LAST_MAIL, {"key": key}).fetchone()[0]
                    if last is not None and now - float(last) < mail_interval:
                        return SignupResult(SignupOutcome.LIMITED, address)
                nonce = secrets.token_urlsafe(18)
                db.execute(
                    _NEW_REQUEST,
                    {
                        "key": key,
                        "now": now,
                        "confirmed": None,
                        "source": request.source,
                        "version": request.consent_version,
                        "client": request.client_hash,
                        "nonce": nonce,
                        # Counted as mailed before the mail leaves: a failed send still holds the
                        # hour, so no error path can turn the form into a mail cannon.
                        "mailed": now,
                        "fields": json.dumps({"name": name, **attributes}, sort_keys=True),
                    },
                )
        except self.database.errors as err:
            raise AudienceError(f"{self.database.where}: cannot record a sign-up: {err}") from err
        return SignupResult(SignupOutcome.MAIL, address, nonce)

    def confirm(self, nonce: str, *, now: float, max_age: float, source: str) -> Confirmation:
        """Follow a confirmation link: subscribe the person if the request is pending and
        younger than `max_age` seconds. Used links, purged or unknown requests are INVALID."""
        try:
            with self.database.transaction() as db:
                row = db.execute(
                    _BY_NONCE + self.database.dialect.lock_row, {"nonce": nonce}
                ).fetchone()
                if row is None:
                    return Confirmation(ConfirmOutcome.INVALID)
                consent, key = _consent(row), str(row[8])
                if now - consent.requested_at > max_age or now < consent.requested_at:
                    return Confirmation(ConfirmOutcome.INVALID)
                found = self._locked(db, key)
                if found is None:
                    return Confirmation(ConfirmOutcome.INVALID)
                person = _subscriber(found)
                if person.status in (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED):
                    return Confirmation(ConfirmOutcome.BLOCKED)
                db.execute(_CONFIRM, {"now": now, "id": consent.id})
                if person.status == SubscriberStatus.SUBSCRIBED:
                    return Confirmation(ConfirmOutcome.ALREADY, person)
                fields = dict(consent.fields)
                name = fields.pop("name", "") or person.name
                attributes = {**person.attributes, **{k: v for k, v in fields.items() if v}}
                db.execute(
                    _CONFIRM_SUBSCRIBER,
                    {"key": key, "name": name, "now": now,
                     "attributes": json.dumps(attributes, sort_keys=True)},
                )  # fmt: skip
                db.execute(_EVENT, {"key": key, "at": now, "old": person.status,
                                    "new": "subscribed", "source": source})  # fmt: skip
        except self.database.errors as err:
            raise AudienceError(f"{self.database.where}: cannot confirm a sign-up: {err}") from err
        subscribed = Subscriber(person.email, name, attributes, SubscriberStatus.SUBSCRIBED)
        return Confirmation(ConfirmOutcome.CONFIRMED, subscribed)

    def record(self, email: str, *, source: str, consent_version: str, now: float) -> None:
        """A consent given outside the form (an import, the CLI), confirmed as it is recorded."""
        key = lookup_key(email)
        try:
            with self.database.transaction() as db:
                if self._locked(db, key) is None:
                    raise AudienceError(f"no subscriber {email.strip()}")
                db.execute(
                    _NEW_REQUEST,
                    {"key": key, "now": now, "confirmed": now, "source": source,
                     "version": consent_version, "client": None, "nonce": None, "mailed": None,
                     "fields": "{}"},
                )  # fmt: skip
        except self.database.errors as err:
            raise AudienceError(f"{self.database.where}: cannot record consent: {err}") from err

    def record_import(self, source: str, *, since: float) -> int:
        """Record the consent of everyone an import (history source `source`, at or after
        `since`) subscribed; how many were recorded."""
        try:
            with self.database.transaction() as db:
                added = db.execute(_IMPORTED, {"source": source, "since": since}).rowcount
        except self.database.errors as err:
            raise AudienceError(f"{self.database.where}: cannot record consent: {err}") from err
        return max(int(added), 0)

    def consents(self, email: str) -> tuple[Consent, ...]:
        """Every request and consent of the person, oldest first (empty for an unknown one)."""
        key = lookup_key(email)
        try:
            with self.database.read() as db:
                rows = db.execute(_OF_SUBSCRIBER, {"key": key}).fetchall()
        except self.database.errors as err:
            raise AudienceError(f"{self.database.where}: cannot read consent: {err}") from err
        return tuple(_consent(row) for row in rows)

    def purge(self, *, now: float, max_age: float) -> int:
        """Remove requests older than `max_age` seconds that were never confirmed, and the
        people who only ever were such requests; how many people were removed."""
        cutoff = now - max_age
        try:
            with self.database.transaction() as db:
                removed = db.execute(_PURGE_PEOPLE, {"cutoff": cutoff}).rowcount
                db.execute(_PURGE_REQUESTS, {"cutoff": cutoff})
        except self.database.errors as err:
            raise AudienceError(f"{self.database.where}: cannot purge sign-ups: {err}") from err
        return max(int(removed), 0)
