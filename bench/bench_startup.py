"""Benchmark: start-up of `newsletter --version`, `status` and the imports of `send`, beside an
earlier commit (target: --version < 150 ms).

Run: .venv/bin/python bench/bench_startup.py [--baseline REF] [--runs N]

Each round runs every case once for the current code and once for `--baseline` (default: the
commit before the lazy imports), alternating, so both see the same machine; prints medians,
min and max of wall time per case, and the median CPU time (user + system) of the process,
which a busy machine inflates far less than the wall time. Cases, each a whole process in a
copy of the example project:
- `python -c pass`: the interpreter alone (site, the editable install's finder), the floor;
- `newsletter --version`;
- `newsletter status 2026-11` (nothing sent yet: it reads settings and the ledger);
- `import newsletter.sending` (what `send` imports before it renders and checks).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baseline import REPO, command, extract

TARGET_VERSION_SECONDS = 0.150
DEFAULT_BASELINE = "507e915"  # main before this round's start-up work (fixedcost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sides = {"baseline": extract(args.baseline, root / "baseline"), "current": None}
        # A project per side: the current code migrates the store to a version an older
        # baseline refuses to open ("written by a newer version").
        projects = {side: root / f"project-{side}" for side in sides}
        for project in projects.values():
            project.mkdir()
            shutil.copy(REPO / "newsletter.toml", project)
            shutil.copytree(REPO / "images", project / "images")
            shutil.copytree(REPO / "issues" / "2026-11", project / "issues" / "2026-11")
        cases: dict[str, list[str] | None] = {
            "python -c pass (floor)": ["-c", "pass"],
            "newsletter --version": ["--version"],
            "newsletter status 2026-11": ["status", "2026-11"],
            "import newsletter.sending": None,
            "newsletter build 2026-11 (unchanged)": ["build", "2026-11"],
        }
        times: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        loads = []
        for _ in range(args.runs):
            loads.append(os.getloadavg()[0])
            for case, arguments in cases.items():
                for side, code_root in sides.items():
                    prefix, env = command(code_root)
                    # An installed package has its bytecode compiled; this variable (set on the
                    # shared machine) would make every process compile every module again.
                    env.pop("PYTHONDONTWRITEBYTECODE", None)
                    if arguments is None:
                        argv = [sys.executable, "-c", "import newsletter.sending"]
                    elif arguments[0] == "-c":
                        argv = [sys.executable, *arguments]
                    else:
                        argv = [*prefix, *arguments]
                    used = resource.getrusage(resource.RUSAGE_CHILDREN)
                    start = time.perf_counter()
                    subprocess.run(
                        argv, cwd=projects[side], env=env, check=True, capture_output=True
                    )
                    times.setdefault((case, side), []).append(time.perf_counter() - start)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu.setdefault((case, side), []).append(
                        after.ru_utime - used.ru_utime + after.ru_stime - used.ru_stime
                    )

    print(
        f"baseline: {args.baseline}; {args.runs} runs each, alternating; load average "
        f"{min(loads):.1f}-{max(loads):.1f}\n"
    )
    print(f"{'case':<38}{'side':<10}{'median':>9}{'min':>9}{'max':>9}{'ratio':>8}{'CPU':>9}")
    for case in cases:
        base = statistics.median(times[(case, "baseline")])
        for side in sides:
            runs = times[(case, side)]
            median = statistics.median(runs)
            print(
                f"{case:<38}{side:<10}{median * 1000:>7.0f}ms{min(runs) * 1000:>7.0f}ms"
                f"{max(runs) * 1000:>7.0f}ms{base / median:>7.1f}x"
                f"{statistics.median(cpu[(case, side)]) * 1000:>7.0f}ms"
            )
    version = statistics.median(times[("newsletter --version", "current")])
    verdict = "meets" if version < TARGET_VERSION_SECONDS else "MISSES"
    print(f"\n--version: {version * 1000:.0f} ms ({verdict} the 150 ms target)")


if __name__ == "__main__":
    main()
