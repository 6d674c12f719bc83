"""Outbox transport: each message becomes an `.eml` file in a folder, for review or a dry run.

Files are written atomically (temporary file in the same folder, fsync, rename), so a reader
never sees half a message. The name comes from the Message-ID, so sending the same message
again replaces its file and a different message never takes another's place.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ...errors import TransportUnavailableError
from .base import (
    BatchItem,
    BatchResult,
    DeliveryReceipt,
    Finding,
    OutgoingMessage,
    SentQuery,
    Verdict,
    send_one_by_one,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._+@=-]+")
_STEM_LENGTH = 80


def outbox_file_name(message: OutgoingMessage) -> str:
    """A file name that is safe whatever the address or Message-ID contains.

    A readable part (unsafe characters squeezed to "_") is followed by a hash of the full key,
    so two keys that read alike (`a/b`, `a_b`) still get different files.
    """
    message_id = message.message_id.strip().strip("<>")
    if message_id:
        return _file_name(message_id, f"id:{message_id}".encode())
    # Without a Message-ID the content tells resends apart from different messages.
    digest = hashlib.sha256(message.data).hexdigest()
    return _file_name(message.recipient, f"to:{message.recipient}\n{digest}".encode())


def _file_name(readable: str, key: bytes) -> str:
    stem = _UNSAFE.sub("_", readable).strip("._-")[:_STEM_LENGTH] or "message"
    return f"{stem}-{hashlib.sha256(key).hexdigest()[:16]}.eml"


class OutboxSentLookup:
    """The outbox itself: a message was written if its file is there (files appear whole, by
    rename, so "not there" is certain at once)."""

    name = "outbox"
    settle_after = 0.0
    keeps_for = float("inf")

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def look_up(self, issue: str, query: SentQuery) -> Finding:
        message_id = (query.message_id or "").strip().strip("<>")
        if not message_id:
            return Finding(query.key, Verdict.UNKNOWN, "no Message-ID recorded for this row")
        path = self.folder / _file_name(message_id, f"id:{message_id}".encode())
        if path.is_file():
            return Finding(query.key, Verdict.SENT, f"written to {path}")
        return Finding(query.key, Verdict.NOT_SENT, f"no {path.name} in {self.folder}")


class OutboxTransport:
    """Writes messages to `folder` as `.eml` files. Thread-safe; a batch of one per file."""

    name = "outbox"
    max_batch = 1
    needs_mime = True
    signals_handover = False  # a file is written whole or not at all
    hands_over_each = False
    delivers_mime_as_is = True

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"OutboxTransport({str(self.folder)!r})"

    def check(self) -> None:
        """Create the folder and prove a file can be written there."""
        self._ensure_folder()
        try:
            with tempfile.NamedTemporaryFile(dir=self.folder, prefix=".check-"):
                pass
        except OSError as err:
            raise TransportUnavailableError(
                f"cannot write to the outbox {self.folder}: {err.strerror or err}"
            ) from err

    def send(self, message: OutgoingMessage) -> DeliveryReceipt:
        """Write the message atomically; the receipt's reply is the path written."""
        self._ensure_folder()
        target = self.folder / outbox_file_name(message)
        try:
            descriptor, temporary = tempfile.mkstemp(
                dir=self.folder, prefix=".", suffix=".eml.part"
            )
        except OSError as err:
            raise TransportUnavailableError(
                f"cannot write to the outbox {self.folder}: {err.strerror or err}"
            ) from err
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(message.data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except OSError as err:
            Path(temporary).unlink(missing_ok=True)
            raise TransportUnavailableError(
                f"cannot write {target}: {err.strerror or err}"
            ) from err
        _sync_folder(self.folder)
        return DeliveryReceipt(message.recipient, str(target))

    def send_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
        """One file per item (the sender passes one); errors raise for the batch."""
        return send_one_by_one(self.send, items)

    def close(self) -> None:
        """Nothing to release."""

    def _ensure_folder(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TransportUnavailableError(
                f"cannot create the outbox {self.folder}: {err.strerror or err}"
            ) from err


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable; not every platform can open a folder, which is fine."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
