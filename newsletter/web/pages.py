"""The HTML pages of `newsletter serve`: unsubscribe, resubscribe, errors, the archive index.

Pages work without JavaScript (there is none) and without cookies: the token in the URL is
the only credential. Words come from `newsletter/locales_web/<language>.toml`, English filling
any gap. The stylesheet is inline and allowed by its hash in the Content-Security-Policy.
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import jinja2

from ..errors import ConfigError, Problem

__all__ = [
    "CSP",
    "FALLBACK_LANGUAGE",
    "ArchiveEntry",
    "PageTexts",
    "available_languages",
    "render_archive",
    "render_page",
    "texts_for",
]

FALLBACK_LANGUAGE = "en"

STYLE = """
:root{color-scheme:light dark;--fg:#1f2933;--bg:#f2f4f3;--card:#fff;--accent:#1b6b5a;
--muted:#475467}
@media (prefers-color-scheme:dark){:root{--fg:#e8ecea;--bg:#121816;--card:#1c2421;
--accent:#6fcfb5;--muted:#b6c2bd}}
*{box-sizing:border-box}
body{margin:0;font:1.125rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:34rem;margin:8vh auto;padding:2rem 1.5rem;background:var(--card);
border-radius:12px}
h1{font-size:1.6rem;line-height:1.25;margin:0 0 1rem}
p{margin:0 0 1.25rem}
.email{font-weight:600;overflow-wrap:anywhere}
form{margin:0 0 1.25rem}
button{font:inherit;font-weight:600;padding:.75rem 1.5rem;min-height:44px;border-radius:8px;
cursor:pointer;border:2px solid var(--accent);background:var(--accent);color:var(--card)}
button.secondary{background:transparent;color:var(--accent)}
button:focus-visible,a:focus-visible{outline:3px solid var(--fg);outline-offset:3px}
a{color:var(--accent)}
.muted{color:var(--muted);font-size:1rem}
nav{margin-top:2rem;font-size:.95rem;color:var(--muted)}
nav a{margin-right:.75rem}
ul.issues{padding-left:1.25rem}
ul.issues li{margin:.4rem 0}
label{display:block;font-weight:600;margin:0 0 .35rem}
input[type=email],input[type=text]{font:inherit;width:100%;padding:.6rem .75rem;min-height:44px;
border:2px solid var(--muted);border-radius:8px;background:var(--card);color:var(--fg);
margin:0 0 1rem}
input:focus-visible{outline:3px solid var(--fg);outline-offset:2px}
.check{display:flex;gap:.6rem;align-items:flex-start;font-weight:400;margin:0 0 1.25rem}
.check input{width:1.4rem;height:1.4rem;margin:.15rem 0 0;flex:none}
.error{color:#b42318;font-weight:600}
@media (prefers-color-scheme:dark){.error{color:#ff8a80}}
.hp{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode()
# No scripts, no frames, no foreign forms, no leaking the token through Referer.
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

_PAGE = """<!doctype html>
<html lang="{{ texts.language }}" dir="ltr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<meta name="referrer" content="same-origin">
<title>{{ title }}{% if name %} · {{ name }}{% endif %}</title>
<style>{{ style|safe }}</style>
</head>
<body>
<main>
<h1>{{ title }}</h1>
{% if lead %}<p>{{ lead }}</p>{% endif %}
{{ body|safe }}
{% if button %}
{% if note %}<p class="muted">{{ note }}</p>{% endif %}
<form method="post" action="{{ form_action }}">
<input type="hidden" name="action" value="{{ button.action }}">
{% for field, value in button.fields %}
<input type="hidden" name="{{ field }}" value="{{ value }}">
{% endfor %}
<button type="submit" class="{{ button.style }}">{{ button.label }}</button>
</form>
{% endif %}
{% if languages|length > 1 %}
<nav aria-label="{{ texts.words.choose_language }}">
{% for code, label, url in languages %}
{% if code == texts.language %}<span aria-current="true">{{ label }}</span>
{% else %}<a href="{{ url }}" hreflang="{{ code }}" lang="{{ code }}">{{ label }}</a>{% endif %}
{% endfor %}
</nav>
{% endif %}
</main>
</body>
</html>
"""

_ARCHIVE = """<!doctype html>
<html lang="{{ texts.language }}" dir="ltr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ style|safe }}</style>
</head>
<body>
<main>
<h1>{{ title }}</h1>
{% if entries %}
<ul class="issues">
{% for entry in entries %}<li><a href="{{ entry.href }}">{{ entry.title }}</a>
{% if entry.title != entry.name %}<span class="muted">({{ entry.name }})</span>{% endif %}</li>
{% endfor %}
</ul>
{% else %}
<p>{{ texts.words.archive_empty }}</p>
{% endif %}
</main>
</body>
</html>
"""

_environment = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
)
_page_template = _environment.from_string(_PAGE)
_archive_template = _environment.from_string(_ARCHIVE)


@dataclass(frozen=True)
class PageTexts:
    """The words for one language; `format` fills `{name}` and `{email}`."""

    language: str
    words: Mapping[str, str]

    def format(self, key: str, **values: str) -> str:
        return self.words[key].format_map(values)


def available_languages() -> list[str]:
    folder = resources.files("newsletter") / "locales_web"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


@lru_cache(maxsize=16)
def _read(code: str) -> dict[str, str] | None:
    resource = resources.files("newsletter") / "locales_web" / f"{code}.toml"
    if not resource.is_file():
        return None
    return {k: str(v) for k, v in tomllib.loads(resource.read_text(encoding="utf-8")).items()}


@lru_cache(maxsize=16)
def texts_for(locale: str) -> PageTexts:
    """Words for `locale` (`nl`, `nl_BE`, `pt-BR`); the language file serves its regions and
    English fills any missing word. ConfigError when there is no file for the language."""
    language = locale.replace("-", "_").split("_")[0].lower()
    words = dict(_read(FALLBACK_LANGUAGE) or {})
    found = _read(language)
    if found is None:
        raise ConfigError(
            [
                Problem(
                    f"no translation of the unsubscribe pages for '{locale}' (available: "
                    f"{', '.join(available_languages())}); add newsletter/locales_web/"
                    f"{language}.toml",
                    key="newsletter.locale",
                )
            ]
        )
    words.update(found)
    return PageTexts(language, words)


@dataclass(frozen=True)
class Button:
    """A one-button form: its `action` value, label, style and any further hidden fields."""

    action: str
    label: str
    style: str = ""
    fields: tuple[tuple[str, str], ...] = ()


def render_page(
    texts: PageTexts,
    *,
    name: str,
    title: str,
    lead: str = "",
    note: str = "",
    button: Button | None = None,
    form_action: str = "",
    languages: Sequence[tuple[str, str, str]] = (),
    body: str = "",
) -> str:
    """One small page: a heading, a paragraph, optionally a one-button form.

    `body` is HTML the caller built with every value escaped (the sign-up form), placed
    after the paragraph."""
    return _page_template.render(
        texts=texts,
        name=name,
        title=title,
        lead=lead,
        note=note,
        button=button,
        form_action=form_action,
        languages=languages,
        body=body,
        style=STYLE,
    )


@dataclass(frozen=True)
class ArchiveEntry:
    """One published issue: its folder name, its title, where its web version is."""

    name: str
    title: str
    href: str


def render_archive(texts: PageTexts, *, name: str, entries: Sequence[ArchiveEntry]) -> str:
    return _archive_template.render(
        texts=texts,
        title=texts.format("archive_title", name=name),
        entries=entries,
        style=STYLE,
    )
