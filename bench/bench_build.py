"""Benchmark: `newsletter build` of the example issue as a whole process (target < 1 s wall).

Run: .venv/bin/python bench/bench_build.py [runs]. Prints the median and spread of wall time for
the whole command (interpreter start, imports, render, write), and the in-process render time
for comparison, side by side in one run.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 1.0


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        shutil.copy(REPO / "newsletter.toml", project)
        shutil.copytree(REPO / "images", project / "images")
        shutil.copytree(REPO / "issues" / "2026-11", project / "issues" / "2026-11")
        command = [str(Path(sys.executable).parent / "newsletter"), "build", "2026-11"]
        walls = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(command, cwd=project, check=True, capture_output=True)
            walls.append(time.perf_counter() - start)

        sys.path.insert(0, str(REPO))
        from newsletter.config import load_settings
        from newsletter.content import load_issue
        from newsletter.render import render_issue

        settings = load_settings(project)
        renders = []
        for _ in range(runs):
            start = time.perf_counter()
            render_issue(load_issue(project / "issues" / "2026-11"), settings)
            renders.append(time.perf_counter() - start)

    wall = statistics.median(walls)
    render = statistics.median(renders)
    print(f"{'measure':<38}{'median':>10}{'min':>10}{'max':>10}")
    print(
        f"{'newsletter build (whole process)':<38}{wall * 1000:>8.0f}ms"
        f"{min(walls) * 1000:>8.0f}ms{max(walls) * 1000:>8.0f}ms"
    )
    print(
        f"{'render_issue (in process, warm)':<38}{render * 1000:>8.0f}ms"
        f"{min(renders) * 1000:>8.0f}ms{max(renders) * 1000:>8.0f}ms"
    )
    verdict = "meets" if wall < TARGET_SECONDS else "MISSES"
    print(
        f"\nwhole build / target = {wall / TARGET_SECONDS:.2f} "
        f"({verdict} the {TARGET_SECONDS:.0f} s target)"
    )


if __name__ == "__main__":
    main()
