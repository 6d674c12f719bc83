"""Render an issue once: Markdown → Jinja2 → MJML → HTML → inlined CSS, and the text part.

`render_issue` is called once per issue (per preview rebuild); per-recipient values stay slots.
Imported through the package (`newsletter.render`), on first use.
"""

from __future__ import annotations

import hashlib
import html as html_lib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jinja2
from markupsafe import Markup

from ..clicks import ClickLink, count_links
from ..config import Settings
from ..content import Issue, Item
from ..errors import Problem, RenderError
from ..i18n import Words, words_for
from ..linktags import replace_hrefs, tag_links, tag_text, tag_url
from ..slots import safe_url
from .colours import dark_palette, link_colour, readable_on
from .engine import (
    SlotRegistry,
    compiled_templates,
    find_template_file,
    slot_context,
    template_problem,
    text_environment,
    theme_environment,
)
from .images import ImageCollector, ImageRef
from .inline import inline_css
from .markdown import ShownImage, body_images, to_html, to_text
from .mjml import compile_mjml, extract_inline_css, unknown_tags
from .model import RenderedIssue
from .sandbox import render_limited
from .standards import apply_standards

__all__ = ["RenderedIssue", "render_issue"]

EMAIL_TEMPLATE = "email.mjml.j2"
TEXT_TEMPLATE = "email.txt.j2"
CONTENT_WIDTH = 552  # 600 px body less 24 px padding on each side
# The image's width in each layout: a 40 % column beside the text, a 26 % thumbnail column.
IMAGE_WIDTHS = {"above": CONTENT_WIDTH, "left": 204, "right": 204, "thumbnail": 120}
LOGO_MAX_WIDTH = 300
PARTNER_LOGO_WIDTH = 140
ICON_SIZE = 24
SOCIAL_LABELS = {
    "facebook": "Facebook",
    "instagram": "Instagram",
    "linkedin": "LinkedIn",
    "x": "X",
    "mastodon": "Mastodon",
    "bluesky": "Bluesky",
    "youtube": "YouTube",
    "github": "GitHub",
    "web": "Web",
}


@dataclass(frozen=True)
class _ItemView:
    """What the theme sees of an item."""

    title: str
    subtitle: str | None
    html: Markup
    text: str
    image: ImageRef | None
    image_alt: str | None
    link: str | None
    link_text: str
    draft: bool
    slug: str
    layout: str


def render_issue(
    issue: Issue,
    settings: Settings,
    *,
    preview: bool = False,
    click_numbers: Mapping[str, int] | None = None,
) -> RenderedIssue:
    """Render `issue` for sending (drafts left out) or for the preview (drafts marked, and the
    web version not CSS-inlined: the preview does not show it).

    With `[links] count_clicks`, links in the email lead through their redirects (not in the
    preview, whose links should just work); `click_numbers` are the numbers the issue's links
    already have in the store (`clicks.recorded_numbers`), kept as they are.
    """
    drafts = tuple(item.path.name for item in issue.items if item.draft)
    if not preview:
        issue = issue.without_drafts()
    problems: list[Problem] = []
    registry = SlotRegistry()
    words = words_for(settings.locale, settings.root)
    images = ImageCollector(settings.base_url, issue.name, cache_dir=settings.cache_dir / "images")
    text_env = text_environment()
    slot_values = slot_context(registry)

    def expand(source: str, file: Path, line_offset: int) -> str | None:
        """Per-recipient values in Markdown sources and the subject become slot markers."""
        try:
            return render_limited(compiled_templates.from_string(text_env, source), slot_values)
        except Exception as err:  # any failure of editor-written text is reported, not raised
            problems.append(
                template_problem(err, file=file, template_name=None, line_offset=line_offset)
            )
            return None

    subject = expand(issue.subject, issue.path, 0) or issue.subject
    preheader = expand(issue.preheader or "", issue.path, 0) or ""
    intro_source = expand(issue.intro, issue.path, issue.intro_line - 1) or ""
    default_layout = issue.layout or settings.layout
    # The items' photos first, several at a time; the item views then find them ready.
    images.prefetch(
        (item.image_path, IMAGE_WIDTHS.get(item.layout or default_layout, CONTENT_WIDTH))
        for item in issue.items
        if item.image_path is not None and not (item.image_is_remote and item.image)
    )
    intro_images = _body_images(
        intro_source, issue.path, issue.intro_line, images, problems, settings.root
    )
    items = [
        _item_view(
            item, words, images, expand, problems, item.layout or default_layout, settings.root
        )
        for item in issue.items
    ]

    theme_dir_env = theme_environment(settings.templates_dir)
    context = {
        "newsletter": _newsletter_view(settings, images, problems),
        "issue": {
            "name": issue.name,
            "subject": subject,
            "preheader": preheader,
            "date": words.date(issue.date) if issue.date else None,
            "intro_html": (
                Markup(to_html(intro_source, intro_images)) if intro_source.strip() else None
            ),
            "intro_text": to_text(intro_source).strip() if intro_source.strip() else None,
        },
        "items": items,
        "in_this_issue": (
            issue.in_this_issue if issue.in_this_issue is not None else settings.in_this_issue
        ),
        "footer": _footer_view(settings, images, theme_dir_env, problems),
        "words": words,
        "lang": words.language,
        "web_url": f"{settings.base_url}{issue.name}/web.html" if settings.base_url else "",
        "preview": preview,
        **slot_values,
    }
    if problems:
        raise RenderError(problems)

    email_html = _render_html(theme_dir_env, {**context, "web": False}, problems, settings)
    # The preview shows the email only: its web version is rendered (its template and MJML
    # problems show) but not inlined, which would be half of a preview rebuild's inlining.
    web_html = _render_html(
        theme_dir_env, {**context, "web": True}, problems, settings, inline=not preview
    )
    text = _render_text(theme_dir_env, context, problems)
    if problems or email_html is None or web_html is None or text is None:
        raise RenderError(problems)

    skip = (context["web_url"], settings.unsubscribe.url or "")
    if settings.links is not None:
        # UTM tags on chosen domains; unsubscribe and web-version links stay as they are.
        email_html = tag_links(email_html, settings.links, issue.name, skip=skip)
        web_html = tag_links(web_html, settings.links, issue.name, skip=skip)
        text = tag_text(text, settings.links, issue.name, skip=skip)
    click_links: tuple[ClickLink, ...] = ()
    if settings.count_clicks and settings.base_url and not preview:
        # After tagging, so the recorded targets carry the UTM parameters. The web version keeps
        # its links direct: it is public and lasting, and its readers are not the mailing's.
        counted = count_links(
            email_html,
            text,
            base_url=settings.base_url,
            issue=issue.name,
            items=[(item.title, _item_urls(item, settings, issue.name)) for item in items],
            skip=skip,
            known=click_numbers,
        )
        email_html, text, click_links = counted.html, counted.text, counted.links
    subject_text = registry.split(" ".join(subject.split()))
    html_text = registry.split(email_html, html=True)
    text_part = registry.split(text)
    # The web version is public: per-recipient values fall back to their defaults.
    web_filled = registry.split(web_html, html=True).fill(
        lambda slot: html_lib.escape(
            safe_url(slot.default or "") if slot.url else slot.default or ""
        )
    )
    fingerprint = hashlib.sha256()
    for part in (subject_text, html_text, text_part):
        fingerprint.update(repr(part.parts).encode())
    for image in images.embedded.values():
        fingerprint.update(image.cid.encode())
    for published in images.published.values():
        fingerprint.update(published.filename.encode())
    for link in click_links:  # the HTML holds only the redirects: where they lead counts too
        fingerprint.update(f"{link.number}\0{link.target}\0".encode())
    return RenderedIssue(
        name=issue.name,
        subject=subject_text,
        preheader=" ".join(preheader.split()),
        html=html_text,
        text=text_part,
        web_html=web_filled,
        language=words.language,
        embedded_images=tuple(images.embedded.values()),
        published_images=tuple(images.published.values()),
        fingerprint=fingerprint.hexdigest(),
        draft_items=drafts,
        click_links=click_links,
        image_sources=tuple(images.sources.items()),
    )


def _item_urls(item: _ItemView, settings: Settings, issue_name: str) -> set[str]:
    """The URLs in an item (its link and those in its text), tagged as the email's are."""
    urls = [item.link or ""]
    replace_hrefs(str(item.html), urls.append)
    if settings.links is not None:
        skip = (settings.unsubscribe.url or "",)
        urls = [tag_url(url.strip(), settings.links, issue_name, skip=skip) for url in urls]
    return {url.strip() for url in urls if url.strip()}


def _item_view(
    item: Item,
    words: Words,
    images: ImageCollector,
    expand: Any,
    problems: list[Problem],
    layout: str,
    root: Path,
) -> _ItemView:
    source = expand(item.body, item.path, item.body_line - 1) or ""
    image: ImageRef | None = None
    width = IMAGE_WIDTHS.get(layout, CONTENT_WIDTH)
    if item.image_is_remote and item.image:
        image = ImageRef(item.image, width, None)
    elif item.image_path is not None:
        image = images.add(item.image_path, width, problems, key="image")
    if not source.strip():
        problems.append(Problem("the item has no text", file=item.path, line=item.body_line))
    shown = _body_images(source, item.path, item.body_line, images, problems, root)
    return _ItemView(
        title=item.title,
        subtitle=item.subtitle,
        html=Markup(_html_body(source, shown)),
        text=to_text(source).strip(),
        image=image,
        image_alt=item.image_alt,
        link=item.link,
        link_text=item.link_text or words.read_more,
        draft=item.draft,
        slug=item.slug,
        layout=layout,
    )


def _body_images(
    source: str,
    file: Path,
    first_line: int,
    images: ImageCollector,
    problems: list[Problem],
    root: Path,
) -> dict[str, ShownImage]:
    """Images in Markdown text go the way of item images: found beside `file`, measured,
    resized, converted and embedded or published; https:// ones stay remote."""
    shown: dict[str, ShownImage] = {}
    for image in body_images(source):
        line = first_line + image.line
        src = image.src.strip()
        if src in shown or src.lower().startswith("https://"):
            continue
        if not src or re.match(r"^[a-z][a-z0-9+.-]*:", src, re.IGNORECASE) or src.startswith("/"):
            problems.append(
                Problem(
                    f"image '{src}': write a file name next to this file (foto.jpg) "
                    "or an https:// URL",
                    file=file,
                    line=line,
                )
            )
            continue
        path = file.parent / unquote(src)
        if not path.resolve().is_relative_to(root.resolve()):
            # As for item images: nothing outside the project is read into an email.
            problems.append(
                Problem(
                    f"image '{unquote(src)}' must be inside the project ({root}): no '..' "
                    "out of it and no links pointing outside",
                    file=file,
                    line=line,
                )
            )
            continue
        if not path.is_file():
            problems.append(
                Problem(
                    f"image file '{unquote(src)}' not found (looked in {path.parent})",
                    file=file,
                    line=line,
                )
            )
            continue
        before = len(problems)
        ref = images.add(path, CONTENT_WIDTH, problems)
        if ref is None:
            for index in range(before, len(problems)):
                problems[index] = Problem(
                    f"image '{unquote(src)}' {problems[index].message}", file=file, line=line
                )
            continue
        shown[src] = ShownImage(ref.src, ref.width, ref.height)
    return shown


def _html_body(source: str, images: dict[str, ShownImage] | None = None) -> str:
    html = to_html(source, images)
    # Markdown headings inside an item sit below the item's own <h2>.
    html = re.sub(r"<(/?)h[12]>", r"<\1h3>", html)
    # Markdown tables have one header row: its cells head columns.
    return re.sub(r"<th(?=[\s>])(?![^>]*\bscope=)", '<th scope="col"', html)


def _project_image(
    settings: Settings,
    reference: str,
    width: int,
    images: ImageCollector,
    problems: list[Problem],
    key: str,
) -> ImageRef | None:
    if reference.startswith("https://"):
        return ImageRef(reference, width, None)
    path = settings.root / reference
    if not path.resolve().is_relative_to(settings.root.resolve()):
        problems.append(
            Problem(
                f"image '{reference}' must be inside the project ({settings.root}): no absolute "
                "paths, '..' out of it or links pointing outside",
                file=settings.config_path,
                key=key,
            )
        )
        return None
    if not path.is_file():
        problems.append(
            Problem(f"image file '{reference}' not found", file=settings.config_path, key=key)
        )
        return None
    return images.add(path, width, problems, key=key)


def _newsletter_view(
    settings: Settings, images: ImageCollector, problems: list[Problem]
) -> dict[str, Any]:
    logo = None
    if settings.logo:
        logo = _project_image(
            settings,
            settings.logo,
            min(settings.logo_width, LOGO_MAX_WIDTH),
            images,
            problems,
            "newsletter.logo",
        )
    logo_dark = None
    if settings.logo_dark:
        logo_dark = _project_image(
            settings,
            settings.logo_dark,
            min(settings.logo_width, LOGO_MAX_WIDTH),
            images,
            problems,
            "newsletter.logo_dark",
        )
    on_brand = readable_on(settings.brand_color)
    return {
        "name": settings.name,
        "logo": logo,
        "logo_dark": logo_dark,
        "masthead": settings.masthead,
        "masthead_subject": settings.masthead_subject,
        "color_scheme": settings.color_scheme,
        "dark": dark_palette(settings.brand_color),
        "brand_color": settings.brand_color,
        "text_color": settings.text_color,
        "background_color": settings.background_color,
        "link_color": link_colour(settings.brand_color, settings.text_color),
        "masthead_text_color": on_brand,
        "button_text_color": on_brand,
        "sender": str(settings.sender),
    }


def _footer_view(
    settings: Settings,
    images: ImageCollector,
    environment: jinja2.Environment,
    problems: list[Problem],
) -> dict[str, Any]:
    footer = settings.footer
    social = []
    for link in footer.social:
        icon_file = find_template_file(environment, f"icons/{link.network}.png")
        icon = (
            images.add(icon_file, ICON_SIZE, problems, key=f"footer.social.{link.network}")
            if icon_file
            else None
        )
        social.append(
            {
                "network": link.network,
                "url": link.url,
                "label": SOCIAL_LABELS[link.network],
                "icon": icon or ImageRef("", ICON_SIZE, ICON_SIZE),
            }
        )
    partners = []
    for index, partner in enumerate(footer.partners):
        logo = _project_image(
            settings,
            partner.logo,
            PARTNER_LOGO_WIDTH,
            images,
            problems,
            f"footer.partners[{index + 1}].logo",
        )
        if logo is not None:
            partners.append({"name": partner.name, "logo": logo, "url": partner.url})
    contact_html: Markup | None = None
    if footer.contact:
        contact = footer.contact
        if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", contact):
            contact_html = Markup('<a href="mailto:{0}">{0}</a>').format(contact)
        elif contact.startswith(("https://", "http://")):
            contact_html = Markup('<a href="{0}">{0}</a>').format(contact)
        else:
            contact_html = Markup("{0}").format(contact)
    return {
        "address_lines": [line.strip() for line in footer.address.splitlines() if line.strip()],
        "contact": footer.contact,
        "contact_html": contact_html,
        "note": footer.note,
        "social": social,
        "partners": partners,
    }


def _render_html(
    environment: jinja2.Environment,
    context: dict[str, Any],
    problems: list[Problem],
    settings: Settings,
    *,
    inline: bool = True,
) -> str | None:
    template_file = find_template_file(environment, EMAIL_TEMPLATE)
    try:
        template = environment.get_template(EMAIL_TEMPLATE)
        mjml_source = render_limited(template, context)
    except Exception as err:  # any failure of editor-written text is reported, not raised
        problems.append(template_problem(err, file=template_file, template_name=EMAIL_TEMPLATE))
        return None
    template_source = template_file.read_text(encoding="utf-8") if template_file else None
    found = unknown_tags(mjml_source, file=template_file, template_source=template_source)
    if found:
        problems.extend(found)
        return None
    mjml_source, css = extract_inline_css(mjml_source)
    html, compile_problems = compile_mjml(mjml_source, file=template_file)
    if html is None:
        problems.extend(compile_problems)
        return None
    if not inline:
        return html
    # premailer's rules for the theme's stylesheet are kept, so that a later render (another
    # process) inlines without loading premailer (render/inline_rules.py).
    inlined = inline_css(html, css, rules_dir=settings.cache_dir / "inline")
    return apply_standards(inlined, color_scheme=settings.color_scheme)


def _render_text(
    environment: jinja2.Environment, context: dict[str, Any], problems: list[Problem]
) -> str | None:
    template_file = find_template_file(environment, TEXT_TEMPLATE)
    try:
        # The text part must not be HTML-escaped: render it with autoescape off.
        template = environment.overlay(autoescape=False).get_template(TEXT_TEMPLATE)
        text = render_limited(template, {**context, "web": False})
    except Exception as err:  # any failure of editor-written text is reported, not raised
        problems.append(template_problem(err, file=template_file, template_name=TEXT_TEMPLATE))
        return None
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
