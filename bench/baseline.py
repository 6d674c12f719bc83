"""Shared by the benchmarks: an earlier commit of the package, to run beside the current one.

`extract(ref, folder)` writes the tree of `ref` into `folder` with `git archive` (the whole tree:
the package links to folders beside it, e.g. `newsletter/theme -> ../templates`)
(the repository and its worktrees are not touched); a process started with
`PYTHONPATH=folder` then imports that version instead of the installed (editable) one, with the
same interpreter and libraries. `command(code_root)` is the `newsletter` command for either.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def extract(ref: str, folder: Path) -> Path:
    """The tree of commit `ref`, in `folder`; returns `folder`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def command(code_root: Path | None) -> tuple[list[str], dict[str, str]]:
    """argv prefix and environment running `newsletter` from `code_root` (None: installed)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if code_root is not None:
        env["PYTHONPATH"] = str(code_root)
    # `python -m newsletter` for both sides, so they start the same way; it does what the
    # installed script does (`from newsletter.cli import main; main()`).
    return [sys.executable, "-m", "newsletter"], env
