"""Benchmark: from saving an item file to the preview page showing the change (target < 300 ms).

Run: .venv/bin/python bench/bench_preview.py [edits]. Serves the example project (a copy) on a
free port, opens the preview in headless Chromium, then edits an item title `edits` times. For
each edit it measures, on one clock (epoch milliseconds, same machine):

- save → rebuilt: the watcher noticed the file, debounced and the issue was rendered again;
- rebuilt → shown: the page was told over SSE, reloaded the email frame and its images loaded;
- save → shown: the whole of it, what an editor waits for.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.cli.preview_project import make_rebuild, watch_paths_for  # noqa: E402
from newsletter.preview import PreviewEvent, PreviewServer  # noqa: E402
from tests.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

TARGET_MS = 300.0
ITEM = "01-harvest-festival.md"
TITLE = "title: Harvest festival on 6 December"
SHOWN = """(title) => {
    const doc = document.getElementById("email").contentDocument;
    return doc && doc.readyState === "complete" && doc.body.innerText.includes(title)
        && window.preview.loadedAt > 0 ? window.preview.loadedAt : 0;
}"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    from playwright.sync_api import sync_playwright

    edits = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    built_at: list[float] = []
    render_ms: list[float] = []

    def on_event(event: PreviewEvent) -> None:
        if event.kind == "built":
            built_at.append(time.time() * 1000)
            render_ms.append(event.seconds * 1000)

    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        shutil.copy(REPO / "newsletter.toml", project)
        shutil.copytree(REPO / "images", project / "images")
        shutil.copytree(REPO / "issues" / "2026-11", project / "issues" / "2026-11")
        issue = project / "issues" / "2026-11"
        item = issue / ITEM
        original = item.read_text(encoding="utf-8")

        server = PreviewServer(
            make_rebuild(project, issue), watch_paths_for(project, issue), port=0, on_event=on_event
        )
        server.bind()
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        server.ready.wait(30)

        totals, to_built, to_shown, renders = [], [], [], []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.url)
            page.wait_for_function("window.preview.loads > 0")
            for number in range(1, edits + 1):
                title = f"Harvest festival, edit {number}"
                time.sleep(0.3)  # let the previous reload settle: each edit is measured alone
                builds_before = len(built_at)
                saved = time.time() * 1000
                item.write_text(original.replace(TITLE, f"title: {title}"), encoding="utf-8")
                shown = float(page.wait_for_function(SHOWN, arg=title, timeout=10_000).json_value())
                built = next((at for at in built_at[builds_before:] if at >= saved), shown)
                renders.append(render_ms[-1])
                totals.append(shown - saved)
                to_built.append(built - saved)
                to_shown.append(shown - built)
            browser.close()
        server.stop()
        thread.join(10)

    print(f"{edits} edits of {ITEM}; preview at {server.url} (stopped)")
    print(f"{'measure':<34}{'median':>10}{'p90':>10}{'min':>10}{'max':>10}")
    for name, values in (
        ("save -> rebuilt (watch + render)", to_built),
        ("  of which render (in a thread)", renders),
        ("rebuilt -> shown (SSE + reload)", to_shown),
        ("save -> shown (total)", totals),
    ):
        print(
            f"{name:<34}{statistics.median(values):>8.0f}ms{percentile(values, 0.9):>8.0f}ms"
            f"{min(values):>8.0f}ms{max(values):>8.0f}ms"
        )
    median, p90 = statistics.median(totals), percentile(totals, 0.9)
    verdict = "meets" if p90 < TARGET_MS else ("median meets" if median < TARGET_MS else "MISSES")
    print(f"target {TARGET_MS:.0f} ms: {verdict} (median {median:.0f} ms, p90 {p90:.0f} ms)")


if __name__ == "__main__":
    main()
