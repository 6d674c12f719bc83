"""Every table of the store, built by numbered migrations; one version scheme for all of them.

The store's version is the set of migrations applied, one row each in `store_migrations`
(version, description, when). A plain table, so the scheme is the same on every engine. A
migration runs once, in the same transaction as its row; `migrate` applies every missing one in
order, all in one write transaction, so a store is never left half-migrated.

Release 0.1 kept three schemes in the same file: `PRAGMA user_version` for the subscriber
tables, a `ledger_meta` table for the send ledger, and nothing for the soft-bounce table (created
when missing). A file without `store_migrations` is such a file: each part found is recorded as its
migration already applied (the tables are exactly those the migrations create), `ledger_meta` is
dropped, and the missing parts are created. No row is rewritten.

On SQLite, `PRAGMA user_version` is then set to the store version: never read again by this
program, it makes release 0.1 (which read it as its subscriber schema version) refuse a migrated
file with "Upgrade newsletter" instead of writing to it.

To change the schema, append a Migration; never edit one that has been released.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .base import Connection, StoreError
from .dialect import Dialect

__all__ = ["MIGRATIONS", "STORE_VERSION", "Migration", "applied_versions", "migrate"]


@dataclass(frozen=True)
class Migration:
    """One step of the schema: statements run in order, `{pk}`/`{real}`/`{blob}` filled by the
    dialect."""

    version: int
    description: str
    statements: tuple[str, ...]
    # Tables whose rows were copied in with their ids: numbering goes on after the highest.
    reset_ids: tuple[str, ...] = ()
    # The engines whose schema the statements change (None: every engine). Only the physical
    # layout may differ (indexes, storage settings), never a table or a column: a migration is
    # recorded on every engine, so versions mean the same everywhere.
    engines: frozenset[str] | None = None

    def applies_to(self, dialect: Dialect) -> bool:
        return self.engines is None or dialect.name in self.engines


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "subscribers and their status history",
        (
            """CREATE TABLE subscribers (
                id {pk},
                key TEXT NOT NULL UNIQUE,
                email TEXT NOT NULL,
                name TEXT NOT NULL DEFAULT '',
                attributes TEXT NOT NULL DEFAULT '{{}}',
                status TEXT NOT NULL DEFAULT 'subscribed'
                    CHECK (status IN ('subscribed', 'unsubscribed', 'bounced', 'complained')),
                created_at {real} NOT NULL,
                updated_at {real} NOT NULL
            )""",
            "CREATE INDEX subscribers_by_status ON subscribers (status, key)",
            # Removing a subscriber erases their history too (a request to be forgotten); to stop
            # mailing someone and remember it, unsubscribe them instead.
            """CREATE TABLE subscriber_events (
                id {pk},
                subscriber_key TEXT NOT NULL
                    REFERENCES subscribers (key) ON DELETE CASCADE ON UPDATE CASCADE,
                at {real} NOT NULL,
                old_status TEXT,
                new_status TEXT NOT NULL,
                source TEXT NOT NULL
            )""",
            "CREATE INDEX subscriber_events_by_key ON subscriber_events (subscriber_key, at)",
        ),
    ),
    Migration(
        2,
        "the send ledger",
        (
            """CREATE TABLE ledger_issues (
                issue TEXT PRIMARY KEY,
                fingerprint TEXT NOT NULL,
                frozen_at {real} NOT NULL,
                freeze_round INTEGER NOT NULL,
                updated_at {real} NOT NULL
            )""",
            """CREATE TABLE ledger_rows (
                id {pk},
                issue TEXT NOT NULL,
                key TEXT NOT NULL,
                email TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN
                    ('pending', 'sending', 'sent', 'failed', 'deferred', 'uncertain')),
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                reply TEXT,
                message_id TEXT,
                next_attempt_at {real},
                updated_at {real} NOT NULL,
                seen_round INTEGER NOT NULL,
                UNIQUE (issue, key)
            )""",
            "CREATE INDEX ledger_rows_state ON ledger_rows (issue, state)",
        ),
    ),
    Migration(
        3,
        "soft bounces read from the inbox",
        (
            """CREATE TABLE inbox_soft_bounces (
                id {pk},
                subscriber_key TEXT NOT NULL,
                report_id TEXT NOT NULL,
                message_key TEXT NOT NULL,
                status TEXT,
                at {real} NOT NULL,
                UNIQUE (subscriber_key, report_id)
            )""",
            "CREATE INDEX inbox_soft_bounces_by_key ON inbox_soft_bounces (subscriber_key, at)",
        ),
    ),
    Migration(
        4,
        "sending workers' leases",
        (
            # One row per worker that sends (or sent) an issue; `lock_key` names the advisory
            # lock its connection holds while it lives (PostgreSQL; SQLite uses the run file).
            """CREATE TABLE ledger_leases (
                id {pk},
                issue TEXT NOT NULL,
                pid INTEGER NOT NULL,
                host TEXT NOT NULL,
                lock_key INTEGER NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('active', 'released', 'expired')),
                started_at {real} NOT NULL,
                heartbeat_at {real} NOT NULL,
                ended_at {real},
                recovered INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX ledger_leases_by_issue ON ledger_leases (issue, state)",
            # The lease a `sending` row was claimed under: rows of an expired lease become
            # uncertain while the other workers go on.
            "ALTER TABLE ledger_rows ADD COLUMN lease_id INTEGER",
        ),
    ),
    Migration(
        5,
        "when each deferred row was first deferred",
        # Deferred mail is retried for `[sending] retry_for` from its first deferral, across runs.
        ("ALTER TABLE ledger_rows ADD COLUMN deferred_since {real}",),
    ),
    Migration(
        6,
        "the archive of sent issues and their hosted images",
        (
            # One row per issue sent: its web version as it was when the first message left.
            """CREATE TABLE archive_issues (
                issue TEXT PRIMARY KEY,
                subject TEXT NOT NULL,
                html TEXT NOT NULL,
                sent_at {real} NOT NULL,
                updated_at {real} NOT NULL,
                updates INTEGER NOT NULL DEFAULT 0
            )""",
            # Image bytes once per content (a logo in every issue is stored once) ...
            """CREATE TABLE archive_blobs (
                sha256 TEXT PRIMARY KEY,
                size INTEGER NOT NULL,
                data {blob} NOT NULL
            )""",
            # ... under each name an issue's messages and web version use. Rows are only ever
            # added: mail already sent keeps pointing at them.
            """CREATE TABLE archive_files (
                issue TEXT NOT NULL,
                filename TEXT NOT NULL,
                content_type TEXT NOT NULL,
                sha256 TEXT NOT NULL REFERENCES archive_blobs (sha256),
                added_at {real} NOT NULL,
                PRIMARY KEY (issue, filename)
            )""",
        ),
    ),
    Migration(
        7,
        "sign-up: the 'unconfirmed' status and consent records",
        (
            # SQLite cannot change a CHECK constraint in place, so `subscribers` is rebuilt (the
            # same statements on PostgreSQL, where it is as quick). Its history table refers to
            # it with ON DELETE CASCADE: dropping the old table would empty the history, so the
            # history is copied into a new table referring to the new one first, and the renames
            # come last (SQLite >= 3.26 and PostgreSQL both carry the reference along).
            """CREATE TABLE subscribers_v5 (
                id {pk},
                key TEXT NOT NULL UNIQUE,
                email TEXT NOT NULL,
                name TEXT NOT NULL DEFAULT '',
                attributes TEXT NOT NULL DEFAULT '{{}}',
                status TEXT NOT NULL DEFAULT 'subscribed'
                    CHECK (status IN
                        ('subscribed', 'unsubscribed', 'bounced', 'complained', 'unconfirmed')),
                created_at {real} NOT NULL,
                updated_at {real} NOT NULL
            )""",
            """INSERT INTO subscribers_v5
                (id, key, email, name, attributes, status, created_at, updated_at)
                SELECT id, key, email, name, attributes, status, created_at, updated_at
                FROM subscribers""",
            """CREATE TABLE subscriber_events_v5 (
                id {pk},
                subscriber_key TEXT NOT NULL
                    REFERENCES subscribers_v5 (key) ON DELETE CASCADE ON UPDATE CASCADE,
                at {real} NOT NULL,
                old_status TEXT,
                new_status TEXT NOT NULL,
                source TEXT NOT NULL
            )""",
            """INSERT INTO subscriber_events_v5
                (id, subscriber_key, at, old_status, new_status, source)
                SELECT id, subscriber_key, at, old_status, new_status, source
                FROM subscriber_events""",
            "DROP TABLE subscriber_events",
            "DROP TABLE subscribers",
            "ALTER TABLE subscribers_v5 RENAME TO subscribers",
            "ALTER TABLE subscriber_events_v5 RENAME TO subscriber_events",
            "CREATE INDEX subscribers_by_status ON subscribers (status, key)",
            "CREATE INDEX subscriber_events_by_key ON subscriber_events (subscriber_key, at)",
            # One row per sign-up request (form page, embedded form, import, CLI): when it was
            # asked for and confirmed, which consent text was shown, and (only when the project
            # turns it on) a keyed hash of the client's address. `nonce` is what the signed
            # confirmation link names (never the address); NULL once used. Erased with the
            # subscriber (a request to be forgotten).
            """CREATE TABLE signup_consents (
                id {pk},
                subscriber_key TEXT NOT NULL
                    REFERENCES subscribers (key) ON DELETE CASCADE ON UPDATE CASCADE,
                requested_at {real} NOT NULL,
                confirmed_at {real},
                source TEXT NOT NULL,
                consent_version TEXT NOT NULL DEFAULT '',
                client_hash TEXT,
                nonce TEXT UNIQUE,
                mailed_at {real},
                fields TEXT NOT NULL DEFAULT '{{}}'
            )""",
            "CREATE INDEX signup_consents_by_key ON signup_consents (subscriber_key, requested_at)",
            "CREATE INDEX signup_consents_pending ON signup_consents (confirmed_at, requested_at)",
        ),
        reset_ids=("subscribers", "subscriber_events"),
    ),
    Migration(
        8,
        "subscribers' tags, and the audience each send froze",
        (
            # One row per subscriber and tag (casefolded, `segment.normalise_tag`); removing a
            # subscriber removes their tags. The primary key answers "has this subscriber one
            # of these tags" (an audience); the index "who has this tag" (list, count).
            """CREATE TABLE subscriber_tags (
                subscriber_key TEXT NOT NULL
                    REFERENCES subscribers (key) ON DELETE CASCADE ON UPDATE CASCADE,
                tag TEXT NOT NULL,
                PRIMARY KEY (subscriber_key, tag)
            )""",
            "CREATE INDEX subscriber_tags_by_tag ON subscriber_tags (tag, subscriber_key)",
            # The canonical audience expression an issue's send froze (`Segment.expression`):
            # a resumed send must use the same one. No row: frozen before audiences (everyone).
            """CREATE TABLE ledger_audiences (
                issue TEXT PRIMARY KEY,
                expression TEXT NOT NULL,
                recorded_at {real} NOT NULL
            )""",
        ),
    ),
    Migration(
        9,
        "click counts per link",
        (
            # One row per counted link of an issue (newsletter/clicks.py): where it leads and how
            # often it was followed. Nothing about who clicked, by design.
            """CREATE TABLE click_links (
                issue TEXT NOT NULL,
                number INTEGER NOT NULL,
                target TEXT NOT NULL,
                item TEXT NOT NULL DEFAULT '',
                label TEXT NOT NULL DEFAULT '',
                clicks INTEGER NOT NULL DEFAULT 0,
                recorded_at {real} NOT NULL,
                PRIMARY KEY (issue, number)
            )""",
        ),
    ),
    Migration(
        10,
        "scheduled sends, approvals and test sends",
        (
            # One row per `send --at`; its `state` moves scheduled -> running -> sent|failed, or
            # scheduled -> refused|missed|cancelled. A run claims the row by moving it from
            # `scheduled` in one UPDATE, so two runners never both get it.
            """CREATE TABLE schedule_sends (
                id {pk},
                issue TEXT NOT NULL,
                due_at {real} NOT NULL,
                timezone TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                link_check INTEGER NOT NULL DEFAULT 1,
                state TEXT NOT NULL CHECK (state IN ('scheduled', 'running', 'sent', 'failed',
                    'refused', 'missed', 'cancelled')),
                created_at {real} NOT NULL,
                created_by TEXT NOT NULL DEFAULT '',
                claimed_at {real},
                claimed_by TEXT,
                finished_at {real},
                reason TEXT,
                notified TEXT
            )""",
            "CREATE INDEX schedule_sends_by_state ON schedule_sends (state, due_at)",
            # At most one pending or running schedule per issue.
            "CREATE UNIQUE INDEX schedule_sends_one_open ON schedule_sends (issue)"
            " WHERE state IN ('scheduled', 'running')",
            """CREATE TABLE schedule_approvals (
                id {pk},
                issue TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                approved_by TEXT NOT NULL,
                approved_at {real} NOT NULL
            )""",
            "CREATE INDEX schedule_approvals_by_issue ON schedule_approvals (issue, approved_at)",
            """CREATE TABLE schedule_test_sends (
                id {pk},
                issue TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                recipient TEXT NOT NULL,
                sent_at {real} NOT NULL,
                error TEXT
            )""",
            "CREATE INDEX schedule_test_sends_by_issue ON schedule_test_sends (issue, sent_at)",
        ),
    ),
    Migration(
        11,
        "imports and audience freezes in short transactions",
        (
            # An import writes its new subscribers in chunks, each its own short transaction,
            # tagged with its `import_id`; readers skip rows of an import still `writing`, so
            # the whole file appears with the one commit that marks it `done` (issue 15, D1).
            """CREATE TABLE subscriber_imports (
                id {pk},
                file TEXT NOT NULL,
                host TEXT NOT NULL,
                pid INTEGER NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('writing', 'done')),
                started_at {real} NOT NULL,
                heartbeat_at {real} NOT NULL,
                finished_at {real}
            )""",
            "ALTER TABLE subscribers ADD COLUMN import_id INTEGER",
            "CREATE INDEX subscribers_by_import ON subscribers (import_id)",
            # The freeze round last completed: the audience is written in chunks under
            # `freeze_round` and usable for sending once `frozen_round` reaches it. Freezes
            # before this migration were one transaction, hence complete.
            "ALTER TABLE ledger_issues ADD COLUMN frozen_round INTEGER NOT NULL DEFAULT 0",
            "UPDATE ledger_issues SET frozen_round = freeze_round",
        ),
    ),
    Migration(
        12,
        "opaque unsubscribe tokens: which subscriber a token's reference names",
        (
            # `keyring` tells references made with one secret and list apart from another's
            # (a new secret or list id gets its own rows); `ref` is hex. Filled lazily by
            # audience.tokenbook, and emptied with the subscriber (GDPR erasure).
            """CREATE TABLE unsubscribe_refs (
                keyring TEXT NOT NULL,
                ref TEXT NOT NULL,
                subscriber_key TEXT NOT NULL
                    REFERENCES subscribers (key) ON DELETE CASCADE ON UPDATE CASCADE,
                PRIMARY KEY (keyring, ref)
            )""",
            "CREATE INDEX unsubscribe_refs_by_key ON unsubscribe_refs (subscriber_key, keyring)",
        ),
    ),
    Migration(
        13,
        "the rows still to send, in order: a worker's claim reads only those",
        (
            # A claim takes the oldest due rows of an issue. Through the primary key it stepped
            # over every row already sent (half the ledger, on average, for every batch: 88 ms
            # a claim halfway through 100k); this index holds only the rows still to send, so
            # a claim reads about what it takes (2 ms).
            "CREATE INDEX ledger_rows_due ON ledger_rows (issue, id)"
            " WHERE state IN ('pending', 'deferred')",
        ),
    ),
    Migration(
        14,
        "PostgreSQL: a row's state changes in place (no index reads the state)",
        (
            # Every recipient's row is updated twice in a send (`sending`, then `sent`). With an
            # index on `state` (or a partial index whose condition reads it) PostgreSQL writes a
            # new entry in every index of the table for each update; with none, and room left on
            # the page, the update is a heap-only tuple (HOT): no index is touched. Measured on a
            # 100k send: the database's CPU for the two updates fell from 0.06 to 0.024 s per
            # 1,000 rows. A claim walks (issue, id) from where its worker's last claim ended
            # (leases.claim); the rare reads by state scan the rows.
            "DROP INDEX ledger_rows_state",
            "DROP INDEX ledger_rows_due",
            "CREATE INDEX ledger_rows_by_issue ON ledger_rows (issue, id)",
            # Half of each new page is left free for the new versions of its rows.
            "ALTER TABLE ledger_rows SET (fillfactor = 50)",
        ),
        engines=frozenset({"postgresql"}),
    ),
    Migration(
        15,
        "PostgreSQL: room on a page for all three versions of its rows",
        (
            # A batch marks every row of its pages `sending` in one transaction, so no old version
            # on those pages can be pruned before the commit, and the new version is larger than
            # the pending row (the Message-ID and the lease filled in). With half of a page free
            # (migration 14), a page of 30 rows had room for the new versions of 18: the other
            # 12 moved to another page, with a new entry in every index (20 % of a 1-worker
            # send's updates; 35 % with 2 workers, whose open transactions also keep the
            # pending versions from being pruned before `sent`). A page filled to a fifth (12
            # rows of typical length) holds the pending, `sending` and `sent` versions of all
            # its rows without a prune: every update measured HOT, with 1 worker and with 2.
            # The table then takes as much room after a send as it did with half-full pages
            # and 2 workers (the moved rows took pages, and index entries, too); before a send
            # the frozen rows take 2.5 times the pages. Only rows written from now on are
            # placed this way: rows already in the table stay where they are (no rewrite).
            "ALTER TABLE ledger_rows SET (fillfactor = 20)",
        ),
        engines=frozenset({"postgresql"}),
    ),
)

STORE_VERSION = MIGRATIONS[-1].version
MIGRATION_LOCK = 0x6E6C0001  # the advisory-lock key that serialises migrations ("nl" 1)

_VERSIONS_TABLE = """CREATE TABLE store_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at {real} NOT NULL
)"""
_RECORD = (
    "INSERT INTO store_migrations (version, description, applied_at)"
    " VALUES (:version, :description, :at)"
)

# Release 0.1's own markers, and the migration each stands for.
_RELEASE_0_1_SUBSCRIBERS = 1  # PRAGMA user_version 1
_RELEASE_0_1_LEDGER = 2  # ledger_meta schema_version 1
_RELEASE_0_1_BOUNCES = 3  # the inbox_soft_bounces table


def _tables(connection: Connection, dialect: Dialect) -> set[str]:
    return {str(row[0]) for row in connection.execute(dialect.tables)}


def applied_versions(connection: Connection, dialect: Dialect) -> set[int]:
    """The migrations recorded in the store (empty for a new or a release 0.1 file)."""
    if "store_migrations" not in _tables(connection, dialect):
        return set()
    return {int(row[0]) for row in connection.execute("SELECT version FROM store_migrations")}


def _newer(where: str, found: str) -> StoreError:
    return StoreError(
        f"{where} was written by a newer version of newsletter ({found}; this version knows "
        f"up to store version {STORE_VERSION})",
        hint="Upgrade newsletter to work with this project.",
    )


def _check_known(applied: set[int], where: str) -> None:
    unknown = sorted(v for v in applied if v > STORE_VERSION)
    if unknown:
        raise _newer(where, f"store version {unknown[-1]}")


def _release_0_1_parts(
    connection: Connection, dialect: Dialect, tables: set[str], where: str
) -> list[int]:
    """The migrations a release 0.1 file already holds; StoreError if it is not release 0.1's."""
    parts = []
    if dialect.user_version is not None:
        version = int(connection.execute(dialect.user_version).fetchone()[0])
        if version > 1:
            raise _newer(where, f"subscriber schema version {version}")
        if version == 1:
            parts.append(_RELEASE_0_1_SUBSCRIBERS)
    if "ledger_meta" in tables:
        found = connection.execute(
            "SELECT value FROM ledger_meta WHERE key = 'schema_version'"
        ).fetchone()
        version = int(found[0]) if found else 0
        if version > 1:
            raise _newer(where, f"send ledger schema version {version}")
        if version == 1:
            parts.append(_RELEASE_0_1_LEDGER)
    if "inbox_soft_bounces" in tables:
        parts.append(_RELEASE_0_1_BOUNCES)
    return parts


def migrate(connection: Connection, dialect: Dialect, where: str) -> int:
    """Bring the store to STORE_VERSION; the version reached. `where` names it in errors.

    Up to date (the usual case), this costs two reads and takes no write lock.
    """
    applied = applied_versions(connection, dialect)
    _check_known(applied, where)
    if len(applied) == len(MIGRATIONS):
        return STORE_VERSION
    connection.execute(dialect.begin_write)
    try:
        exclusive = dialect.exclusive_lock(MIGRATION_LOCK)
        if exclusive is not None:
            connection.execute(exclusive)
        # Read again inside the write lock: another process may have migrated meanwhile.
        tables = _tables(connection, dialect)
        now = time.time()
        if "store_migrations" not in tables:
            connection.execute(dialect.ddl(_VERSIONS_TABLE))
            for version in _release_0_1_parts(connection, dialect, tables, where):
                step = MIGRATIONS[version - 1]
                connection.execute(
                    _RECORD,
                    {
                        "version": version,
                        "description": f"{step.description} (from release 0.1)",
                        "at": now,
                    },
                )
            if "ledger_meta" in tables:
                connection.execute("DROP TABLE ledger_meta")
        applied = applied_versions(connection, dialect)
        _check_known(applied, where)
        for step in MIGRATIONS:
            if step.version in applied:
                continue
            for statement in step.statements if step.applies_to(dialect) else ():
                connection.execute(dialect.ddl(statement))
            for table in step.reset_ids:
                reset = dialect.reset_ids(table)
                if reset is not None:
                    connection.execute(reset)
            connection.execute(
                _RECORD, {"version": step.version, "description": step.description, "at": now}
            )
        if dialect.user_version is not None:
            connection.execute(f"{dialect.user_version} = {STORE_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return STORE_VERSION
