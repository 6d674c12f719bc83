"""Which subscriber rows readers may see: not those of an import still being written.

Its own module so that both the importer and the audience queries (`tags`) use it without
importing each other.
"""

from __future__ import annotations

__all__ = ["counted", "visible"]


def visible(alias: str = "") -> str:
    """SQL true for subscriber rows readers may see: not part of an import still writing.

    `alias` is the table name or alias to qualify the column with (`s`, `subscribers`).
    """
    column = f"{alias}.import_id" if alias else "import_id"
    return (
        f"({column} IS NULL OR {column} NOT IN"
        " (SELECT id FROM subscriber_imports WHERE state = 'writing'))"
    )


def counted(table: str, where: str) -> str:
    """`SELECT COUNT(*) FROM {table} WHERE {where}` of the visible rows, in one statement (one
    snapshot): `visible()` only while some import is writing. Without that condition a count by
    status reads only the `(status, key)` index; with it, every row (2.8 s against 0.2 s for a
    million subscribers)."""
    alias = table.split()[-1]
    return (
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM subscriber_imports WHERE state = 'writing')"
        f" THEN (SELECT COUNT(*) FROM {table} WHERE {where} AND {visible(alias)})"
        f" ELSE (SELECT COUNT(*) FROM {table} WHERE {where}) END"
    )
