"""Benchmark: from saving an item file to the preview page showing the change (target < 300 ms).

Run: .venv/bin/python bench/bench_preview.py [edits]. Serves the example project (a copy) on a
free port, opens the preview in headless Chromium, then edits an item title `edits` times.

    .venv/bin/python bench/bench_preview.py --photos 20 [--edits 10] [--rounds 3]
                                            [--baseline REF]

previews a generated issue of 20 items, each with its own 3000x2000 photo (bench_build.py's),
and edits the first item's title: once per round with the code of `--baseline` (`git archive`,
bench/baseline.py) and once with the current code, alternating, each in its own process (its
own preview server and Chromium); prints both sides' medians side by side.

For each edit it measures, on one clock (epoch milliseconds, same machine):

- save → rebuilt: the watcher noticed the file, debounced and the issue was rendered again;
- rebuilt → shown: the page was told over SSE, reloaded the email frame and its images loaded;
- save → shown: the whole of it, what an editor waits for.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# `--code PATH` (a child of the --photos comparison): that tree's package instead of ours.
_CODE = sys.argv[sys.argv.index("--code") + 1] if "--code" in sys.argv else str(REPO)
sys.path.insert(0, _CODE)
sys.path.insert(1, str(REPO))

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
    if "--photos" in sys.argv:
        photos_main()
        return
    edits = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        shutil.copy(REPO / "newsletter.toml", project)
        shutil.copytree(REPO / "images", project / "images")
        shutil.copytree(REPO / "issues" / "2026-11", project / "issues" / "2026-11")
        issue = project / "issues" / "2026-11"
        result = measure(project, issue, issue / ITEM, TITLE, "Harvest festival", edits)
    report(f"{edits} edits of {ITEM}", result)


def measure(
    project: Path, issue: Path, item: Path, title_line: str, new_title: str, edits: int
) -> dict[str, list[float]]:
    """Serve `issue`, open it in Chromium, rewrite `title_line` of `item` `edits` times."""
    from playwright.sync_api import sync_playwright

    built_at: list[float] = []
    render_ms: list[float] = []

    def on_event(event: PreviewEvent) -> None:
        if event.kind == "built":
            built_at.append(time.time() * 1000)
            render_ms.append(event.seconds * 1000)

    original = item.read_text(encoding="utf-8")
    rebuild = make_rebuild(project, issue)
    rebuild_cpu: list[float] = []

    def timed_rebuild() -> Any:
        # CPU of the rebuilding thread: what a loaded machine's wall time hides.
        start = time.thread_time()
        try:
            return rebuild()
        finally:
            rebuild_cpu.append((time.thread_time() - start) * 1000)

    server = PreviewServer(
        timed_rebuild, watch_paths_for(project, issue), port=0, on_event=on_event
    )
    server.bind()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    server.ready.wait(60)

    totals, to_built, to_shown, renders, cpus = [], [], [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server.url)
        page.wait_for_function("window.preview.loads > 0", timeout=60_000)
        for number in range(1, edits + 1):
            # Bracketed: "edit 1" must not match a page still showing "edit 10" (a previous round).
            title = f"{new_title} [edit {number}]"
            time.sleep(0.3)  # let the previous reload settle: each edit is measured alone
            builds_before = len(built_at)
            saved = time.time() * 1000
            item.write_text(original.replace(title_line, f"title: {title}"), encoding="utf-8")
            shown = float(page.wait_for_function(SHOWN, arg=title, timeout=30_000).json_value())
            built = next((at for at in built_at[builds_before:] if at >= saved), shown)
            renders.append(render_ms[-1])
            cpus.append(rebuild_cpu[-1])
            totals.append(shown - saved)
            to_built.append(built - saved)
            to_shown.append(shown - built)
        browser.close()
    server.stop()
    thread.join(10)
    return {
        "to_built": to_built,
        "renders": renders,
        "cpu": cpus,
        "to_shown": to_shown,
        "totals": totals,
    }


ROWS = (
    ("save -> rebuilt (watch + render)", "to_built"),
    ("  of which rebuild (in a thread)", "renders"),
    ("  rebuild CPU (its thread)", "cpu"),
    ("rebuilt -> shown (SSE + reload)", "to_shown"),
    ("save -> shown (total)", "totals"),
)


def report(title: str, result: dict[str, list[float]]) -> None:
    print(title)
    print(f"{'measure':<34}{'median':>10}{'p90':>10}{'min':>10}{'max':>10}")
    for name, key in ROWS:
        values = result[key]
        print(
            f"{name:<34}{statistics.median(values):>8.0f}ms{percentile(values, 0.9):>8.0f}ms"
            f"{min(values):>8.0f}ms{max(values):>8.0f}ms"
        )
    totals = result["totals"]
    median, p90 = statistics.median(totals), percentile(totals, 0.9)
    verdict = "meets" if p90 < TARGET_MS else ("median meets" if median < TARGET_MS else "MISSES")
    print(f"target {TARGET_MS:.0f} ms: {verdict} (median {median:.0f} ms, p90 {p90:.0f} ms)")


def photos_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="507e915")  # main before this work on issue 16
    parser.add_argument("--code")  # a child: measure this tree's code, print JSON
    parser.add_argument("--project")
    args = parser.parse_args()
    if args.code is not None:  # one side of one round, in its own process
        project = Path(args.project)
        issue = project / "issues" / "photos"
        result = measure(
            project, issue, issue / "01-item.md", "title: Item 1", "Item 1", args.edits
        )
        print(json.dumps(result))
        return
    sys.path.insert(0, str(REPO / "bench"))
    from baseline import extract
    from bench_build import make_photo_issue

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        project = root / "project"
        project.mkdir()
        make_photo_issue(project, args.photos)
        sides = {"baseline": extract(args.baseline, root / "baseline"), "current": REPO}
        results: dict[str, dict[str, list[float]]] = {side: {} for side in sides}
        env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
        for number in range(1, args.rounds + 1):
            for side, code in sides.items():
                load = os.getloadavg()[0]
                done = subprocess.run(
                    [sys.executable, __file__, "--photos", str(args.photos), "--code", str(code),
                     "--project", str(project), "--edits", str(args.edits)],
                    env=env, check=True, capture_output=True, text=True,
                )  # fmt: skip
                result: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
                for key, values in result.items():
                    results[side].setdefault(key, []).extend(values)
                print(
                    f"round {number} {side:<9} save -> shown median "
                    f"{statistics.median(result['totals']):.0f} ms, rebuild median "
                    f"{statistics.median(result['renders']):.0f} ms, CPU "
                    f"{statistics.median(result['cpu']):.0f} ms (load average {load:.1f})",
                    flush=True,
                )
    print()
    for side, result in results.items():
        name = args.baseline if side == "baseline" else "current"
        report(f"{side} ({name}): {args.photos} photos, {len(result['totals'])} edits", result)
        print()


if __name__ == "__main__":
    main()
