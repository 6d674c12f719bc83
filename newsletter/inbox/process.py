"""`newsletter inbox process`: classify every message of a mailbox, apply it to the subscribers,
file it.

A hard bounce marks the subscriber `bounced`; `soft_bounce_limit` soft bounces (for different
messages since the person last subscribed) do too. A complaint marks them `complained`, mail to
the unsubscribe address unsubscribes them; notices are filed with nothing changed. Only
subscribers are acted on: a report about an address that is not on the list is left, as it may
concern someone's personal mail.

Processed messages are moved to `processed_folder` (created if missing), never deleted; changes
are written to the subscriber store first, so a crash in between only repeats harmless work
(soft bounces are recorded once per report, keyed by its Message-ID).
"""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Protocol

from ..audience import SubscriberStatus, SubscriberStore
from ..config_tables import InboxSettings
from .classify import Classification, Kind, classify
from .softbounces import SoftBounces

__all__ = ["InboxItem", "InboxReport", "Mailbox", "process_inbox"]


class Mailbox(Protocol):
    """What processing needs of a mailbox; `ImapMailbox` is the real one."""

    def uids(self) -> list[int]: ...

    def fetch(self, uid: int) -> bytes: ...

    def move(self, uid: int, folder: str) -> None: ...


@dataclass(frozen=True)
class InboxItem:
    """One message: what it is, what was done, and whether it was filed away.

    `handled`: understood and filed (in a dry run: would be); `moved`: really moved.
    """

    uid: int
    kind: Kind
    address: str | None
    action: str
    sender: str
    subject: str
    moved: bool
    handled: bool = True


@dataclass(frozen=True)
class InboxReport:
    """What a run did: `processed` were filed in the processed folder, `left` were not."""

    processed: tuple[InboxItem, ...] = ()
    left: tuple[InboxItem, ...] = ()
    dry_run: bool = False
    changes: dict[str, int] = field(default_factory=dict)

    def count(self, kind: Kind) -> int:
        return sum(1 for item in self.processed if item.kind == kind)


def _event_since(store: SubscriberStore, email: str) -> float:
    """When the subscriber last became subscribed: soft bounces before it do not count."""
    since = 0.0
    for event in store.events(email):
        if event.new_status == SubscriberStatus.SUBSCRIBED:
            since = event.at
    return since


def process_inbox(
    mailbox: Mailbox,
    store: SubscriberStore,
    *,
    settings: InboxSettings,
    unsubscribe_address: str | None,
    secret: bytes | None,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
    progress: Callable[[InboxItem], None] | None = None,
) -> InboxReport:
    """Classify every message in the mailbox's folder, apply what it says to the store, file it.

    `unsubscribe_address` is the address of the List-Unsubscribe mailto; `secret` checks the
    tokens in returned messages. With `dry_run`, nothing is changed or moved: the report says
    what would have happened.
    """
    bounces = SoftBounces(store.database)
    processed: list[InboxItem] = []
    left: list[InboxItem] = []
    changes: dict[str, int] = {}
    try:
        for uid in mailbox.uids():
            raw = mailbox.fetch(uid)
            found = classify(
                raw,
                unsubscribe_address=unsubscribe_address,
                secret=secret,
                trusted_authserv_id=settings.trusted_authserv_id,
            )
            header = email.message_from_bytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n",
                                              policy=email.policy.default)  # fmt: skip
            sender = parseaddr(str(header.get("From", "")))[1]
            subject = " ".join(str(header.get("Subject", "")).split())
            action, file_it, change = _apply(
                found, store, bounces, settings, dry_run=dry_run, now=clock()
            )
            if change:
                changes[change] = changes.get(change, 0) + 1
            moved = False
            if file_it and not dry_run:
                mailbox.move(uid, settings.processed_folder)
                moved = True
            address = found.addresses[0] if found.addresses else None
            item = InboxItem(uid, found.kind, address, action, sender, subject, moved, file_it)
            (processed if file_it else left).append(item)
            if progress is not None:
                progress(item)
    finally:
        bounces.close()
    return InboxReport(tuple(processed), tuple(left), dry_run, changes)


def _apply(
    found: Classification,
    store: SubscriberStore,
    bounces: SoftBounces,
    settings: InboxSettings,
    *,
    dry_run: bool,
    now: float,
) -> tuple[str, bool, str | None]:
    """(what was done, whether to file the message, the status it changed to)."""
    would = "would be " if dry_run else ""
    if found.kind == Kind.UNKNOWN:
        return found.reason or "not recognised", False, None
    if found.kind == Kind.NOTICE:
        return f"{found.reason or 'notice'}: nothing to change", True, None
    address = found.addresses[0] if found.addresses else None
    subscriber = store.get(address) if address else None
    if subscriber is None:
        return f"{found.kind} for {address}, who is not a subscriber", False, None
    current = SubscriberStatus(subscriber.status)
    code = f" {found.status}" if found.status else ""

    def set_status(status: SubscriberStatus, source: str) -> str | None:
        if current == status:
            return None
        if not dry_run:
            store.set_status(subscriber.email, status, source=source)
        return str(status)

    if found.kind == Kind.COMPLAINT:
        changed = set_status(SubscriberStatus.COMPLAINED, f"inbox: {found.reason}")
        return (f"{would}marked complained" if changed else "already complained"), True, changed
    if found.kind == Kind.UNSUBSCRIBE:
        if current != SubscriberStatus.SUBSCRIBED:
            return f"already {current}", True, None
        changed = set_status(SubscriberStatus.UNSUBSCRIBED, "inbox: unsubscribe mail")
        return f"{would}unsubscribed", True, changed
    if found.kind == Kind.HARD_BOUNCE:
        if current == SubscriberStatus.COMPLAINED:
            return "hard bounce; stays complained", True, None
        changed = set_status(SubscriberStatus.BOUNCED, f"inbox: hard bounce{code}")
        return (
            (f"{would}marked bounced (hard bounce{code})" if changed else "already bounced"),
            (True),
            changed,
        )
    # Soft bounce: count it once per report, per message it reports on.
    message_key = found.original_id or found.report_id
    since = _event_since(store, subscriber.email)
    if not dry_run:
        bounces.record(subscriber.key, found.report_id, message_key, found.status, now)
        count = bounces.count(subscriber.key, since)
    else:
        count = bounces.count(subscriber.key, since) + 1
    limit = settings.soft_bounce_limit
    if count >= limit and current == SubscriberStatus.SUBSCRIBED:
        changed = set_status(
            SubscriberStatus.BOUNCED, f"inbox: {count} soft bounces (last{code or ' unknown'})"
        )
        return f"{would}marked bounced ({count} of {limit} soft bounces)", True, changed
    return f"soft bounce{code}: {min(count, limit)} of {limit}", True, None
