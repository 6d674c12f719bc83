"""The words of the sign-up form, its confirmation page and its mails, per language.

They live in `newsletter/locales_web/<language>.toml` under `[subscribe]` and `[confirm]`; a
language with registers puts the formal words in `[subscribe.formal]` / `[confirm.formal]`
(Dutch: informal "je" by default, formal "u" for `register = "formal"`). English fills gaps.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from .i18n import split_register

__all__ = ["SignupWords", "signup_words"]

_FALLBACK = "en"


@dataclass(frozen=True)
class SignupWords:
    """The words of one language and register; `get` fills `{name}`, `{email}`, `{days}`."""

    language: str
    subscribe: Mapping[str, str]
    confirm: Mapping[str, str]

    def sub(self, key: str, **values: object) -> str:
        return self.subscribe[key].format_map(values)

    def conf(self, key: str, **values: object) -> str:
        return self.confirm[key].format_map(values)


@lru_cache(maxsize=16)
def _tables(language: str) -> dict[str, Any] | None:
    resource = resources.files("newsletter") / "locales_web" / f"{language}.toml"
    if not resource.is_file():
        return None
    return tomllib.loads(resource.read_text(encoding="utf-8"))


def _words(data: Mapping[str, Any] | None, table: str, register: str | None) -> dict[str, str]:
    found = (data or {}).get(table)
    if not isinstance(found, dict):
        return {}
    words = {k: str(v) for k, v in found.items() if isinstance(v, str)}
    chosen = found.get(register) if register else None
    if isinstance(chosen, dict):
        words.update({k: str(v) for k, v in chosen.items() if isinstance(v, str)})
    return words


@lru_cache(maxsize=32)
def signup_words(locale: str) -> SignupWords:
    """The words for `locale` (`nl`, `nl-formal`, `nl_BE`); English for a language without a
    file or a word."""
    base, register = split_register(locale)
    language = base.replace("-", "_").split("_")[0].lower()
    english = _tables(_FALLBACK)
    own = _tables(language)
    if own is None:
        language, own = _FALLBACK, english
    subscribe = {**_words(english, "subscribe", None), **_words(own, "subscribe", register)}
    confirm = {**_words(english, "confirm", None), **_words(own, "confirm", register)}
    return SignupWords(language, subscribe, confirm)
