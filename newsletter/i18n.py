"""Built-in words per locale (one TOML file each in `locales/`) and locale-aware dates (Babel)."""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType

from babel import Locale, UnknownLocaleError
from babel.dates import format_date

from .errors import ConfigError, Problem

FALLBACK = "en"


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


def available_locales() -> list[str]:
    folder = resources.files("newsletter") / "locales"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


@lru_cache(maxsize=16)
def _read(code: str) -> dict[str, str] | None:
    resource = resources.files("newsletter") / "locales" / f"{code}.toml"
    if not resource.is_file():
        return None
    return {k: str(v) for k, v in tomllib.loads(resource.read_text(encoding="utf-8")).items()}


@lru_cache(maxsize=16)
def words_for(locale: str) -> Words:
    """Words for `locale` (e.g. `nl`, `nl_BE`: the language file serves its regions)."""
    try:
        Locale.parse(locale)
    except (UnknownLocaleError, ValueError) as err:
        raise ConfigError([Problem(f"unknown locale '{locale}'", key="newsletter.locale")]) from err
    merged = dict(_read(FALLBACK) or {})
    language = locale.split("_")[0]
    found = _read(locale) or _read(language)
    if found is None:
        raise ConfigError(
            [
                Problem(
                    f"no translation of the built-in words for '{locale}' "
                    f"(available: {', '.join(available_locales())}); add "
                    f"newsletter/locales/{language}.toml",
                    key="newsletter.locale",
                )
            ]
        )
    merged.update(found)
    return Words(locale, MappingProxyType(merged))
