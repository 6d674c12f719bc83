"""Markdown kept per source (render/markdown.py): what is read back is what a fresh parse gives,
and every input (the text, the images shown, the width) makes it parse again."""

from __future__ import annotations

from newsletter.render import markdown
from newsletter.render.markdown import ShownImage, body_images, to_html, to_text

SOURCE = (
    "Some *text* with a [link](https://example.org/) and an image:\n\n"
    "![A photo](photo.jpg)\n\n"
    "- one\n- two\n\n"
    "A long line " + "that goes on " * 10 + "until it must wrap.\n"
)
PHOTO = ShownImage("cid:photo-1", 552, 368)


def test_kept_results_are_a_fresh_parses() -> None:
    images = {"photo.jpg": PHOTO}
    first = to_html(SOURCE, images)
    assert (
        to_html(SOURCE, images)
        == first
        == markdown._to_html.__wrapped__(SOURCE, (("photo.jpg", PHOTO),))
    )
    assert to_text(SOURCE) == to_text.__wrapped__(SOURCE)
    assert body_images(SOURCE) == body_images(SOURCE)
    assert body_images(SOURCE)[0].src == "photo.jpg"


def test_an_edited_text_is_parsed_again() -> None:
    before_html, before_text = to_html(SOURCE), to_text(SOURCE)
    edited = SOURCE.replace("*text*", "**words**").replace("photo.jpg", "other.png")
    assert "<strong>words</strong>" in to_html(edited) and "<em>" not in to_html(edited)
    assert "words" in to_text(edited) and "words" not in before_text
    assert "<em>text</em>" in before_html
    assert [image.src for image in body_images(edited)] == ["other.png"]


def test_other_images_or_width_render_again() -> None:
    shown = to_html(SOURCE, {"photo.jpg": PHOTO})
    assert 'src="cid:photo-1"' in shown and 'width="552"' in shown
    resized = to_html(SOURCE, {"photo.jpg": ShownImage("cid:photo-2", 204, 136)})
    assert 'src="cid:photo-2"' in resized and 'width="204"' in resized
    assert 'src="photo.jpg"' in to_html(SOURCE)  # no images: the source as written
    narrow = to_text(SOURCE, width=30)
    assert max(len(line) for line in narrow.splitlines()) <= 30
    assert max(len(line) for line in to_text(SOURCE).splitlines()) > 30


def test_a_caller_cannot_change_what_is_kept() -> None:
    found = body_images(SOURCE)
    found.clear()
    assert body_images(SOURCE)
