"""`newsletter inbox process`: classify every message of a mailbox, apply it to the subscribers,
file it.

A hard bounce marks the subscriber `bounced`; `soft_bounce_limit` soft bounces (for different
messages since the person last subscribed) do too. A complaint marks them `complained`, mail to
the unsubscribe address unsubscribes them; notices are filed with nothing changed. Each of these
needs proof that we sent that mail to that recipient (see `classify`): without it the message is
left where it is, reported as "ignored: no proof", and nobody changes. Only
subscribers are acted on: a report about an address that is not on the list is left, as it may
concern someone's personal mail.

Processed messages are moved to `processed_folder` (created if missing), never deleted; changes
are written to the subscriber store first, so a crash in between only repeats harmless work
(soft bounces are recorded once per report, keyed by its Message-ID).

No single message stops a run: one that cannot be fetched, is larger than `max_message_bytes`,
is nested or split beyond the bounds of `limits`, or makes the parser fail in any way is moved
to `quarantine_folder` (created if missing) with the reason in the report, and the run goes on.
Only a broken connection (`ConnectionLost`) ends a run early.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Protocol

from ..audience import SubscriberStatus, SubscriberStore
from ..config_tables import InboxSettings
from ..errors import AudienceError, InboxError
from .classify import Classification, Kind, classify, classify_refusal
from .limits import ConnectionLost, MessageTooLarge
from .softbounces import SoftBounces

__all__ = ["InboxItem", "InboxReport", "Mailbox", "apply_refusals", "process_inbox"]


class Mailbox(Protocol):
    """What processing needs of a mailbox; `ImapMailbox` is the real one."""

    def uids(self) -> list[int]: ...

    def fetch(self, uid: int, max_bytes: int | None = None) -> bytes: ...

    def move(self, uid: int, folder: str) -> None: ...


@dataclass(frozen=True)
class InboxItem:
    """One message: what it is, what was done, and whether it was filed away.

    `handled`: understood and filed (in a dry run: would be); `moved`: really moved;
    `quarantined`: unreadable, for the quarantine folder (`action` says why); `ignored`: a
    bounce, complaint or unsubscribe without proof that we sent that mail to that recipient
    (left where it is, nobody changed).
    """

    uid: int
    kind: Kind
    address: str | None
    action: str
    sender: str
    subject: str
    moved: bool
    handled: bool = True
    quarantined: bool = False
    ignored: bool = False


@dataclass(frozen=True)
class InboxReport:
    """What a run did: `processed` were filed in the processed folder, `quarantined` went to
    the quarantine folder, `left` stayed where they were."""

    processed: tuple[InboxItem, ...] = ()
    left: tuple[InboxItem, ...] = ()
    dry_run: bool = False
    changes: dict[str, int] = field(default_factory=dict)
    quarantined: tuple[InboxItem, ...] = ()

    def count(self, kind: Kind) -> int:
        return sum(1 for item in self.processed if item.kind == kind)

    @property
    def ignored(self) -> tuple[InboxItem, ...]:
        """The bounces, complaints and unsubscribe mails without proof (among `left`)."""
        return tuple(item for item in self.left if item.ignored)


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
    tokens: Callable[[str], str | None] | None = None,
) -> InboxReport:
    """Classify every message in the mailbox's folder, apply what it says to the store, file it.

    `unsubscribe_address` is the address of the List-Unsubscribe mailto; `secret` checks the
    tokens in returned messages of the older form; `tokens` (the list's `TokenBook.resolve`)
    reads every form, opaque tokens included. With `dry_run`, nothing is changed or moved: the
    report says what would have happened.
    """
    bounces = SoftBounces(store.database)
    processed: list[InboxItem] = []
    left: list[InboxItem] = []
    quarantined: list[InboxItem] = []
    changes: dict[str, int] = {}

    def done(item: InboxItem) -> None:
        if item.quarantined:
            quarantined.append(item)
        else:
            (processed if item.handled else left).append(item)
        if progress is not None:
            progress(item)

    def quarantine(uid: int, reason: str, sender: str = "", subject: str = "") -> InboxItem:
        if dry_run:
            return InboxItem(uid, Kind.UNREADABLE, None, reason,
                             sender, subject, False, False, True)  # fmt: skip
        try:
            mailbox.move(uid, settings.quarantine_folder)
        except ConnectionLost:
            raise
        except InboxError as err:
            return InboxItem(uid, Kind.UNREADABLE, None, f"{reason}; cannot be quarantined: "
                             f"{err.message}", sender, subject, False, False)  # fmt: skip
        return InboxItem(uid, Kind.UNREADABLE, None, reason, sender, subject,
                         True, False, True)  # fmt: skip

    try:
        for uid in mailbox.uids():
            try:
                raw = mailbox.fetch(uid, settings.max_message_bytes)
            except ConnectionLost:
                raise
            except MessageTooLarge as err:
                done(quarantine(uid, f"too large ({err.size:,} bytes)"))
                continue
            except InboxError as err:
                done(quarantine(uid, f"cannot be fetched: {err.message}"))
                continue
            sender, subject = _sender_and_subject(raw)
            try:
                found = classify(
                    raw,
                    unsubscribe_address=unsubscribe_address,
                    secret=secret,
                    trusted_authserv_id=settings.trusted_authserv_id,
                    tokens=tokens,
                )
            except Exception as err:  # classify catches everything it knows; this is the net
                found = Classification(Kind.UNREADABLE, reason=f"{type(err).__name__}: {err}")
            if found.kind == Kind.UNREADABLE:
                done(quarantine(uid, found.reason, sender, subject))
                continue
            address = found.addresses[0] if found.addresses else None
            if found.needs_proof and found.proof is None:
                action = f"ignored: no proof ({found.kind} for {address or 'nobody named'}"
                action += f"; {found.reason})" if found.reason else ")"
                done(InboxItem(uid, found.kind, address, action, sender, subject, False, False,
                               ignored=True))  # fmt: skip
                continue
            try:
                action, file_it, change = _apply(
                    found, store, bounces, settings, dry_run=dry_run, now=clock()
                )
            except (AudienceError, InboxError) as err:
                # The store, not the message: leave it where it is for the next run.
                action = f"not applied, the subscriber store failed: {err.message}"
                done(InboxItem(uid, found.kind, address, action, sender, subject, False, False))
                continue
            if change:
                changes[change] = changes.get(change, 0) + 1
            moved = False
            if file_it and not dry_run:
                try:
                    mailbox.move(uid, settings.processed_folder)
                    moved = True
                except ConnectionLost:
                    raise
                except InboxError as err:  # applied already; the next run files it
                    action, file_it = f"{action}; cannot be filed: {err.message}", False
            done(InboxItem(uid, found.kind, address, action, sender, subject, moved, file_it))
    finally:
        bounces.close()
    return InboxReport(tuple(processed), tuple(left), dry_run, changes, tuple(quarantined))


_REPORT_FIELD = re.compile(
    rb"^(From|Subject):[ \t]*([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE
)


def _sender_and_subject(raw: bytes) -> tuple[str, str]:
    """From address and Subject for the report; empty when the headers cannot be read.

    Only the first 1,000 bytes of each field are parsed: the email package's header parser
    crawls through long crafted values, and this runs before any bound is checked."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0][:65536]
    fields: dict[bytes, bytes] = {}
    for name, value in _REPORT_FIELD.findall(head):
        fields.setdefault(name.lower(), value[:1000])
    short = b"".join(
        name + b": " + value + b"\r\n" for name, value in ((b"From", fields.get(b"from", b"")),
                                                          (b"Subject", fields.get(b"subject", b"")))
    )  # fmt: skip
    try:
        header = email.message_from_bytes(short + b"\r\n", policy=email.policy.default)
        sender = parseaddr(str(header.get("From", "")))[1]
        subject = " ".join(str(header.get("Subject", "")).split())
    except Exception:  # a header the policy cannot decode: the report just shows less
        return "", ""
    return sender[:200], subject[:200]


def apply_refusals(
    store: SubscriberStore,
    refusals: list[tuple[str, str, str | None]],
    *,
    issue: str,
    soft_bounce_limit: int,
    now: float | None = None,
) -> list[str]:
    """Apply permanent refusals seen at send time, `(email, reply, message_id)`, as bounces
    under the same rules as DSNs from the inbox: a hard one (5.1.x "no such user", 5.2.1,
    5.4.4, or those words) marks the subscriber bounced at once, a soft one counts towards
    `soft_bounce_limit`. Returns what was done, one line each (issue 12)."""
    when = time.time() if now is None else now
    # Only the limit of the inbox's settings is read by `_apply`.
    settings = InboxSettings(host="", username="", soft_bounce_limit=soft_bounce_limit)
    done: list[str] = []
    bounces = SoftBounces(store.path)
    try:
        for email, reply, message_id in refusals:
            found = classify_refusal(
                email, reply, report_id=f"send:{issue}:{email}", original_id=message_id
            )
            action, _, changed = _apply(
                found, store, bounces, settings, dry_run=False, now=when, origin="send"
            )
            if changed:
                done.append(f"{email}: {action}")
    finally:
        bounces.close()
    return done


def _apply(
    found: Classification,
    store: SubscriberStore,
    bounces: SoftBounces,
    settings: InboxSettings,
    *,
    dry_run: bool,
    now: float,
    origin: str = "inbox",
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
        changed = set_status(SubscriberStatus.COMPLAINED, f"{origin}: {found.reason}")
        return (f"{would}marked complained" if changed else "already complained"), True, changed
    if found.kind == Kind.UNSUBSCRIBE:
        if current != SubscriberStatus.SUBSCRIBED:
            return f"already {current}", True, None
        changed = set_status(SubscriberStatus.UNSUBSCRIBED, f"{origin}: unsubscribe mail")
        return f"{would}unsubscribed", True, changed
    if found.kind == Kind.HARD_BOUNCE:
        if current == SubscriberStatus.COMPLAINED:
            return "hard bounce; stays complained", True, None
        changed = set_status(SubscriberStatus.BOUNCED, f"{origin}: hard bounce{code}")
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
            SubscriberStatus.BOUNCED, f"{origin}: {count} soft bounces (last{code or ' unknown'})"
        )
        return f"{would}marked bounced ({count} of {limit} soft bounces)", True, changed
    return f"soft bounce{code}: {min(count, limit)} of {limit}", True, None
