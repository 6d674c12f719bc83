"""The archive of what was sent (newsletter/archive.py), on both store engines: frozen when the
first real message is handed over, never by a build, a test copy or a dry run; kept through
rebuilds and resumed sends; replaced only by `newsletter archive update`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter.archive import ArchiveError, ArchiveImage, ArchiveStore, Snapshot
from newsletter.audience import SubscriberStore
from newsletter.build import build_issue, local_image_html
from newsletter.checks import check_issue
from newsletter.checks.model import CheckReport
from newsletter.cli.commands import app
from newsletter.config import Settings, TransportSettings
from newsletter.content import Issue, load_issue
from newsletter.delivery.ledger import Ledger, State
from newsletter.delivery.sender import send_issue
from newsletter.delivery.transports.base import BatchItem, BatchResult, DeliveryReceipt
from newsletter.errors import NewsletterError
from newsletter.render import render_issue
from newsletter.render.model import RenderedIssue
from newsletter.sending import (
    SendRequest,
    archive_snapshot,
    deliver,
    plan_send,
    rehearse,
    send_test_copies,
)
from newsletter.store import Store
from newsletter.store.admin import copy_store
from tests.pgserver import PostgresServer
from tests.sendkit import ListAudience, example_template, people
from tests.smtpserver import SmtpTestServer

ISSUE = "2026-11"
READERS = ("ann@example.org", "bob@example.org", "carol@example.net")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def offline_check(
    issue: Issue, rendered: RenderedIssue, settings: Settings, *, offline: bool
) -> CheckReport:
    return check_issue(issue, rendered, settings, offline=True, spamassassin=None)


@pytest.fixture
def sink() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as running:
        yield running


def smtp_to(settings: Settings, sink: SmtpTestServer) -> Settings:
    transport = TransportSettings(kind="smtp", host="127.0.0.1", port=sink.port, security="none")
    return replace(settings, transport=transport)


@pytest.fixture
def engine_settings(
    settings: Settings, store_url: str, sink: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The example project sending to an SMTP server on loopback, with its store on the engine
    under test, a signing secret and three subscribers."""
    if "://" in store_url:
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", store_url)
    else:
        monkeypatch.delenv("NEWSLETTER_DATABASE_URL", raising=False)
    monkeypatch.delenv(settings.unsubscribe.secret_env, raising=False)
    (settings.root / ".newsletter-secret").write_text("archive-test-secret\n", encoding="utf-8")
    with SubscriberStore(settings.database()) as store:
        for address in READERS:
            store.add(address, address.split("@")[0].title())
    return smtp_to(settings, sink)


def archived(settings: Settings) -> ArchiveStore:
    return ArchiveStore(settings.database())


def change_an_item(settings: Settings, line: str) -> None:
    item = sorted((settings.issues_dir / ISSUE).glob("*.md"))[-1]
    item.write_text(item.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


# --- the store ------------------------------------------------------------------------------------


def snapshot(subject: str, html: str, *images: tuple[str, bytes]) -> Snapshot:
    return Snapshot(ISSUE, subject, html, tuple(ArchiveImage(n, "image/png", d) for n, d in images))


def test_the_first_freeze_wins(store_url: str) -> None:
    with ArchiveStore(store_url) as archive:
        assert archive.entries() == []
        assert archive.freeze(snapshot("First", "<p>one</p>", ("a.png", PNG)), at=100.0)
        assert not archive.freeze(snapshot("Second", "<p>two</p>", ("b.png", PNG)), at=200.0)
        (entry,) = archive.entries()
        assert (entry.issue, entry.subject, entry.sent_at, entry.updates) == (
            ISSUE,
            "First",
            100.0,
            0,
        )
        page = archive.page(ISSUE)
        assert page is not None and page.html == "<p>one</p>"
        image = archive.image(ISSUE, "a.png")
        assert image is not None and image.data == PNG and image.content_type == "image/png"
        # The losing freeze's images were not added either: one transaction each.
        assert archive.filenames(ISSUE) == ["a.png"]
        assert archive.page("2026-12") is None and archive.image(ISSUE, "b.png") is None


def test_an_update_replaces_the_page_and_keeps_old_images(store_url: str) -> None:
    with ArchiveStore(store_url) as archive:
        with pytest.raises(ArchiveError, match="not in the archive: it has not been sent"):
            archive.update(snapshot("Never sent", "<p>x</p>"))
        assert archive.entries() == []
        archive.freeze(snapshot("First", "<p>one</p>", ("a.png", PNG)), at=100.0)
        entry = archive.update(snapshot("Fixed", "<p>fixed</p>", ("c.png", PNG + b"c")), at=300.0)
        assert (entry.subject, entry.sent_at, entry.updated_at, entry.updates) == (
            "Fixed",
            100.0,
            300.0,
            1,
        )
        page = archive.page(ISSUE)
        assert page is not None and page.html == "<p>fixed</p>"
        # Mail already sent links a.png: it stays.
        assert archive.filenames(ISSUE) == ["a.png", "c.png"]


def test_image_bytes_are_stored_once_and_listed_newest_first(store_url: str) -> None:
    with ArchiveStore(store_url) as archive:
        for n, issue in enumerate(("2026-09", "2026-11", "2026-10")):
            archive.freeze(
                Snapshot(
                    issue, f"Issue {issue}", "<p/>", (ArchiveImage("logo.png", "image/png", PNG),)
                ),
                at=1000.0 + n * (10 if issue != "2026-10" else 5),
            )
        assert [e.issue for e in archive.entries()] == ["2026-11", "2026-10", "2026-09"]
        with archive.database.read() as db:
            assert db.execute("SELECT COUNT(*) FROM archive_blobs").fetchone()[0] == 1
            assert db.execute("SELECT COUNT(*) FROM archive_files").fetchone()[0] == 3


# --- freezing at the first hand-over -------------------------------------------------------------


def test_sending_freezes_what_was_sent_and_a_rebuild_changes_nothing(
    engine_settings: Settings,
) -> None:
    settings = engine_settings
    rendered = render_issue(load_issue(settings.issues_dir / ISSUE), settings)
    plan = plan_send(settings, SendRequest(ISSUE), checker=offline_check)
    with archived(settings) as archive:
        assert archive.entries() == []  # planning archives nothing
    report = deliver(plan, clock=lambda: 1_800_000_000.0)
    assert report.sent_now == 3
    with archived(settings) as archive:
        (entry,) = archive.entries()
        page = archive.page(ISSUE)
        names = archive.filenames(ISSUE)
    assert entry.subject == "Harvest festival, new compost bays and the winter roster"
    assert entry.sent_at == 1_800_000_000.0
    assert page is not None and page.html == local_image_html(rendered, rendered.web_html)
    assert sorted(names) == sorted(i.filename for i in rendered.embedded_images)
    assert names  # the example issue has photos and a logo

    change_an_item(settings, "A line added after the send.")
    build_issue(settings, settings.issues_dir / ISSUE)
    assert "A line added after the send." in (settings.dist_dir / ISSUE / "web.html").read_text()
    with SubscriberStore(settings.database()) as store:
        store.add("dan@example.org", "Dan")
    again = plan_send(settings, SendRequest(ISSUE), checker=offline_check)
    assert deliver(again, accept_changed=True).sent_now == 1  # Dan gets the changed version
    with archived(settings) as archive:
        kept = archive.page(ISSUE)
        assert kept is not None and kept.html == page.html
        assert "A line added after the send." not in kept.html
        assert archive.entries()[0].sent_at == 1_800_000_000.0


def test_an_outbox_send_is_not_published_until_update_says_so(
    engine_settings: Settings, sink: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = replace(engine_settings, transport=TransportSettings(kind="outbox"))
    report = deliver(plan_send(settings, SendRequest(ISSUE), checker=offline_check))
    assert report.sent_now == 3 and sink.messages == []
    assert len(list((settings.root / "outbox").rglob("*.eml"))) == 3
    with archived(settings) as archive:
        assert archive.entries() == [] and archive.filenames(ISSUE) == []
    # Files for review only, unless the editor says they were delivered after all.
    monkeypatch.chdir(settings.root)
    code, output = run("archive", "update", ISSUE)
    assert code == 0 and f"Added {ISSUE} to the archive" in output


def test_the_archive_exists_before_the_first_message_is_handed_over(
    engine_settings: Settings,
) -> None:
    settings = engine_settings
    seen: list[bool] = []

    class Watching:
        """A transport that, at each hand-over, looks at what `serve` would publish."""

        name = "watching"
        max_batch = 1
        needs_mime = True
        delivers_mime_as_is = True
        signals_handover = False
        hands_over_each = False

        def check(self) -> None:
            return

        def send_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
            with archived(settings) as archive:
                seen.append(archive.page(ISSUE) is not None and bool(archive.filenames(ISSUE)))
            return [BatchResult(i.key, DeliveryReceipt(i.message.recipient, "id")) for i in items]

        def close(self) -> None:
            return

    plan = plan_send(
        settings,
        SendRequest(ISSUE),
        checker=offline_check,
        transport_factory=lambda s, e: Watching(),
    )
    deliver(plan)
    assert seen == [True, True, True]


def test_tests_and_dry_runs_archive_nothing(engine_settings: Settings) -> None:
    settings = engine_settings
    rehearse(settings, SendRequest(ISSUE), checker=offline_check)
    results = send_test_copies(settings, ISSUE, to=["editor@example.org"])
    assert [r.error for r in results] == [None]
    build_issue(settings, settings.issues_dir / ISSUE)
    with archived(settings) as archive:
        assert archive.entries() == [] and archive.page(ISSUE) is None
        # Images are embedded without base_url: nothing needs publishing for the test copy.
        assert archive.filenames(ISSUE) == []


def test_a_test_copy_with_hosted_images_publishes_them_but_not_the_page(
    engine_settings: Settings,
) -> None:
    settings = replace(engine_settings, base_url="https://news.example.org/")
    rendered = render_issue(load_issue(settings.issues_dir / ISSUE), settings)
    assert rendered.published_images and not rendered.embedded_images
    send_test_copies(settings, ISSUE, to=["editor@example.org"])
    with archived(settings) as archive:
        assert archive.page(ISSUE) is None and archive.entries() == []
        assert sorted(archive.filenames(ISSUE)) == sorted(
            i.filename for i in rendered.published_images
        )


def test_a_failing_archive_stops_the_send_before_any_message(tmp_path: Path, project: Path) -> None:
    handed: list[str] = []

    class Recording:
        name = "recording"
        max_batch = 1
        needs_mime = True
        delivers_mime_as_is = True
        signals_handover = False
        hands_over_each = False

        def check(self) -> None:
            return

        def send_batch(self, items: Sequence[BatchItem]) -> list[BatchResult]:
            handed.extend(i.key for i in items)
            return [BatchResult(i.key, DeliveryReceipt(i.message.recipient, "id")) for i in items]

        def close(self) -> None:
            return

    def broken() -> None:
        raise ArchiveError("the archive cannot be written: disk full")

    template = example_template(project)
    with Ledger(tmp_path / "ledger.db") as ledger:
        report = send_issue(
            template,
            ListAudience(people(3)),
            transport=Recording(),
            ledger=ledger,
            before_first_handover=broken,
        )
        assert handed == []
        assert report.paused_reason == "the archive cannot be written: disk full"
        assert report.counts.get(State.PENDING) == 3 and report.sent_now == 0
        # Once the archive works, the same send goes on.
        calls: list[int] = []
        resumed = send_issue(
            template,
            ListAudience(people(3)),
            transport=Recording(),
            ledger=ledger,
            before_first_handover=lambda: calls.append(1),
        )
    assert resumed.sent_now == 3 and calls == [1] and len(handed) == 3


def test_snapshot_subject_uses_defaults_not_a_placeholder(settings: Settings) -> None:
    issue_md = settings.issues_dir / ISSUE / "issue.md"
    text = issue_md.read_text(encoding="utf-8").replace(
        'subject: "Harvest festival',
        "subject: \"{{ subscriber.first_name | default('Gardener') }}: harvest festival",
    )
    issue_md.write_text(text, encoding="utf-8")
    rendered = render_issue(load_issue(settings.issues_dir / ISSUE), settings)
    assert archive_snapshot(rendered).subject.startswith("Gardener: harvest festival")


# --- the commands --------------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str]:
    """Exit status and output (an error's message appended, as the CLI prints it)."""
    result = CliRunner().invoke(app, list(args))
    error = result.exception
    if isinstance(error, NewsletterError):
        return error.exit_code, f"{result.stdout}error: {error}\nhint: {error.hint}\n"
    if error is not None and not isinstance(error, SystemExit):
        raise error
    return result.exit_code, result.stdout


def test_archive_list_and_a_deliberate_update(
    engine_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = engine_settings
    monkeypatch.chdir(settings.root)
    assert run("archive", "list") == (0, "The archive is empty: no issue has been sent yet.\n")
    code, output = run("archive", "update", ISSUE)
    assert code != 0
    assert f"{ISSUE} is not in the archive: it has not been sent" in output

    deliver(plan_send(settings, SendRequest(ISSUE), checker=offline_check))
    code, output = run("archive", "list")
    assert code == 0, output
    assert ISSUE in output and "Harvest festival" in output and "updated" not in output

    change_an_item(settings, "Corrected: the festival starts at 14:00.")
    code, output = run("archive", "update", ISSUE)
    assert code == 0, output
    assert f"Replaced the archived version of {ISSUE}" in output
    with archived(settings) as archive:
        page = archive.page(ISSUE)
    assert page is not None and "Corrected: the festival starts at 14:00." in page.html
    assert "updated 1x" in run("archive", "list")[1]


def test_an_issue_sent_before_the_archive_existed_is_added_by_update(
    engine_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = engine_settings
    deliver(plan_send(settings, SendRequest(ISSUE), checker=offline_check), clock=lambda: 1.0)
    with Store.open(settings.database()) as store, store.transaction() as db:
        # As a send by the previous release left it: ledger rows, no archive.
        for table in ("archive_files", "archive_issues", "archive_blobs"):
            db.execute(f"DELETE FROM {table}")
    with Ledger(settings.database()) as ledger:
        first = min(row.updated_at for row in ledger.issue(ISSUE).rows(State.SENT))
    monkeypatch.chdir(settings.root)
    code, output = run("archive", "update", ISSUE)
    assert code == 0, output
    assert f"Added {ISSUE} to the archive: it was sent" in output
    with archived(settings) as archive:
        (entry,) = archive.entries()
        assert (entry.sent_at, entry.updates) == (first, 0)
        assert archive.filenames(ISSUE)


def test_an_issue_folder_that_is_gone_is_reported(
    engine_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(engine_settings.root)
    shutil.rmtree(engine_settings.issues_dir / ISSUE)
    code, output = run("archive", "update", ISSUE)
    assert code != 0 and ISSUE in output


def test_store_copy_carries_the_archive_to_postgresql(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    source = tmp_path / "newsletter.db"
    with ArchiveStore(source) as archive:
        archive.freeze(
            snapshot("First", "<p>één</p>", ("a.png", PNG), ("b.gif", bytes(range(256))))
        )
    target_url = postgres_server.new_store()
    with Store.open(source) as src, Store.open(target_url) as dst:
        report = copy_store(src, dst)
    assert {t.table: t.rows for t in report.tables if t.table.startswith("archive_")} == {
        "archive_issues": 1,
        "archive_blobs": 2,
        "archive_files": 2,
    }
    with ArchiveStore(target_url) as copied:
        page = copied.page(ISSUE)
        image = copied.image(ISSUE, "b.gif")
    assert page is not None and page.html == "<p>één</p>"
    assert image is not None and image.data == bytes(range(256))


def test_archive_export_writes_the_sent_issues(
    engine_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = engine_settings
    deliver(plan_send(settings, SendRequest(ISSUE), checker=offline_check))
    monkeypatch.chdir(settings.root)
    code, output = run("archive", "export", "public")
    assert code == 0, output
    assert "index.html, 1 issue(s) with" in output
    assert "No feed.xml: set base_url in newsletter.toml" in output
    assert (settings.root / "public" / ISSUE / "web.html").is_file()
    assert not (settings.root / "public" / "feed.xml").exists()
    code, output = run("archive", "export", "issues")
    assert code != 0 and "is not empty and was not written by" in output
    assert (settings.root / "issues" / ISSUE / "issue.md").is_file()
