"""The reply/bounce mailbox: read it over IMAP and act on what it holds.

- `classify`: what one message is (DSN, ARF, unsubscribe mail, auto-reply) and whom it is about;
- `imap`: the real mailbox (`ImapMailbox`, `connect`, `opened`);
- `softbounces`: the soft-bounce counts kept next to the subscribers;
- `limits`: the bounds on size and MIME nesting beyond which a message is quarantined;
- `process`: `process_inbox`, which applies what the messages say and files them.
"""

from __future__ import annotations

from ..config_tables import InboxSettings, parse_inbox_table
from ..errors import InboxError
from .classify import Classification, Kind, classify, organisational_domain
from .imap import ImapMailbox, connect, imap_utf7, opened
from .limits import MAX_DEPTH, MAX_PARTS, ConnectionLost, MessageTooLarge, shape_problem
from .process import InboxItem, InboxReport, Mailbox, process_inbox
from .softbounces import SoftBounces

__all__ = [
    "MAX_DEPTH",
    "MAX_PARTS",
    "Classification",
    "ConnectionLost",
    "ImapMailbox",
    "InboxError",
    "InboxItem",
    "InboxReport",
    "InboxSettings",
    "Kind",
    "Mailbox",
    "MessageTooLarge",
    "SoftBounces",
    "classify",
    "connect",
    "imap_utf7",
    "opened",
    "organisational_domain",
    "parse_inbox_table",
    "process_inbox",
    "shape_problem",
]
