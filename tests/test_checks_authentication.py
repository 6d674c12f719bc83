"""Sender-authentication findings of `newsletter check` (from the settings, no network)."""

from __future__ import annotations

from dataclasses import replace
from email.headerregistry import Address
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from newsletter.checks import check_issue
from newsletter.checks.authentication import aligned, check_authentication, is_free_mail
from newsletter.checks.context import CheckContext
from newsletter.checks.masthead import check_logo_contrast, visible_share
from newsletter.config import Settings, TransportSettings, load_settings
from newsletter.config_tables import DkimSettings
from newsletter.content import load_issue
from newsletter.render import render_issue

SMTP = TransportSettings(kind="smtp", host="mail.riverside-garden.example.org")
DKIM = DkimSettings("riverside-garden.example.org", "news", "dkim.pem")


def findings(settings: Settings, issue_folder: Path) -> dict[str, tuple[str, str, int | None]]:
    issue = load_issue(issue_folder)
    context = CheckContext.build(issue, render_issue(issue, settings), settings)
    return {f.code: (f.severity, f.message, f.line) for f in check_authentication(context)}


def test_the_example_through_the_outbox_has_nothing_to_say(
    settings: Settings, issue_folder: Path
) -> None:
    assert findings(settings, issue_folder) == {}


def test_smtp_without_dkim_is_a_warning(settings: Settings, issue_folder: Path) -> None:
    found = findings(replace(settings, transport=SMTP), issue_folder)
    assert set(found) == {"no-dkim"}
    severity, message, _ = found["no-dkim"]
    assert severity == "warning" and "without a DKIM signature" in message
    assert findings(replace(settings, transport=SMTP, dkim=DKIM), issue_folder) == {}


def test_a_misaligned_dkim_domain_is_an_error_naming_both(
    settings: Settings, issue_folder: Path
) -> None:
    other = replace(DKIM, domain="mailhost.example.net")
    found = findings(replace(settings, transport=SMTP, dkim=other), issue_folder)
    assert set(found) == {"dkim-not-aligned"}
    severity, message, _ = found["dkim-not-aligned"]
    assert severity == "error"
    assert "mailhost.example.net" in message and "riverside-garden.example.org" in message


def test_a_free_mail_from_through_our_smtp_is_an_error(
    settings: Settings, issue_folder: Path
) -> None:
    sender = Address("Riverside Roots", addr_spec="riverside.roots@gmail.com")
    found = findings(replace(settings, transport=SMTP, sender=sender), issue_folder)
    severity, message, _ = found["free-mail-from"]
    assert severity == "error" and "gmail.com" in message
    # Through a provider's API the provider answers for its own domain: no finding.
    api = TransportSettings(kind="postmark")
    assert "free-mail-from" not in findings(
        replace(settings, transport=api, sender=sender), issue_folder
    )


def test_findings_point_at_the_config_line(project: Path, issue_folder: Path) -> None:
    config = project / "newsletter.toml"
    text = config.read_text(encoding="utf-8").replace('kind = "outbox"', 'kind = "smtp"', 1)
    text += '\n[dkim]\ndomain = "elsewhere.example.net"\nselector = "s1"\nkey_file = "k.pem"\n'
    config.write_text(text, encoding="utf-8")
    settings = load_settings(project)
    issue = load_issue(issue_folder)
    report = check_issue(
        issue, render_issue(issue, settings), settings, offline=True, spamassassin=None
    )
    (finding,) = [f for f in report.findings if f.code == "dkim-not-aligned"]
    assert finding.file == config
    assert finding.line == text.splitlines().index('domain = "elsewhere.example.net"') + 1


@pytest.mark.parametrize(
    ("dkim", "author", "expected"),
    [
        ("example.org", "example.org", True),
        ("example.org", "news.example.org", True),
        ("mail.example.org", "example.org", True),
        ("EXAMPLE.org.", "example.org", True),
        ("example.net", "example.org", False),
        ("badexample.org", "example.org", False),
    ],
)
def test_alignment(dkim: str, author: str, expected: bool) -> None:
    assert aligned(dkim, author) is expected


def test_free_mail() -> None:
    assert is_free_mail("Gmail.com") and is_free_mail("outlook.com")
    assert not is_free_mail("riverside-garden.example.org")


# --- the masthead logo's contrast (checks/masthead.py) ------------------------------------------


def _logo(project: Path, name: str, colour: tuple[int, int, int]) -> None:
    """A transparent 200x100 logo with a filled disc in `colour`."""
    image = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((50, 0, 150, 100), fill=(*colour, 255))
    image.save(project / "images" / name)


def _contrast_findings(project: Path, issue_folder: Path, extra: str) -> list[str]:
    config = project / "newsletter.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace("[newsletter]\n", "[newsletter]\n" + extra, 1),
        encoding="utf-8",
    )
    settings = load_settings(project)
    issue = load_issue(issue_folder)
    context = CheckContext.build(issue, render_issue(issue, settings), settings)
    return [f.message for f in check_logo_contrast(context)]


def test_the_visible_share_counts_opaque_pixels_by_their_contrast(tmp_path: Path) -> None:
    # 96x48, nothing scaled: a dark 48x48 block (shows on white), a light 24x48 one (does
    # not), the rest transparent: 2,304 of 3,456 drawn pixels show.
    image = Image.new("RGBA", (96, 48), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 47, 47), fill=(0x11, 0x11, 0x11, 255))
    draw.rectangle((48, 0, 71, 47), fill=(0xEE, 0xEE, 0xEE, 255))
    image.save(tmp_path / "logo.png")
    assert visible_share(tmp_path / "logo.png", "#ffffff") == pytest.approx(2 / 3)
    assert visible_share(tmp_path / "logo.png", "#000000") == pytest.approx(1 / 3)


def test_the_example_logo_shows_on_its_masthead(project: Path, issue_folder: Path) -> None:
    assert _contrast_findings(project, issue_folder, "") == []


def test_a_logo_in_the_brand_colour_on_the_brand_masthead_is_a_warning(
    project: Path, issue_folder: Path
) -> None:
    _logo(project, "brand-logo.png", (0x1B, 0x6B, 0x5A))
    text = (project / "newsletter.toml").read_text(encoding="utf-8")
    (project / "newsletter.toml").write_text(
        text.replace('logo = "images/logo.png"', 'logo = "images/brand-logo.png"'),
        encoding="utf-8",
    )
    [message] = _contrast_findings(project, issue_folder, "")
    assert "images/brand-logo.png barely shows on the masthead (#1b6b5a)" in message
    assert 'masthead = "plain"' in message


def test_a_brand_coloured_logo_on_the_plain_masthead_only_asks_about_dark_mode(
    project: Path, issue_folder: Path
) -> None:
    _logo(project, "brand-logo.png", (0x1B, 0x6B, 0x5A))
    text = (project / "newsletter.toml").read_text(encoding="utf-8")
    (project / "newsletter.toml").write_text(
        text.replace('logo = "images/logo.png"', 'logo = "images/brand-logo.png"'),
        encoding="utf-8",
    )
    [message] = _contrast_findings(project, issue_folder, 'masthead = "plain"\n')
    assert "on the masthead in dark mode (#1c2124)" in message and "logo_dark" in message


def test_a_white_logo_on_the_plain_masthead_is_a_warning(project: Path, issue_folder: Path) -> None:
    _logo(project, "white-logo.png", (255, 255, 255))
    text = (project / "newsletter.toml").read_text(encoding="utf-8")
    (project / "newsletter.toml").write_text(
        text.replace('logo = "images/logo.png"', 'logo = "images/white-logo.png"'),
        encoding="utf-8",
    )
    messages = _contrast_findings(project, issue_folder, 'masthead = "plain"\n')
    assert any("barely shows on the masthead (#ffffff)" in m for m in messages)
