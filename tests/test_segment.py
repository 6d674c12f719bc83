"""The audience expression language (newsletter/segment.py): the compact form, issue.md's
`audience:` with file and line in every error, tags, and hostile input refused or kept literal."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.content import load_issue
from newsletter.errors import ContentError
from newsletter.segment import (
    EVERYONE,
    Condition,
    Segment,
    SegmentSyntaxError,
    import_tag,
    normalise_tag,
    parse_audience,
    parse_front_matter,
)


@pytest.mark.parametrize(
    ("text", "tags", "exclude", "where"),
    [
        ("tag:members", ("members",), (), ()),
        ("members, board", ("board", "members"), (), ()),
        ("tag:members,-tag:press", ("members",), ("press",), ()),
        ("-press", (), ("press",), ()),
        ("city=Utrecht", (), (), (Condition("city", ("Utrecht",)),)),
        ("city=Utrecht,city=Amsterdam", (), (), (Condition("city", ("Amsterdam", "Utrecht")),)),
        (' city = "Den Haag, Centrum" ', (), (), (Condition("city", ("Den Haag, Centrum",)),)),
        ('name_x="say ""hi"""', (), (), (Condition("name_x", ('say "hi"',)),)),
        ("City=Utrecht", (), (), (Condition("city", ("Utrecht",)),)),
        ("Board Members", ("board-members",), (), ()),
    ],
)
def test_compact_form(
    text: str,
    tags: tuple[str, ...],
    exclude: tuple[str, ...],
    where: tuple[Condition, ...],
) -> None:
    segment = parse_audience(text)
    assert (segment.tags, segment.exclude, segment.where) == (tags, exclude, where)
    # The canonical form reads back to the same audience.
    assert parse_audience(segment.expression) == segment


@pytest.mark.parametrize("text", ["all", "ALL", " everyone "])
def test_everyone(text: str) -> None:
    assert parse_audience(text) == EVERYONE
    assert EVERYONE.expression == "all" and EVERYONE.describe() == "every subscriber"


def test_canonical_form_ignores_order_case_and_repeats() -> None:
    one = parse_audience("city=Utrecht,tag:Members,-tag:press,tag:board")
    two = parse_audience("-press, BOARD, members, members, city=Utrecht")
    assert one == two
    assert one.expression == "tag:board,tag:members,-tag:press,city=Utrecht"
    assert one.describe() == "tagged board or members, not tagged press, city is 'Utrecht'"


HOSTILE_VALUES = [
    "O'Brien",
    "'; DROP TABLE subscribers; --",
    '" OR 1=1 --',
    "Zürich",
    "東京",
    "a,b",
    '"quoted"',
    "50% off_",
    "\u202eevil",
    ":seg_t0",
    "%(seg_t0)s",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_hostile_values_are_literal_and_round_trip(value: str) -> None:
    segment = Segment.of(where={"city": [value]})
    assert segment.where == (Condition("city", (value,)),)
    assert parse_audience(segment.expression) == segment


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the audience is empty"),
        ("a,,b", "empty item"),
        ("a,", "ends with a comma"),
        ("-city=Gent", "only a tag can be excluded"),
        ("city=", "no value for city"),
        ('city="Gent', "unclosed quote"),
        ("tag=members", "write a tag as tag:NAME"),
        ("email=ann@example.org", "not on addresses"),
        ("status=bounced", "only subscribed people"),
        ("ci ty!=x", "is not an attribute name"),
        ("members,-members", "both included and excluded"),
        ("'; DROP TABLE subscribers;--", '"\'" is not allowed'),
        ("tag:a b;c", "';' is not allowed"),
        ("board\x1b[31m", "control character '\\x1b'"),
        ("city=Gent\r\nBcc: x", "control character '\\r'"),
        ("city=a\x00", "control character '\\x00'"),
        ("-", "a tag cannot be empty"),
        ("_x", "must start with a letter or digit"),
        ("x" * 65, "longer than 64"),
    ],
)
def test_bad_expressions_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(SegmentSyntaxError) as raised:
        parse_audience(text)
    assert message in raised.value.message


def test_tags_are_casefolded_letters_digits_and_three_marks() -> None:
    assert normalise_tag("  Board  Members ") == "board-members"
    assert normalise_tag("Ärzte_2026.v1") == "ärzte_2026.v1"
    assert normalise_tag("STRASSE") == "strasse"
    for bad in ("a/b", "a'b", 'a"b', "a,b", "a:b", "a=b", "<b>", "a\tb\x07"):
        with pytest.raises(SegmentSyntaxError, match="is not allowed"):
            normalise_tag(bad)


def test_other_tools_tag_names_become_tags() -> None:
    assert import_tag("Partners & Friends") == "partners-friends"
    assert import_tag("VIP (2024)") == "vip-2024"
    assert import_tag("Default list") == "default-list"
    assert import_tag("!!!") is None


def test_front_matter_forms() -> None:
    mapping = {"tags": ["members", "board"], "exclude": "press", "where": {"city": "Utrecht"}}
    assert parse_front_matter(mapping) == parse_audience(
        "tag:members,tag:board,-tag:press,city=Utrecht"
    )
    assert parse_front_matter(["members"]) == parse_audience("members")
    assert parse_front_matter("members,-press") == parse_audience("members,-press")
    assert parse_front_matter("all") == EVERYONE
    assert parse_front_matter({"where": {"region": ["Noord", "Zuid"]}}) == parse_audience(
        "region=Noord,region=Zuid"
    )


def write_issue(folder: Path, front: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "issue.md").write_text(f"---\nsubject: Hello\n{front}---\nIntro\n", "utf-8")
    (folder / "01-item.md").write_text("---\ntitle: An item\n---\nBody\n", "utf-8")
    return folder


def test_issue_md_names_its_audience(tmp_path: Path) -> None:
    folder = write_issue(
        tmp_path / "issue",
        "audience:\n  tags: [members]\n  exclude: [press]\n  where:\n    city: Utrecht\n",
    )
    issue = load_issue(folder)
    assert issue.audience is not None
    assert issue.audience.expression == "tag:members,-tag:press,city=Utrecht"
    assert load_issue(write_issue(tmp_path / "plain", "")).audience is None


@pytest.mark.parametrize(
    ("front", "line", "message"),
    [
        # line 2 is subject:, 3 is audience:
        ("audience: 'tag:members,,x'\n", 3, "empty item"),
        ("audience:\n  tags: [members]\n  exlude: press\n", 5, "did you mean 'exclude'"),
        ("audience:\n  tags: [members, 'a;b']\n", 4, "';' is not allowed"),
        ("audience:\n  where:\n    city: Utrecht\n    zip: 3511\n", 6, 'put it in quotes ("3511")'),
        ("audience:\n  where:\n    city: [Utrecht, 12]\n", 5, "is not text"),
        ("audience:\n  where:\n    city?: x\n", 5, "is not an attribute name"),
        ("audience:\n  where: Utrecht\n", 4, "where: must be attribute conditions"),
        ("audience: {}\n", 3, "names no tags or conditions"),
        ("audience: 12\n", 3, "must be text"),
        ("audience:\n  tags: [members]\n  exclude: [members]\n", 3, "both included and excluded"),
        ('audience: "city=x\\u0007y"\n', 3, "control character"),
    ],
)
def test_issue_md_errors_name_file_and_line(
    tmp_path: Path, front: str, line: int, message: str
) -> None:
    folder = write_issue(tmp_path / "issue", front)
    with pytest.raises(ContentError) as raised:
        load_issue(folder)
    problems = raised.value.problems
    assert len(problems) == 1, problems
    problem = problems[0]
    assert (problem.file, problem.line) == (folder / "issue.md", line)
    assert message in problem.message
    assert str(problem).startswith(f"{folder / 'issue.md'}:{line}: ")
