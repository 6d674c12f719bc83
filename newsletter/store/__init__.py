"""The store: one layer over the project's database, for every table in it.

    with Store.open(settings.database()) as store:        # opens (SQLite or PostgreSQL), migrates
        with store.transaction() as db:                    # BEGIN IMMEDIATE ... COMMIT
            db.execute("UPDATE subscribers SET name = :name WHERE key = :key", {...})
        with store.read() as db:                           # under the lock, autocommit
            db.execute("SELECT COUNT(*) FROM subscribers").fetchone()

- `core`: `Store` (open, read, transaction, close, version);
- `base`: the `Connection`/`Cursor` protocols every engine satisfies, and `StoreError`;
- `migrations`: every table's schema as numbered migrations, and release 0.1's files adopted;
- `dialect`: where engines differ (SQL text only); `sqlite` and `postgresql`: the engines'
  connections (PostgreSQL through psycopg 3, imported only when used);
- `admin`: `newsletter store info` and `store copy` (verified copies between stores).

Where the store is comes from `newsletter.store_url` (`[store] url`, NEWSLETTER_DATABASE_URL).

Queries are written once, with `:name` parameters, by the modules that own the tables
(`audience.store`, `delivery.ledger`, `delivery.leases`, `inbox.softbounces`).
"""

from __future__ import annotations

from .base import Connection, Cursor, Params, StoreError
from .core import Store, StoreSource, locate
from .dialect import POSTGRESQL, SQLITE, Dialect
from .migrations import MIGRATIONS, STORE_VERSION, Migration

__all__ = [
    "MIGRATIONS",
    "POSTGRESQL",
    "SQLITE",
    "STORE_VERSION",
    "Connection",
    "Cursor",
    "Dialect",
    "Migration",
    "Params",
    "Store",
    "StoreError",
    "StoreSource",
    "locate",
]
