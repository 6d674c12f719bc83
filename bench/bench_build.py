"""Benchmark: `newsletter build` of the example issue as a whole process (target < 0.8 s wall).

Run: .venv/bin/python bench/bench_build.py [runs] [--baseline REF] [--first]. Builds a copy of
the example project as whole processes (interpreter start, imports, render, write), alternating
in each round: the `--baseline` commit's code (`git archive`, bench/baseline.py) after a text
edit of an item, the current code after another text edit (it renders: what an editor's build
does), and the current code again (nothing changed: the render is read back). `--first` adds a
build with no cache at all (no render, image, inlining rules or compiled templates). Children
keep compiled templates in the run's own `XDG_CACHE_HOME`. Prints median, min and max wall time
and the median CPU time of each, and the load average.

    .venv/bin/python bench/bench_build.py --photos 20 [--runs 5] [--baseline REF]

builds a generated issue of 20 items, each with its own photo (3000x2000 JPEG), and compares,
alternating in each round: the `--baseline` commit (which processes every image on every build),
the current code with an empty `.newsletter-cache/` (a first build, or 20 changed photos:
processed in threads), and the current code rebuilding with the cache filled (nothing changed).
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

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 0.8


def main() -> None:
    if "--photos" in sys.argv:
        photos_main()
        return
    from baseline import command, extract

    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="?", type=int, default=5)
    parser.add_argument("--baseline", default="507e915")  # main before this work on issue 16
    parser.add_argument(
        "--first", action="store_true", help="also a first build: no render, image or code cache"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        project = root / "project"
        project.mkdir()
        shutil.copy(REPO / "newsletter.toml", project)
        shutil.copytree(REPO / "images", project / "images")
        shutil.copytree(REPO / "issues" / "2026-11", project / "issues" / "2026-11")
        baseline = extract(args.baseline, root / "baseline")
        item = project / "issues" / "2026-11" / "01-harvest-festival.md"
        original = item.read_text(encoding="utf-8")
        # The user's cache folder, where compiled theme templates are kept: the run's own.
        user_cache = root / "user-cache"
        walls: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        loads: list[float] = []

        def build(label: str, code_root: Path | None) -> None:
            prefix, env = command(code_root)
            # An installed package has its bytecode compiled; this variable (set on the shared
            # machine) would make every process compile every module again.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["XDG_CACHE_HOME"] = str(user_cache)
            used = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(
                [*prefix, "build", "2026-11"], cwd=project, env=env, check=True, capture_output=True
            )
            walls.setdefault(label, []).append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.setdefault(label, []).append(
                after.ru_utime - used.ru_utime + after.ru_stime - used.ru_stime
            )

        build("warm-up", baseline)  # bytecode compiled, images cached, files in the page cache
        build("warm-up", None)
        for number in range(args.runs):
            loads.append(os.getloadavg()[0])
            # A text edit before each build that renders: what an editor's build does.
            item.write_text(f"{original}\nEdit number {number}, baseline.\n", encoding="utf-8")
            build("baseline", baseline)
            item.write_text(f"{original}\nEdit number {number}, current.\n", encoding="utf-8")
            build("current, text edited (renders)", None)
            build("current, unchanged (render cache)", None)
            if args.first:
                shutil.rmtree(project / ".newsletter-cache", ignore_errors=True)
                shutil.rmtree(user_cache, ignore_errors=True)
                item.write_text(f"{original}\nEdit number {number}, first.\n", encoding="utf-8")
                build("current, first build (no caches)", None)

    print(
        f"newsletter build 2026-11, whole processes; baseline {args.baseline}; {args.runs} rounds;"
        f" load average {min(loads):.1f}-{max(loads):.1f}\n"
    )
    print(f"{'build':<38}{'median':>9}{'min':>9}{'max':>9}{'CPU':>9}")
    for label, runs in walls.items():
        if label == "warm-up":
            continue
        print(
            f"{label:<38}{statistics.median(runs) * 1000:>7.0f}ms"
            f"{min(runs) * 1000:>7.0f}ms{max(runs) * 1000:>7.0f}ms"
            f"{statistics.median(cpu[label]) * 1000:>7.0f}ms"
        )
    for label in ("current, text edited (renders)", "current, unchanged (render cache)"):
        wall = statistics.median(walls[label])
        verdict = "meets" if wall < TARGET_SECONDS else "MISSES"
        print(f"{label}: {wall:.2f} s ({verdict} the {TARGET_SECONDS} s target)")


def make_photo_issue(project: Path, photos: int) -> None:
    """The example project with an issue `photos` of 20 items, each with its own photo."""
    from PIL import Image, ImageDraw

    shutil.copy(REPO / "newsletter.toml", project)
    shutil.copytree(REPO / "images", project / "images")
    issue = project / "issues" / "photos"
    issue.mkdir(parents=True)
    source = REPO / "issues" / "2026-11" / "issue.md"
    (issue / "issue.md").write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    for number in range(1, photos + 1):
        # A photo-sized picture with detail everywhere, so JPEG cannot shrink it to nothing.
        image = Image.effect_noise((3000, 2000), 60 + number).convert("RGB")
        draw = ImageDraw.Draw(image)
        for band in range(0, 3000, 150):
            draw.rectangle((band, 0, band + 70, 2000), fill=(band % 255, 90 + number, 140))
        image.save(issue / f"photo-{number:02}.jpg", "JPEG", quality=90)
        (issue / f"{number:02}-item.md").write_text(
            f"---\ntitle: Item {number}\nimage: photo-{number:02}.jpg\n"
            f"image_alt: Test photo {number}\n---\nText of item {number}, with a "
            "[link](https://riverside-garden.example.org/).\n",
            encoding="utf-8",
        )


def photos_main() -> None:
    from baseline import command, extract

    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", default="4687537")  # main before issue 16's image cache
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        project = root / "project"
        project.mkdir()
        make_photo_issue(project, args.photos)
        baseline = extract(args.baseline, root / "baseline")
        cache = project / ".newsletter-cache"
        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}

        def build(label: str, code_root: Path | None) -> None:
            prefix, env = command(code_root)
            env.pop("PYTHONDONTWRITEBYTECODE", None)  # see main()
            used = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(
                [*prefix, "build", "photos"], cwd=project, env=env, check=True, capture_output=True
            )
            times.setdefault(label, []).append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.setdefault(label, []).append(
                after.ru_utime - used.ru_utime + after.ru_stime - used.ru_stime
            )

        build("warm-up (not counted)", None)  # bytecode compiled, files in the page cache
        build("warm-up (not counted)", baseline)
        for _ in range(args.runs):
            build("baseline: every image processed", baseline)
            shutil.rmtree(cache, ignore_errors=True)
            build("current, empty cache (threads)", None)
            build("current, rebuild (cache filled)", None)

    print(f"{args.photos} photos of 3000x2000; baseline {args.baseline}; {args.runs} rounds\n")
    print(f"{'build':<36}{'median':>9}{'min':>9}{'max':>9}{'CPU':>9}")
    for label, runs in times.items():
        if label.startswith("warm-up"):
            continue
        print(
            f"{label:<36}{statistics.median(runs) * 1000:>7.0f}ms"
            f"{min(runs) * 1000:>7.0f}ms{max(runs) * 1000:>7.0f}ms"
            f"{statistics.median(cpu[label]) * 1000:>7.0f}ms"
        )


if __name__ == "__main__":
    main()
