"""An issue's content: `issue.md` plus one Markdown file per item, parsed and validated strictly.

Every problem in every file is collected before anything is reported, so an editor fixes them all
in one go. A misspelt front-matter key is an error with a "did you mean".
"""

from __future__ import annotations

import calendar
import copy
import dataclasses
import datetime as dt
import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from babel.dates import get_month_names

from .config import find_project_root
from .errors import ContentError, Problem, ProjectError
from .segment import Segment, SegmentSyntaxError, parse_front_matter

ISSUE_FILE = "issue.md"
ITEM_PATTERN = re.compile(r"^\d+[-_].+\.md$")

ISSUE_KEYS: dict[str, type | tuple[type, ...]] = {
    "subject": str,
    "preheader": str,
    "date": (dt.date, str),
    "layout": str,
    "in_this_issue": bool,
    "audience": (str, list, dict),
}
LAYOUTS = ("above", "left", "right", "thumbnail")
ITEM_KEYS: dict[str, type | tuple[type, ...]] = {
    "title": str,
    "subtitle": str,
    "image": str,
    "image_alt": str,
    "link": str,
    "link_text": str,
    "draft": bool,
    "layout": str,
}
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)(?:\r?\n)?^---[ \t]*(?:\r?\n|\Z)", re.S | re.M)


@dataclass(frozen=True)
class Item:
    """One newsletter item, from one `NN-slug.md` file."""

    path: Path
    title: str
    body: str
    body_line: int
    subtitle: str | None = None
    image: str | None = None
    image_alt: str | None = None
    link: str | None = None
    link_text: str | None = None
    draft: bool = False
    # Where the image goes (above, left, right, thumbnail); None: the issue's or the default.
    layout: str | None = None

    @property
    def slug(self) -> str:
        return re.sub(r"^\d+[-_]", "", self.path.stem)

    @property
    def image_is_remote(self) -> bool:
        return bool(self.image and self.image.startswith("https://"))

    @property
    def image_path(self) -> Path | None:
        if not self.image or self.image_is_remote:
            return None
        return self.path.parent / self.image


@dataclass(frozen=True)
class Issue:
    """An issue folder: its metadata, an optional introduction, and its items in file-name order."""

    folder: Path
    subject: str
    intro: str
    intro_line: int
    items: tuple[Item, ...]
    preheader: str | None = None
    date: dt.date | None = None
    layout: str | None = None
    in_this_issue: bool | None = None
    # Who gets it (`audience:`, `segment`); None: not named, every subscriber.
    audience: Segment | None = None

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def path(self) -> Path:
        return self.folder / ISSUE_FILE

    def without_drafts(self) -> Issue:
        return dataclasses.replace(self, items=tuple(item for item in self.items if not item.draft))


def resolve_issue_folder(root: Path, reference: str) -> Path:
    """ISSUE as the user typed it: a folder path, or just the issue's name under `issues/`."""
    candidates = [Path(reference), root / reference, root / "issues" / reference]
    for candidate in candidates:
        if (candidate / ISSUE_FILE).is_file():
            return candidate.resolve()
    issues_dir = root / "issues"
    known = (
        sorted(p.name for p in issues_dir.iterdir() if p.is_dir()) if issues_dir.is_dir() else []
    )
    suggestion = difflib.get_close_matches(Path(reference).name, known, n=1)
    hint = f"Did you mean '{suggestion[0]}'?" if suggestion else None
    if not hint and known:
        hint = f"Issues in this project: {', '.join(known)}"
    raise ProjectError(f"no issue '{reference}' (looked for {ISSUE_FILE} in it)", hint=hint)


def load_issue(folder: Path) -> Issue:
    """Parse and validate an issue folder; raise `ContentError` with every problem found."""
    problems: list[Problem] = []
    issue_path = folder / ISSUE_FILE
    issue_meta: dict[str, Any] = {}
    intro, intro_line = "", 1
    parsed = _read_markdown(issue_path, problems)
    if parsed is not None:
        issue_meta, lines, intro, intro_line = parsed
        _check_keys(issue_path, issue_meta, lines, ISSUE_KEYS, problems, required=("subject",))

    # Images must stay inside the project: an item may come from someone the editor does not
    # trust with the machine's files.
    root = find_project_root(folder) or folder
    items: list[Item] = []
    item_files = sorted(p for p in folder.iterdir() if p.is_file() and ITEM_PATTERN.match(p.name))
    for path in item_files:
        item = _load_item(path, problems, root)
        if item is not None:
            items.append(item)
    if not item_files:
        problems.append(
            Problem("the issue has no items: add files named like '01-first-item.md'", file=folder)
        )
    for stray in sorted(folder.glob("*.md")):
        if stray.name != ISSUE_FILE and not ITEM_PATTERN.match(stray.name):
            problems.append(
                Problem(
                    "is not an item: item files are named 'NN-slug.md' (e.g. '02-news.md')",
                    file=stray,
                )
            )
    if items and all(item.draft for item in items):
        problems.append(Problem("every item is a draft: nothing would be sent", file=folder))

    date = issue_meta.get("date")
    if isinstance(date, str):
        try:
            date = parse_date(date)
        except ValueError as err:
            problems.append(
                Problem(
                    f"'{date}' {err}; write it like 2026-11-26 or 26-11-2026",
                    file=issue_path,
                    line=_key_line(issue_meta, "date"),
                    key="date",
                )
            )
            date = None
    _check_layout(issue_path, issue_meta, problems)
    audience = _audience(issue_path, issue_meta, problems)
    if problems:
        raise ContentError(problems)
    in_this_issue = issue_meta.get("in_this_issue")
    return Issue(
        folder=folder,
        subject=str(issue_meta["subject"]).strip(),
        intro=intro,
        intro_line=intro_line,
        items=tuple(items),
        preheader=_clean(issue_meta.get("preheader")),
        date=date if isinstance(date, dt.date) else None,
        layout=_clean(issue_meta.get("layout")),
        in_this_issue=in_this_issue if isinstance(in_this_issue, bool) else None,
        audience=audience,
    )


def _audience(path: Path, meta: dict[str, Any], problems: list[Problem]) -> Segment | None:
    """`audience:` read (`segment.parse_front_matter`); a problem with its line if it is wrong."""
    value = meta.get("audience")
    if value is None or not isinstance(value, str | list | dict):
        return None  # absent, or already reported by _check_keys
    try:
        # Nested keys' lines are counted from the front matter's first line (file line 2).
        return parse_front_matter(value, line=_key_line(meta, "audience"), offset=2)
    except SegmentSyntaxError as err:
        message = err.message + (f" ({err.hint})" if err.hint else "")
        problems.append(Problem(message, file=path, line=err.line, key="audience"))
        return None


@functools.cache
def _months() -> dict[str, int]:
    """Month names in the languages dates are written in; loaded only for a written date (Babel
    reads four locales' data for them: a tenth of a second at every start-up otherwise)."""
    months: dict[str, int] = {}
    for code in ("en", "nl", "de", "fr"):
        for width in ("wide", "abbreviated"):
            for number, name in get_month_names(width, locale=code).items():
                months.setdefault(name.lower().rstrip("."), number)
    months.update({"sept": 9, "mrt": 3, "mei": 5, "okt": 10})
    return months


_DAY_FIRST = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})$")
_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_WRITTEN_DAY_FIRST = re.compile(r"^(?:[^\W\d]+,?\s+)?(\d{1,2})\.?\s+([^\W\d]+)\.?,?\s+(\d{4})$")
_WRITTEN_MONTH_FIRST = re.compile(r"^(?:[^\W\d]+,?\s+)?([^\W\d]+)\.?\s+(\d{1,2}),?\s+(\d{4})$")


def parse_date(text: str) -> dt.date:
    """A date as editors write it: 2026-11-26, 26-11-2026, 26/11/2026, 26 november 2026,
    November 26, 2026 (a weekday in front is allowed). Numeric forms are day first.

    Raises ValueError saying why an impossible date (31 November) is not one.
    """
    value = " ".join(text.split())
    year = month = day = None
    if found := _ISO.match(value):
        year, month, day = (int(part) for part in found.groups())
    elif found := _DAY_FIRST.match(value):
        day, month, year = (int(part) for part in found.groups())
    elif found := _WRITTEN_DAY_FIRST.match(value):
        day, month, year = int(found[1]), _months().get(found[2].lower()), int(found[3])
    elif found := _WRITTEN_MONTH_FIRST.match(value):
        month, day, year = _months().get(found[1].lower()), int(found[2]), int(found[3])
    if year is None or day is None:
        raise ValueError("is not a date")
    if month is None:
        raise ValueError("is not a date (unknown month name)")
    if not 1 <= month <= 12:
        raise ValueError(f"is not a date: there is no month {month}")
    last = calendar.monthrange(year, month)[1]
    if not 1 <= day <= last:
        month_name = calendar.month_name[month]
        raise ValueError(f"is not a date: {month_name} {year} has {last} days")
    return dt.date(year, month, day)


def _load_item(path: Path, problems: list[Problem], root: Path) -> Item | None:
    parsed = _read_markdown(path, problems)
    if parsed is None:
        return None
    meta, lines, body, body_line = parsed
    before = len(problems)
    _check_keys(path, meta, lines, ITEM_KEYS, problems, required=("title",))
    image = _clean(meta.get("image"))
    if image and not image.startswith("https://"):
        if re.match(r"^[a-z]+:", image):
            problems.append(
                Problem(
                    "image must be a path relative to the item file or an https:// URL",
                    file=path,
                    line=_key_line(meta, "image"),
                    key="image",
                )
            )
        elif not _inside(path.parent / image, root):
            problems.append(
                Problem(
                    f"image '{image}' must be inside the project ({root}): no absolute paths, "
                    "'..' out of it or links pointing outside",
                    file=path,
                    line=_key_line(meta, "image"),
                    key="image",
                )
            )
        elif not (path.parent / image).is_file():
            problems.append(
                Problem(
                    f"image file '{image}' not found (looked in {path.parent})",
                    file=path,
                    line=_key_line(meta, "image"),
                    key="image",
                )
            )
    link = _clean(meta.get("link"))
    if link and not re.match(r"^(https?://|mailto:)\S+$", link):
        problems.append(
            Problem(
                "link must be an http(s):// or mailto: URL",
                file=path,
                line=_key_line(meta, "link"),
                key="link",
            )
        )
    if image and not _clean(meta.get("image_alt")):
        problems.append(
            Problem(
                "an image needs 'image_alt': a short description for people who cannot see it",
                file=path,
                line=_key_line(meta, "image"),
                key="image_alt",
            )
        )
    _check_layout(path, meta, problems)
    if len(problems) > before:
        return None
    return Item(
        path=path,
        title=str(meta["title"]).strip(),
        body=body,
        body_line=body_line,
        subtitle=_clean(meta.get("subtitle")),
        image=image,
        image_alt=_clean(meta.get("image_alt")),
        link=link,
        link_text=_clean(meta.get("link_text")),
        draft=bool(meta.get("draft", False)),
        layout=_clean(meta.get("layout")),
    )


def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, symbolic links followed, is inside `root`."""
    return path.resolve().is_relative_to(root.resolve())


def _check_layout(path: Path, meta: dict[str, Any], problems: list[Problem]) -> None:
    layout = meta.get("layout")
    if isinstance(layout, str) and layout.strip() not in LAYOUTS:
        suggestion = difflib.get_close_matches(layout.strip(), LAYOUTS, n=1)
        hint = f"; did you mean '{suggestion[0]}'?" if suggestion else ""
        problems.append(
            Problem(
                f"must be one of {', '.join(LAYOUTS)}{hint}",
                file=path,
                line=_key_line(meta, "layout"),
                key="layout",
            )
        )


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of each top-level key.

    Dates stay text (PyYAML would turn `2016-11-31` into a crash); `parse_date` reads them.
    """


_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    lines = {}
    for key_node, _ in node.value:
        lines[str(key_node.value)] = key_node.start_mark.line
    mapping["__lines__"] = lines
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(text: str) -> Any:
    """`yaml.load(text)` with the line-keeping loader; each text is parsed once per process (a
    preview rebuild reads every item again, and YAML is its slowest part; errors are raised
    again every time). A copy: callers change what they get."""
    return copy.deepcopy(_parsed_yaml(text))


@functools.lru_cache(maxsize=1024)
def _parsed_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_LineLoader)


def _read_markdown(
    path: Path, problems: list[Problem]
) -> tuple[dict[str, Any], dict[str, int], str, int] | None:
    """Front matter (with each key's line) and body (with its first line) of a Markdown file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problems.append(Problem("not found", file=path))
        return None
    except OSError as err:
        problems.append(Problem(f"cannot be read: {err.strerror}", file=path))
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        problems.append(
            Problem(
                f"is not UTF-8 text (byte 0x{raw[err.start]:02x}); save it as UTF-8",
                file=path,
                line=line,
            )
        )
        return None
    text = text.replace("\r\n", "\n")
    match = _FRONT_MATTER.match(text)
    if not match:
        problems.append(
            Problem(
                "has no front matter: start the file with '---', the keys, and '---'",
                file=path,
                line=1,
            )
        )
        return None
    traps = _quoting_traps(match.group(1), path)
    try:
        meta = _load_yaml(match.group(1))
    except yaml.YAMLError as err:
        if traps:
            problems.extend(traps)
            return None
        mark = getattr(err, "problem_mark", None)
        yaml_line = mark.line + 2 if mark is not None else None
        reason = getattr(err, "problem", None) or str(err)
        problems.append(
            Problem(
                f"the front matter is not valid YAML ({reason}); write each key as "
                "'key: value' and put values with : # \" ' in quotes",
                file=path,
                line=yaml_line,
            )
        )
        return None
    except (ValueError, RecursionError) as err:
        # A number of thousands of digits (Python refuses to convert it) or thousands of nested
        # lists or mappings (the parser recurses once per level).
        reason, where = _hostile_yaml(match.group(1), err)
        problems.append(Problem(f"invalid YAML front matter: {reason}", file=path, line=where))
        return None
    except TypeError:
        problems.append(
            Problem("the front matter cannot be read: write each key as 'key: value'", file=path)
        )
        return None
    if traps:
        problems.extend(traps)
        return None
    if meta is None:
        meta = {"__lines__": {}}
    if not isinstance(meta, dict):
        problems.append(Problem("front matter must be 'key: value' lines", file=path, line=2))
        return None
    key_lines = {key: line + 2 for key, line in meta.pop("__lines__", {}).items()}
    meta["__key_lines__"] = key_lines
    body = text[match.end() :]
    body_line = text[: match.end()].count("\n") + 1
    return meta, key_lines, body, body_line


_KEY_VALUE = re.compile(r"^([A-Za-z_][\w-]*)[ \t]*:[ \t]+(\S.*?)[ \t]*$")


def _quoted(value: str) -> str:
    """`value` as a YAML quoted scalar an editor can paste back."""
    if '"' not in value and "\\" not in value:
        return f'"{value}"'
    return "'" + value.replace("'", "''") + "'"


def _quoting_traps(front: str, path: Path) -> list[Problem]:
    """Lines YAML would misread: text cut at ' #', a ': ' or a leading [ { * & ! @ ` % in an
    unquoted value, quotes inside quotes. Each says how to write the line instead."""
    problems: list[Problem] = []
    lines = front.split("\n")
    for index, line in enumerate(lines):
        found = _KEY_VALUE.match(line)
        if found is None:
            continue
        key, value = found.groups()
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if value[0] in "|>" or (following[:1] in (" ", "\t") and following.strip()):
            continue  # block scalars and values continued on the next lines
        quote = value[0] if value[0] in "\"'" else ""
        intended = value[1:-1] if quote and len(value) > 1 and value.endswith(quote) else value
        if quote and not value.endswith(quote):
            intended = value[1:]
        try:
            parsed = _load_yaml(f"k: {value}")
        except (yaml.YAMLError, ValueError, TypeError, RecursionError):
            reason = "YAML cannot read this value"
        else:
            if quote or not (value.startswith("#") or re.search(r"[ \t]#", value)):
                continue
            kept = parsed.get("k") if isinstance(parsed, dict) else None
            reason = (
                f"YAML reads everything after ' #' as a comment, so the value would be cut "
                f"to '{kept if kept is not None else ''}'"
            )
        problems.append(
            Problem(
                f"{reason}: put the value in quotes: {key}: {_quoted(intended)}",
                file=path,
                line=index + 2,
                key=key,
            )
        )
    return problems


def _hostile_yaml(front: str, err: Exception) -> tuple[str, int | None]:
    """Why the front matter could not be read, and the line (of the file) where that starts."""
    if isinstance(err, RecursionError):
        depth = 0
        for number, line in enumerate(front.splitlines(), start=2):
            for char in line:
                depth += 1 if char in "[{" else -1 if char in "]}" else 0
                if depth > 100:
                    return "lists or mappings are nested too deeply", number
        return "lists or mappings are nested too deeply", None
    for number, line in enumerate(front.splitlines(), start=2):
        if re.search(r"\d{1000}", line):
            return "a number is too long (put long codes in quotes)", number
    return f"a value cannot be read ({err})", None


def _key_line(meta: Mapping[str, Any], key: str) -> int | None:
    lines = meta.get("__key_lines__", {})
    value = lines.get(key) if isinstance(lines, dict) else None
    return value if isinstance(value, int) else None


def _check_keys(
    path: Path,
    meta: dict[str, Any],
    lines: Mapping[str, int],
    known: Mapping[str, type | tuple[type, ...]],
    problems: list[Problem],
    *,
    required: tuple[str, ...],
) -> None:
    for key, value in meta.items():
        if key == "__key_lines__":
            continue
        if key not in known:
            suggestion = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            hint = f"; did you mean '{suggestion[0]}'?" if suggestion else ""
            problems.append(
                Problem(
                    f"unknown key '{key}'{hint} (known keys: {', '.join(known)})",
                    file=path,
                    line=lines.get(str(key)),
                )
            )
            continue
        expected = known[key]
        if value is None and key not in required:
            continue
        if isinstance(value, bool) and expected is not bool:
            problems.append(
                Problem("must be text, not true/false", file=path, line=lines.get(key), key=key)
            )
        elif expected is str and isinstance(value, int | float) and not isinstance(value, bool):
            meta[key] = str(value)
        elif not isinstance(value, expected):
            wanted = "true or false" if expected is bool else "text"
            advice = "" if expected is bool else ' (put the value in quotes: "...")'
            problems.append(
                Problem(f"must be {wanted}{advice}", file=path, line=lines.get(key), key=key)
            )
    for key in required:
        value = meta.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            problems.append(
                Problem(f"'{key}' is required", file=path, line=lines.get(key) or 1, key=key)
            )
