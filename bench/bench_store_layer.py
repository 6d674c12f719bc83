"""Benchmark: what SQLAlchemy Core would add to the ledger's hot path on SQLite (issue 10).

    .venv/bin/python bench/bench_store_layer.py [--rows 20000] [--runs 5]

The ledger's hot path is one autocommitted UPDATE per mark (`sending`, then `sent`) per
recipient. Three ways to run exactly those statements on the same SQLite file settings (WAL,
synchronous=NORMAL), interleaved in each run so that all see the same machine:

- dbapi: `sqlite3.Connection.execute(sql, params)` in autocommit, what `newsletter.store` does;
- sa-text: SQLAlchemy Core, `connection.execute(text(sql), params)` + commit, same SQL text;
- sa-core: SQLAlchemy Core expressions (`update(table).where(...).values(...)`), compiled once
  and cached by SQLAlchemy, + commit: how a Core-based store would be written.

Prints microseconds per recipient (two marks), the medians, and the extra cost per row of each
SQLAlchemy variant over the DB-API. Needs `pip install sqlalchemy` (not a dependency).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SENDING = (
    "UPDATE ledger_rows SET state = 'sending', attempts = attempts + 1, updated_at = :now"
    " WHERE issue = :issue AND key = :key AND state IN ('pending', 'deferred')"
)
SENT = (
    "UPDATE ledger_rows SET state = 'sent', reply = :reply, updated_at = :now"
    " WHERE issue = :issue AND key = :key AND state = 'sending'"
)
SCHEMA = (
    "CREATE TABLE ledger_rows (id INTEGER PRIMARY KEY, issue TEXT NOT NULL, key TEXT NOT NULL,"
    " state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, reply TEXT, updated_at REAL,"
    " UNIQUE (issue, key))"
)


def prepare(path: Path, rows: int) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute(SCHEMA)
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO ledger_rows (issue, key, state) VALUES ('i', ?, 'pending')",
        ((f"k{n:07d}",) for n in range(rows)),
    )
    con.execute("COMMIT")
    con.close()


def dbapi(path: Path, rows: int) -> float:
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA synchronous = NORMAL")
    started = time.perf_counter()
    for n in range(rows):
        key = f"k{n:07d}"
        assert con.execute(SENDING, {"now": 1.0, "issue": "i", "key": key}).rowcount == 1
        assert con.execute(SENT, {"reply": "250", "now": 2.0, "issue": "i", "key": key}).rowcount
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed


def sa_text(path: Path, rows: int) -> float:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{path}")
    sending, sent = sa.text(SENDING), sa.text(SENT)
    with engine.connect() as con:
        con.exec_driver_sql("PRAGMA synchronous = NORMAL")
        started = time.perf_counter()
        for n in range(rows):
            key = f"k{n:07d}"
            assert con.execute(sending, {"now": 1.0, "issue": "i", "key": key}).rowcount == 1
            con.commit()
            assert con.execute(
                sent, {"reply": "250", "now": 2.0, "issue": "i", "key": key}
            ).rowcount
            con.commit()
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def sa_core(path: Path, rows: int) -> float:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{path}")
    meta = sa.MetaData()
    table = sa.Table(
        "ledger_rows",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("issue", sa.Text),
        sa.Column("key", sa.Text),
        sa.Column("state", sa.Text),
        sa.Column("attempts", sa.Integer),
        sa.Column("reply", sa.Text),
        sa.Column("updated_at", sa.Float),
    )
    c = table.c
    sending = (
        sa.update(table)
        .where(c.issue == sa.bindparam("b_issue"), c.key == sa.bindparam("b_key"))
        .where(c.state.in_(["pending", "deferred"]))
        .values(state="sending", attempts=c.attempts + 1, updated_at=sa.bindparam("b_now"))
    )
    sent = (
        sa.update(table)
        .where(c.issue == sa.bindparam("b_issue"), c.key == sa.bindparam("b_key"))
        .where(c.state == "sending")
        .values(state="sent", reply=sa.bindparam("b_reply"), updated_at=sa.bindparam("b_now"))
    )
    with engine.connect() as con:
        con.exec_driver_sql("PRAGMA synchronous = NORMAL")
        started = time.perf_counter()
        for n in range(rows):
            key = f"k{n:07d}"
            params = {"b_now": 1.0, "b_issue": "i", "b_key": key}
            assert con.execute(sending, params).rowcount == 1
            con.commit()
            params = {"b_reply": "250", "b_now": 2.0, "b_issue": "i", "b_key": key}
            assert con.execute(sent, params).rowcount == 1
            con.commit()
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    try:
        import sqlalchemy
    except ImportError:
        sys.exit("needs SQLAlchemy: .venv/bin/pip install sqlalchemy")
    ways: dict[str, Callable[[Path, int], float]] = {
        "dbapi": dbapi,
        "sa-text": sa_text,
        "sa-core": sa_core,
    }
    print(
        f"SQLAlchemy {sqlalchemy.__version__}, SQLite {sqlite3.sqlite_version}, "
        f"{args.rows} recipients (2 marks each), {args.runs} runs"
    )
    results: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.runs):
            for name, way in ways.items():
                path = Path(folder) / f"{name}-{run}.db"
                prepare(path, args.rows)
                per_row = way(path, args.rows) / args.rows * 1e6
                results[name].append(per_row)
                print(f"run {run + 1} {name:8} {per_row:7.1f} us/recipient")
    base = statistics.median(results["dbapi"])
    print("\nmedian us/recipient:")
    for name, values in results.items():
        median = statistics.median(values)
        extra = "" if name == "dbapi" else f"  (+{median - base:.1f} us, {median / base:.2f}x)"
        print(f"  {name:8} {median:7.1f}{extra}")


if __name__ == "__main__":
    main()
