"""Built-in words per locale (one TOML file each in `locales/`) and locale-aware dates (Babel).

A locale may name a register: `nl` is informal ("je"), `nl-formal` formal ("u"); the register's
file (`nl-formal.toml`) holds only the words that differ. A project overrides any word in its own
`locales/<language>.toml` (or `locales/nl-formal.toml`), without touching the installed package.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from babel import Locale, UnknownLocaleError
from babel.dates import format_date

from .errors import ConfigError, Problem

FALLBACK = "en"
REGISTERS = ("formal", "informal")
_REGISTER = re.compile(r"^(?P<base>.+?)[-_](?P<register>formal|informal)$")


@dataclass(frozen=True)
class Words:
    """The theme's built-in words for one locale; missing words fall back to English."""

    locale: str
    words: Mapping[str, str]

    def __getitem__(self, key: str) -> str:
        return self.words[key]

    def __getattr__(self, key: str) -> str:
        try:
            return self.words[key]
        except KeyError as err:
            raise AttributeError(key) from err

    @property
    def language(self) -> str:
        """The language tag for `<html lang>`: `nl`, `pt-BR`."""
        return self.locale.replace("_", "-")

    def date(self, value: dt.date) -> str:
        return format_date(value, format="long", locale=self.locale)


def split_register(locale: str) -> tuple[str, str | None]:
    """`nl-formal` → (`nl`, `formal`); `nl_BE` → (`nl_BE`, None)."""
    found = _REGISTER.match(locale)
    if found is None:
        return locale, None
    return found["base"], found["register"]


def available_locales() -> list[str]:
    folder = resources.files("newsletter") / "locales"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


@lru_cache(maxsize=16)
def _read(code: str) -> dict[str, str] | None:
    resource = resources.files("newsletter") / "locales" / f"{code}.toml"
    if not resource.is_file():
        return None
    return {k: str(v) for k, v in tomllib.loads(resource.read_text(encoding="utf-8")).items()}


def _read_project(path: Path, known: Mapping[str, str]) -> dict[str, str]:
    """A project's word overrides; ConfigError naming the file for bad TOML or unknown words."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([Problem(f"cannot be read as UTF-8 text ({err})", file=path)]) from err
    except tomllib.TOMLDecodeError as err:
        line = re.search(r"line (\d+)", str(err))
        raise ConfigError(
            [
                Problem(
                    f"is not valid TOML ({str(err).split(' (at')[0]}); write each word as "
                    'key = "text"',
                    file=path,
                    line=int(line.group(1)) if line else None,
                )
            ]
        ) from err
    problems: list[Problem] = []
    words: dict[str, str] = {}
    for key, value in data.items():
        if key not in known:
            suggestion = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean '{suggestion[0]}'?" if suggestion else ""
            problems.append(
                Problem(f"unknown word '{key}'{hint} (words: {', '.join(known)})", file=path)
            )
        elif not isinstance(value, str):
            problems.append(Problem(f"'{key}' must be text in quotes", file=path))
        else:
            words[key] = value
    if problems:
        raise ConfigError(problems)
    return words


def read_word_overrides(path: Path, known: Mapping[str, str]) -> dict[str, str]:
    """The words of a project's override file at `path`, each one of `known`'s keys;
    ConfigError naming the file for bad TOML, an unknown word or a value that is not text."""
    return _read_project(path, known)


def words_for(locale: str, project_root: Path | None = None) -> Words:
    """Words for `locale` (`nl`, `nl_BE`, `nl-formal`: the language file serves its regions),
    with the project's own `locales/` files on top when `project_root` is given."""
    base, register = split_register(locale)
    try:
        Locale.parse(base)
    except (UnknownLocaleError, ValueError) as err:
        raise ConfigError([Problem(f"unknown locale '{locale}'", key="newsletter.locale")]) from err
    language = base.split("_")[0]
    merged = dict(_read(FALLBACK) or {})
    found = _read(base) or _read(language)
    overrides: list[Path] = []
    if project_root is not None:
        folder = project_root / "locales"
        names = [language, base] + ([f"{language}-{register}"] if register else [])
        overrides = [folder / f"{name}.toml" for name in dict.fromkeys(names)]
        overrides = [path for path in overrides if path.is_file()]
    if found is None and not overrides:
        where = (
            str(project_root / "locales" / f"{language}.toml")
            if project_root is not None
            else f"locales/{language}.toml in the project"
        )
        raise ConfigError(
            [
                Problem(
                    f"no built-in words for '{locale}' (built in: "
                    f"{', '.join(available_locales())}); write them in {where}, "
                    "starting from the English words in the README",
                    key="newsletter.locale",
                )
            ]
        )
    merged.update(found or {})
    if register == "formal":
        merged.update(_read(f"{language}-formal") or {})
    for path in overrides:
        merged.update(_read_project(path, _read(FALLBACK) or {}))
    return Words(base, MappingProxyType(merged))
