"""Click counts (`[links] count_clicks`): the settings, the links the build rewrites (golden files
for the enabled case), the link table in the store on both engines, and the redirect on a real
uvicorn server on loopback (1,000 concurrent clicks, unknown links, a request that tries to
change the target, nothing personal kept), and what `newsletter status` shows."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from newsletter.audience import SubscriberStore
from newsletter.build import build_issue
from newsletter.checks.context import CheckContext
from newsletter.checks.links import page_urls
from newsletter.clicks import (
    ClickLink,
    count_click,
    count_links,
    link_counts,
    record_links,
    recorded_numbers,
)
from newsletter.config import Settings, load_settings
from newsletter.content import load_issue
from newsletter.errors import ConfigError, ProjectError
from newsletter.linktags import text_urls
from newsletter.render import render_issue
from newsletter.render.model import RenderedIssue
from newsletter.store import Store
from newsletter.web import ServeSettings, WebServer
from tests.spamcache import SpamAssassinCache
from tests.test_render import check_golden

REPO = Path(__file__).resolve().parent.parent
ISSUE = "2026-11"
BASE = "https://riverside-garden.example.org/newsletter/"
REDIRECT = f"{BASE}c/{ISSUE}/"
SECRET = "a-test-signing-secret"
WAIT_SECONDS = 10.0
# The example issue's counted links, in the order they first appear in the email.
EXPECTED = [
    (1, "https://riverside-garden.example.org/festival", "Harvest festival on 6 December"),
    (2, "https://riverside-garden.example.org/compost", "Three new compost bays"),
    (3, "https://riverside-garden.example.org/roster", "Sign up for a winter shift"),
    (4, "https://buurtfonds.example.org/", ""),
    (5, "https://instagram.example.org/riversideroots", ""),
    (6, "https://mastodon.example.org/@riversideroots", ""),
    (7, "https://riverside-garden.example.org/", ""),
]


def configure(project: Path, links: str = "count_clicks = true\n") -> Path:
    """The example project with base_url set and `[links]` as given."""
    config = project / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    text = re.sub(r"^# (base_url = \S+).*$", r"\1", text, flags=re.MULTILINE)
    assert f'base_url = "{BASE}"' in text
    config.write_text(text + f"\n[links]\n{links}", encoding="utf-8")
    return project


@pytest.fixture
def counting(project: Path) -> Settings:
    return load_settings(configure(project))


def render(
    settings: Settings, *, preview: bool = False, click_numbers: Mapping[str, int] | None = None
) -> RenderedIssue:
    issue = load_issue(settings.issues_dir / ISSUE)
    return render_issue(issue, settings, preview=preview, click_numbers=click_numbers)


def filled(rendered: RenderedIssue) -> tuple[str, str]:
    """The HTML and text with every per-recipient value as `VALUE`."""
    return (
        rendered.html.fill(lambda slot: "VALUE"),
        rendered.text.fill(lambda slot: "VALUE"),
    )


# --- settings -----------------------------------------------------------------------------------


def test_off_by_default(settings: Settings) -> None:
    assert settings.count_clicks is False
    html, text = filled(render(settings))
    assert "/c/" not in html + text
    assert render(settings).click_links == ()


def test_count_clicks_alone_tags_nothing_and_warns_nothing(counting: Settings) -> None:
    assert counting.count_clicks is True
    assert counting.links is None
    assert counting.warnings == ()


def test_count_clicks_needs_base_url(project: Path) -> None:
    config = project / "newsletter.toml"
    config.write_text(config.read_text() + "\n[links]\ncount_clicks = true\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(project)
    [problem] = caught.value.problems
    assert problem.key == "links.count_clicks"
    assert problem.file == config
    assert problem.line == len(config.read_text().splitlines())
    assert "needs [newsletter] base_url" in problem.message


def test_count_clicks_must_be_a_boolean(project: Path) -> None:
    configure(project, 'count_clicks = "yes"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(project)
    assert [(p.key, p.message) for p in caught.value.problems] == [
        ("links.count_clicks", "must be true or false")
    ]


def test_tagging_still_needs_domains_when_counting(project: Path) -> None:
    configure(project, 'count_clicks = true\nutm_source = "roots"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(project)
    assert [p.key for p in caught.value.problems] == ["links.domains"]


# --- what the build writes ----------------------------------------------------------------------


def test_build_rewrites_links_only_when_enabled(settings: Settings, counting: Settings) -> None:
    off = build_issue(settings, settings.issues_dir / ISSUE)
    assert off.rendered.click_links == ()
    for name in ("email.html", "email.txt", "web.html"):
        assert "/c/" not in (off.folder / name).read_text(encoding="utf-8")

    on = build_issue(counting, counting.issues_dir / ISSUE)
    html = (on.folder / "email.html").read_text(encoding="utf-8")
    text = (on.folder / "email.txt").read_text(encoding="utf-8")
    check_golden("clicks/email.html", html)
    check_golden("clicks/email.txt", text)
    assert [(c.number, c.target, c.item) for c in on.rendered.click_links] == EXPECTED
    labels = {c.number: c.label for c in on.rendered.click_links}
    assert labels[2] == "our compost page"
    assert labels[3] == "Choose a shift"  # the theme's zero-width space dropped
    assert labels[1] == "Plan your visit"  # the text link, not the image link's alt
    for number, target, _ in EXPECTED:
        assert f'href="{REDIRECT}{number}"' in html
        assert f'href="{target}"' not in html
        assert target not in text_urls(text)
    for number in (1, 2, 3, 5, 6, 7):
        assert f"{REDIRECT}{number}" in text
    # Left as they are: the unsubscribe link (per recipient), mailto:, the web version.
    assert 'href="https://riverside-garden.example.org/unsubscribe"' in html  # the sample's
    assert 'href="mailto:team@riverside-garden.example.org"' in html
    assert f'href="{BASE}{ISSUE}/web.html"' in html
    assert f"{BASE}{ISSUE}/web.html" in text
    # The web version is public and lasting: its links lead straight to their targets.
    web = (on.folder / "web.html").read_text(encoding="utf-8")
    assert "/c/" not in web
    for _, target, _ in EXPECTED:
        assert f'href="{target}"' in web


def test_the_preview_keeps_links_direct(counting: Settings) -> None:
    rendered = render(counting, preview=True)
    assert rendered.click_links == ()
    assert "/c/" not in filled(rendered)[0]


def test_utm_tags_go_on_the_recorded_target(project: Path) -> None:
    settings = load_settings(
        configure(project, 'count_clicks = true\ndomains = ["riverside-garden.example.org"]\n')
    )
    rendered = render(settings)
    html, text = filled(rendered)
    tags = "?utm_source=riverside-roots&utm_medium=email&utm_campaign=2026-11"
    targets = {c.number: c.target for c in rendered.click_links}
    assert targets[2] == "https://riverside-garden.example.org/compost" + tags
    assert targets[4] == "https://buurtfonds.example.org/"  # another host: not tagged
    assert {c.item for c in rendered.click_links if c.number <= 3} == {
        t for _, _, t in EXPECTED[:3]
    }
    assert "utm_" not in text  # the reader's links are the redirects
    assert "utm_source" not in re.sub(r'href="[^"]*web\.html[^"]*"', "", html)


def test_links_holding_a_subscriber_value_stay_direct(counting: Settings) -> None:
    item = counting.issues_dir / ISSUE / "02-compost-bays.md"
    item.write_text(
        item.read_text(encoding="utf-8")
        + "\nYour plot: [plot page](https://riverside-garden.example.org/plots/"
        "{{ subscriber.plot | default('none') }}).\n",
        encoding="utf-8",
    )
    rendered = render(counting)
    html, text = filled(rendered)
    assert 'href="https://riverside-garden.example.org/plots/VALUE"' in html
    assert "https://riverside-garden.example.org/plots/VALUE" in text
    assert all("/plots/" not in c.target for c in rendered.click_links)


def test_numbers_recorded_before_are_kept(counting: Settings) -> None:
    known = {"https://riverside-garden.example.org/roster": 1, "https://gone.example.org/": 9}
    rendered = render(counting, click_numbers=known)
    numbers = {c.target: c.number for c in rendered.click_links}
    assert numbers["https://riverside-garden.example.org/roster"] == 1
    # New targets number on after the highest recorded one, in order of appearance.
    assert [numbers[t] for _, t, _ in EXPECTED if "roster" not in t] == [10, 11, 12, 13, 14, 15]
    assert "https://gone.example.org/" not in numbers
    assert f'href="{REDIRECT}1"' in filled(rendered)[0]


def test_a_changed_target_changes_the_fingerprint(counting: Settings) -> None:
    before = render(counting)
    item = counting.issues_dir / ISSUE / "01-harvest-festival.md"
    item.write_text(item.read_text(encoding="utf-8").replace("/festival", "/festival-2026"))
    after = render(counting)
    # The email's bytes are the same (link 1 is link 1) but it leads elsewhere now.
    assert filled(before) == filled(after)
    assert after.click_links[0].target == "https://riverside-garden.example.org/festival-2026"
    assert before.fingerprint != after.fingerprint


def test_the_link_check_checks_the_targets(counting: Settings) -> None:
    issue = load_issue(counting.issues_dir / ISSUE)
    context = CheckContext.build(issue, render_issue(issue, counting), counting)
    urls = page_urls(context)
    assert not [url for url in urls if "/c/" in url]
    assert {target for _, target, _ in EXPECTED} <= set(urls)


def test_count_links_skips_what_cannot_be_counted() -> None:
    html = (
        '<a href="https://a.example.org/x?q=1&amp;r=2">A</a>'
        '<a href="https://a.example.org/x?q=1&amp;r=2">again</a>'
        '<a href="mailto:x@example.org">m</a><a href="tel:+31">t</a>'
        '<a href="https://b.example.org/caf\u00e9">accent</a>'
        '<a href="https://b.example.org/NLSLOT3X">slot</a>'
        '<a href="https://site.example.org/news/2026-11/web.html?x">web</a>'
        f'<a href="{BASE}c/{ISSUE}/4">already</a>'
        "<a href='https://c.example.org/'><img alt=\"Logo &amp; co\" src=x></a>"
    )
    counted = count_links(
        html,
        "See https://c.example.org/, and https://d.example.org/page.",
        base_url=BASE,
        issue=ISSUE,
        skip=["https://site.example.org/news/2026-11/web.html"],
    )
    assert [(c.number, c.target, c.label) for c in counted.links] == [
        (1, "https://a.example.org/x?q=1&r=2", "A"),
        (2, "https://c.example.org/", "Logo & co"),
        (3, "https://d.example.org/page", ""),
    ]
    assert counted.html.count(f'href="{REDIRECT}1"') == 2
    assert 'href="mailto:x@example.org"' in counted.html
    assert "caf\u00e9" in counted.html and "NLSLOT3X" in counted.html
    assert f'href="{BASE}c/{ISSUE}/4"' in counted.html
    assert counted.text == f"See {REDIRECT}2, and {REDIRECT}3."


# --- the store ----------------------------------------------------------------------------------

LINKS = (
    ClickLink(1, "https://a.example.org/", "First item", "Read"),
    ClickLink(2, "https://b.example.org/?x=1&y=2", "", "Web"),
)


def test_the_link_table_in_the_store(store_url: str) -> None:
    with Store.open(store_url) as store:
        record_links(store, ISSUE, LINKS, now=1.0)
        record_links(store, ISSUE, LINKS, now=2.0)  # a second send records nothing new
        assert recorded_numbers(store, ISSUE) == {link.target: link.number for link in LINKS}
        assert recorded_numbers(store, "2026-12") == {}
        assert count_click(store, ISSUE, 2) == "https://b.example.org/?x=1&y=2"
        assert count_click(store, ISSUE, 2) == "https://b.example.org/?x=1&y=2"
        assert count_click(store, ISSUE, 3) is None
        assert count_click(store, "2026-12", 1) is None
        assert [(c.link, c.clicks) for c in link_counts(store, ISSUE)] == [
            (LINKS[0], 0),
            (LINKS[1], 2),
        ]
        # Another version numbered link 2 differently at the same time: refused, nothing moved.
        clash = (ClickLink(2, "https://elsewhere.example.org/"), ClickLink(3, "https://c.org/"))
        with pytest.raises(ProjectError, match="link 2 of 2026-11 is recorded as"):
            record_links(store, ISSUE, clash, now=3.0)
        assert count_click(store, ISSUE, 2) == "https://b.example.org/?x=1&y=2"


# --- the redirect on a real server --------------------------------------------------------------

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
def server_process(project: Path, store_url: str) -> Iterator[str]:
    """`newsletter serve` in a process of its own, on the store at `store_url`; its base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_DATABASE_URL"] = store_url if "://" in store_url else f"sqlite:///{store_url}"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(project), SECRET],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        base = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                httpx.get(base + "healthz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server process did not start"
                time.sleep(0.05)
        yield base
    finally:
        child.send_signal(signal.SIGINT)
        assert child.wait(WAIT_SECONDS) == 0


def recorded_store(settings: Settings, store_url: str) -> RenderedIssue:
    """The example issue rendered, its link table recorded as a send does."""
    rendered = render(settings)
    with Store.open(store_url) as store:
        record_links(store, ISSUE, rendered.click_links, now=time.time())
    return rendered


def test_a_thousand_concurrent_clicks_lose_nothing(counting: Settings, store_url: str) -> None:
    rendered = recorded_store(counting, store_url)
    links = rendered.click_links
    count = 1000
    with server_process(counting.root, store_url) as base:

        async def click_all() -> list[tuple[int, str | None]]:
            # Every request on its own connection, all at once (no pool limit, no reuse).
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
            async with httpx.AsyncClient(limits=limits, timeout=120) as client:

                async def one(n: int) -> tuple[int, str | None]:
                    answer = await client.get(f"{base}c/{ISSUE}/{n % len(links) + 1}")
                    return answer.status_code, answer.headers.get("location")

                return await asyncio.gather(*(one(n) for n in range(count)))

        # No time limit here: the machine is shared (speed belongs in bench/).
        answers = asyncio.run(click_all())
    expected = [(302, links[n % len(links)].target) for n in range(count)]
    assert answers == expected
    with Store.open(store_url) as store:
        clicks = {c.link.number: c.clicks for c in link_counts(store, ISSUE)}
    assert clicks == {
        link.number: sum(1 for n in range(count) if n % len(links) + 1 == link.number)
        for link in links
    }
    assert sum(clicks.values()) == count


def test_the_redirect_cannot_be_bent_and_keeps_nothing_personal(
    counting: Settings, store_url: str
) -> None:
    recorded_store(counting, store_url)
    with Store.open(store_url) as store:
        odd_link = ClickLink(1, "https://odd.example.org/")
        record_links(store, "Winter 2026 (ñ)", [odd_link], now=1.0)
    target = EXPECTED[1][1]
    agent = "clicks-test-agent/1.0 (reader-browser)"
    forwarded = "203.0.113.77"
    with server_process(counting.root, store_url) as base:
        headers = {"User-Agent": agent, "X-Forwarded-For": forwarded, "Cookie": "id=reader-7"}
        with httpx.Client(headers=headers, follow_redirects=False) as client:
            plain = client.get(f"{base}c/{ISSUE}/2")
            assert plain.status_code == 302
            assert plain.headers["location"] == target
            assert plain.headers["cache-control"] == "no-store"
            assert plain.headers["referrer-policy"] == "no-referrer"
            assert "set-cookie" not in plain.headers
            # Nothing in the request changes where it leads.
            for attempt in (
                f"{base}c/{ISSUE}/2?url=https://evil.example/",
                f"{base}c/{ISSUE}/2?next=//evil.example/&target=https%3A%2F%2Fevil.example",
                f"{base}c/{ISSUE}/2#https://evil.example/",
            ):
                answer = client.get(attempt)
                assert (answer.status_code, answer.headers["location"]) == (302, target)
            # Unknown numbers, issues and shapes: 404, counting nothing.
            for path in (
                f"c/{ISSUE}/99",
                f"c/{ISSUE}/0",
                f"c/{ISSUE}/02",
                f"c/{ISSUE}/-1",
                f"c/{ISSUE}/abc",
                f"c/{ISSUE}/1.5",
                "c/2026-12/1",
                "c/..%2F2026-11/1",
                f"c/{ISSUE}/2/extra",
                f"c/{ISSUE}",
            ):
                answer = client.get(base + path)
                assert answer.status_code == 404, path
                assert "location" not in answer.headers
            # A HEAD (a link checker, a mail scanner) is answered but not counted.
            head = client.head(f"{base}c/{ISSUE}/2")
            assert (head.status_code, head.headers["location"]) == (302, target)
            assert client.post(f"{base}c/{ISSUE}/2").status_code == 405
            # Any issue folder name works: the name is only a key to look up.
            odd = client.get(f"{base}c/{quote('Winter 2026 (ñ)', safe='')}/1")
            assert (odd.status_code, odd.headers["location"]) == (302, "https://odd.example.org/")
    with Store.open(store_url) as store:
        clicks = {c.link.number: c.clicks for c in link_counts(store, ISSUE)}
        assert clicks == {n: 4 if n == 2 else 0 for n, _, _ in EXPECTED}
        with store.read() as db:
            columns = [
                str(r[0]) for r in db.execute(store.dialect.columns, {"table": "click_links"})
            ]
            rows = [
                tuple(str(v) for v in row)
                for row in db.execute("SELECT * FROM click_links WHERE issue = :i", {"i": ISSUE})
            ]
    # Per link, never per person: these columns and nothing else, nothing from the requests.
    assert columns == ["issue", "number", "target", "item", "label", "clicks", "recorded_at"]
    assert len(rows) == len(EXPECTED)
    stored = " ".join(" ".join(row) for row in rows)
    for personal in ("127.0.0.1", forwarded, "clicks-test-agent", "reader-7", "evil"):
        assert personal not in stored


def test_without_count_clicks_there_is_no_redirect(
    project: Path, counting: Settings, store_url: str
) -> None:
    recorded_store(counting, store_url)
    config = project / "newsletter.toml"
    config.write_text(config.read_text().replace("count_clicks = true", "count_clicks = false"))
    with server_process(project, store_url) as base:
        assert httpx.get(f"{base}c/{ISSUE}/1").status_code == 404


# --- the editor's view --------------------------------------------------------------------------


def newsletter(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_SECRET"] = SECRET
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_status_shows_clicks_per_link_under_the_item_titles(
    counting: Settings, cached_spamassassin: SpamAssassinCache | None
) -> None:
    project = counting.root
    (project / "list.csv").write_text("email,name\nann@example.org,Ann\nbob@example.org,Bob\n")
    assert newsletter(project, "subscribers", "import", "list.csv").returncode == 0
    # A test copy records the link table already, so the reviewers' links lead somewhere.
    test = newsletter(project, "send", ISSUE, "--test", "--yes", "--no-link-check")
    assert test.returncode == 0, test.stderr
    with Store.open(counting.database_path) as store:
        assert recorded_numbers(store, ISSUE) == {t: n for n, t, _ in EXPECTED}
    before = newsletter(project, "status", ISSUE)
    assert "has not been sent yet" in before.stdout
    assert "Clicks on links in 2026-11: 0" in before.stdout

    sent = newsletter(project, "send", ISSUE, "--yes", "--no-link-check")
    assert sent.returncode == 0, sent.stderr
    # The messages carry the redirects, the same for both readers.
    messages = sorted((project / "outbox").glob("*.eml"))
    assert len(messages) == 3  # the test copy and the two readers'
    for message in messages:
        parsed = email.message_from_bytes(message.read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        body = "".join(
            part.get_content() for part in parsed.walk() if part.get_content_maintype() == "text"
        )
        assert f"{REDIRECT}2" in body
        assert "riverside-garden.example.org/compost" not in body
        assert "https://riverside-garden.example.org/unsubscribe?token=" in body  # direct
    with Store.open(counting.database_path) as store:
        for number in (2, 2, 2, 1, 4):
            count_click(store, ISSUE, number)
    status = newsletter(project, "status", ISSUE)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    start = lines.index("Clicks on links in 2026-11: 5 (counted per link, never per person)")
    assert lines[start + 1 : start + 9] == [
        "  Harvest festival on 6 December: 1",
        "         1  #1 Plan your visit → https://riverside-garden.example.org/festival",
        "  Three new compost bays: 3",
        "         3  #2 our compost page → https://riverside-garden.example.org/compost",
        "  Sign up for a winter shift: 0",
        "         0  #3 Choose a shift → https://riverside-garden.example.org/roster",
        "  Outside the items (masthead, footer): 1",
        "         1  #4 Buurtfonds → https://buurtfonds.example.org/",
    ]

    # A correction after the send puts a new link first: the recorded links keep their numbers
    # (messages already read still lead where they did) and the new one gets the next number.
    item = project / "issues" / ISSUE / "01-harvest-festival.md"
    text = item.read_text(encoding="utf-8")
    body_start = text.index("---", 3) + 4
    new_link = "https://riverside-garden.example.org/lanterns"
    item.write_text(text[:body_start] + f"See [the lanterns]({new_link}).\n\n" + text[body_start:])
    for old in (project / "outbox").glob("*.eml"):
        old.unlink()
    again = newsletter(project, "send", ISSUE, "--test", "--yes", "--no-link-check")
    assert again.returncode == 0, again.stderr
    with Store.open(counting.database_path) as store:
        assert recorded_numbers(store, ISSUE) == {
            **{t: n for n, t, _ in EXPECTED},
            new_link: len(EXPECTED) + 1,
        }
        assert link_counts(store, ISSUE)[1].clicks == 3  # counts kept
    [copy] = (project / "outbox").glob("*.eml")
    parsed = email.message_from_bytes(copy.read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    plain = parsed.get_body(("plain",))
    assert plain is not None
    assert f"{REDIRECT}{len(EXPECTED) + 1}" in plain.get_content()
    assert f"{REDIRECT}2" in plain.get_content()


def test_a_locked_store_answers_busy_and_counts_nothing(counting: Settings) -> None:
    rendered = recorded_store(counting, str(counting.database_path))
    # A short busy timeout, so the lock below outlasts it at once.
    store = SubscriberStore(Store.open(counting.database_path, busy_timeout=0.2))
    server = WebServer(
        counting, secret=SECRET.encode(), serve_settings=ServeSettings(port=0), store=store
    )
    server.bind()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert server.ready.wait(WAIT_SECONDS)
        url = f"{server.url.rstrip('/')}/c/{ISSUE}/1"
        other = sqlite3.connect(counting.database_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing, for longer than the timeout
        busy = httpx.get(url)
        other.execute("ROLLBACK")
        other.close()
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "5"
        assert "location" not in busy.headers
        after = httpx.get(url)
        assert (after.status_code, after.headers["location"]) == (
            302,
            rendered.click_links[0].target,
        )
    finally:
        server.stop()
        thread.join(WAIT_SECONDS)
        store.database.close()
    with Store.open(counting.database_path) as opened:
        assert link_counts(opened, ISSUE)[0].clicks == 1
