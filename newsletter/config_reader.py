"""The one reader of `newsletter.toml` tables: typed getters that collect problems (each with
file, line and key) instead of stopping at the first, and one policy for keys nobody reads.

Every table (`[newsletter]`, `[footer]`, `[transport]`, `[serve]`, `[links]`, ...) is read
through a `TableReader`; the parsers in config.py and config_tables.py only say what each key
must be. Unknown keys are treated alike everywhere: a warning with a did-you-mean, except keys
that look like secrets (`password`, `api_key`, `token`, ...), which are errors, because a secret
written into the file is already a leak.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import Problem

__all__ = ["TableReader", "check_env_name", "kind_name", "line_of", "located", "looks_secret"]

DEFAULT_PATH = Path("newsletter.toml")

_SECRET_KEY = re.compile(
    r"(?:^|_)(?:password|passwd|secret|token|api_?key|private_?key|access_?key|secret_?key)$",
    re.IGNORECASE,
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENTRY = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<index>\d+)\]$")  # `partners[2]`


def looks_secret(key: str) -> bool:
    """True for key names that would hold a secret (`password`, `smtp_token`, `api_key`)."""
    return bool(_SECRET_KEY.search(key))


def check_env_name(value: str) -> str | None:
    """None for a valid environment-variable name, else the problem."""
    if not _ENV_NAME.match(value):
        return "must be the name of an environment variable (not the secret itself)"
    return None


def kind_name(kinds: tuple[type, ...]) -> str:
    """`(str, int)` → "a string or a whole number" (how messages name TOML types)."""
    names = {
        str: "a string",
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


class TableReader:
    """Reads one table of `newsletter.toml` (`name` like "serve" or "footer.social").

    Problems go to `problems` (shared by every table of a file when the lists are passed in),
    warnings to `warnings` (strings, shown before each command). `text` is the file's text, used
    only to find line numbers (tomllib reports none); without it problems carry no line.
    """

    def __init__(
        self,
        name: str,
        data: object,
        *,
        path: Path = DEFAULT_PATH,
        text: str = "",
        problems: list[Problem] | None = None,
        warnings: list[str] | None = None,
        required: bool = False,
    ) -> None:
        self.name = name
        self.path = path
        self.text = text
        self.problems: list[Problem] = problems if problems is not None else []
        self.warnings: list[str] = warnings if warnings is not None else []
        self.seen: set[str] = set()
        self.data: Mapping[str, Any] = {}
        if data is None:
            if required:
                self.problems.append(Problem(f"the [{name}] table is required", file=path))
        elif isinstance(data, Mapping):
            self.data = data
        else:
            parent, _, key = name.rpartition(".")
            self.problems.append(
                Problem("must be a table", file=path, line=line_of(text, parent, key), key=name)
            )

    @property
    def present(self) -> bool:
        """True when the table is in the file with at least one key."""
        return bool(self.data)

    def sub(self, key: str) -> TableReader:
        """The reader of the sub-table `key` (e.g. `[footer.social]`), sharing problem lists."""
        self.seen.add(key)
        return TableReader(
            f"{self.name}.{key}",
            self.data.get(key),
            path=self.path,
            text=self.text,
            problems=self.problems,
            warnings=self.warnings,
        )

    # --- where ------------------------------------------------------------------------------

    def key_name(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def line_of(self, key: str) -> int | None:
        """The line of `key`; else of the table's header (or of its key in the parent table)."""
        entry = _ENTRY.match(key)
        if entry:  # the nth `[[table.name]]`, else the line of `name`
            found = _scan(self.text).header(f"{self.name}.{entry['name']}", int(entry["index"]))
            return found or self.line_of(entry["name"])
        lines = _scan(self.text)
        found = lines.key(self.name, key) or lines.header(self.key_name(key))
        return found if found is not None else self.table_line()

    def table_line(self) -> int | None:
        """The line of the table's `[header]`, or of its key in the parent table."""
        lines = _scan(self.text)
        found = lines.header(self.name)
        if found is None and "." in self.name:
            parent, _, key = self.name.rpartition(".")
            found = lines.key(parent, key) or lines.header(parent)
        return found

    def _where(self, key: str | None) -> str:
        line = self.line_of(key) if key is not None else self.table_line()
        return f"{self.path}:{line}" if line else str(self.path)

    # --- reporting --------------------------------------------------------------------------

    def problem(self, key: str, message: str) -> None:
        """An error about `key` (named `table.key`, with its line)."""
        self.problems.append(
            Problem(message, file=self.path, line=self.line_of(key), key=self.key_name(key))
        )

    def warning(self, key: str | None, message: str) -> None:
        """A warning at `key`'s line (or the table's), shown before each command."""
        self.warnings.append(f"{self._where(key)}: {message}")

    def refuse_secret(self, key: str, message: str) -> None:
        """An error with `message` (which never repeats the value) when `key`, a secret, is set.

        The key is not offered as a did-you-mean for unknown keys."""
        if key in self.data:
            self.seen.add(key)
            self.problem(key, message)

    def finish(self, known: Iterable[str] | None = None) -> None:
        """Report keys nobody read (or not in `known`): secret-looking ones as errors, the others
        as warnings with the closest known key."""
        known_keys = set(known) if known is not None else self.seen
        for key in self.data:
            if key in known_keys:
                continue
            if looks_secret(key):
                self.problem(
                    key,
                    "secrets do not belong in newsletter.toml; keep them in the environment "
                    "(this key is not read)",
                )
                continue
            suggestion = difflib.get_close_matches(key, sorted(known_keys), n=1)
            hint = f" (did you mean '{suggestion[0]}'?)" if suggestion else ""
            self.warning(key, f"unknown key '{self.key_name(key)}' is ignored{hint}")

    # --- typed getters ----------------------------------------------------------------------

    def value(self, key: str, default: Any = None) -> Any:
        """The raw value of `key` (or `default`), for parsers that check it themselves."""
        self.seen.add(key)
        return self.data.get(key, default)

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        *,
        required: bool = False,
        required_message: str = "is required",
    ) -> Any:
        """The value if it has type `kind` (an int is fine for a float, a bool never for a
        number); None, and a problem, otherwise."""
        self.seen.add(key)
        if key not in self.data:
            if required:
                self.problem(key, required_message)
            return None
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            self.problem(key, f"must be {kind_name(kinds)}, not a boolean")
            return None
        if not isinstance(value, kinds):
            self.problem(key, f"must be {kind_name(kinds)}, not {type(value).__name__}")
            return None
        return value

    def string(
        self,
        key: str,
        *,
        required: bool = False,
        check: Callable[[str], str | None] | None = None,
        multiline: bool = False,
    ) -> str | None:
        """A string on one line (unless `multiline`), passing `check` when given."""
        value = self.get(key, str, required=required)
        if value is None:
            return None
        if required and not value.strip():
            self.problem(key, "must not be empty")
            return None
        if "\r" in value or ("\n" in value and not multiline):
            self.problem(key, "must be on one line")
            return None
        if check is not None:
            message = check(value)
            if message:
                self.problem(key, message)
                return None
        return str(value)

    def number(
        self,
        key: str,
        *,
        minimum: float = 0,
        maximum: float | None = None,
        integer: bool = False,
    ) -> float | None:
        """A number (a whole number when `integer`) from `minimum` to `maximum`."""
        value = self.get(key, int if integer else float)
        if value is None:
            return None
        if not math.isfinite(value):
            # TOML allows nan and inf; neither is a usable timeout, rate or size.
            self.problem(key, "must be a finite number, not nan or inf")
            return None
        if value < minimum:
            self.problem(key, f"must be at least {minimum:g}")
            return None
        if maximum is not None and value > maximum:
            self.problem(key, f"must be at most {maximum:g}")
            return None
        return float(value)

    def boolean(self, key: str) -> bool | None:
        value = self.get(key, bool)
        return None if value is None else bool(value)

    def duration(
        self, key: str, *, minimum: float = 0, maximum: float | None = None
    ) -> float | None:
        """Seconds, written as a number of seconds or as `"45s"`, `"15m"`, `"36h"`, `"2d"`."""
        value = self.get(key, (str, float))
        if value is None:
            return None
        seconds: float
        if isinstance(value, str):
            found = _DURATION.fullmatch(value.strip())
            if found is None:
                self.problem(key, 'must be seconds or a duration such as "90m", "36h" or "2d"')
                return None
            seconds = float(found.group(1)) * _UNIT_SECONDS[found.group(2)]
        else:
            seconds = value
        if not math.isfinite(seconds) or seconds < minimum:
            self.problem(key, f"must be at least {minimum:g} seconds")
            return None
        if maximum is not None and seconds > maximum:
            self.problem(key, f"must be at most {maximum:g} seconds")
            return None
        return seconds


_DURATION = re.compile(r"(\d{1,6}(?:\.\d{1,3})?)\s*([smhd])")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def line_of(text: str, table: str, key: str) -> int | None:
    """Best-effort line of `key` inside `[table]` ("" for the top level); None if not found."""
    return _scan(text).key(table, key)


def located(problems: Iterable[Problem], path: Path) -> list[Problem]:
    """`problems` with the line of their `table.key` in the file at `path` filled in where
    missing (the key's line, else its table's header): for errors found after loading, such as
    a secret missing from the environment."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return list(problems)
    out: list[Problem] = []
    for problem in problems:
        if problem.line is None and problem.key and problem.file == path:
            table, _, key = problem.key.rpartition(".")
            line = TableReader(table, {}, path=path, text=text).line_of(key)
            problem = Problem(problem.message, file=problem.file, line=line, key=problem.key)
        out.append(problem)
    return out


class _Lines:
    """Where each `[header]` and each `key =` of a TOML text is (first occurrence wins)."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
    _ASSIGNMENT = re.compile(r"^\s*(\"?)([A-Za-z0-9_\-]+)\1\s*[.=]")

    def __init__(self, text: str) -> None:
        self.headers: dict[str, list[int]] = {}
        self.keys: dict[tuple[str, str], int] = {}
        current = ""
        for number, line in enumerate(text.splitlines(), start=1):
            found = self._HEADER.match(line)
            if found:
                current = re.sub(r"\s*\.\s*", ".", found.group(1)).replace('"', "")
                self.headers.setdefault(current, []).append(number)
                continue
            found = self._ASSIGNMENT.match(line)
            if found:
                self.keys.setdefault((current, found.group(2)), number)

    def key(self, table: str, key: str) -> int | None:
        return self.keys.get((table, key))

    def header(self, table: str, nth: int = 1) -> int | None:
        found = self.headers.get(table, [])
        return found[nth - 1] if 0 < nth <= len(found) else None


@functools.lru_cache(maxsize=8)
def _scan(text: str) -> _Lines:
    return _Lines(text)
