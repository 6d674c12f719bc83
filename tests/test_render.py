from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from newsletter.audience import Subscriber
from newsletter.config import Settings, load_settings
from newsletter.content import load_issue
from newsletter.errors import RenderError
from newsletter.render import inline as inline_module
from newsletter.render import render_issue
from newsletter.render.inline import inline_css
from newsletter.render.model import RenderedIssue
from newsletter.render.samples import sample_filler
from newsletter.slots import UNSUBSCRIBE_URL, Slot

from .conftest import EXAMPLE_ISSUE

GOLDEN = Path(__file__).parent / "golden"
GMAIL_CLIP_BYTES = 102 * 1024


def normalise(text: str) -> str:
    """Image names carry a content hash that depends on the image encoder's version."""
    return re.sub(r"-[0-9a-f]{12}(\.(?:png|jpg|gif)|@newsletter)", r"-HASH\1", text)


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(normalise(actual), encoding="utf-8")
        if not os.environ.get("UPDATE_GOLDEN"):
            pytest.fail(f"golden file {path} was missing and has been written; check it in")
    assert normalise(actual) == path.read_text(encoding="utf-8"), (
        f"{name} differs from its golden file; if the change is intended, "
        "run UPDATE_GOLDEN=1 pytest tests/test_render.py"
    )


@pytest.fixture
def rendered(settings: Settings, issue_folder: Path) -> RenderedIssue:
    return render_issue(load_issue(issue_folder), settings)


def filled_html(rendered: RenderedIssue, settings: Settings) -> str:
    sample = Subscriber.sample(settings.locale).as_dict()
    return rendered.html.fill(sample_filler(rendered, settings, sample, html=True))


def filled_text(rendered: RenderedIssue, settings: Settings) -> str:
    sample = Subscriber.sample(settings.locale).as_dict()
    return rendered.text.fill(sample_filler(rendered, settings, sample, html=False))


def test_example_html_matches_golden(rendered: RenderedIssue, settings: Settings) -> None:
    check_golden("example-email.html", filled_html(rendered, settings))


def test_example_text_matches_golden(rendered: RenderedIssue, settings: Settings) -> None:
    check_golden("example-email.txt", filled_text(rendered, settings))


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.html_lang: str | None = None
        self.headings: list[int] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "html":
            self.html_lang = dict(attrs).get("lang")
        elif re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))


def test_example_html_is_light_accessible_and_complete(
    rendered: RenderedIssue, settings: Settings
) -> None:
    html = filled_html(rendered, settings)
    assert len(html.encode()) < GMAIL_CLIP_BYTES
    collector = _Collector()
    collector.feed(html)
    assert collector.html_lang == "en"
    assert collector.images, "the example has images"
    for image in collector.images:
        assert "alt" in image, f"image without alt: {image}"
    assert collector.headings[0] == 1 and 3 not in collector.headings[:2]
    assert "<mj-" not in html and "</mj-" not in html
    # The preheader is the first text in the body, hidden.
    body = html[html.index("<body") :]
    assert body.index("Join us on 6 December") < body.index("Harvest festival on 6 December")
    assert "Riverside Community Garden Association" in html
    assert 'href="https://riverside-garden.example.org/unsubscribe"' in html
    assert "Dear Alex," in html
    assert "Seed catalogue" not in html, "draft items are left out of sends"


def test_text_part_keeps_every_link_and_has_no_entities(
    rendered: RenderedIssue, settings: Settings
) -> None:
    text = filled_text(rendered, settings)
    html = filled_html(rendered, settings)
    content_links = {
        link for link in re.findall(r'href="(https://[^"]+)"', html) if "unsubscribe" not in link
    }
    for link in content_links:
        assert link in text
    assert not re.search(r"&[a-z]+;|&#\d+;", text)
    assert all(len(line) <= 78 for line in text.splitlines() if "://" not in line)
    assert "HARVEST FESTIVAL ON 6 DECEMBER" in text
    assert "Unsubscribe:\nhttps://riverside-garden.example.org/unsubscribe" in text
    # "label: URL" lines longer than 72 put the URL on a line of its own.
    assert all(len(line) <= 72 for line in text.splitlines() if ": http" in line)


def test_text_part_wraps_subtitles_and_keeps_emphasis(
    settings: Settings, issue_folder: Path
) -> None:
    subtitle = "A subtitle long enough to need wrapping in the plain-text part " * 2
    (issue_folder / "05-plain.md").write_text(
        f"---\ntitle: Plain text\nsubtitle: {subtitle.strip()}\n"
        "link: https://example.org/a-rather-long-path/that-goes-on/and-on-for-a-while\n"
        "link_text: Read the whole story on our website\n---\n"
        "Some *emphasis* and **strong** words.\n",
        encoding="utf-8",
    )
    text = filled_text(render_issue(load_issue(issue_folder), settings), settings)
    assert "Some _emphasis_ and *strong* words." in text
    section = text[text.index("PLAIN TEXT") :]
    assert all(len(line) <= 72 for line in section.splitlines()[:4])
    assert "Read the whole story on our website:\nhttps://example.org/a-rather-long-path" in text


def test_per_recipient_slots_survive_inlining(rendered: RenderedIssue) -> None:
    html_slots = set(rendered.html.slots)
    assert Slot(UNSUBSCRIBE_URL) in html_slots
    assert Slot("subscriber.first_name", "gardener") in html_slots
    # The unsubscribe slot sits intact inside an href after MJML and premailer.
    parts = rendered.html.parts
    index = parts.index(Slot(UNSUBSCRIBE_URL))
    before = parts[index - 1]
    assert isinstance(before, str) and before.endswith('href="')
    assert Slot(UNSUBSCRIBE_URL) in rendered.text.slots


def test_web_version_has_no_personal_links(rendered: RenderedIssue) -> None:
    assert "Dear gardener," in rendered.web_html
    assert "unsubscribe" not in rendered.web_html.lower()
    assert "NLSLOT" not in rendered.web_html


def test_preview_keeps_drafts_with_a_mark(settings: Settings, issue_folder: Path) -> None:
    preview = render_issue(load_issue(issue_folder), settings, preview=True)
    html = filled_html(preview, settings)
    assert "Seed catalogue 2027" in html
    assert ">DRAFT</span>" in html
    assert preview.draft_items == ("04-seed-catalogue.md",)
    assert render_issue(load_issue(issue_folder), settings).draft_items == preview.draft_items


def test_the_preview_inlines_the_email_as_a_send_does(
    settings: Settings, issue_folder: Path
) -> None:
    (issue_folder / "04-seed-catalogue.md").unlink()  # the draft: otherwise the two differ
    sent = render_issue(load_issue(issue_folder), settings)
    previewed = render_issue(load_issue(issue_folder), settings, preview=True)
    assert previewed.html == sent.html and previewed.text == sent.text
    assert 'style="' in previewed.html.fill(lambda slot: "")


def test_the_preview_reports_problems_of_the_web_version(
    settings: Settings, issue_folder: Path
) -> None:
    theme = Path(__file__).parent.parent / "templates" / "email.mjml.j2"
    source = theme.read_text(encoding="utf-8")
    assert "{%- if not web %}" in source
    (settings.root / "templates").mkdir()
    (settings.root / "templates" / "email.mjml.j2").write_text(
        source.replace("{%- if not web %}", "{%- if web %}{{ no_such_thing }}{% endif %}"
                       "{%- if not web %}", 1),
        encoding="utf-8",
    )  # fmt: skip
    with pytest.raises(RenderError) as raised:
        render_issue(load_issue(issue_folder), settings, preview=True)
    assert "no_such_thing" in str(raised.value)


def test_item_html_is_escaped_and_subscriber_values_become_slots(
    settings: Settings, issue_folder: Path
) -> None:
    (issue_folder / "05-escape.md").write_text(
        "---\ntitle: 'Tom & Jerry <b>'\n---\n"
        "Hi {{ subscriber.name | default('you') }}, <script>alert(1)</script>\n",
        encoding="utf-8",
    )
    rendered = render_issue(load_issue(issue_folder), settings)
    html = rendered.html.fill(lambda slot: "[" + slot.path + "]")
    assert "Tom &amp; Jerry &lt;b&gt;" in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Hi [subscriber.name]," in html
    assert Slot("subscriber.name", "you") in rendered.html.slots


def test_unknown_template_variable_names_file_and_line(
    settings: Settings, issue_folder: Path
) -> None:
    path = issue_folder / "05-var.md"
    path.write_text("---\ntitle: T\n---\nLine one\n\nHello {{ reader.name }}\n", encoding="utf-8")
    with pytest.raises(RenderError) as caught:
        render_issue(load_issue(issue_folder), settings)
    assert f"{path}:6: unknown template variable: 'reader' is undefined" in str(caught.value)


def override(project: Path, name: str, text: str) -> Settings:
    (project / "templates").mkdir(exist_ok=True)
    (project / "templates" / name).write_text(text, encoding="utf-8")
    return load_settings(project)


def test_unknown_mjml_tag_is_an_error_naming_the_template(
    project: Path, issue_folder: Path
) -> None:
    settings = override(
        project,
        "email.mjml.j2",
        "<mjml>\n<mj-body>\n<mj-section><mj-column>\n<mj-txt>Hi</mj-txt>\n"
        "<mj-text>{{ unsubscribe_url }}</mj-text></mj-column></mj-section>\n</mj-body></mjml>\n",
    )
    with pytest.raises(RenderError) as caught:
        render_issue(load_issue(issue_folder), settings)
    template = project / "templates" / "email.mjml.j2"
    assert f"{template}:4: unknown MJML tag <mj-txt>" in str(caught.value)


def test_invalid_mjml_is_an_error(project: Path, issue_folder: Path) -> None:
    settings = override(project, "email.mjml.j2", "<mjml><mj-body><mj-section></mjml>\n")
    with pytest.raises(RenderError) as caught:
        render_issue(load_issue(issue_folder), settings)
    assert "email.mjml.j2: invalid MJML" in str(caught.value)


def test_template_override_wins_over_the_default_theme(project: Path, issue_folder: Path) -> None:
    settings = override(
        project,
        "email.txt.j2",
        "Custom text for {{ subscriber.first_name | default('you') }}: {{ unsubscribe_url }}\n",
    )
    rendered = render_issue(load_issue(issue_folder), settings)
    text = rendered.text.fill(lambda slot: slot.default or "X")
    assert text == "Custom text for you: X\n"


def test_dutch_locale_translates_built_in_words_and_dates(
    project: Path, issue_folder: Path
) -> None:
    config = project / "newsletter.toml"
    config.write_text(config.read_text().replace('locale = "en"', 'locale = "nl"'))
    settings = load_settings(project)
    rendered = render_issue(load_issue(issue_folder), settings)
    html = rendered.html.fill(lambda slot: "x")
    assert 'lang="nl"' in html
    assert "26 november 2026" in html
    assert ">Afmelden</a>" in html
    assert "Lees meer" not in html  # every linked item in the example sets its own link_text


def test_base_url_publishes_images_with_hashed_names(project: Path, issue_folder: Path) -> None:
    config = project / "newsletter.toml"
    config.write_text(
        config.read_text().replace(
            '# base_url = "https://riverside-garden.example.org/newsletter/"',
            'base_url = "https://news.example.org/archive"',
        )
    )
    rendered = render_issue(load_issue(issue_folder), load_settings(project))
    assert rendered.embedded_images == ()
    names = {image.filename for image in rendered.published_images}
    html = rendered.html.fill(lambda slot: "x")
    for name in names:
        assert f'src="https://news.example.org/archive/2026-11/{name}"' in html
    assert 'href="https://news.example.org/archive/2026-11/web.html"' in html


def test_large_images_are_scaled_down(settings: Settings, issue_folder: Path) -> None:
    Image.new("RGB", (3000, 1500), "#336699").save(issue_folder / "big.png")
    (issue_folder / "05-big.md").write_text(
        "---\ntitle: Big\nimage: big.png\nimage_alt: A blue field\n---\nText\n", encoding="utf-8"
    )
    rendered = render_issue(load_issue(issue_folder), settings)
    big = next(i for i in rendered.embedded_images if i.filename.startswith("big-"))
    with Image.open(__import__("io").BytesIO(big.data)) as image:
        assert image.size == (1104, 552)
    html = rendered.html.fill(lambda slot: "x")
    assert re.search(rf'<img[^>]*alt="A blue field"[^>]*src="cid:{big.cid}"[^>]*width="552"', html)


# --- the CSS inliner's known pitfalls ------------------------------------------------------------

PAGE = (
    '<html><head><style type="text/css">@media only screen and (max-width:479px)'
    "{ .col { width:100% !important; } } @font-face { font-family: Brand; src: url(b.woff2); }"
    "</style></head><body><!--[if mso]><table><tr><td><![endif]-->"
    '<a class="cta" style="color:green;font-size:12px" href="https://e.org/u?t=NLSLOT0X&amp;b=1">'
    'go</a><p class="p" style="margin:0">x</p><!--[if mso]></td></tr></table><![endif]-->'
    "</body></html>"
)


def test_inliner_keeps_media_queries_with_important_and_font_face() -> None:
    html = inline_css(PAGE, ".p { margin: 4px; line-height: 1.5 }")
    assert "width:100% !important" in html
    assert "@font-face" in html


def test_inliner_lets_important_rules_beat_inline_styles() -> None:
    html = inline_css(PAGE, ".cta { color: blue !important; text-decoration: underline }")
    style = re.search(r'<a class="cta"[^>]*style="([^"]*)"', html)
    assert style is not None
    declarations = dict(d.split(":", 1) for d in style.group(1).split(";"))
    assert declarations == {"color": "blue", "text-decoration": "underline", "font-size": "12px"}


def test_inline_style_beats_normal_rules() -> None:
    html = inline_css(PAGE, ".p { margin: 4px; line-height: 1.5 }")
    assert 'style="line-height:1.5;margin:0"' in html


def test_inliner_keeps_mso_conditionals_and_slot_markers() -> None:
    html = inline_css(PAGE, "a { color: red }")
    assert "<!--[if mso]><table><tr><td><![endif]-->" in html
    assert 'href="https://e.org/u?t=NLSLOT0X&amp;b=1"' in html


FLOATS = (
    # (page body, css): premailer's `align` on floated images must come out as it always did.
    ('<img src="a.png" class="f">', "img.f { float: right }"),
    ('<img src="a.png" class="f">', "img.f { FLOAT: left }"),
    ('<img src="a.png" class="f">', "img.f { fl\\6f at: left }"),
    ('<img src="a.png" style="float:left" class="f">', "img.f { width: 10px }"),
    ('<img src="a.png" style=float:left class="f">', "img.f { width: 10px }"),
    ('<img alt="a>b" style="float:right" class="f">', "img.f { width: 10px }"),
    ('<img title=\'"\' alt="x>" style="float:right" class="f">', "img.f { width: 1px }"),
    ('<IMG SRC="a.png" STYLE="float:right" class="f">', "img.f { width: 10px }"),
    ('<img src="a.png" class="f"><p style="float:left">x</p>', "img.f { width: 10px }"),
    ('<img src="a.png" class="f">', "img.f { width: 10px }"),
)


@pytest.mark.parametrize(("body", "css"), FLOATS)
def test_floated_images_are_aligned_as_premailer_does(body: str, css: str) -> None:
    page = f"<html><head></head><body>{body}</body></html>"
    assert inline_css(page, css) == inline_css(page, css, align_images=True)


def test_a_floated_image_gets_premailers_align_attribute() -> None:
    page = '<html><head></head><body><img src="a.png" class="f"></body></html>'
    assert 'align="right"' in inline_css(page, "img.f { float: right }")
    assert "align=" not in inline_css(page, "img.f { width: 10px }")


def test_the_example_needs_no_image_alignment(project: Path) -> None:
    """Premailer's check of every image's style is skipped where no image can float (speed);
    the default theme floats none."""
    settings = load_settings(project)
    seen: list[bool] = []
    original = inline_module._may_float

    def spy(protected: str, css: str) -> bool:
        seen.append(original(protected, css))
        return seen[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inline_module, "_may_float", spy)
        render_issue(load_issue(project / "issues" / EXAMPLE_ISSUE), settings)
    assert seen == [False, False]


def test_premailer_would_mangle_jinja_in_href_so_slots_use_markers() -> None:
    # The pitfall this design avoids: premailer URL-quotes Jinja syntax left in an href.
    html = inline_css('<html><head></head><body><a href="{{ x }}">a</a></body></html>', "a{}")
    assert "{{ x }}" not in html
