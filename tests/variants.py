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


DUTCH_ITEMS = {
    "05-fietsenstalling.md": (
        "Nieuwe fietsenstalling bij de poort",
        "garden.jpg",
        "Een overdekte stalling voor twintig fietsen, gebouwd van oud steigerhout. "
        "Zet je fiets er voortaan neer in plaats van tegen het hek. Met dank aan de "
        "vrijwilligers die drie zaterdagen hebben gezaagd, geschroefd en geschilderd.",
    ),
    "06-bijenhotel.md": (
        "Het bijenhotel is bewoond",
        "compost.jpg",
        "De metselbijen hebben het bijenhotel bij de kruidentuin gevonden: bijna alle "
        "gaatjes zijn dichtgemaakt. Kom kijken, maar blijf op een meter afstand en laat de "
        "takken rond het hotel staan tot het voorjaar.",
    ),
}


def make_dutch_issue(project: Path) -> None:
    """The example project in Dutch with five items, each with an image (the size judge)."""
    config = project / "newsletter.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace('locale = "en"', 'locale = "nl"', 1),
        encoding="utf-8",
    )
    folder = project / "issues" / "2026-11"
    (folder / "04-seed-catalogue.md").unlink()
    roster = folder / "03-winter-roster.md"
    roster.write_text(
        roster.read_text(encoding="utf-8").replace(
            "---\n", "---\nimage: garden.jpg\nimage_alt: De kas in de winter\n", 1
        ),
        encoding="utf-8",
    )
    for name, (title, image, body) in DUTCH_ITEMS.items():
        (folder / name).write_text(
            f"---\ntitle: {title}\nimage: {image}\nimage_alt: {title}\n"
            "link: https://riverside-garden.example.org/nieuws\n---\n"
            f"{body}\n\nMeer weten? Vraag het aan de *tuincommissie*.\n",
            encoding="utf-8",
        )
