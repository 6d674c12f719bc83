"""`newsletter serve` on a real uvicorn server on loopback: one-click POSTs, the confirm page in
headless Chromium, forged and replayed tokens, removed subscribers, 1,000 concurrent POSTs."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import html
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from newsletter.audience import SubscriberStatus, SubscriberStore, make_token
from newsletter.config import Settings, UnsubscribeSettings
from newsletter.config_reader import TableReader
from newsletter.web import (
    ServeError,
    ServeSettings,
    WebEvent,
    WebServer,
    parse_form,
    parse_serve_table,
    serve,
    unsubscribe_path,
)
from tests.browser import launch_chromium, require_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser

SECRET = b"web-test-secret"
WAIT_SECONDS = 5.0
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@contextmanager
def running(server: WebServer) -> Iterator[WebServer]:
    """Serve in a thread; stop and join it afterwards (failing if it does not stop)."""
    server.bind()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.ready.wait(WAIT_SECONDS), "the web server did not start"
    try:
        yield server
    finally:
        server.stop()
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive(), "the web server did not stop"


@dataclasses.dataclass
class Site:
    server: WebServer
    store: SubscriberStore
    events: list[WebEvent]
    settings: Settings

    def origin(self) -> dict[str, str]:
        """The Origin header a browser sends with a form POST from one of the site's pages."""
        return {"Origin": self.server.url.rstrip("/")}

    def resubscribe(self, email: str, **headers: str) -> httpx.Response:
        """Both steps of subscribing again, as the pages' forms post them."""
        url = self.url(email)
        first = httpx.post(url, data={"action": "resubscribe"}, headers=headers or self.origin())
        found = re.search(r'name="step" value="([^"]+)"', first.text)
        if found is None:
            return first
        data = {"action": "resubscribe-confirm", "step": html.unescape(found.group(1))}
        return httpx.post(url, data=data, headers=headers or self.origin())

    def url(self, email: str | None = None, token: str | None = None, **query: str) -> str:
        if token is None:
            assert email is not None
            token = make_token(SECRET, email)
        params = "&".join(f"{k}={v}" for k, v in {"token": token, **query}.items())
        return f"{self.server.url.rstrip('/')}/unsubscribe?{params}"


@pytest.fixture
def store(settings: Settings) -> Iterator[SubscriberStore]:
    with SubscriberStore(settings.database_path) as opened:
        opened.add("ann@example.org", "Ann Example")
        opened.add("bob@example.org", "Bob")
        yield opened


@pytest.fixture
def site(settings: Settings, store: SubscriberStore) -> Iterator[Site]:
    events: list[WebEvent] = []
    server = WebServer(
        settings,
        secret=SECRET,
        serve_settings=ServeSettings(port=0),
        store=store,
        on_event=events.append,
    )
    with running(server):
        yield Site(server, store, events, settings)


def status_of(store: SubscriberStore, email: str) -> str | None:
    found = store.get(email)
    return None if found is None else str(found.status)


# --- one-click (RFC 8058) -----------------------------------------------------------------------


def test_one_click_post_unsubscribes_at_once_and_answers_200(site: Site) -> None:
    before = time.time()
    response = httpx.post(site.url("ann@example.org"), data=ONE_CLICK)
    assert response.status_code == 200
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.UNSUBSCRIBED
    assert status_of(site.store, "bob@example.org") == SubscriberStatus.SUBSCRIBED
    last = site.store.events("ann@example.org")[-1]
    assert (last.old_status, last.new_status, last.source) == (
        "subscribed",
        "unsubscribed",
        "web one-click",
    )
    assert before - 1 <= last.at <= time.time() + 1
    assert [(e.email, e.action, e.changed) for e in site.events] == [
        ("ann@example.org", "unsubscribe", True)
    ]
    # No cookie is set or needed, and nothing redirects.
    assert "set-cookie" not in response.headers
    assert response.headers["cache-control"] == "no-store"


def test_one_click_as_multipart_form_data(site: Site) -> None:
    response = httpx.post(
        site.url("ann@example.org"), files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.UNSUBSCRIBED


def test_replayed_one_click_posts_are_idempotent(site: Site) -> None:
    url = site.url("ann@example.org")
    answers = [httpx.post(url, data=ONE_CLICK).status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    changes = [e for e in site.store.events("ann@example.org") if e.source == "web one-click"]
    assert len(changes) == 1
    assert [e.changed for e in site.events] == [True, False, False]


def test_a_get_never_unsubscribes(site: Site) -> None:
    """Link scanners and previews fetch URLs; only a POST changes anything."""
    for _ in range(2):
        response = httpx.get(site.url("ann@example.org"))
        assert response.status_code == 200
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.SUBSCRIBED
    assert "ann@example.org" in response.text
    assert '<button type="submit"' in response.text
    assert site.events == []


def test_bounced_and_complained_stay_so_on_one_click(site: Site) -> None:
    site.store.set_status("bob@example.org", "complained", source="test")
    response = httpx.post(site.url("bob@example.org"), data=ONE_CLICK)
    assert response.status_code == 200
    assert status_of(site.store, "bob@example.org") == SubscriberStatus.COMPLAINED


def test_a_token_for_a_removed_subscriber_changes_nothing_and_creates_no_one(site: Site) -> None:
    url = site.url("bob@example.org")
    assert site.store.remove("bob@example.org")
    post = httpx.post(url, data=ONE_CLICK)
    assert post.status_code == 200
    assert "not on the list" in post.text
    page = httpx.get(url)
    assert page.status_code == 200 and "not on the list" in page.text
    assert "<form" not in page.text  # nothing to resubscribe: removal means forget me
    resubscribe = httpx.post(url, data={"action": "resubscribe"}, headers=site.origin())
    assert resubscribe.status_code == 200 and "not on the list" in resubscribe.text
    assert site.store.get("bob@example.org") is None
    assert site.events[0].old_status is None and not site.events[0].changed


def test_a_token_for_someone_never_on_the_list(site: Site) -> None:
    response = httpx.post(site.url("stranger@example.org"), data=ONE_CLICK)
    assert response.status_code == 200
    assert site.store.get("stranger@example.org") is None


# --- forged tokens ------------------------------------------------------------------------------


def _forgeries() -> dict[str, str]:
    good = make_token(SECRET, "ann@example.org")
    payload, mac = good.split(".")
    other = base64.urlsafe_b64encode(b"bob@example.org").rstrip(b"=").decode()
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    return {
        "missing": "",
        "truncated": good[:-5],
        "tampered signature": f"{payload}.{flipped}",
        "another address": f"{other}.{mac}",
        "other secret": make_token(b"someone-else", "ann@example.org"),
        "other purpose": make_token(SECRET, "ann@example.org", purpose="confirm"),
        "no signature": payload,
        "padded": good + "==",
        "garbage": "<script>alert(1)</script>",
    }


@pytest.mark.parametrize("kind", list(_forgeries()))
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_forged_tokens_get_a_400_page_that_reveals_nothing(
    site: Site, kind: str, method: str
) -> None:
    token = _forgeries()[kind]
    url = f"{site.server.url}unsubscribe" + (f"?token={token}" if token else "")
    response = httpx.request(method, url, data=ONE_CLICK if method == "POST" else None)
    assert response.status_code == 400
    assert "This link does not work" in response.text
    for secret_thing in ("ann@", "bob@", site.settings.name, "<script>alert"):
        assert secret_thing not in response.text
    assert "<form" not in response.text
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.SUBSCRIBED
    assert site.events == []


def test_every_forgery_gets_the_same_page(site: Site) -> None:
    bodies = {
        httpx.get(f"{site.server.url}unsubscribe?token={token}").text
        for token in _forgeries().values()
        if token and "<" not in token
    }
    assert len(bodies) == 1


# --- the pages ----------------------------------------------------------------------------------


def test_the_page_resubscribes_and_unsubscribes_again(site: Site) -> None:
    url = site.url("ann@example.org")
    done = httpx.post(url, data={"action": "unsubscribe"})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert 'value="resubscribe"' in done.text
    again = site.resubscribe("ann@example.org")
    assert "You are subscribed again" in again.text
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.SUBSCRIBED
    sources = [(e.new_status, e.source) for e in site.store.events("ann@example.org")][1:]
    assert sources == [("unsubscribed", "web page"), ("subscribed", "web page")]


# --- subscribing again (D9) ---------------------------------------------------------------------


def test_subscribing_again_is_a_deliberate_second_step(site: Site) -> None:
    url = site.url("ann@example.org")
    httpx.post(url, data={"action": "unsubscribe"})
    first = httpx.post(url, data={"action": "resubscribe"}, headers=site.origin())
    assert first.status_code == 200 and "Subscribe to Riverside Roots again?" in first.text
    assert 'value="resubscribe-confirm"' in first.text
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.UNSUBSCRIBED
    # The second step needs the signed step of the confirmation page: fresh, for this address.
    stale = make_token(
        SECRET, f"{int(time.time()) - 3700} ann@example.org", purpose="resubscribe-step"
    )
    forged_steps = {
        "none": "",
        "expired": stale,
        "another address": make_token(
            SECRET, f"{int(time.time())} bob@example.org", purpose="resubscribe-step"
        ),
        "the unsubscribe token": make_token(SECRET, "ann@example.org"),
    }
    for kind, step in forged_steps.items():
        answer = httpx.post(
            url, data={"action": "resubscribe-confirm", "step": step}, headers=site.origin()
        )
        assert answer.status_code == 200, kind
        assert "press the button once more" in answer.text, kind
        assert status_of(site.store, "ann@example.org") == SubscriberStatus.UNSUBSCRIBED, kind
    assert "You are subscribed again" in site.resubscribe("ann@example.org").text
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.SUBSCRIBED


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {"Origin": "http://127.0.0.1.evil.example"},
        {},
    ],
    ids=["other-origin", "null-origin", "other-referer", "lookalike", "neither"],
)
def test_subscribing_again_from_another_site_is_refused(
    site: Site, headers: dict[str, str]
) -> None:
    url = site.url("ann@example.org")
    httpx.post(url, data={"action": "unsubscribe"})
    good_step = re.search(
        r'name="step" value="([^"]+)"',
        httpx.post(url, data={"action": "resubscribe"}, headers=site.origin()).text,
    )
    assert good_step is not None
    for data in (
        {"action": "resubscribe"},
        {"action": "resubscribe-confirm", "step": html.unescape(good_step.group(1))},
    ):
        answer = httpx.post(url, data=data, headers=headers)
        assert answer.status_code == 403 and "Nothing was changed" in answer.text
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.UNSUBSCRIBED


def test_a_same_origin_referer_is_enough_without_origin(site: Site) -> None:
    httpx.post(site.url("ann@example.org"), data={"action": "unsubscribe"})
    answer = site.resubscribe("ann@example.org", Referer=site.url("ann@example.org"))
    assert "You are subscribed again" in answer.text


@pytest.mark.parametrize("status", ["complained", "bounced"])
def test_complained_and_bounced_are_never_subscribed_again_from_the_web(
    site: Site, status: str
) -> None:
    url = site.url("bob@example.org")
    site.store.set_status("bob@example.org", status, source="test")
    page = httpx.get(url)
    assert "This address does not receive Riverside Roots" in page.text
    assert "<form" not in page.text
    first = httpx.post(url, data={"action": "resubscribe"}, headers=site.origin())
    assert "<form" not in first.text and "write to the editors" in first.text
    # Even with a genuine step made for them (say, before the complaint arrived).
    step = make_token(SECRET, f"{int(time.time())} bob@example.org", purpose="resubscribe-step")
    confirm = httpx.post(
        url, data={"action": "resubscribe-confirm", "step": step}, headers=site.origin()
    )
    assert confirm.status_code == 200 and "write to the editors" in confirm.text
    one_click = httpx.post(url, data=ONE_CLICK)
    assert one_click.status_code == 200 and "<form" not in one_click.text
    assert status_of(site.store, "bob@example.org") == status
    assert [e.new_status for e in site.store.events("bob@example.org")][-1] == status


def test_pages_are_dutch_for_a_dutch_newsletter_or_when_asked(
    site: Site, settings: Settings, store: SubscriberStore
) -> None:
    english = httpx.get(site.url("ann@example.org"))
    assert '<html lang="en"' in english.text and "Unsubscribe from" in english.text
    asked = httpx.get(site.url("ann@example.org", lang="nl"))
    assert '<html lang="nl"' in asked.text and "Afmelden voor" in asked.text
    # The form posts back to the same language.
    assert "lang=nl" in asked.text.split("<form", 1)[1].split(">", 1)[0]
    dutch = dataclasses.replace(settings, locale="nl")
    server = WebServer(dutch, secret=SECRET, serve_settings=ServeSettings(port=0), store=store)
    with running(server):
        page = httpx.get(f"{server.url}unsubscribe?token={make_token(SECRET, 'ann@example.org')}")
        assert '<html lang="nl"' in page.text and "Druk op de knop" in page.text
        bad = httpx.get(f"{server.url}unsubscribe?token=x.y")
        assert bad.status_code == 400 and "Deze link werkt niet" in bad.text


def test_token_pages_carry_strict_security_headers(site: Site) -> None:
    response = httpx.get(site.url("ann@example.org"))
    headers = response.headers
    # The token must not leak via Referer; the resubscribe form's same-site check reads the
    # browser's Sec-Fetch-Site (under no-referrer a form POST carries "Origin: null").
    assert headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "script-src" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert "server" not in headers
    assert "<script" not in response.text


def test_an_oversized_post_is_refused(site: Site) -> None:
    response = httpx.post(site.url("ann@example.org"), content=b"x" * 100_000)
    assert response.status_code == 413
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.SUBSCRIBED


def test_other_methods_are_not_allowed(site: Site) -> None:
    assert httpx.put(site.url("ann@example.org"), content=b"").status_code == 405
    assert httpx.get(f"{site.server.url}nothing/here/at/all").status_code == 404


# --- 1,000 concurrent POSTs ---------------------------------------------------------------------


_CHILD = """
import sys
from pathlib import Path
from newsletter.config import load_settings
from newsletter.web import ServeSettings, serve
server = serve(load_settings(Path(sys.argv[1])), secret=sys.argv[2].encode(),
               serve_settings=ServeSettings(port=0))
print(server.port, flush=True)
server.run()
"""


@contextmanager
def server_process(project: Path, secret: bytes = SECRET) -> Iterator[str]:
    """`newsletter serve`'s library call in a process of its own; yields its base URL."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(project), secret.decode()],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        base = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                httpx.get(base + "unsubscribe")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server process did not start"
                time.sleep(0.05)
        yield base
    finally:
        child.send_signal(signal.SIGINT)  # Ctrl-C: a clean shutdown and exit status 0
        assert child.wait(WAIT_SECONDS) == 0


def test_a_thousand_concurrent_one_click_posts_lose_nothing(
    project: Path, settings: Settings, tmp_path: Path
) -> None:
    count = 1000
    csv = tmp_path / "people.csv"
    csv.write_text(
        "email,name\n" + "".join(f"reader{n:04d}@example.org,Reader {n}\n" for n in range(count))
    )
    with SubscriberStore(settings.database_path) as store:
        store.import_csv(csv)
        # The server runs in its own process with its own store, as `newsletter serve` does;
        # in this process it would share the GIL with the client and measure neither.
        with server_process(project) as base:

            async def post_all() -> list[int]:
                # Every request on its own connection, all at once (no pool limit, no reuse).
                limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
                async with httpx.AsyncClient(limits=limits, timeout=60) as client:

                    async def one(n: int) -> int:
                        token = make_token(SECRET, f"reader{n:04d}@example.org")
                        answer = await client.post(
                            f"{base}unsubscribe?token={token}", data=ONE_CLICK
                        )
                        return answer.status_code

                    return await asyncio.gather(*(one(n) for n in range(count)))

            # No time limit here: the machine is shared (speed is measured in bench/).
            codes = asyncio.run(post_all())
        assert codes == [200] * count
        assert store.count(SubscriberStatus.UNSUBSCRIBED) == count
        assert store.count(SubscriberStatus.SUBSCRIBED) == 0
        for n in range(count):
            events = store.events(f"reader{n:04d}@example.org")
            assert [e.source for e in events] == ["import people.csv", "web one-click"]


# The archive (what was sent, from the store): tests/test_web_archive.py.


# --- behind a proxy -----------------------------------------------------------------------------


def test_a_proxy_that_strips_a_prefix(settings: Settings, store: SubscriberStore) -> None:
    moved = dataclasses.replace(
        settings,
        unsubscribe=UnsubscribeSettings(url="https://garden.example.org/news/unsubscribe"),
    )
    serve_settings = ServeSettings(port=0, root_path="/news", proxy_headers=True)
    assert unsubscribe_path(moved, "/news") == "/unsubscribe"
    server = WebServer(moved, secret=SECRET, serve_settings=serve_settings, store=store)
    with running(server):
        token = make_token(SECRET, "ann@example.org")
        # The proxy forwards /news/unsubscribe as /unsubscribe, with X-Forwarded-* headers.
        response = httpx.post(
            f"http://127.0.0.1:{server.port}/unsubscribe?token={token}",
            data=ONE_CLICK,
            headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
        )
        assert response.status_code == 200
    assert status_of(store, "ann@example.org") == SubscriberStatus.UNSUBSCRIBED


def test_the_unsubscribe_path_follows_the_configured_url(settings: Settings) -> None:
    assert unsubscribe_path(settings) == "/unsubscribe"
    other = dataclasses.replace(
        settings, unsubscribe=UnsubscribeSettings(url="https://x.example.org/u/leave")
    )
    assert unsubscribe_path(other) == "/u/leave"
    assert unsubscribe_path(other, "/u") == "/leave"
    mail_only = dataclasses.replace(
        settings, unsubscribe=UnsubscribeSettings(mailto="leave@x.example.org")
    )
    assert unsubscribe_path(mail_only) == "/unsubscribe"


# --- starting -----------------------------------------------------------------------------------


def test_a_busy_port_is_reported(settings: Settings, store: SubscriberStore) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = WebServer(
            settings, secret=SECRET, serve_settings=ServeSettings(port=port), store=store
        )
        with pytest.raises(ServeError, match=f"port {port} on 127.0.0.1 is already in use"):
            server.bind()


def test_serving_needs_the_signing_secret(settings: Settings) -> None:
    with pytest.raises(ServeError, match="NEWSLETTER_SECRET"):
        serve(settings, secret=None, serve_settings=ServeSettings(port=0))


def test_the_serve_table() -> None:
    table = TableReader(
        "serve",
        {
            "host": "0.0.0.0",
            "port": 9000,
            "proxy_headers": True,
            "forwarded_allow_ips": "10.0.0.1, 10.0.0.2",
            "root_path": "/news/",
        },
    )
    parsed = parse_serve_table(table)
    assert table.problems == [] and table.warnings == []
    assert parsed == ServeSettings("0.0.0.0", 9000, True, ("10.0.0.1", "10.0.0.2"), "/news", True)
    assert parse_serve_table(TableReader("serve", {})) == ServeSettings()
    table = TableReader(
        "serve", {"port": 70000, "proxy_headers": "yes", "root_path": "news", "prot": 1}
    )
    parse_serve_table(table)
    problems = table.problems
    assert [p.key for p in problems] == ["serve.port", "serve.proxy_headers", "serve.root_path"]
    assert str(problems[0]) == "newsletter.toml: serve.port: must be a whole number from 0 to 65535"
    # An unknown key is a warning, as in every table of newsletter.toml.
    assert table.warnings == [
        "newsletter.toml: unknown key 'serve.prot' is ignored (did you mean 'port'?)"
    ]


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click", ONE_CLICK),
        ("", b"List-Unsubscribe=One-Click", ONE_CLICK),
        (
            'multipart/form-data; boundary="b1"',
            b'--b1\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
            b"One-Click\r\n--b1--\r\n",
            ONE_CLICK,
        ),
        ("multipart/form-data; boundary=b1", b"garbage", {}),
        ("application/x-www-form-urlencoded", b"\xff\xfe", {}),
    ],
)
def test_form_bodies(content_type: str, body: bytes, expected: dict[str, str]) -> None:
    assert parse_form(content_type, body) == expected


# --- in a real browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_chromium()
    yield from launch_chromium()


@pytest.mark.browser
def test_confirm_and_resubscribe_in_a_browser_without_javascript(
    browser: Browser, site: Site
) -> None:
    # Deferred like the browser itself (see tests/browser.py): Playwright is slow to import.
    from playwright.sync_api import expect

    context = browser.new_context(java_script_enabled=False, viewport={"width": 375, "height": 700})
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text))
    page.goto(site.url("ann@example.org"))
    expect(page).to_have_title("Unsubscribe from Riverside Roots? · Riverside Roots")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Unsubscribe from Riverside Roots?")
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.SUBSCRIBED
    # The keyboard reaches the button first, and Enter presses it.
    page.keyboard.press("Tab")
    button = page.get_by_role("button", name="Unsubscribe")
    expect(button).to_be_focused()
    box = button.bounding_box()
    assert box is not None and box["height"] >= 44  # a comfortable touch target
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.UNSUBSCRIBED
    assert site.store.events("ann@example.org")[-1].source == "web page"
    page.get_by_role("button", name="Subscribe again").click()
    # A deliberate second step; Chromium's Origin header passes the same-origin check.
    expect(page.get_by_role("heading", level=1)).to_have_text("Subscribe to Riverside Roots again?")
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.UNSUBSCRIBED
    page.get_by_role("button", name="Yes, subscribe me again").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are subscribed again")
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.SUBSCRIBED
    # The language switch keeps the token and the page works in Dutch too.
    page.get_by_role("link", name="Nederlands").click()
    expect(page.locator("html")).to_have_attribute("lang", "nl")
    page.get_by_role("button", name="Afmelden").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Je bent afgemeld")
    assert status_of(site.store, "ann@example.org") == SubscriberStatus.UNSUBSCRIBED
    # Nothing sideways on a phone, and the CSP let the stylesheet in (no violations logged).
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.evaluate("getComputedStyle(document.querySelector('button')).borderRadius") == "8px"
    assert violations == []
    context.close()


# --- health check -------------------------------------------------------------------------------


def test_healthz_says_ok_and_nothing_else(site: Site) -> None:
    response = httpx.get(f"{site.server.url}healthz")
    assert response.status_code == 200
    assert response.text == "ok\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert "server" not in response.headers  # no name, no version
    assert httpx.head(f"{site.server.url}healthz").status_code == 200
    assert httpx.post(f"{site.server.url}healthz").status_code == 405
    assert site.events == []  # a probe every few seconds is not a subscription change


def test_healthz_answers_503_when_the_store_cannot_be_read(
    settings: Settings, tmp_path: Path
) -> None:
    opened = SubscriberStore(settings.database_path)
    server = WebServer(settings, secret=SECRET, serve_settings=ServeSettings(port=0), store=opened)
    with running(server):
        assert httpx.get(f"{server.url}healthz").status_code == 200
        opened.close()  # the store's connection is gone: every read now fails
        response = httpx.get(f"{server.url}healthz")
        assert response.status_code == 503
        assert response.text == "unavailable\n"
        assert "ann@" not in response.text and "Traceback" not in response.text


def test_healthz_with_the_archive_off_and_in_a_process_of_its_own(
    project: Path, settings: Settings
) -> None:
    server = WebServer(settings, secret=SECRET, serve_settings=ServeSettings(port=0, archive=False))
    with running(server):  # the server opens the project's store itself
        assert httpx.get(f"{server.url}healthz").text == "ok\n"
        assert httpx.get(server.url).status_code == 404
    with server_process(project) as base:
        assert httpx.get(base + "healthz").status_code == 200


def test_a_client_that_trickles_its_headers_is_cut_off(
    settings: Settings, store: SubscriberStore
) -> None:
    """Issue 15, D23: slowloris. Headers not complete within the header timeout: closed."""
    server = WebServer(
        settings,
        secret=SECRET,
        serve_settings=ServeSettings(port=0),
        store=store,
        header_timeout=1.0,
    )
    with running(server), socket.create_connection((server.host, server.port), timeout=5) as sock:
        started = time.monotonic()
        closed_after: float | None = None
        for byte in b"GET /unsubscribe HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
            try:
                sock.sendall(bytes([byte]))
                sock.settimeout(0.2)
                if sock.recv(1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None, "the trickling client was never cut off"
        assert closed_after < 3.0
        # A normal client on a fresh connection is still served.
        assert httpx.get(f"{server.url}unsubscribe?token=x.y").status_code == 400
