"""Scaffolding: a new project (`init`) and the next issue (`new`)."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from .config import CONFIG_NAME, SECRET_FILE_NAME
from .content import ISSUE_FILE
from .errors import ProjectError

SCAFFOLD_LANGUAGES = ("en", "nl")
GITIGNORE = """\
# newsletter: build output, local sends, the subscriber database and secrets
dist/
outbox/
newsletter.db
newsletter.db-*
*.lock
.newsletter-secret
.newsletter-cache/
# private keys: `dkim keygen` writes to .secrets/
.secrets/
*.pem
*.key
"""
TEMPLATES_README = """\
# Theme overrides

Put a file here with the same name as one in the default theme to replace it, for example
`email.mjml.j2` (the HTML email, MJML + Jinja2), `email.txt.j2` (the plain-text part) or
`icons/<network>.png` (footer icons). Start from a copy of the default theme's file:

    python -c "import newsletter, pathlib; print(pathlib.Path(newsletter.__file__).parent)"

and look in its `theme/` folder.
"""


@dataclass(frozen=True)
class InitReport:
    root: Path
    created: tuple[Path, ...]
    issue_folder: Path


def _scaffold() -> Traversable:
    return resources.files("newsletter") / "scaffold"


def init_project(root: Path, *, language: str = "en", today: dt.date | None = None) -> InitReport:
    """Create a project in `root`: config, override folder, an example issue, `.gitignore`.

    Refuses (and writes nothing) when any of the files it would create already exists.
    """
    if language not in SCAFFOLD_LANGUAGES:
        raise ProjectError(
            f"no example project in '{language}'",
            hint=f"Choose one of: {', '.join(SCAFFOLD_LANGUAGES)}",
        )
    today = today or dt.date.today()
    issue_name = f"{today:%Y-%m}"
    source = _scaffold() / language
    common = _scaffold() / "common" / "images"
    issue_folder = root / "issues" / issue_name
    plan: dict[Path, bytes] = {
        root / CONFIG_NAME: (source / CONFIG_NAME).read_bytes(),
        root / ".gitignore": GITIGNORE.encode(),
        root / "templates" / "README.md": TEMPLATES_README.encode(),
        root / "images" / "logo.png": (common / "logo.png").read_bytes(),
        root / "images" / "partner-buurtfonds.png": (
            common / "partner-buurtfonds.png"
        ).read_bytes(),
    }
    for entry in (source / "issue").iterdir():
        data = entry.read_bytes()
        if entry.name == ISSUE_FILE:
            data = re.sub(rb"(?m)^date: .*$", f"date: {today.isoformat()}".encode(), data)
        plan[issue_folder / entry.name] = data
    for picture in ("garden.jpg", "compost.jpg"):
        plan[issue_folder / picture] = (common / picture).read_bytes()

    existing = sorted(str(path.relative_to(root)) for path in plan if path.exists())
    if existing:
        raise ProjectError(
            f"{root} already has {', '.join(existing)}; nothing was written",
            hint="Run 'newsletter init' in an empty folder, or remove those files first.",
        )
    for path, data in plan.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    secret_file = root / SECRET_FILE_NAME
    if not secret_file.exists():
        # The signing key for unsubscribe links; kept out of git by .gitignore.
        secret_file.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
        secret_file.chmod(0o600)
    return InitReport(root=root, created=tuple(sorted(plan)), issue_folder=issue_folder)


def new_issue(
    root: Path, name: str | None = None, *, today: dt.date | None = None, language: str = "en"
) -> Path:
    """Create the next issue folder with `issue.md` and one item stub; return its path.

    The stubs are in the project's `language` (en or nl; others get English). The issue is dated
    from its name when the name is a date (2026-12 → 1 December 2026, unless that is this month:
    today), else today.
    """
    today = today or dt.date.today()
    issues = root / "issues"
    if name is None:
        name = f"{today:%Y-%m}"
        if (issues / name).exists():
            suffix = 2
            while (issues / f"{name}-{suffix}").exists():
                suffix += 1
            name = f"{name}-{suffix}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ProjectError(
            f"'{name}' is not a usable issue name",
            hint="Use letters, digits, '-', '_' and '.', e.g. 2026-12 or winter-special.",
        )
    folder = issues / name
    if folder.exists():
        raise ProjectError(f"{folder} already exists; nothing was written")
    stubs = _scaffold() / language.split("_")[0].split("-")[0] / "new"
    if not stubs.is_dir():
        stubs = _scaffold() / "en" / "new"
    folder.mkdir(parents=True)
    date = _date_from_name(name, today).isoformat()
    for stub in sorted(stubs.iterdir(), key=lambda entry: entry.name):
        text = stub.read_text(encoding="utf-8").replace("{date}", date)
        (folder / stub.name).write_text(text, encoding="utf-8")
    return folder


def _date_from_name(name: str, today: dt.date) -> dt.date:
    """2026-12-05 → that day; 2026-12 → today if in that month, else the 1st; else today."""
    found = re.match(r"^(\d{4})-(\d{2})(?:-(\d{2}))?(?!\d)", name)
    if found is None:
        return today
    year, month = int(found[1]), int(found[2])
    try:
        if found[3]:
            return dt.date(year, month, int(found[3]))
        if (today.year, today.month) == (year, month):
            return today
        return dt.date(year, month, 1)
    except ValueError:
        return today
