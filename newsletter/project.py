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


def new_issue(root: Path, name: str | None = None, *, today: dt.date | None = None) -> Path:
    """Create the next issue folder with `issue.md` and one item stub; return its path."""
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
    folder.mkdir(parents=True)
    (folder / ISSUE_FILE).write_text(
        "---\n"
        'subject: "The subject line subscribers see"\n'
        'preheader: "One sentence that appears next to the subject in the inbox."\n'
        f"date: {today.isoformat()}\n"
        "---\n"
        "An optional introduction in Markdown. Remove it if the issue needs none.\n",
        encoding="utf-8",
    )
    (folder / "01-first-item.md").write_text(
        "---\n"
        "title: The first item\n"
        "subtitle: An optional subtitle\n"
        "# image: picture.jpg\n"
        "# image_alt: What the picture shows\n"
        "# link: https://example.org/more\n"
        "draft: true\n"
        "---\n"
        "Write the item here in Markdown: **bold**, *italic*, [links](https://example.org),\n"
        "lists and tables. Remove `draft: true` above when it is ready to send.\n",
        encoding="utf-8",
    )
    return folder
