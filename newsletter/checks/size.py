"""Size and completeness: Gmail's clipping, subject and preheader, empty items, and the two things
every message must carry by law and by the providers' rules: an unsubscribe link and the postal
address."""

from __future__ import annotations

import re

from ..render.markdown import to_text
from ..slots import UNSUBSCRIBE_URL
from .context import CheckContext
from .model import Finding

KB = 1024
GMAIL_CLIP_BYTES = 102 * KB  # Gmail cuts the HTML part off after this, hiding the footer
HTML_WARN_BYTES = 80 * KB
SUBJECT_MAX = 78
SUBJECT_MIN = 10
PREHEADER_MAX = 140


def check_size(context: CheckContext) -> list[Finding]:
    findings: list[Finding] = []
    issue_file = context.issue.path
    html_bytes = len(context.sample_html.encode("utf-8"))
    size = f"{html_bytes / KB:.1f} KB"
    if html_bytes > GMAIL_CLIP_BYTES:
        findings.append(
            Finding(
                "error",
                "html-clipped",
                f"the HTML part is {size}: Gmail clips messages over 102 KB and hides the rest, "
                "unsubscribe link included; shorten the issue or move items to the next one",
                issue_file,
            )
        )
    elif html_bytes > HTML_WARN_BYTES:
        findings.append(
            Finding(
                "warning",
                "html-large",
                f"the HTML part is {size}, close to Gmail's clipping at 102 KB",
                issue_file,
            )
        )
    findings += _subject_and_preheader(context)
    findings += _items(context)
    findings += _unsubscribe(context)
    findings += _address(context)
    return findings


def _subject_and_preheader(context: CheckContext) -> list[Finding]:
    findings: list[Finding] = []
    path = context.issue.path
    subject = " ".join(context.sample_subject.split())
    subject_line = context.locator.key_line(path, "subject")
    if not subject:
        findings.append(Finding("error", "subject-missing", "the subject is empty", path, 1))
    elif len(subject) > SUBJECT_MAX:
        findings.append(
            Finding(
                "warning",
                "subject-long",
                f"the subject has {len(subject)} characters; inboxes show about 40 to 70, "
                f"so keep it under {SUBJECT_MAX}",
                path,
                subject_line,
            )
        )
    elif len(subject) < SUBJECT_MIN:
        findings.append(
            Finding(
                "warning",
                "subject-short",
                f"the subject has only {len(subject)} characters; say what is in the issue",
                path,
                subject_line,
            )
        )
    letters = [char for char in subject if char.isalpha()]
    if len(letters) >= 4 and all(char.isupper() for char in letters):
        findings.append(
            Finding(
                "warning",
                "subject-shouting",
                "the subject is in capitals: it reads as shouting and spam filters count it",
                path,
                subject_line,
            )
        )
    preheader = context.rendered.preheader
    preheader_line = context.locator.key_line(path, "preheader")
    if not preheader:
        findings.append(
            Finding(
                "warning",
                "preheader-missing",
                "no preheader: inboxes show the first words of the email beside the subject "
                "instead; add 'preheader:' to issue.md",
                path,
                1,
            )
        )
    elif len(preheader) > PREHEADER_MAX:
        findings.append(
            Finding(
                "warning",
                "preheader-long",
                f"the preheader has {len(preheader)} characters; inboxes show at most about "
                f"{PREHEADER_MAX}",
                path,
                preheader_line,
            )
        )
    return findings


def _items(context: CheckContext) -> list[Finding]:
    findings: list[Finding] = []
    for item in context.all_items:
        if item.draft:
            findings.append(
                Finding("info", "item-draft", "draft item: left out of the email", item.path, 1)
            )
            continue
        # What a reader sees: a body of only non-breaking spaces renders to nothing.
        visible = to_text(item.body).strip()
        if not visible:
            findings.append(
                Finding("error", "item-empty", "the item has no text", item.path, item.body_line)
            )
    return findings


def _unsubscribe(context: CheckContext) -> list[Finding]:
    findings: list[Finding] = []
    settings = context.settings
    config = settings.config_path
    if not settings.unsubscribe.url and not settings.unsubscribe.mailto:
        findings.append(
            Finding(
                "error",
                "unsubscribe-config",
                "no [unsubscribe] url or mailto in newsletter.toml: the unsubscribe link would "
                "go nowhere",
                config,
            )
        )
    linked = any(
        (slot := context.slot_in(link.href)) is not None and slot.path == UNSUBSCRIBE_URL
        for link in context.scan.links
    )
    if not linked:
        findings.append(
            Finding(
                "error",
                "unsubscribe-missing",
                "the HTML part has no unsubscribe link: the theme must link "
                '<a href="{{ unsubscribe_url }}">',
                context.email_template,
            )
        )
    in_text = any(
        (slot := context.slot_in(marker.group(0))) is not None and slot.path == UNSUBSCRIBE_URL
        for marker in re.finditer(r"NLSLOT\d+X", context.text)
    )
    if not in_text:
        findings.append(
            Finding(
                "error",
                "unsubscribe-missing",
                "the text part has no unsubscribe link: the theme must show {{ unsubscribe_url }}",
                context.text_template,
            )
        )
    return findings


def _address(context: CheckContext) -> list[Finding]:
    findings: list[Finding] = []
    lines = [
        " ".join(line.split())
        for line in context.settings.footer.address.splitlines()
        if line.strip()
    ]
    html_text = context.scan.text
    plain = " ".join(context.text.split())
    for part, haystack, template in (
        ("HTML", html_text, context.email_template),
        ("text", plain, context.text_template),
    ):
        missing = [line for line in lines if line not in haystack]
        if missing:
            findings.append(
                Finding(
                    "error",
                    "address-missing",
                    f"the {part} part does not show the postal address (footer.address; "
                    f"missing: {'; '.join(missing)}): the law and mail providers require it",
                    template,
                )
            )
    return findings
