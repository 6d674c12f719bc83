"""The pages of `newsletter serve` in the newsletter's brand and register: words (Dutch formal
and informal, a project's override file), colours and logo, strict headers on every response,
and an accessibility check of every page in headless Chromium (light and dark)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from newsletter.audience import SubscriberStore, make_token
from newsletter.config import Settings, load_settings
from newsletter.delivery.mime import list_identifier
from newsletter.errors import ConfigError
from newsletter.tokens import make_opaque_token
from newsletter.web import ServeSettings, WebServer
from newsletter.web.pages import (
    Brand,
    brand_from_settings,
    contrast,
    page_style,
    render_page,
    texts_for,
    texts_for_settings,
)
from tests.browser import launch_chromium, require_chromium
from tests.test_web import running

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

SECRET = b"pages-test-secret"
DAY = 86400


def configure(project: Path, **newsletter: str) -> Settings:
    """The project's settings with keys of `[newsletter]` replaced or added."""
    path = project / "newsletter.toml"
    text = path.read_text(encoding="utf-8")
    for key, value in newsletter.items():
        line = f'{key} = "{value}"'
        text, count = re.subn(rf"(?m)^{key} = .*$", line, text, count=1)
        if not count:
            text = text.replace("[newsletter]\n", f"[newsletter]\n{line}\n", 1)
    path.write_text(text, encoding="utf-8")
    return load_settings(project)


@pytest.fixture
def served(project: Path) -> Iterator[tuple[WebServer, Settings, SubscriberStore]]:
    settings = load_settings(project)
    with SubscriberStore(settings.database_path) as store:
        store.add("ann@example.org", "Ann")
        server = WebServer(
            settings, secret=SECRET, serve_settings=ServeSettings(port=0), store=store
        )
        with running(server):
            yield server, settings, store


def _serve(settings: Settings, store: SubscriberStore) -> WebServer:
    return WebServer(settings, secret=SECRET, serve_settings=ServeSettings(port=0), store=store)


def _opaque(settings: Settings, email: str, *, age_days: int = 0) -> str:
    """An opaque token as a message made `age_days` ago carries."""
    when = time.time() - age_days * DAY
    return make_opaque_token(SECRET, list_identifier(settings), email.casefold(), now=when)


# --- words: register and overrides --------------------------------------------------------------


def test_dutch_formal_and_informal_words() -> None:
    informal, formal = texts_for("nl"), texts_for("nl-formal")
    assert informal.words["done_title"] == "Je bent afgemeld"
    assert formal.words["done_title"] == "U bent afgemeld"
    assert "uw e-mail" in formal.words["cross_site_lead"]
    assert " je " in informal.words["cross_site_lead"]
    # Words the register does not change come from nl.toml, not from English.
    assert formal.words["confirm_button"] == informal.words["confirm_button"] == "Afmelden"
    for key, word in formal.words.items():
        assert not re.search(r"\b(je|jij|jouw)\b", word, re.IGNORECASE), (key, word)


def test_a_formal_dutch_newsletter_says_u_on_its_pages(project: Path) -> None:
    settings = configure(project, locale="nl", register="formal")
    with SubscriberStore(settings.database_path) as store:
        store.add("ann@example.org")
        with running(_serve(settings, store)) as server:
            url = f"{server.url}unsubscribe?token={_opaque(settings, 'ann@example.org')}"
            done = httpx.post(url, data={"action": "unsubscribe"})
            assert "U bent afgemeld" in done.text and "Je bent" not in done.text
            assert '<html lang="nl"' in done.text
            # The language switch keeps the register: English, then back to formal Dutch.
            english = httpx.get(url + "&lang=en")
            assert "You are already unsubscribed" in english.text
            dutch = httpx.get(url + "&lang=nl")
            assert "U was al afgemeld" in dutch.text


def test_a_project_override_file_changes_a_text(project: Path) -> None:
    folder = project / "locales_web"
    folder.mkdir()
    (folder / "nl.toml").write_text(
        'done_title = "Tot ziens!"\nconfirm_button = "Ja, afmelden"\n', encoding="utf-8"
    )
    (folder / "nl-formal.toml").write_text('done_lead = "{email} is van de lijst."\n')
    settings = configure(project, locale="nl", register="formal")
    texts = texts_for_settings(settings)
    assert texts.words["done_title"] == "Tot ziens!"  # the project's word, over the register's
    assert texts.words["confirm_button"] == "Ja, afmelden"
    assert texts.format("done_lead", email="a@b.nl", name="x") == "a@b.nl is van de lijst."
    # The installed package is untouched: another project still has the built-in words.
    assert texts_for("nl-formal").words["done_title"] == "U bent afgemeld"
    with SubscriberStore(settings.database_path) as store:
        store.add("ann@example.org")
        with running(_serve(settings, store)) as server:
            url = f"{server.url}unsubscribe?token={_opaque(settings, 'ann@example.org')}"
            assert "Ja, afmelden" in httpx.get(url).text
            assert "Tot ziens!" in httpx.post(url, data={"action": "unsubscribe"}).text


def test_a_bad_override_file_is_refused_naming_it(project: Path) -> None:
    folder = project / "locales_web"
    folder.mkdir()
    (folder / "en.toml").write_text('don_title = "Bye"\n', encoding="utf-8")
    settings = load_settings(project)
    with pytest.raises(ConfigError) as caught:
        texts_for_settings(settings)
    message = str(caught.value.problems[0])
    assert "en.toml" in message and "unknown word 'don_title'" in message
    assert "did you mean 'done_title'" in message
    with pytest.raises(ConfigError):
        WebServer(settings, secret=SECRET, serve_settings=ServeSettings(port=0))


# --- brand --------------------------------------------------------------------------------------


@pytest.mark.parametrize("colour", ["#1b6b5a", "#ffd400", "#7fdbff", "#000000", "#fff"])
def test_brand_colours_are_kept_or_made_readable(colour: str) -> None:
    style = page_style(Brand(accent=colour, text="#999999"))
    light, dark = re.findall(r"--accent:(#[0-9a-f]{6})", style)
    assert contrast(light, "#ffffff") >= 4.5
    assert contrast(dark, "#1c2421") >= 4.5
    fg = re.search(r"--fg:(#[0-9a-f]{6})", style)
    assert fg is not None and contrast(fg.group(1), "#ffffff") >= 7
    if colour == "#1b6b5a":  # already readable: used as it is
        assert light == colour


def test_pages_wear_the_logo_and_colours_of_newsletter_toml(project: Path) -> None:
    settings = configure(project, brand_color="#c2185b")
    with SubscriberStore(settings.database_path) as store:
        store.add("ann@example.org")
        with running(_serve(settings, store)) as server:
            page = httpx.get(
                f"{server.url}unsubscribe?token={_opaque(settings, 'ann@example.org')}"
            )
            assert '<img class="logo-light" src="/_brand/logo.png" alt="Riverside Roots"' in (
                page.text
            )
            style = httpx.get(f"{server.url}_brand/style.css")
            assert style.headers["content-type"].startswith("text/css")
            assert "--accent:#c2185b" in style.text
            logo = httpx.get(f"{server.url}_brand/logo.png")
            assert logo.content == (project / "images" / "logo.png").read_bytes()
            assert logo.headers["content-type"] == "image/png"
            for path in ("_brand/newsletter.toml", "_brand/..%2fnewsletter.toml", "_brand/x.png"):
                assert httpx.get(f"{server.url}{path}").status_code == 404
            assert httpx.get(f"{server.url}favicon.ico").content == logo.content


def test_a_logo_outside_the_project_is_not_served(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes((project / "images" / "logo.png").read_bytes())
    (project / "images" / "link.png").symlink_to(outside)
    settings = configure(project, logo="images/link.png")
    with SubscriberStore(settings.database_path) as store, running(_serve(settings, store)) as s:
        assert "_brand/logo" not in httpx.get(f"{s.url}nothing").text
        assert httpx.get(f"{s.url}_brand/logo.png").status_code == 404
        assert httpx.get(f"{s.url}favicon.ico").status_code == 204


def test_render_page_keeps_its_signature_and_takes_a_brand() -> None:
    texts = texts_for("en")
    plain = render_page(texts, name="N", title="T")
    assert "<img" not in plain and "_brand/style.css" not in plain
    branded = render_page(
        texts, name="N", title="T", brand=Brand(logo_url="/_brand/logo.png", style_url="/s.css")
    )
    assert '<img class="logo-light" src="/_brand/logo.png" alt="N"' in branded
    assert '<link rel="stylesheet" href="/s.css">' in branded


# --- headers on every response ------------------------------------------------------------------


def _archive(settings: Settings) -> None:
    folder = settings.dist_dir / "2026-11"
    folder.mkdir(parents=True)
    (folder / "web.html").write_text("<html><head><title>November</title></head><body></body>")
    (folder / "garden.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def test_every_response_carries_the_strict_headers(
    served: tuple[WebServer, Settings, SubscriberStore],
) -> None:
    server, settings, store = served
    _archive(settings)
    store.add("gone@example.org")
    gone = _opaque(settings, "gone@example.org")
    store.remove("gone@example.org")
    base = server.url
    token = _opaque(settings, "ann@example.org")
    requests = {
        "confirm page": ("GET", f"unsubscribe?token={token}"),
        "old-form link": ("GET", f"unsubscribe?token={make_token(SECRET, 'ann@example.org')}"),
        "one-click": ("POST", f"unsubscribe?token={token}"),
        "forged": ("GET", f"unsubscribe?token={token[:-3]}abc"),
        "expired": (
            "GET",
            f"unsubscribe?token={_opaque(settings, 'ann@example.org', age_days=1200)}",
        ),
        "removed": ("GET", f"unsubscribe?token={gone}"),
        "not found": ("GET", "no/such/page"),
        "wrong method": ("PUT", "unsubscribe"),
        "archive": ("GET", ""),
        "web version": ("GET", "2026-11/web.html"),
        "image": ("GET", "2026-11/garden.jpg"),
        "health": ("GET", "healthz"),
        "brand style": ("GET", "_brand/style.css"),
        "logo": ("GET", "_brand/logo.png"),
        "favicon": ("GET", "favicon.ico"),
    }
    for what, (method, path) in requests.items():
        data = {"List-Unsubscribe": "One-Click"} if method == "POST" else None
        response = httpx.request(method, base + path, data=data)
        headers = response.headers
        assert headers["referrer-policy"] == "no-referrer", what
        assert headers["x-content-type-options"] == "nosniff", what
        assert headers["x-frame-options"] == "DENY", what
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy, what
        assert "script-src" not in policy and "unsafe-eval" not in policy, what
        assert "server" not in headers, what
        if headers.get("content-type", "").startswith("text/html") and what != "web version":
            assert "img-src 'self';" in policy and "style-src 'self' 'sha256-" in policy, what
            assert "<script" not in response.text, what


# --- accessibility in Chromium ------------------------------------------------------------------

# Runs in the page (scripts of the page itself are off): what an accessibility checker looks
# at, for each element with text of its own: its contrast with the colour actually behind it.
_AUDIT = """() => {
  const problems = [];
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(',').map(Number); return {r: p[0], g: p[1], b: p[2],
    a: p.length > 3 ? p[3] : 1}; };
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.04045 ? v / 12.92
    : Math.pow((v + 0.055) / 1.055, 2.4); }; return 0.2126 * f(c.r) + 0.7152 * f(c.g)
    + 0.0722 * f(c.b); };
  const ratio = (a, b) => { const x = lum(a), y = lum(b);
    return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  const behind = (el) => { for (let e = el; e; e = e.parentElement) {
    const c = parse(getComputedStyle(e).backgroundColor); if (c && c.a > 0) return c; }
    return {r: 255, g: 255, b: 255, a: 1}; };
  if (!document.documentElement.lang) problems.push('no lang');
  if (!document.title.trim()) problems.push('no title');
  if (document.querySelectorAll('h1').length !== 1) problems.push('not one h1');
  for (const img of document.images) if (!img.hasAttribute('alt')) problems.push('img alt');
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    if (!el.labels.length && !el.getAttribute('aria-label')) problems.push('unlabelled field');
  }
  for (const el of document.querySelectorAll('button, a')) {
    if (!el.textContent.trim() && !el.getAttribute('aria-label')) problems.push('no name');
  }
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.offsetParent === null && getComputedStyle(el).position !== 'fixed') continue;
    const style = getComputedStyle(el);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const large = size >= 24 || (bold && size >= 18.66);
    const r = ratio(parse(style.color), behind(el));
    if (r < (large ? 3 : 4.5)) problems.push(`contrast ${r.toFixed(2)}: ${el.tagName}`);
  }
  return problems;
}"""

_FOCUS = """() => { const e = document.activeElement; if (!e || e === document.body) return null;
  const s = getComputedStyle(e); return {tag: e.tagName, style: s.outlineStyle,
  width: parseFloat(s.outlineWidth), height: e.getBoundingClientRect().height}; }"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_chromium()
    yield from launch_chromium()


def _audit(page: Page, what: str) -> None:
    problems = page.evaluate(_AUDIT)
    assert problems == [], what
    # Every control is reached by Tab, shows a clear focus ring, and is big enough to touch.
    for _ in range(page.locator("a, button").count()):
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUS)
        assert focused is not None, what
        assert focused["style"] != "none" and focused["width"] >= 2, (what, focused)
        if focused["tag"] == "BUTTON":
            assert focused["height"] >= 44, (what, focused)


def _collect(messages: list[str]) -> Callable[[ConsoleMessage], None]:
    return lambda message: messages.append(message.text)


@pytest.mark.browser
@pytest.mark.parametrize("brand_color", ["#1b6b5a", "#ffd400"])
def test_every_page_passes_an_accessibility_check_in_chromium(
    browser: Browser, project: Path, brand_color: str
) -> None:
    settings = configure(project, brand_color=brand_color)
    _archive(settings)
    with SubscriberStore(settings.database_path) as store:
        store.add("ann@example.org")
        store.add("bob@example.org")
        store.add("cat@example.org")
        store.set_status("cat@example.org", "complained", source="test")
        with running(_serve(settings, store)) as server:
            token = _opaque(settings, "ann@example.org")
            pages = {
                "confirm": f"unsubscribe?token={token}",
                "forged": f"unsubscribe?token={token[:-3]}abc",
                "blocked": f"unsubscribe?token={_opaque(settings, 'cat@example.org')}",
                "not found": "no/such/page",
                "archive": "",
            }
            for scheme in ("light", "dark"):
                context = browser.new_context(java_script_enabled=False, color_scheme=scheme)
                page = context.new_page()
                messages: list[str] = []
                page.on("console", _collect(messages))
                for what, path in pages.items():
                    page.goto(server.url + path)
                    _audit(page, f"{what} ({scheme})")
                # Pages reached through their buttons: done, the second resubscribe step.
                page.goto(server.url + f"unsubscribe?token={_opaque(settings, 'bob@example.org')}")
                page.get_by_role("button").first.click()
                page.wait_for_load_state()
                _audit(page, f"done ({scheme})")
                page.get_by_role("button").first.click()
                page.wait_for_load_state()
                assert page.locator("h1").count() == 1
                _audit(page, f"resubscribe ({scheme})")
                page.get_by_role("button").first.click()  # subscribed again
                page.wait_for_load_state()
                _audit(page, f"resubscribed ({scheme})")
                # The logo loaded (CSP and route), the brand's stylesheet applied, nothing blocked.
                page.goto(server.url + f"unsubscribe?token={token}")
                assert page.evaluate("document.images[0].naturalWidth") > 0
                accent = page.evaluate(
                    "getComputedStyle(document.body).getPropertyValue('--accent')"
                )
                light, dark = re.findall(
                    r"--accent:(#[0-9a-f]{6})", page_style(brand_from_settings(settings))
                )
                assert accent.strip() == (light if scheme == "light" else dark)
                # (The forged and not-found pages log their own 400 and 404: expected.)
                blocked = [m for m in messages if "Refused" in m or "Security Policy" in m]
                assert blocked == [], scheme
                assert not [m for m in messages if "/_brand/" in m or "favicon" in m], scheme
                context.close()
