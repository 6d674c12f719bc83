"""Benchmark: `newsletter build` of the example issue as a whole process (target < 1 s wall).

Run: .venv/bin/python bench/bench_build.py [runs]. Prints the median and spread of wall time for
the whole command (interpreter start, imports, render, write), and the in-process render time
for comparison, side by side in one run.

    .venv/bin/python bench/bench_build.py --photos 20 [--runs 5] [--baseline REF]

builds a generated issue of 20 items, each with its own photo (3000x2000 JPEG), and compares,
alternating in each round: the `--baseline` commit (which processes every image on every build),
the current code with an empty `.newsletter-cache/` (a first build, or 20 changed photos:
processed in threads), and the current code rebuilding with the cache filled (nothing changed).
"""

from __future__ import annotations

import argparse
import resource
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
    if "--photos" in sys.argv:
        photos_main()
        return
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
