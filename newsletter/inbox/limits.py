"""Bounds on what `inbox process` reads: size, MIME nesting, parts, parse work, header fields.

Python's email package parses nested multiparts recursively: ~1,200 levels (an 84 KB message)
raise RecursionError, and a person can send that to any bounce address. `shape_problem` walks a
message's MIME structure without recursion and says why it is beyond the bounds, before the
email package ever sees it; the same pass bounds the lines inside nested parts and the length
of header fields, where the email package is slow on crafted input. Such messages go to the
quarantine folder, never stop a run.
"""

from __future__ import annotations

import email.parser
import email.policy

from ..errors import InboxError

__all__ = [
    "MAX_ADDRESS_FIELD",
    "MAX_DEPTH",
    "MAX_FIELD",
    "MAX_PARTS",
    "MAX_WORK",
    "ConnectionLost",
    "MessageTooLarge",
    "shape_problem",
]

# Real bounces nest 3-5 levels (report > returned message > alternative > related); 40 leaves room
# and stays far below the interpreter's recursion limit in every email-package walk.
MAX_DEPTH = 40
MAX_PARTS = 1000
# The email package checks every line against every open boundary: its work grows with lines
# times depth (10 MB of short lines 40 levels deep took 27 s). A 3 MB bounce with images, 5
# levels deep, needs ~0.3 million; this bound keeps the worst parse to a few seconds.
MAX_WORK = 2_000_000
# The email package's header parser is slow on crafted values (64 KB of `a.a.a.` in From took
# 22 s, of addresses in To 8 s). Real address fields are far below 4 KiB, other fields (DKIM,
# ARC, References) below 16 KiB.
MAX_ADDRESS_FIELD = 4096
MAX_ADDRESS_BYTES = 16384  # all address fields of one header block: 100 From fields add up
MAX_FIELD = 65536
_ADDRESS_FIELDS = {
    b"from", b"to", b"cc", b"bcc", b"sender", b"reply-to", b"return-path", b"delivered-to",
    b"x-original-to", b"envelope-to", b"x-envelope-to", b"message-id", b"resent-from",
    b"resent-to", b"resent-cc", b"resent-sender", b"original-rcpt-to", b"final-recipient",
    b"original-recipient",
}  # fmt: skip

_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)
_CONTAINERS = ("message/rfc822", "message/global")
# Bodies made of header-like fields (DSN and ARF blocks, returned headers): the same field bounds.
_FIELD_BODIES = (
    "message/delivery-status", "message/global-delivery-status", "message/feedback-report",
    "text/rfc822-headers", "message/rfc822-headers", "message/global-headers",
)  # fmt: skip


class MessageTooLarge(InboxError):
    """The message is larger than `[inbox] max_message_bytes`; it was not downloaded."""

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


class ConnectionLost(InboxError):
    """The connection to the mailbox broke: nothing more can be read or moved in this run."""


def _content_type(block: list[bytes]) -> tuple[str, bytes | None]:
    """(content type, multipart boundary) of one header block."""
    parsed = _HEADERS.parsebytes(b"\n".join(block) + b"\n\n")
    boundary = parsed.get_boundary() if parsed.get_content_maintype() == "multipart" else None
    return parsed.get_content_type(), (
        boundary.encode("utf-8", "surrogateescape") if boundary else None
    )


def shape_problem(
    raw: bytes,
    *,
    max_depth: int = MAX_DEPTH,
    max_parts: int = MAX_PARTS,
    max_work: int = MAX_WORK,
) -> str | None:
    """Why `raw` is nested too deep, has too many parts or too many lines inside nested parts
    (None: within bounds).

    One pass over the lines with an explicit stack of open multiparts (their boundaries) and
    embedded messages (None): the same structure the email package builds, without recursion.
    """
    stack: list[bytes | None] = []
    innermost: dict[bytes, int] = {}  # open boundary -> its deepest level: one lookup a line
    block: list[bytes] = []
    in_headers = True
    in_fields = False  # the body of a part in _FIELD_BODIES
    parts = 1
    work = 0
    field, field_size, address_bytes = b"", 0, 0
    for line in raw.splitlines():
        work += len(innermost)
        if work > max_work:
            return f"too many lines inside nested parts (more than {max_work:,} line-levels)"
        if line.startswith(b"--") and innermost:
            bare = line.rstrip(b" \t")[2:]
            closing = bare.endswith(b"--") and bare[:-2] in innermost and bare not in innermost
            level = innermost.get(bare[:-2] if closing else bare)
            if level is not None:
                del stack[level + (0 if closing else 1) :]
                innermost = {b: i for i, b in enumerate(stack) if b is not None}
                block, address_bytes = [], 0
                in_headers, in_fields = not closing, False
                if not closing:
                    parts += 1
                    if parts > max_parts:
                        return f"more than {max_parts} MIME parts"
                continue
        if not in_headers and not in_fields:
            continue
        if in_fields and not line.strip():
            address_bytes = 0  # the next block of fields
            continue
        if line.strip():
            if in_headers:
                block.append(line)
            if line[:1] in (b" ", b"\t"):
                field_size += len(line)
            else:
                field, field_size = line.partition(b":")[0].strip().lower(), len(line)
            limit = MAX_ADDRESS_FIELD if field in _ADDRESS_FIELDS else MAX_FIELD
            if field_size > limit:
                name = field.decode("ascii", "replace")[:40]
                return f"a header field ({name}) longer than {limit:,} bytes"
            if field in _ADDRESS_FIELDS:
                address_bytes += len(line)
                if address_bytes > MAX_ADDRESS_BYTES:
                    return f"address fields longer than {MAX_ADDRESS_BYTES:,} bytes in all"
            continue
        # The end of a header block: does this part open a container?
        kind, boundary = _content_type(block)
        block, address_bytes = [], 0
        in_headers = False
        in_fields = kind in _FIELD_BODIES
        if boundary is not None:
            stack.append(boundary)
            innermost[boundary] = len(stack) - 1
        elif kind in _CONTAINERS:
            stack.append(None)
            in_headers = True  # the embedded message's own headers follow
            parts += 1
        else:
            continue
        if len(stack) > max_depth:
            return f"MIME parts nested deeper than {max_depth} levels"
        if parts > max_parts:
            return f"more than {max_parts} MIME parts"
    return None
