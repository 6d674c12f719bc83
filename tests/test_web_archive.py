"""The archive `newsletter serve` publishes (web/archive.py) on a real uvicorn server: only what
was sent, as it was sent, with its hosted images and an Atom feed; nothing built but unsent."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email.message import EmailMessage
from pathlib import Path

import feedparser
import httpx
import pytest

from newsletter.archive import ArchiveStore, Snapshot
from newsletter.audience import SubscriberStore
from newsletter.build import build_issue
from newsletter.checks import check_issue
from newsletter.checks.model import CheckReport
from newsletter.config import Settings, TransportSettings
from newsletter.content import Issue, load_issue
from newsletter.errors import ProjectError
from newsletter.render import render_issue
from newsletter.render.model import RenderedIssue
from newsletter.sending import SendRequest, deliver, plan_send, send_test_copies
from newsletter.web import ServeSettings, WebServer
from newsletter.web.archive import ISSUE_CSP, export_archive
from tests.smtpserver import SmtpTestServer

ISSUE = "2026-11"
SECRET_ISSUE = "2027-01"
SECRET_SUBJECT = "GEHEIM concept, niet verspreiden"
SECRET = b"archive-web-secret"
WAIT_SECONDS = 5.0


def offline_check(
    issue: Issue, rendered: RenderedIssue, settings: Settings, *, offline: bool
) -> CheckReport:
    return check_issue(issue, rendered, settings, offline=True, spamassassin=None)


@dataclass
class Site:
    server: WebServer
    settings: Settings
    sink: SmtpTestServer

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.server.url + path)


def start(settings: Settings, *, archive: bool = True) -> tuple[WebServer, threading.Thread]:
    serve_settings = ServeSettings(port=0, archive=archive)
    server = WebServer(settings, secret=SECRET, serve_settings=serve_settings)
    server.bind()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.ready.wait(WAIT_SECONDS), "the web server did not start"
    return server, thread


@pytest.fixture
def sink() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as running:
        yield running


@pytest.fixture
def project_settings(
    settings: Settings, sink: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The example project sending to an SMTP server on loopback, with a signing secret, two
    subscribers, and a second issue with a secret subject that is built but never sent."""
    monkeypatch.delenv("NEWSLETTER_DATABASE_URL", raising=False)
    monkeypatch.delenv(settings.unsubscribe.secret_env, raising=False)
    (settings.root / ".newsletter-secret").write_text("archive-web-secret\n", encoding="utf-8")
    with SubscriberStore(settings.database()) as store:
        store.add("ann@example.org", "Ann")
        store.add("bob@example.org", "Bob")
    secret = settings.issues_dir / SECRET_ISSUE
    shutil.copytree(settings.issues_dir / ISSUE, secret)
    head = secret / "issue.md"
    text = re.sub(r'subject: ".*"', f'subject: "{SECRET_SUBJECT}"', head.read_text("utf-8"))
    head.write_text(text, encoding="utf-8")
    shutil.copy(settings.root / "images" / "logo.png", secret / "geheim-plan.png")
    item = sorted(secret.glob("0*.md"))[0]
    item.write_text(
        item.read_text("utf-8") + "\n![Het geheime plan](geheim-plan.png)\n", encoding="utf-8"
    )
    transport = TransportSettings(kind="smtp", host="127.0.0.1", port=sink.port, security="none")
    return replace(settings, transport=transport)


@pytest.fixture
def site(project_settings: Settings, sink: SmtpTestServer) -> Iterator[Site]:
    """A server for the project, with 2026-11 sent (then changed and rebuilt) and 2026-12
    built only."""
    server, thread = start(project_settings)
    settings = replace(project_settings, base_url=server.url)  # images hosted by this server
    try:
        deliver(plan_send(settings, SendRequest(ISSUE), checker=offline_check))
        item = settings.issues_dir / ISSUE / "issue.md"
        item.write_text(item.read_text("utf-8") + "\nChanged after the send.\n", "utf-8")
        build_issue(settings, settings.issues_dir / ISSUE)
        build_issue(settings, settings.issues_dir / SECRET_ISSUE)
        yield Site(server, settings, sink)
    finally:
        server.stop()
        thread.join(WAIT_SECONDS)


def sent_messages(sink: SmtpTestServer) -> list[EmailMessage]:
    found = []
    for received in sink.messages:
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        found.append(message)
    return found


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def test_the_archive_shows_what_was_sent_not_the_rebuild(site: Site) -> None:
    assert "Changed after the send." in (site.settings.dist_dir / ISSUE / "web.html").read_text()
    page = site.get(f"{ISSUE}/web.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Harvest festival" in page.text and "Changed after the send." not in page.text
    with ArchiveStore(site.settings.database()) as archive:
        archived = archive.page(ISSUE)
    assert archived is not None and page.text == archived.html
    assert page.headers["content-security-policy"] == ISSUE_CSP
    assert page.headers["referrer-policy"] == "no-referrer"
    index = site.get("")
    assert index.status_code == 200
    assert "Harvest festival, new compost bays and the winter roster" in index.text
    sent = dt.datetime.fromtimestamp(archived.entry.sent_at, tz=dt.UTC).date()
    day = re.search(r'<time class="muted" datetime="([0-9-]+)">([^<]+)</time>', index.text)
    assert day is not None and day.group(1) == sent.isoformat()
    assert day.group(2).strip() == f"{sent:%B} {sent.day}, {sent.year}"  # Babel's English
    assert f'href="{ISSUE}/web.html"' in index.text
    moved = httpx.get(site.server.url + ISSUE, follow_redirects=True)
    assert moved.status_code == 200 and str(moved.url).endswith(f"/{ISSUE}/web.html")


def test_hosted_images_in_the_sent_mail_are_served(site: Site) -> None:
    messages = sent_messages(site.sink)
    assert len(messages) == 2
    html = html_of(messages[0])
    sources = set(re.findall(r'<img[^>]+src="([^"]+)"', html))
    hosted = sorted(s for s in sources if s.startswith(site.server.url))
    rendered = render_issue(load_issue(site.settings.issues_dir / ISSUE), site.settings)
    assert len(hosted) == len(rendered.published_images) >= 3  # logo, photos, partner logo
    assert not any(part.get_content_type().startswith("image/") for part in messages[0].walk())
    by_name = {image.filename: image.data for image in rendered.published_images}
    for url in hosted:
        response = httpx.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith("image/")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == by_name[url.rsplit("/", 1)[1]]


def test_a_built_but_unsent_issue_is_never_reachable(site: Site) -> None:
    built = site.settings.dist_dir / SECRET_ISSUE
    names = sorted(p.name for p in built.iterdir())
    assert "web.html" in names and any(n.startswith("geheim-plan-") for n in names)
    for path in ("", "feed.xml"):
        response = site.get(path)
        assert response.status_code == 200
        assert "GEHEIM" not in response.text and SECRET_ISSUE not in response.text
    for path in (SECRET_ISSUE, f"{SECRET_ISSUE}/", *(f"{SECRET_ISSUE}/{n}" for n in names)):
        response = site.get(path)
        assert response.status_code == 404, path
        assert "GEHEIM" not in response.text, path


def test_a_test_copy_makes_its_hosted_images_reachable_but_not_its_page(site: Site) -> None:
    send_test_copies(site.settings, SECRET_ISSUE, to=["editor@example.org"])
    (copy,) = [m for m in sent_messages(site.sink) if "GEHEIM" in str(m["Subject"])]
    linked = re.findall(rf'src="({re.escape(site.server.url)}{SECRET_ISSUE}/[^"]+)"', html_of(copy))
    assert any("geheim-plan-" in url for url in linked)
    assert all(httpx.get(url).status_code == 200 for url in linked)  # the reviewer sees them
    for path in (SECRET_ISSUE, f"{SECRET_ISSUE}/web.html", "", "feed.xml"):
        response = site.get(path)
        assert "GEHEIM" not in response.text, path
        assert response.status_code == (200 if path in ("", "feed.xml") else 404), path


def test_the_feed_parses_with_entries_and_dates(site: Site) -> None:
    with ArchiveStore(site.settings.database()) as archive:
        archive.freeze(
            Snapshot("2026-10", "October: seed swap", "<html><body><p>Seeds</p></body></html>"),
            at=1_790_000_000.0,
        )
    response = site.get("feed.xml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(response.content)
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.title == "Riverside Roots"
    entries = feed.entries
    assert [e.title for e in entries] == [
        "Harvest festival, new compost bays and the winter roster",
        "October: seed swap",
    ]
    assert all(e.published_parsed is not None and e.updated_parsed is not None for e in entries)
    assert tuple(entries[1].published_parsed[:3]) == (2026, 9, 21)
    assert entries[0].link == f"{site.server.url}{ISSUE}/web.html"
    assert "Seeds" in entries[1].content[0].value
    index = site.get("")
    assert 'type="application/atom+xml" href="feed.xml"' in index.text


TRAVERSALS = (
    f"{ISSUE}/email.html",
    f"{ISSUE}/email.txt",
    f"{ISSUE}/message.eml",
    f"{ISSUE}/..%2f..%2fnewsletter.toml",
    "..%2fnewsletter.toml",
    f"{ISSUE}/%2e%2e/%2e%2e/newsletter.toml",
    "%2e%2e/newsletter.toml",
    f"{ISSUE}/.newsletter-secret",
    ".newsletter-secret",
    "newsletter.db",
    f"{ISSUE}/..%5c..%5cnewsletter.toml",
    f"{ISSUE}%00/web.html",
    "2026-09/web.html",
)


def test_path_traversal_and_other_files_get_404(site: Site) -> None:
    for path in TRAVERSALS:
        response = site.get(path)
        assert response.status_code == 404, path
        for leaked in ("[newsletter]", "token=", "archive-web-secret", "SQLite format"):
            assert leaked not in response.text, path


def test_with_the_archive_off_only_hosted_images_remain(
    project_settings: Settings, sink: SmtpTestServer
) -> None:
    server, thread = start(project_settings, archive=False)
    try:
        settings = replace(project_settings, base_url=server.url)
        deliver(plan_send(settings, SendRequest(ISSUE), checker=offline_check))
        for path in ("", "feed.xml", ISSUE, f"{ISSUE}/", f"{ISSUE}/web.html"):
            assert httpx.get(server.url + path).status_code == 404, path
        html = html_of(sent_messages(sink)[0])
        hosted = re.findall(rf'src="({re.escape(server.url)}[^"]+)"', html)
        assert hosted and all(httpx.get(url).status_code == 200 for url in hosted)
        assert httpx.get(server.url + "healthz").status_code == 200
    finally:
        server.stop()
        thread.join(WAIT_SECONDS)


def test_embedded_images_of_the_web_version_are_served_beside_it(
    project_settings: Settings,
) -> None:
    server, thread = start(project_settings)  # no base_url: images travel inside the messages
    try:
        deliver(plan_send(project_settings, SendRequest(ISSUE), checker=offline_check))
        page = httpx.get(f"{server.url}{ISSUE}/web.html")
        sources = set(re.findall(r'<img[^>]+src="([^"]+)"', page.text))
        local = sorted(s for s in sources if "://" not in s and not s.startswith("data:"))
        assert len(local) >= 3 and not any(s.startswith("cid:") for s in sources)
        for source in local:
            image = httpx.get(str(httpx.URL(f"{server.url}{ISSUE}/web.html").join(source)))
            assert image.status_code == 200, source
            assert image.headers["content-type"] in ("image/png", "image/jpeg", "image/gif")
    finally:
        server.stop()
        thread.join(WAIT_SECONDS)


@pytest.mark.parametrize(
    ("locale", "shown"),
    [("en", "September 21, 2026"), ("nl", "21 september 2026"), ("nl-formal", "21 september 2026")],
)
def test_the_index_shows_dates_in_the_newsletters_language(
    project_settings: Settings, locale: str, shown: str
) -> None:
    with ArchiveStore(project_settings.database()) as archive:
        archive.freeze(Snapshot("2026-09", "Seed swap", "<p/>"), at=1_790_000_000.0)
    server, thread = start(replace(project_settings, locale=locale))
    try:
        index = httpx.get(server.url)
        assert f'<time class="muted" datetime="2026-09-21">{shown}</time>' in index.text
    finally:
        server.stop()
        thread.join(WAIT_SECONDS)


def test_a_static_export_holds_what_was_sent_and_nothing_else(site: Site, tmp_path: Path) -> None:
    target = tmp_path / "public"
    with ArchiveStore(site.settings.database()) as archive:
        report = export_archive(site.settings, archive, target)
        names = archive.filenames(ISSUE)
    assert (report.issues, report.images, report.feed) == (1, len(names), True)
    written = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert written == sorted(
        [".newsletter-archive", "index.html", "feed.xml", f"{ISSUE}/web.html"]
        + [f"{ISSUE}/{name}" for name in names]
    )
    assert (target / f"{ISSUE}/web.html").read_text("utf-8") == site.get(f"{ISSUE}/web.html").text
    index = (target / "index.html").read_text("utf-8")
    assert "Harvest festival" in index and f'href="{ISSUE}/web.html"' in index
    feed = feedparser.parse((target / "feed.xml").read_bytes())
    assert not feed.bozo and [e.link for e in feed.entries] == [
        f"{site.settings.base_url}{ISSUE}/web.html"
    ]
    everything = b"".join(p.read_bytes() for p in target.rglob("*") if p.is_file())
    assert b"GEHEIM" not in everything and SECRET_ISSUE.encode() not in everything

    # Exporting again replaces the earlier export; a folder of yours is never replaced.
    (target / "stale.html").write_text("old")
    with ArchiveStore(site.settings.database()) as archive:
        export_archive(site.settings, archive, target)
        assert not (target / "stale.html").exists()
        mine = tmp_path / "mine"
        mine.mkdir()
        (mine / "notes.txt").write_text("keep me")
        with pytest.raises(ProjectError, match="not empty and was not written by"):
            export_archive(site.settings, archive, mine)
    assert (mine / "notes.txt").read_text() == "keep me"
