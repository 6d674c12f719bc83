"""The archive of what was sent: each issue's web version and images, frozen in the store.

When the first real message of an issue is handed to the transport, the web version exactly as
it was then (its HTML, with its images) is written here once (`freeze`); later builds and later
runs of the send leave it alone. `update` replaces it deliberately (`newsletter archive
update`). `newsletter serve` publishes only what is here, so a draft or an issue that was built
but never sent cannot be reached.

Images are stored once per content (`archive_blobs`, by SHA-256) under every name an issue uses
(`archive_files`). Names are only ever added, never removed or repointed: a message already in
someone's inbox links its hosted images by name, and must keep showing them after an update.
`publish_images` adds an issue's images without archiving its page (a test copy's images must
be reachable before the issue is sent).

The tables come from the store's migrations; the queries live here, written once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import NewsletterError
from .store import Connection, Store, StoreSource
from .store.user import StoreUser

__all__ = [
    "ArchiveError",
    "ArchiveImage",
    "ArchiveStore",
    "ArchivedIssue",
    "ArchivedPage",
    "Snapshot",
]

_LIST = (
    "SELECT issue, subject, sent_at, updated_at, updates FROM archive_issues"
    " ORDER BY sent_at DESC, issue DESC"
)
_ONE = (
    "SELECT issue, subject, sent_at, updated_at, updates, html FROM archive_issues"
    " WHERE issue = :issue"
)
_FREEZE = (
    "INSERT INTO archive_issues (issue, subject, html, sent_at, updated_at, updates)"
    " VALUES (:issue, :subject, :html, :at, :at, 0) ON CONFLICT (issue) DO NOTHING"
)
_UPDATE = (
    "UPDATE archive_issues SET subject = :subject, html = :html, updated_at = :at,"
    " updates = updates + 1 WHERE issue = :issue"
)
_BLOB = (
    "INSERT INTO archive_blobs (sha256, size, data) VALUES (:sha256, :size, :data)"
    " ON CONFLICT (sha256) DO NOTHING"
)
_FILE = (
    "INSERT INTO archive_files (issue, filename, content_type, sha256, added_at)"
    " VALUES (:issue, :filename, :content_type, :sha256, :at)"
    " ON CONFLICT (issue, filename) DO NOTHING"
)
_IMAGE = (
    "SELECT f.content_type, b.data FROM archive_files f JOIN archive_blobs b USING (sha256)"
    " WHERE f.issue = :issue AND f.filename = :filename"
)
_FILES = "SELECT filename FROM archive_files WHERE issue = :issue ORDER BY filename"


class ArchiveError(NewsletterError):
    """The archive cannot be read or written, or holds no such issue."""


@dataclass(frozen=True)
class ArchiveImage:
    """One image of an issue, under the name its HTML uses."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Snapshot:
    """What the archive keeps of an issue: its subject, its web version, and its images."""

    issue: str
    subject: str
    html: str
    images: tuple[ArchiveImage, ...] = ()


@dataclass(frozen=True)
class ArchivedIssue:
    """An archived issue as listed: `sent_at` is when its first message left, `updates` how
    often `archive update` replaced it since (at `updated_at`)."""

    issue: str
    subject: str
    sent_at: float
    updated_at: float
    updates: int


@dataclass(frozen=True)
class ArchivedPage:
    entry: ArchivedIssue
    html: str


def _entry(row: Any) -> ArchivedIssue:
    return ArchivedIssue(str(row[0]), str(row[1]), float(row[2]), float(row[3]), int(row[4]))


class ArchiveStore(StoreUser):
    """The archive in the project's store; safe to share between threads (the store's lock).

    `ArchiveStore(path_or_url)` opens the store and closes it on `close()`; `ArchiveStore(store)`
    uses an open `Store` (shared with the ledger, say) and leaves it open.
    """

    error = ArchiveError
    purpose = "the archive"

    def __init__(
        self, source: StoreSource | Store, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._attach(source)
        self._clock = clock

    # --- writing --------------------------------------------------------------------------------

    def freeze(self, snapshot: Snapshot, *, at: float | None = None) -> bool:
        """Archive `snapshot` unless its issue is archived already; True if it was written now.

        Page and images are written in one transaction: the page is never published without
        them. Several workers sending one issue may all call this; the first one wins.
        """
        now = self._clock() if at is None else at
        with self._transaction(f"archive {snapshot.issue}") as db:
            written = db.execute(
                _FREEZE,
                {"issue": snapshot.issue, "subject": snapshot.subject,
                 "html": snapshot.html, "at": now},
            ).rowcount  # fmt: skip
            if written > 0:
                self._add_images(db, snapshot.issue, snapshot.images, now)
        return written > 0

    def update(self, snapshot: Snapshot, *, at: float | None = None) -> ArchivedIssue:
        """Replace the archived page and subject of an archived issue (its send date stays);
        new images are added, the old ones stay for the mail that links them. ArchiveError if
        the issue was never archived (it was never sent)."""
        now = self._clock() if at is None else at
        with self._transaction(f"update {snapshot.issue} in the archive") as db:
            changed = db.execute(
                _UPDATE,
                {"issue": snapshot.issue, "subject": snapshot.subject,
                 "html": snapshot.html, "at": now},
            ).rowcount  # fmt: skip
            if not changed:
                raise ArchiveError(
                    f"{snapshot.issue} is not in the archive: it has not been sent",
                    hint="An issue is archived when its first message is sent "
                    f"('newsletter send {snapshot.issue}').",
                )
            self._add_images(db, snapshot.issue, snapshot.images, now)
            row = db.execute(_ONE, {"issue": snapshot.issue}).fetchone()
        return _entry(row)

    def publish_images(
        self, issue: str, images: Iterable[ArchiveImage], *, at: float | None = None
    ) -> None:
        """Make `issue`'s images reachable by name without archiving its page."""
        now = self._clock() if at is None else at
        with self._transaction(f"publish the images of {issue}") as db:
            self._add_images(db, issue, images, now)

    def _add_images(
        self, db: Connection, issue: str, images: Iterable[ArchiveImage], now: float
    ) -> None:
        for image in images:
            digest = hashlib.sha256(image.data).hexdigest()
            db.execute(_BLOB, {"sha256": digest, "size": len(image.data), "data": image.data})
            db.execute(
                _FILE,
                {"issue": issue, "filename": image.filename,
                 "content_type": image.content_type, "sha256": digest, "at": now},
            )  # fmt: skip

    # --- reading --------------------------------------------------------------------------------

    def entries(self) -> list[ArchivedIssue]:
        """Every archived issue, the most recently sent first."""
        with self._read("read the archive") as db:
            return [_entry(row) for row in db.execute(_LIST)]

    def page(self, issue: str) -> ArchivedPage | None:
        """The archived web version of `issue`; None if it is not archived."""
        with self._read(f"read {issue} from the archive") as db:
            row = db.execute(_ONE, {"issue": issue}).fetchone()
        return None if row is None else ArchivedPage(_entry(row), str(row[5]))

    def image(self, issue: str, filename: str) -> ArchiveImage | None:
        """A published image of `issue` by its name; None if there is none."""
        with self._read(f"read an image of {issue}") as db:
            row = db.execute(_IMAGE, {"issue": issue, "filename": filename}).fetchone()
        return None if row is None else ArchiveImage(filename, str(row[0]), bytes(row[1]))

    def filenames(self, issue: str) -> list[str]:
        """The names of every image published for `issue`."""
        with self._read(f"read the images of {issue}") as db:
            return [str(row[0]) for row in db.execute(_FILES, {"issue": issue})]
