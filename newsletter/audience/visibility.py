"""Which subscriber rows readers may see: not those of an import still being written.

Its own module so that both the importer and the audience queries (`tags`) use it without
importing each other.
"""

from __future__ import annotations

__all__ = ["visible"]


def visible(alias: str = "") -> str:
    """SQL true for subscriber rows readers may see: not part of an import still writing.

    `alias` is the table name or alias to qualify the column with (`s`, `subscribers`).
    """
    column = f"{alias}.import_id" if alias else "import_id"
    return (
        f"({column} IS NULL OR {column} NOT IN"
        " (SELECT id FROM subscriber_imports WHERE state = 'writing'))"
    )
