"""Helpers for send tests: an in-memory audience and a message template of the example issue.

Also runnable as a child process for crash tests:
    python -m tests.sendkit PROJECT DB PORT COUNT [store]
sends the example issue to COUNT generated recipients through the SMTP server on 127.0.0.1:PORT
(with `store`: to the subscribers of the store in DB, see `store_people`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.audience import SubscriberStore
from newsletter.config import TransportSettings, load_settings
from newsletter.content import load_issue
from newsletter.delivery import freeze, sender
from newsletter.delivery.ledger import Ledger
from newsletter.delivery.message import MessageTemplate
from newsletter.delivery.ratelimit import Backoff
from newsletter.delivery.sender import SendOptions, StoreAudience, send_issue
from newsletter.delivery.transports.smtp import SmtpTransport
from newsletter.render import render_issue

SECRET = b"test-secret"


def token_for(secret: bytes, email: str) -> str:
    return hmac.new(secret, email.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Person:
    email: str
    name: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def needs_smtputf8(self) -> bool:
        return not self.email.isascii()

    def value(self, name: str) -> str | None:
        if name == "email":
            return self.email
        if name == "name":
            return self.name
        if name == "first_name":
            return self.name.split()[0] if self.name else None
        return self.attributes.get(name)


class ListAudience:
    """An audience held in memory; `leave(email)` models an unsubscribe during a run."""

    def __init__(self, people: list[Person]) -> None:
        self.people = {person.email.lower(): person for person in people}

    def recipients(self) -> Iterator[tuple[str, Person]]:
        for key in sorted(self.people):
            yield key, self.people[key]

    def recipient(self, key: str) -> Person | None:
        return self.people.get(key)

    def leave(self, email: str) -> None:
        self.people.pop(email.lower(), None)


def people(count: int) -> list[Person]:
    return [Person(f"reader{n:05d}@example.org", f"Reader {n:05d}") for n in range(count)]


def example_template(project: Path) -> MessageTemplate:
    settings = load_settings(project)
    rendered = render_issue(load_issue(project / "issues" / "2026-11"), settings)
    return MessageTemplate.prepare(rendered, settings, secret=SECRET, token_for=token_for)


def smtp_transport(port: int, connections: int = 2) -> SmtpTransport:
    settings = TransportSettings(
        kind="smtp", host="127.0.0.1", port=port, security="none", connections=connections
    )
    return SmtpTransport(settings, password=None)


def store_people(database: Path, count: int) -> None:
    """`people(count)` as subscribers of the store at `database` (imported from a CSV)."""
    csv = database.with_name(f"{database.stem}-people.csv")
    rows = "".join(f"{person.email},{person.name}\n" for person in people(count))
    csv.write_text("email,name\n" + rows, encoding="utf-8")
    with SubscriberStore(database) as store:
        store.import_csv(csv)
    csv.unlink()


def _child(project: str, database: str, port: str, count: str, source: str = "list") -> None:
    """`source` "store": the subscribers of the store at `database` (`store_people`), sent
    from the store like `newsletter send` does (a first send starts before it is all frozen)."""
    # Smaller steps of the early start, so that a crash test can kill it half-way.
    sender.EARLY_HEAD = int(os.environ.get("SENDKIT_EARLY_HEAD", sender.EARLY_HEAD))
    freeze.CHUNK = int(os.environ.get("SENDKIT_CHUNK", freeze.CHUNK))
    template = example_template(Path(project))
    with Ledger(Path(database)) as ledger, SubscriberStore(Path(database)) as store:
        audience = StoreAudience(store) if source == "store" else ListAudience(people(int(count)))
        send_issue(
            template,
            audience,
            transport=smtp_transport(int(port)),
            ledger=ledger,
            backoff=Backoff(base=0.05, cap=0.1),
            options=SendOptions(concurrency=2),
        )


if __name__ == "__main__":
    _child(*sys.argv[1:6])
