"""The layout and masthead variants of the default theme, applied to a copy of the example
project: shared by the golden-file tests and scripts/screenshots."""

from __future__ import annotations

from pathlib import Path

# name: (lines added to [newsletter] in newsletter.toml, lines added to issue.md's front matter)
VARIANTS: dict[str, tuple[str, str]] = {
    "layout-above": ("", ""),
    "layout-left": ("", "layout: left\nin_this_issue: true\n"),
    "layout-right": ("", "layout: right\n"),
    "layout-thumbnail": ("", "layout: thumbnail\nin_this_issue: true\n"),
    "masthead-brand": ('masthead = "brand"\n', ""),
    "masthead-plain": ('masthead = "plain"\n', ""),
    "masthead-logo": ('masthead = "logo"\n', ""),
    "masthead-no-subject": ('masthead = "plain"\nmasthead_subject = false\n', ""),
}


def apply_variant(project: Path, name: str) -> None:
    """Change the example project at `project` into variant `name`."""
    settings_lines, front_matter = VARIANTS[name]
    config = project / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[newsletter]\n", "[newsletter]\n" + settings_lines, 1),
                      encoding="utf-8")  # fmt: skip
    issue = project / "issues" / "2026-11" / "issue.md"
    text = issue.read_text(encoding="utf-8")
    issue.write_text(text.replace("---\n", "---\n" + front_matter, 1), encoding="utf-8")
