"""The live preview: a real server on 127.0.0.1 over real files, driven by httpx and Chromium."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image

from newsletter.cli.preview_project import make_rebuild, watch_paths_for
from newsletter.errors import ContentError, NewsletterError, Problem, ProjectError
from newsletter.preview import (
    PreviewBuild,
    PreviewError,
    PreviewImage,
    PreviewSample,
    PreviewServer,
    create_app,
    failure_from,
)
from tests.browser import launch_chromium, require_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

WAIT_SECONDS = 5.0


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 2), "#1b6b5a").save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png()


def fake_build(title: str) -> PreviewBuild:
    html = f"<html><head><title>t</title></head><body><h1>{title}</h1></body></html>"
    return PreviewBuild(
        issue_name="demo",
        sender_name="Demo",
        sender_address="demo@example.org",
        preheader="The preheader",
        samples=(
            PreviewSample("First", {"email": "a@example.org"}, f"Subject {title}", html, title),
        ),
        images=(PreviewImage("dot.png", "image/png", PNG),),
    )


class FileRebuild:
    """Builds from one text file: `ok <title>` builds, anything else fails like bad content."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls = 0

    def __call__(self) -> PreviewBuild:
        self.calls += 1
        text = self.path.read_text(encoding="utf-8").strip()
        if text.startswith("ok "):
            return fake_build(text[3:])
        raise ContentError([Problem("invalid YAML front matter", file=self.path, line=2)])


@contextmanager
def running(server: PreviewServer) -> Iterator[PreviewServer]:
    """Serve in a thread; stop and join it afterwards (failing if it does not stop)."""
    server.bind()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.ready.wait(WAIT_SECONDS), "the preview server did not start"
    try:
        yield server
    finally:
        server.stop()
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive(), "the preview server did not stop"


def poll(check: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until `check()` holds."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def state_of(server: PreviewServer) -> dict[str, Any]:
    response = httpx.get(f"{server.url}state.json")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "content.md"
    path.write_text("ok First", encoding="utf-8")
    return path


@pytest.fixture
def fake_server(tmp_path: Path, source: Path) -> Iterator[PreviewServer]:
    server = PreviewServer(FileRebuild(source), [tmp_path], port=0, display_root=tmp_path)
    with running(server):
        yield server


# --- the server, with a stand-in rebuild ---------------------------------------------------------


def test_serves_the_email_text_images_and_state(fake_server: PreviewServer) -> None:
    url = fake_server.url
    html = httpx.get(f"{url}email.html?sample=0")
    assert html.status_code == 200
    assert '<head><base target="_blank"><title>' in html.text
    assert "<h1>First</h1>" in html.text
    assert "script-src 'none'" in html.headers["content-security-policy"]
    assert html.headers["cache-control"] == "no-store"

    text = httpx.get(f"{url}email.txt?sample=0")
    assert (text.status_code, text.text) == (200, "First")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"

    image = httpx.get(f"{url}images/dot.png")
    assert (image.status_code, image.headers["content-type"], image.content) == (
        200,
        "image/png",
        PNG,
    )
    assert image.headers["cache-control"] == "no-cache"  # not said to be named by content
    again = httpx.get(f"{url}images/dot.png", headers={"If-None-Match": image.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")

    state = state_of(fake_server)
    assert state["build"] == 1 and state["failure"] is None and state["building"] is False
    assert state["samples"] == [
        {"label": "First", "subject": "Subject First", "email": "a@example.org"}
    ]
    assert state["sender"] == {"name": "Demo", "address": "demo@example.org"}


# Starlette 1.x prefers `httpx2` for its test client; httpx is what this project has.
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_create_app_runs_under_any_asgi_server(tmp_path: Path, source: Path) -> None:
    from starlette.testclient import TestClient

    app = create_app(FileRebuild(source), [tmp_path], display_root=tmp_path)
    with TestClient(app, base_url="http://127.0.0.1:8025") as client:
        assert client.get("/state.json").json()["build"] == 1
        assert "<h1>First</h1>" in client.get("/email.html").text
        assert 'id="email" title="The email"' in client.get("/").text


def test_requests_for_other_host_names_are_refused(fake_server: PreviewServer) -> None:
    # A page on another site could resolve its own name to 127.0.0.1 (DNS rebinding).
    refused = httpx.get(f"{fake_server.url}state.json", headers={"Host": "evil.example"})
    assert refused.status_code == 400
    local = f"localhost:{fake_server.port}"
    assert httpx.get(f"{fake_server.url}state.json", headers={"Host": local}).status_code == 200


def test_unknown_samples_parts_and_images_are_not_found(fake_server: PreviewServer) -> None:
    paths = ["email.html?sample=1", "email.html?sample=-1", "email.txt?sample=x", "email.pdf"]
    for path in [*paths, "images/x", "images/../content.md"]:
        assert httpx.get(f"{fake_server.url}{path}").status_code == 404, path


def test_page_embeds_the_state_safely(tmp_path: Path, source: Path) -> None:
    source.write_text("ok </script><b>x</b>", encoding="utf-8")
    with running(PreviewServer(FileRebuild(source), [], port=0)) as server:
        page = httpx.get(server.url).text
    assert "</script><b>" not in page
    embedded = page.split('<script id="initial-state" type="application/json">')[1]
    state = json.loads(embedded.split("</script>")[0])
    assert state["samples"][0]["subject"] == "Subject </script><b>x</b>"
    assert '<label class="pick" for="sample">' in page


def test_a_failed_first_build_is_shown_and_fixing_it_shows_the_email(
    tmp_path: Path, source: Path
) -> None:
    source.write_text("broken", encoding="utf-8")
    server = PreviewServer(FileRebuild(source), [tmp_path], port=0, display_root=tmp_path)
    with running(server):
        state = state_of(server)
        assert state["build"] == 0
        assert state["failure"] == {
            "title": "1 content problem",
            "problems": ["content.md:2: invalid YAML front matter"],
            "hint": None,
        }
        missing = httpx.get(f"{server.url}email.html?sample=0")
        assert missing.status_code == 503
        assert "No email to show yet" in missing.text

        source.write_text("ok Fixed", encoding="utf-8")
        poll(lambda: state_of(server)["build"] == 1, "the fixed build")
        assert state_of(server)["failure"] is None
        assert "<h1>Fixed</h1>" in httpx.get(f"{server.url}email.html").text


def test_a_failed_rebuild_keeps_the_last_good_email(
    fake_server: PreviewServer, source: Path
) -> None:
    source.write_text("broken", encoding="utf-8")
    poll(lambda: state_of(fake_server)["failure"] is not None, "the failure")
    state = state_of(fake_server)
    assert state["build"] == 1
    assert state["failure"]["problems"] == ["content.md:2: invalid YAML front matter"]
    assert "<h1>First</h1>" in httpx.get(f"{fake_server.url}email.html").text

    source.write_text("ok Second", encoding="utf-8")
    poll(lambda: state_of(fake_server)["failure"] is None, "the failure to clear")
    assert state_of(fake_server)["build"] == 2
    assert "<h1>Second</h1>" in httpx.get(f"{fake_server.url}email.html").text


def test_events_announce_rebuilds_and_end_when_the_server_stops(
    tmp_path: Path, source: Path
) -> None:
    server = PreviewServer(FileRebuild(source), [tmp_path], port=0)
    server.bind()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.ready.wait(WAIT_SECONDS)
    builds = []
    with (
        httpx.Client(timeout=WAIT_SECONDS) as client,
        client.stream("GET", f"{server.url}events") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                builds.append(json.loads(line[6:])["build"])
                if builds == [1]:
                    source.write_text("ok Changed", encoding="utf-8")
                if builds[-1] == 2:
                    break
        stopped_at = time.monotonic()
        server.stop()
        rest = list(lines)  # ends because the server closes the stream
    thread.join(WAIT_SECONDS)
    assert not thread.is_alive()
    assert time.monotonic() - stopped_at < 3
    assert builds[0] == 1 and builds[-1] == 2
    assert all(not line.startswith("data: ") or '"build": 2' in line for line in rest)


def test_changes_during_a_rebuild_are_built_once_more(tmp_path: Path, source: Path) -> None:
    gate = threading.Event()
    inner = FileRebuild(source)

    def slow_rebuild() -> PreviewBuild:
        if inner.calls == 1:
            gate.wait(WAIT_SECONDS)  # the second build waits while two more edits land
        return inner()

    with running(PreviewServer(slow_rebuild, [tmp_path], port=0)) as server:
        source.write_text("ok Two", encoding="utf-8")
        poll(lambda: inner.calls == 1 and state_of(server)["building"], "the rebuild to start")
        source.write_text("ok Three", encoding="utf-8")
        time.sleep(0.15)  # let the watcher report it while the build is still held
        source.write_text("ok Four", encoding="utf-8")
        time.sleep(0.15)
        gate.set()
        poll(lambda: "Four" in httpx.get(f"{server.url}email.txt").text, "the last edit")
        assert state_of(server)["building"] is False
    # The first build, the held one, and one more for the edits made meanwhile (not one each).
    assert inner.calls == 3


def test_watches_a_config_file_replaced_by_rename_and_a_templates_folder_made_later(
    tmp_path: Path, source: Path
) -> None:
    config = tmp_path / "newsletter.toml"
    config.write_text("a = 1\n", encoding="utf-8")
    issue = tmp_path / "issue"
    issue.mkdir()
    templates = tmp_path / "templates"
    rebuild = FileRebuild(source)
    with running(PreviewServer(rebuild, [issue, templates, config], port=0)):
        calls = rebuild.calls
        (tmp_path / "unwatched.txt").write_text("x", encoding="utf-8")
        staged = tmp_path / ".newsletter.toml.tmp"
        staged.write_text("a = 2\n", encoding="utf-8")
        os.replace(staged, config)  # how many editors save
        poll(lambda: rebuild.calls > calls, "a rebuild after the config was replaced")

        calls = rebuild.calls
        templates.mkdir()
        poll(lambda: rebuild.calls > calls, "a rebuild after templates/ was created")

        # Once the new folder is watched, editing a file inside it rebuilds too.
        deadline = time.monotonic() + WAIT_SECONDS
        calls = rebuild.calls
        while rebuild.calls <= calls + 1:
            assert time.monotonic() < deadline, "edits inside the new templates/ were not seen"
            (templates / "email.mjml.j2").write_text(f"{time.monotonic()}", encoding="utf-8")
            time.sleep(0.1)


CTRL_C_SCRIPT = """
import sys
from pathlib import Path
from newsletter.cli.preview_project import make_rebuild, watch_paths_for
from newsletter.preview import PreviewServer
root = Path(sys.argv[1])
folder = root / "issues" / "2026-11"
server = PreviewServer(make_rebuild(root, folder), watch_paths_for(root, folder), port=0)
server.bind()
print(server.url, flush=True)
server.run()
print("stopped", flush=True)
"""


@pytest.mark.slow
def test_ctrl_c_stops_the_server_cleanly_with_a_page_connected(project: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        with (
            httpx.Client(timeout=WAIT_SECONDS) as client,
            client.stream("GET", f"{url}events") as stream,
        ):
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            process.send_signal(signal.SIGINT)
            list(lines)  # the server ends the event stream rather than waiting for it
        out, err = process.communicate(timeout=WAIT_SECONDS)
    finally:
        process.kill()
    assert (process.returncode, out, err) == (0, "stopped\n", "")


def test_a_busy_port_is_reported_clearly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = PreviewServer(lambda: fake_build("x"), [], port=port)
        with pytest.raises(PreviewError) as caught:
            server.bind()
    assert caught.value.message == f"port {port} on 127.0.0.1 is already in use"
    assert caught.value.hint is not None and f"--port {port + 1}" in caught.value.hint


@pytest.mark.parametrize(
    ("error", "title", "problems", "hint"),
    [
        (
            ContentError(
                [
                    Problem("bad key", file=Path("/p/issues/x/01-a.md"), line=3, key="titel"),
                    Problem("no items", file=Path("/elsewhere/x")),
                ]
            ),
            "2 content problems",
            ("issues/x/01-a.md:3: titel: bad key", "/elsewhere/x: no items"),
            None,
        ),
        (
            ProjectError("no issue 'x'", hint="Did you mean 'y'?"),
            "The issue cannot be built",
            ("no issue 'x'",),
            "Did you mean 'y'?",
        ),
        (NewsletterError("plain"), "The issue cannot be built", ("plain",), None),
        (ValueError("boom"), "Unexpected error while rebuilding", ("ValueError: boom",), ...),
    ],
)
def test_failures_list_every_problem_with_file_and_line(
    error: Exception, title: str, problems: tuple[str, ...], hint: object
) -> None:
    failure = failure_from(error, Path("/p"))
    assert (failure.title, failure.problems) == (title, problems)
    if hint is not ...:
        assert failure.hint == hint
    else:
        assert failure.hint is not None and "--debug" in failure.hint


def test_the_preview_imports_no_renderer_and_ships_its_page_as_package_data() -> None:
    # A fresh interpreter: this test process has long imported the renderer for other tests.
    script = (
        "import sys, newsletter.preview.app as app\n"
        "print(sorted(m for m in sys.modules if m.startswith(('newsletter.render', "
        "'newsletter.build', 'newsletter.checks', 'newsletter.content', 'newsletter.cli'))))\n"
        "print('__CSS__' in app._PAGE, '__JS__' in app._PAGE, 'new EventSource' in app._PAGE)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == ["[]", "False False True"]


# --- composing a rebuild from the example project ------------------------------------------------


def test_make_rebuild_fills_each_sample_and_serves_images_locally(project: Path) -> None:
    folder = project / "issues" / "2026-11"
    build = make_rebuild(project, folder)()
    assert [sample.label for sample in build.samples] == [
        "Alex Example (sample subscriber)",
        "No name (defaults show)",
        "Long hostile name",
    ]
    named, nameless, hostile = build.samples
    assert named.subject == "Harvest festival, new compost bays and the winter roster"
    assert "Dear Alex," in named.html and "Dear Alex," in named.text
    assert "Dear gardener," in nameless.html and "Dear gardener," in nameless.text
    assert "Dear Søren &quot;Evil&quot; &lt;x@y&gt; &lt;script&gt;," in hostile.html
    assert "<script" not in hostile.html
    assert 'Dear Søren "Evil" <x@y> <script>,' in hostile.text
    assert "cid:" not in named.html
    for src in set(_image_sources(named.html)):
        assert src.startswith("/images/")
        image = build.image(src.removeprefix("/images/"))
        assert image is not None, src
        # Named after their bytes, so the browser may keep them across reloads.
        digest = hashlib.sha256(image.data).hexdigest()[:12]
        assert image.immutable and f"-{digest}." in image.filename, src
    assert (build.sender_name, build.sender_address) == (
        "Riverside Roots",
        "news@riverside-garden.example.org",
    )
    assert build.preheader == "Join us on 6 December, and sign up for a winter shift."
    assert build.notes[0] == (
        "04-seed-catalogue.md is a draft: marked here, left out when the issue is sent"
    )
    # The offline checks are shown beside the email, naming the file and line.
    assert (
        "check warning: issues/2026-11/01-harvest-festival.md:6: link on a placeholder domain "
        "(riverside-garden.example.org), not a real site: "
        "https://riverside-garden.example.org/festival"
    ) in build.notes
    assert all(note.startswith("check warning: ") for note in build.notes[1:])
    assert watch_paths_for(project, folder) == [
        folder,
        project / "templates",
        project / "newsletter.toml",
        project / "images",
        project / "locales",
    ]


def test_make_rebuild_serves_published_images_before_they_are_online(project: Path) -> None:
    config = project / "newsletter.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            '# base_url = "https://riverside-garden.example.org/newsletter/"',
            'base_url = "https://riverside-garden.example.org/newsletter/"',
        ),
        encoding="utf-8",
    )
    build = make_rebuild(project, project / "issues" / "2026-11")()
    html = build.samples[0].html
    assert "https://riverside-garden.example.org/newsletter/2026-11/" not in html
    sources = set(_image_sources(html))
    assert sources and all(src.startswith("/images/") for src in sources)
    for src in sources:
        image = build.image(src.removeprefix("/images/"))
        assert image is not None and image.content_type.startswith("image/"), src


def _image_sources(html: str) -> list[str]:
    return [part.split('"', 1)[0] for part in html.split(' src="')[1:]]


# --- the page in a real browser ------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_chromium()
    yield from launch_chromium()


@pytest.fixture
def example_preview(project: Path) -> Iterator[PreviewServer]:
    folder = project / "issues" / "2026-11"
    server = PreviewServer(
        make_rebuild(project, folder),
        watch_paths_for(project, folder),
        port=0,
        display_root=project,
    )
    with running(server):
        yield server


@pytest.fixture
def page(browser: Browser, example_preview: PreviewServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(example_preview.url)
    opened.wait_for_function("window.preview.loads > 0")
    yield opened
    context.close()
    assert errors == []


def _loads(page: Page) -> int:
    return int(page.evaluate("window.preview.loads"))


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


@pytest.mark.browser
def test_page_shows_the_issue_and_switches_width_part_and_sample(page: Page) -> None:
    from playwright.sync_api import expect  # deferred: slow to import (see tests/browser.py)

    email = page.frame_locator("#email")
    expect(page.locator("#subject")).to_have_text(
        "Harvest festival, new compost bays and the winter roster"
    )
    expect(page.locator("#from-name")).to_have_text("Riverside Roots")
    expect(page.locator("#preheader")).to_have_text(
        "Join us on 6 December, and sign up for a winter shift."
    )
    expect(email.locator("body")).to_contain_text("Harvest festival on 6 December")
    expect(page.locator("#notes")).to_contain_text("04-seed-catalogue.md is a draft")
    box = page.locator("#email").bounding_box()
    assert box is not None and box["width"] >= 600

    page.get_by_label("Mobile").check()
    box = page.locator("#email").bounding_box()
    assert box is not None and box["width"] == 375
    assert page.frames[1].evaluate("window.innerWidth") == 375

    loads = _loads(page)
    page.get_by_label("Plain text").check()
    page.wait_for_function(f"window.preview.loads > {loads}")
    expect(email.locator("body")).to_contain_text("HARVEST FESTIVAL ON 6 DECEMBER")
    assert page.frames[1].evaluate("document.contentType") == "text/plain"

    page.get_by_label("Subscriber").select_option(label="No name (defaults show)")
    expect(email.locator("body")).to_contain_text("Dear gardener,")

    page.get_by_label("HTML").check()
    page.get_by_label("Subscriber").select_option(label="Long hostile name")
    expect(email.locator("body")).to_contain_text('Dear Søren "Evil" <x@y> <script>,')
    assert page.frames[1].evaluate("document.scripts.length") == 0
    assert "width=mobile" in page.url and "sample=2" in page.url


@pytest.mark.browser
def test_page_reloads_itself_when_an_item_changes_and_keeps_the_scroll(
    page: Page, project: Path
) -> None:
    from playwright.sync_api import expect  # deferred: slow to import (see tests/browser.py)

    email = page.frame_locator("#email")
    page.frames[1].evaluate("window.scrollTo(0, 600)")
    loads = _loads(page)
    _edit(
        project / "issues" / "2026-11" / "01-harvest-festival.md",
        "title: Harvest festival on 6 December",
        "title: Harvest festival moved to 13 December",
    )
    expect(email.locator("body")).to_contain_text(
        "Harvest festival moved to 13 December", timeout=WAIT_SECONDS * 1000
    )
    # The page reloaded the frame by itself (the test never touched it); scroll is restored on load.
    page.wait_for_function(f"window.preview.loads > {loads}")
    assert abs(page.frames[1].evaluate("window.scrollY") - 600) <= 2
    expect(page.locator("#status")).to_contain_text("Live")


@pytest.mark.browser
def test_a_broken_item_shows_its_file_and_line_and_keeps_the_last_good_email(
    page: Page, project: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect  # deferred: slow to import (see tests/browser.py)

    item = project / "issues" / "2026-11" / "02-compost-bays.md"
    email = page.frame_locator("#email")
    _edit(item, "title: Three new compost bays", "title: [Three new compost bays")
    problems = page.locator("#problems")
    expect(problems).to_be_visible(timeout=WAIT_SECONDS * 1000)
    expect(problems).to_contain_text("1 content problem")
    expect(problems).to_contain_text(
        "issues/2026-11/02-compost-bays.md:2: title: YAML cannot read this value: "
        "put the value in quotes"
    )
    expect(page.locator("#status")).to_have_text("Build failed")
    expect(email.locator("body")).to_contain_text("Three new compost bays")
    page.screenshot(path=tmp_path / "preview-error.png")

    _edit(item, "title: [Three new compost bays", "title: Three new compost bays")
    expect(problems).to_be_hidden(timeout=WAIT_SECONDS * 1000)
    expect(page.locator("#status")).to_contain_text("Live")


@pytest.mark.browser
def test_a_first_build_that_fails_shows_the_problems_until_fixed(
    browser: Browser, project: Path
) -> None:
    from playwright.sync_api import expect  # deferred: slow to import (see tests/browser.py)

    folder = project / "issues" / "2026-11"
    _edit(folder / "issue.md", "date: 2026-11-26", "date: someday")
    server = PreviewServer(
        make_rebuild(project, folder),
        watch_paths_for(project, folder),
        port=0,
        display_root=project,
    )
    with running(server):
        context = browser.new_context()
        page = context.new_page()
        page.goto(server.url)
        expect(page.locator("#problems")).to_contain_text(
            "issues/2026-11/issue.md:4: date: 'someday' is not a date; write it like 2026-11-26"
        )
        email = page.frame_locator("#email")
        expect(email.locator("body")).to_contain_text("No email to show yet")

        _edit(folder / "issue.md", "date: someday", "date: 2026-11-26")
        expect(email.locator("body")).to_contain_text(
            "Harvest festival on 6 December", timeout=WAIT_SECONDS * 1000
        )
        expect(page.locator("#problems")).to_be_hidden()
        expect(page.locator("#subject")).to_have_text(
            "Harvest festival, new compost bays and the winter roster"
        )
        context.close()


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_the_page_speaks_the_newsletters_language(project: Path) -> None:
    from starlette.testclient import TestClient

    config = project / "newsletter.toml"
    config.write_text(config.read_text().replace('locale = "en"', 'locale = "nl"'))
    folder = project / "issues" / "2026-11"
    app = create_app(make_rebuild(project, folder), [], display_root=project)
    with TestClient(app, base_url="http://127.0.0.1:8025") as client:
        page = client.get("/").text
        state = client.get("/state.json").json()
    assert '<html lang="nl">' in page
    assert ">Telefoon</span>" in page and "Platte tekst" in page and "Abonnee" in page
    assert "__T_" not in page and ">Mobile<" not in page
    assert state["ui"]["failed"] == "Opbouwen mislukt"
    labels = [sample["label"] for sample in state["samples"]]
    assert labels[1:] == ["Zonder naam (standaardwaarden)", "Lange, vijandige naam"]
    assert "(voorbeeldabonnee)" in labels[0]
    assert any("is een concept" in note for note in state["notes"])
