"""The HTML pages of `newsletter serve`: unsubscribe, resubscribe, errors, the archive index.

Pages work without JavaScript (there is none) and without cookies: the token in the URL is
the only credential. Words come from `newsletter/locales_web/<language>.toml`, English filling
any gap; a formal register (`locale = "nl"` with `register = "formal"`) adds
`<language>-formal.toml`; a project's own `locales_web/<language>.toml` (and
`<language>-formal.toml`) overrides any word without touching the installed package.

Pages wear the newsletter's brand (`Brand`: its logo, brand, text and background colours from
newsletter.toml), with the colours darkened or lightened where needed so that text and buttons
keep a WCAG AA contrast (4.5:1) in light and dark mode. The stylesheet is inline and allowed by
its hash in the Content-Security-Policy (`content_security_policy`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import jinja2

from ..config import Settings
from ..errors import ConfigError, Problem
from ..i18n import read_word_overrides, split_register

__all__ = [
    "BRAND_STYLE_PATH",
    "CSP",
    "EMAIL_HTML_CSP",
    "FALLBACK_LANGUAGE",
    "LOGO_PATH",
    "ArchiveEntry",
    "Brand",
    "PageTexts",
    "available_languages",
    "brand_from_settings",
    "content_security_policy",
    "contrast",
    "page_style",
    "render_archive",
    "render_page",
    "texts_for",
    "texts_for_settings",
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
header.brand{margin:0 0 1.5rem}
header.brand img{display:block;max-width:100%;height:auto}
header.brand img.logo-dark{display:none}
@media (prefers-color-scheme:dark){header.brand img.logo-dark{display:block}
header.brand img.logo-light:not(:only-child){display:none}}
label{display:block;font-weight:600;margin:0 0 .35rem}
input:not([type=hidden]):not([type=checkbox]),textarea,select{display:block;width:100%;
font:inherit;padding:.6rem .75rem;margin:0 0 1rem;border:2px solid var(--muted);
border-radius:8px;color:var(--fg);background:var(--card)}
input[type=checkbox]{width:1.25rem;height:1.25rem;accent-color:var(--accent)}
input:focus-visible,textarea:focus-visible,select:focus-visible{outline:3px solid var(--accent);
outline-offset:2px}
.error{color:var(--fg);border-left:4px solid var(--accent);padding-left:.75rem}
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
LOGO_PATH = "/_brand/logo"  # + the file's suffix; served by the app from the project
BRAND_STYLE_PATH = "/_brand/style.css"  # the brand's colours, served by the app


def _rgb(colour: str) -> tuple[float, float, float]:
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return tuple(int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(max(0.0, min(1.0, c)) * 255):02x}" for c in rgb)


def _luminance(colour: str) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(first: str, second: str) -> float:
    """The WCAG 2 contrast ratio of two `#rrggbb` colours (1 to 21)."""
    light, dark = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def _readable(colour: str, against: str, ratio: float = 4.5) -> str:
    """`colour`, or the nearest shade of it (mixed towards black or white, whichever moves away
    from `against`) with at least `ratio` contrast against `against`."""
    if contrast(colour, against) >= ratio:
        return _hex(_rgb(colour))
    target = 0.0 if _luminance(against) > 0.18 else 1.0
    base = _rgb(colour)
    for step in range(1, 101):
        mix = step / 100
        shade = _hex(tuple(c + (target - c) * mix for c in base))  # type: ignore[arg-type]
        if contrast(shade, against) >= ratio:
            return shade
    return _hex((target, target, target))


@dataclass(frozen=True)
class Brand:
    """How the pages look: the newsletter's colours and logo (a URL the page can load)."""

    accent: str = "#1b6b5a"
    text: str = "#1f2933"
    background: str = "#f2f4f3"
    dark_mode: bool = True
    logo_url: str | None = None
    logo_dark_url: str | None = None
    logo_width: int = 160
    # Where the page loads `page_style(brand)` from (None: the default colours only).
    style_url: str | None = None


_CARD = "#ffffff"
_DARK = {"fg": "#e8ecea", "bg": "#121816", "card": "#1c2421", "muted": "#b6c2bd"}


def page_style(brand: Brand | None = None) -> str:
    """The brand's stylesheet (served at BRAND_STYLE_PATH, after the inline STYLE): its colours,
    each made readable on its background, in light and (unless the brand is light-only) dark."""
    brand = brand or Brand()
    light = {
        "fg": _readable(brand.text, _CARD, 7.0),
        "bg": _hex(_rgb(brand.background)),
        "card": _CARD,
        "accent": _readable(brand.accent, _CARD),
        "muted": _readable("#475467", _CARD),
    }
    scheme = "light dark" if brand.dark_mode else "light"
    variables = ";".join(f"--{k}:{v}" for k, v in light.items())
    style = f":root{{color-scheme:{scheme};{variables}}}\n"
    if brand.dark_mode:
        dark = {**_DARK, "accent": _readable(brand.accent, _DARK["card"])}
        variables = ";".join(f"--{k}:{v}" for k, v in dark.items())
        style += f"@media (prefers-color-scheme:dark){{:root{{{variables}}}}}\n"
    else:
        style += "@media (prefers-color-scheme:dark){:root{" + variables + "}}\n"
    return style


def _origin(url: str | None) -> str | None:
    if url is None or not url.startswith("https://"):
        return None
    parts = urlsplit(url)
    return f"https://{parts.netloc}"


_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode()


def content_security_policy(brand: Brand | None = None) -> str:
    """The CSP of every page: no scripts, no frames, no foreign forms; the inline stylesheet by
    its hash and the brand's from this site; images from this site (the logo), or the logo's
    own https host when it is a URL."""
    images = ["'self'"]
    for url in (brand.logo_url, brand.logo_dark_url) if brand else ():
        origin = _origin(url)
        if origin and origin not in images:
            images.append(origin)
    return (
        f"default-src 'none'; style-src 'self' 'sha256-{_STYLE_HASH}'; "
        f"img-src {' '.join(images)}; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    )


# The policy of every page whose logo (if any) is a file of the project.
CSP = content_security_policy()
# The policy for an issue's web version (the email's HTML): inline styles, images from anywhere
# https, still no scripts, forms or frames. A route serving email HTML sets it itself, else the
# app's pages policy (added to every response without one) would block its inline styles.
EMAIL_HTML_CSP = (
    "default-src 'none'; img-src 'self' https: data:; style-src 'unsafe-inline' https:; "
    "font-src https: data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


def _logo_url(settings: Settings, reference: str | None, root_path: str) -> str | None:
    """Where the page loads a configured logo from: its https URL, or the app's own route
    for a file inside the project (None when there is no such file)."""
    if not reference:
        return None
    if reference.startswith("https://"):
        return reference
    path = settings.root / reference
    if not path.resolve().is_relative_to(settings.root.resolve()) or not path.is_file():
        return None
    return f"{root_path.rstrip('/')}{LOGO_PATH}{path.suffix.lower()}"


def brand_from_settings(settings: Settings, root_path: str = "") -> Brand:
    """The brand of newsletter.toml: the colours and logo the email theme uses."""
    dark = _logo_url(settings, settings.logo_dark, root_path)
    return Brand(
        style_url=f"{root_path.rstrip('/')}{BRAND_STYLE_PATH}",
        accent=settings.brand_color,
        text=settings.text_color,
        background=settings.background_color,
        dark_mode=settings.color_scheme == "light dark",
        logo_url=_logo_url(settings, settings.logo, root_path),
        # A light-only design shows the light logo in dark mode too.
        logo_dark_url=dark.replace(LOGO_PATH, LOGO_PATH + "-dark")
        if dark and settings.color_scheme == "light dark"
        else None,
        logo_width=min(settings.logo_width, 320),
    )


_PAGE = """<!doctype html>
<html lang="{{ texts.language }}" dir="ltr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<meta name="referrer" content="no-referrer">
<title>{{ title }}{% if name %} · {{ name }}{% endif %}</title>
<style>{{ style|safe }}</style>
{% if brand and brand.style_url %}<link rel="stylesheet" href="{{ brand.style_url }}">{% endif %}
{% if brand and brand.logo_url %}<link rel="icon" href="{{ brand.logo_url }}">{% endif %}
</head>
<body>
<main>
{% include "brand" %}
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
{% if feed_href %}
<link rel="alternate" type="application/atom+xml" href="{{ feed_href }}" title="{{ title }}">
{% endif %}
<style>{{ style|safe }}</style>
{% if brand and brand.style_url %}<link rel="stylesheet" href="{{ brand.style_url }}">{% endif %}
{% if brand and brand.logo_url %}<link rel="icon" href="{{ brand.logo_url }}">{% endif %}
</head>
<body>
<main>
{% include "brand" %}
<h1>{{ title }}</h1>
{% if entries %}
<ul class="issues">
{% for entry in entries %}
<li>{% if entry.date %}<time class="muted" datetime="{{ entry.datetime }}">{{ entry.date }}</time>
{% endif %}<a href="{{ entry.href }}">{{ entry.title }}</a>
{% if entry.title != entry.name and not entry.date %}<span class="muted">({{ entry.name }})</span>
{% endif %}</li>
{% endfor %}
</ul>
{% else %}
<p>{{ texts.words.archive_empty }}</p>
{% endif %}
{% if feed_href %}
<p class="muted"><a href="{{ feed_href }}">{{ texts.words.archive_feed }}</a></p>
{% endif %}
</main>
</body>
</html>
"""

_BRAND = """{% if brand and brand.logo_url %}
<header class="brand">
<img class="logo-light" src="{{ brand.logo_url }}" alt="{{ name }}"
 width="{{ brand.logo_width }}">
{% if brand.logo_dark_url %}
<img class="logo-dark" src="{{ brand.logo_dark_url }}" alt="{{ name }}"
 width="{{ brand.logo_width }}">
{% endif %}
</header>
{% endif %}
"""

_environment = jinja2.Environment(
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    loader=jinja2.DictLoader({"brand": _BRAND}),
)
_page_template = _environment.from_string(_PAGE)
_archive_template = _environment.from_string(_ARCHIVE)


@dataclass(frozen=True)
class PageTexts:
    """The words for one language; `format` fills `{name}` and `{email}`."""

    language: str
    words: Mapping[str, str]
    # The look of the pages rendered with these words (None: the default colours, no logo).
    brand: Brand | None = None
    # "formal" or "informal" when the project names a register; kept across language links.
    register: str | None = None

    def format(self, key: str, **values: str) -> str:
        return self.words[key].format_map(values)


def available_languages() -> list[str]:
    """The languages with built-in words (`en`, `nl`); register files are not languages."""
    folder = resources.files("newsletter") / "locales_web"
    names = (p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))
    return sorted(n for n in names if split_register(n)[1] is None)


@lru_cache(maxsize=16)
def _read(code: str) -> dict[str, str] | None:
    resource = resources.files("newsletter") / "locales_web" / f"{code}.toml"
    if not resource.is_file():
        return None
    # Tables ([subscribe], [confirm]) are the sign-up's words (`signup_words`), not the pages'.
    words = tomllib.loads(resource.read_text(encoding="utf-8"))
    return {k: v for k, v in words.items() if isinstance(v, str)}


@lru_cache(maxsize=64)
def texts_for(locale: str, project_root: Path | None = None) -> PageTexts:
    """Words for `locale` (`nl`, `nl_BE`, `pt-BR`, `nl-formal`); the language file serves its
    regions and English fills any missing word. A formal register adds the language's
    `-formal` file. With `project_root`, the project's `locales_web/<language>.toml` and
    `locales_web/<language>-<register>.toml` override words (read once per process: restart
    `serve` after editing them). ConfigError when there are no words for the language, or an
    override file is not valid (naming the file)."""
    base, register = split_register(locale)
    language = base.replace("-", "_").split("_")[0].lower()
    english = _read(FALLBACK_LANGUAGE) or {}
    words = dict(english)
    found = _read(language)
    overrides: list[Path] = []
    if project_root is not None:
        names = [language] + ([f"{language}-{register}"] if register else [])
        overrides = [project_root / "locales_web" / f"{name}.toml" for name in names]
        overrides = [path for path in overrides if path.is_file()]
    if found is None and not overrides:
        raise ConfigError(
            [
                Problem(
                    f"no translation of the web pages for '{locale}' (available: "
                    f"{', '.join(available_languages())}); write them in locales_web/"
                    f"{language}.toml in the project, starting from the English words",
                    key="newsletter.locale",
                )
            ]
        )
    words.update(found or {})
    if register == "formal":
        words.update(_read(f"{language}-formal") or {})
    for path in overrides:
        words.update(read_word_overrides(path, english))
    return PageTexts(language, words, register=register)


def texts_for_settings(
    settings: Settings, language: str | None = None, *, root_path: str = ""
) -> PageTexts:
    """The words and brand of this newsletter's pages: its locale and register (or `language`
    in the same register), the project's overrides, its logo and colours. What every page of
    `serve` renders with; `root_path` is `[serve] root_path` (where the brand's files are)."""
    base, register = split_register(settings.locale)
    locale = language or base
    if register:
        locale = f"{locale}-{register}"
    texts = texts_for(locale, settings.root)
    return dataclasses.replace(texts, brand=brand_from_settings(settings, root_path))


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
    brand: Brand | None = None,
    body: str = "",
) -> str:
    """One small page: a heading, a paragraph, optionally a one-button form. It wears `brand`,
    else the brand of `texts` (see `texts_for_settings`), else the default colours.

    `body` is HTML the caller built with every value escaped (the sign-up form), placed
    after the paragraph."""
    return _page_template.render(
        brand=brand or texts.brand,
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
    """One published issue: its name, its title (subject), where its web version is, and the
    day it was sent (`date` as shown, `datetime` as ISO 8601)."""

    name: str
    title: str
    href: str
    date: str = ""
    datetime: str = ""


def render_archive(
    texts: PageTexts,
    *,
    name: str,
    entries: Sequence[ArchiveEntry],
    feed_href: str = "",
    brand: Brand | None = None,
) -> str:
    """The archive's index: its issues, newest first, and a link to its feed."""
    return _archive_template.render(
        brand=brand or texts.brand,
        name=name,
        texts=texts,
        title=texts.format("archive_title", name=name),
        entries=entries,
        feed_href=feed_href,
        style=STYLE,
    )
