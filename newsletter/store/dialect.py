"""Where the SQL of the database engines differs: the one place to look.

Queries elsewhere are written once, in the SQL both engines speak, with named parameters
(`:name`, which SQLite's driver takes as is). Only what cannot be written once lives here:

- how a write transaction starts (SQLite: `BEGIN IMMEDIATE`, so it never fails half-way on a
  lock; PostgreSQL: `BEGIN`, row locks do that work), and how migrations and the one-per-issue
  audience freeze keep others out (`exclusive`: nothing on SQLite, where the write lock is the
  whole file; a transaction-scoped advisory lock on PostgreSQL);
- column types in the migrations (`{pk}`, `{real}` and `{blob}` in a statement): an auto-numbered
  key, a float wide enough for epoch seconds (PostgreSQL's `REAL` is 4 bytes), and bytes;
- the parameter style the driver takes (`to_pyformat` rewrites `:name` to psycopg's
  `%(name)s`, once per query text);
- reading the keys of a JSON object column and one entry of it as text (`json_text`, for an
  audience's attribute conditions), listing the tables and their columns, SQLite's
  `user_version`, and numbering on after rows copied in with their ids (`reset_ids`);
- a batch of rows as a table in one statement (`batch_statement`, `batch_params`): PostgreSQL
  takes one array per column and `unnest`s them, so a batch of 1,000 marks is one statement
  and one round trip; SQLite, in process, runs the plain per-row form of the same statement
  (`executemany`) inside the caller's one transaction, after `batch_setup` (PostgreSQL: the cost
  of a random page for SSD storage, so the batch's keys are looked up, not every row hashed);
- fresh planner statistics after a bulk write (`refresh_statistics`: PostgreSQL's `ANALYZE`, so
  a worker's claim walks the rows in order instead of sorting every row of a freshly frozen
  issue, which its planner, knowing of no rows, preferred; SQLite plans by its indexes alone);
- claiming rows for a worker (`claim`: nothing on SQLite, whose single writer already excludes
  others; `FOR UPDATE SKIP LOCKED` on PostgreSQL, for several sending workers, issue 10), and
  reading a row to change it (`lock_row`: `FOR UPDATE` on PostgreSQL, so two servers
  unsubscribing one person at once record one change, not two).

Upserts need no entry: `INSERT ... ON CONFLICT (...) DO UPDATE SET x = excluded.x` and
`ON CONFLICT DO NOTHING` mean the same on both engines, so queries use those forms only.

Nothing here imports a driver: `store.sqlite` and `store.postgresql` are the engines.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["POSTGRESQL", "SQLITE", "Dialect", "to_pyformat"]


@dataclass(frozen=True)
class Dialect:
    """The SQL text one engine needs where engines differ."""

    name: str
    begin_write: str
    pk: str  # an auto-numbered integer primary key column
    real: str  # a float column wide enough for epoch seconds with fractions
    blob: str  # a column of bytes (the archive's images)
    claim: str  # appended to a SELECT that claims rows for one worker
    lock_row: str  # appended to a SELECT that reads a row it will change in this transaction
    tables: str  # a query listing the names of the tables in the store's schema
    user_version: str | None  # SQLite's header field (release 0.1 kept its schema version there)
    json_each: str  # FROM-clause item giving the `key` of each entry of the JSON text `{column}`
    paramstyle: str  # "named" (`:name`, as written) or "pyformat" (`%(name)s`)
    exclusive: str  # `{key}` filled: keeps other writers out of one job until the commit
    columns: str  # the column names of the table `:table`, in order
    next_id: str  # `{table}` filled: after rows were copied in with their ids, number on from there
    json_text: str  # `{column}`, `{key}` (a parameter) filled: that JSON object entry as text
    batch_setup: str  # run first in a batch write's transaction ("" for nothing)
    refresh_statistics: str  # `{table}` filled: after a bulk write ("" for nothing)

    def exclusive_lock(self, key: int) -> str | None:
        """A statement that, inside a write transaction, excludes others doing job `key` until
        it ends; None when the engine's write lock already does (SQLite)."""
        return self.exclusive.format(key=key) if self.exclusive else None

    def statistics_refresh(self, table: str) -> str | None:
        """A statement renewing the planner's statistics of `table` after many rows were
        written (None where the engine needs none: SQLite)."""
        return self.refresh_statistics.format(table=table) if self.refresh_statistics else None

    def reset_ids(self, table: str) -> str | None:
        """A statement making `table`'s auto-numbered `id` go on after the highest one present
        (None where the engine does it by itself: SQLite)."""
        return self.next_id.format(table=table) if self.next_id else None

    def batch_statement(self, sql: str, columns: tuple[tuple[str, str], ...]) -> str:
        """`sql`, written over a batch's rows as a table `v` (`FROM {rows}`, values `v.name`),
        for this engine; `columns` are `(name, kind)`, kind `text`, `real` or `int`.

        PostgreSQL: `{rows}` becomes `unnest` of one array per column (one statement for the
        batch), each array a binary parameter. SQLite: a plain statement per row (`FROM {rows}`
        dropped, `v.name` read as `:name`), for `executemany`: in process there are no round
        trips to save, and the plain form measured 2-5x faster than `UPDATE … FROM` a one-row
        `SELECT` (a `json_each` table of the whole batch was slower still).
        """
        return _batch_statement(self.name, sql, columns)

    def batch_params(
        self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], shared: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """The parameters of a statement using `rows_from(columns)`: one set for the whole batch
        (PostgreSQL: a list per column), or one per row (SQLite: for `executemany`)."""
        if self.name == "postgresql":
            return [{**shared, **{name: [row[name] for row in rows] for name in columns}}]
        return [{**shared, **row} for row in rows]

    def ddl(self, statement: str) -> str:
        """A migration statement with this engine's column types filled in."""
        return statement.format(pk=self.pk, real=self.real, blob=self.blob)

    def query(self, sql: str) -> str:
        """`sql` (written with `:name` parameters) in the form this engine's driver takes."""
        return sql if self.paramstyle == "named" else to_pyformat(sql)


_ARRAYS = {"text": "text[]", "real": "double precision[]", "int": "bigint[]"}


@functools.lru_cache(maxsize=128)
def _batch_statement(engine: str, sql: str, columns: tuple[tuple[str, str], ...]) -> str:
    if engine == "postgresql":
        # The arrays go in PostgreSQL's binary form (`%(name)b`, kept as it is by `query`): in
        # text form psycopg quotes and escapes every element in Python, 2 µs each, about 8 %
        # of a worker's CPU per recipient on a batch provider; binary is a fifth of that.
        arrays = ", ".join(f"CAST(%({name})b AS {_ARRAYS[kind]})" for name, kind in columns)
        names = ", ".join(name for name, _ in columns)
        return sql.replace("{rows}", f"unnest({arrays}) AS v({names})")
    plain = sql.replace(" FROM {rows}", "")
    for name, _ in columns:
        plain = re.sub(rf"\bv\.{name}\b", f":{name}", plain)
    return plain


SQLITE = Dialect(
    name="sqlite",
    begin_write="BEGIN IMMEDIATE",
    pk="INTEGER PRIMARY KEY",
    real="REAL",
    blob="BLOB",
    claim="",
    lock_row="",
    tables="SELECT name FROM sqlite_master WHERE type = 'table'",
    user_version="PRAGMA user_version",
    json_each="json_each({column})",
    paramstyle="named",
    exclusive="",
    columns="SELECT name FROM pragma_table_info(:table) ORDER BY cid",
    next_id="",
    # json_extract, not `->>`: that operator needs SQLite 3.38 (2022); JSON1 is older.
    json_text="""json_extract({column}, '$."' || {key} || '"')""",
    batch_setup="",
    refresh_statistics="",
)

POSTGRESQL = Dialect(
    name="postgresql",
    begin_write="BEGIN",
    pk="BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    real="DOUBLE PRECISION",
    blob="BYTEA",
    claim=" FOR UPDATE SKIP LOCKED",
    lock_row=" FOR UPDATE",
    tables=(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    ),
    user_version=None,
    json_each="jsonb_each(({column})::jsonb)",
    paramstyle="pyformat",
    exclusive="SELECT pg_advisory_xact_lock({key})",
    columns=(
        "SELECT column_name FROM information_schema.columns WHERE table_schema ="
        " current_schema() AND table_name = :table ORDER BY ordinal_position"
    ),
    next_id=(
        "SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
        " (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
    ),
    json_text="(({column})::jsonb ->> ({key})::text)",
    # A batch of keys joined to the ledger: with the default cost of a random page (4, for
    # spinning disks) the planner hashed every pending row of the issue for each batch of
    # 1,000 (139 ms halfway through 100k, so a send's database work grew with the square of
    # its size) instead of looking the 1,000 keys up in the (issue, key) index (32 ms). 1.1
    # is PostgreSQL's own suggestion for solid-state storage; it holds for this transaction.
    batch_setup="SET LOCAL random_page_cost = 1.1",
    # Autovacuum analyzes a table only up to a minute after it grew, so a send's first claims
    # planned on statistics of an empty issue: a sort of every due row for each claim of
    # 1,000 (75-110 ms halfway through 100k, the sort spilling to disk) instead of a walk of
    # the index in id order (6-10 ms).
    refresh_statistics="ANALYZE {table}",
)

# A parameter (`:name`, not `::type`), or a quoted string/identifier to copy unchanged.
_TOKEN = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|(?<![:\w]):([A-Za-z_]\w*)|%\([A-Za-z_]\w*\)b|%"
)


@functools.lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """`:name` parameters as `%(name)s`, every literal `%` doubled; `::` casts, `:words` in
    quoted text and binary parameters already written for psycopg (`%(name)b`) kept.

    Cached: queries are a fixed set of module constants, so each is rewritten once.
    """

    def replace(found: re.Match[str]) -> str:
        text = found.group(0)
        if found.group(1) is not None:
            return f"%({found.group(1)})s"
        if text.startswith("%("):
            return text
        return text.replace("%", "%%")  # psycopg reads `%` even inside quoted text

    return _TOKEN.sub(replace, sql)
