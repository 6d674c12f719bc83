"""Subscribers' tags, and audiences (`segment.Segment`) as SQL: the queries, on a connection.

`SubscriberStore` calls these inside its own lock and transactions (`tag`, `untag`, `audience`,
`count_audience`, `tag_counts`); the send ledger's freeze takes `segment_filter` to select the
same people. Every tag, attribute name and value is a bound parameter: the SQL text holds only
fixed fragments and generated parameter names (`:seg_t0`), whatever an expression contains.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..segment import Segment
from ..store import Connection, Dialect, Params
from .model import NO_ATTRIBUTES, Subscriber
from .visibility import counted, visible

__all__ = [
    "TAG_INSERT",
    "TagChange",
    "TagCount",
    "count_segment",
    "page_segment",
    "segment_filter",
    "tag_counts",
    "tag_params",
    "tags_of",
]

PAGE = 1000  # subscribers per query while streaming an audience

TAG_INSERT = (
    "INSERT INTO subscriber_tags (subscriber_key, tag) VALUES (:key, :tag)"
    " ON CONFLICT (subscriber_key, tag) DO NOTHING"
)
TAG_DELETE = "DELETE FROM subscriber_tags WHERE subscriber_key = :key AND tag = :tag"
_TAGS_OF = "SELECT tag FROM subscriber_tags WHERE subscriber_key = :key ORDER BY tag"
# The tags of a page of subscribers: one range scan of the primary key (subscriber_key, tag).
_TAGS_OF_RANGE = (
    "SELECT subscriber_key, tag FROM subscriber_tags"
    " WHERE subscriber_key > :after AND subscriber_key <= :last ORDER BY subscriber_key, tag"
)
_TAG_COUNTS = (
    "SELECT t.tag, COUNT(*), SUM(CASE WHEN s.status = 'subscribed' THEN 1 ELSE 0 END)"
    " FROM subscriber_tags t JOIN subscribers s ON s.key = t.subscriber_key"
    f" WHERE {visible('s')} GROUP BY t.tag ORDER BY t.tag"
)


@dataclass(frozen=True)
class TagChange:
    """What `tag` or `untag` did to one subscriber: the tags changed, and those they have now."""

    email: str
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class TagCount:
    """How many subscribers carry a tag: subscribed ones, and everyone (any status)."""

    tag: str
    subscribed: int
    total: int


def segment_filter(
    segment: Segment, dialect: Dialect, *, table: str = "subscribers"
) -> tuple[str, Params]:
    """The segment as a condition on rows of `table` (the subscribers table or its alias), with
    its parameters (named `seg_…`); `1 = 1` for everyone. Status is not part of it."""
    clauses: list[str] = []
    params: dict[str, Any] = {}

    def bind(prefix: str, values: Sequence[str]) -> str:
        names = []
        for number, value in enumerate(values):
            name = f"seg_{prefix}{number}"
            params[name] = value
            names.append(f":{name}")
        return ", ".join(names)

    has_tag = (
        "EXISTS (SELECT 1 FROM subscriber_tags t"
        f" WHERE t.subscriber_key = {table}.key AND t.tag IN ({{names}}))"
    )
    if segment.tags:
        clauses.append(has_tag.format(names=bind("t", segment.tags)))
    if segment.exclude:
        clauses.append("NOT " + has_tag.format(names=bind("x", segment.exclude)))
    for number, condition in enumerate(segment.where):
        key = f"seg_k{number}"
        params[key] = condition.key
        field = dialect.json_text.format(column=f"{table}.attributes", key=f":{key}")
        clauses.append(f"{field} IN ({bind(f'v{number}_', condition.values)})")
    return (" AND ".join(clauses) if clauses else "1 = 1"), params


def _subscriber(row: Sequence[Any]) -> Subscriber:
    text = row[3]
    attributes = NO_ATTRIBUTES if text == "{}" else MappingProxyType(json.loads(text))
    return Subscriber(email=row[1], name=row[2], attributes=attributes, status=row[4], id=row[0])


def _status_clause(status: str | None) -> str:
    return "" if status is None else " AND s.status = :seg_status"


def page_segment(
    db: Connection,
    dialect: Dialect,
    segment: Segment,
    *,
    status: str | None,
    after: str,
    limit: int = PAGE,
    with_tags: bool = True,
) -> list[tuple[str, Subscriber, tuple[str, ...]]]:
    """One page of the segment's subscribers with `status` (None: any), in key order after
    `after`: (key, subscriber, tags); the tags are left empty unless `with_tags`."""
    where, params = segment_filter(segment, dialect, table="s")
    rows = db.execute(
        "SELECT s.id, s.email, s.name, s.attributes, s.status, s.key FROM subscribers s"
        f" WHERE s.key > :seg_after{_status_clause(status)} AND {where} AND {visible('s')}"
        " ORDER BY s.key LIMIT :seg_limit",
        {**params, "seg_after": after, "seg_limit": limit, "seg_status": status},
    ).fetchall()
    if not rows or not with_tags:
        return [(row[5], _subscriber(row), ()) for row in rows]
    tags: dict[str, list[str]] = {}
    for key, tag in db.execute(_TAGS_OF_RANGE, {"after": after, "last": rows[-1][5]}):
        tags.setdefault(key, []).append(tag)
    return [(row[5], _subscriber(row), tuple(tags.get(row[5], ()))) for row in rows]


def count_segment(db: Connection, dialect: Dialect, segment: Segment, *, status: str | None) -> int:
    """How many subscribers with `status` (None: any) the segment holds."""
    where, params = segment_filter(segment, dialect, table="s")
    found = db.execute(
        counted("subscribers s", f"{where}{_status_clause(status)}"),
        {**params, "seg_status": status},
    ).fetchone()
    return int(found[0])


def any_in_segment(
    db: Connection, dialect: Dialect, segment: Segment, *, status: str | None
) -> bool:
    """Whether the segment holds anybody with `status` (None: any status)."""
    where, params = segment_filter(segment, dialect, table="s")
    found = db.execute(
        f"SELECT 1 FROM subscribers s WHERE {where}{_status_clause(status)}"
        f" AND {visible('s')} LIMIT 1",
        {**params, "seg_status": status},
    ).fetchone()
    return found is not None


def tags_of(db: Connection, key: str) -> tuple[str, ...]:
    """The subscriber's tags, sorted."""
    return tuple(row[0] for row in db.execute(_TAGS_OF, {"key": key}))


def tag_counts(db: Connection) -> list[TagCount]:
    """Every tag in use with its counts, by name."""
    return [
        TagCount(str(tag), int(subscribed or 0), int(total))
        for tag, total, subscribed in db.execute(_TAG_COUNTS)
    ]


def tag_params(key: str, tags: Iterable[str]) -> list[Params]:
    return [{"key": key, "tag": tag} for tag in tags]
