"""Email conventions applied to the compiled HTML, whatever the theme: the doctype premailer drops,
the Apple and colour-scheme metas, and a preheader hidden the way inboxes expect.

They run after CSS inlining, because premailer (lxml) would drop the doctype again and turn the
preheader's padding entities into raw characters.
"""

from __future__ import annotations

import html as html_lib
import re
from typing import Literal

__all__ = ["DOCTYPE", "apply_standards", "head_metas", "preheader_html"]

ColorScheme = Literal["light dark", "light"]

DOCTYPE = "<!DOCTYPE html>"
# Enough padding to fill the longest inbox preview line (about 150 characters on a wide screen)
# after a short preheader, so "View in your browser" and the greeting never leak into it.
PREHEADER_PADDING = "&#847;&zwnj;&nbsp;" * 90
_DOCTYPE = re.compile(r"^\s*<!doctype[^>]*>\s*", re.I)
_HEAD_CLOSE = re.compile(r"</head>", re.I)
# mjml's own <mj-preview> block: white text, no mso-hide and no padding. It is replaced whole.
_MJML_PREVIEW = re.compile(
    r'<div style="display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0px;'
    r'max-width:0px;opacity:0;overflow:hidden">(.*?)</div>',
    re.S,
)


def head_metas(color_scheme: ColorScheme) -> str:
    """The metas every email should carry: Apple Mail's reformatting and data detectors off,
    and the colour schemes the design supports (so clients do not invert a light-only design)."""
    return (
        '<meta name="x-apple-disable-message-reformatting">'
        '<meta name="format-detection" content="telephone=no, date=no, address=no, email=no, '
        'url=no">'
        f'<meta name="color-scheme" content="{color_scheme}">'
        f'<meta name="supported-color-schemes" content="{color_scheme}">'
        '<style type="text/css">'
        f":root {{ color-scheme: {color_scheme}; supported-color-schemes: {color_scheme}; }}"
        # Apple Mail turns dates, addresses and numbers into blue links: keep the design's colour.
        "a[x-apple-data-detectors] { color: inherit !important; text-decoration: none "
        "!important; font-size: inherit !important; font-family: inherit !important; "
        "font-weight: inherit !important; line-height: inherit !important; }"
        "</style>"
        # Outlook for Windows falls back to Times New Roman for any font it lacks (and for
        # elements without an inline font): Arial instead.
        '<!--[if mso]><style type="text/css">body, table, td, th, div, p, h1, h2, h3, li, a, '
        "span { font-family: 'Segoe UI', Arial, sans-serif !important; }</style><![endif]-->"
    )


def preheader_html(text: str) -> str:
    """The hidden preheader: invisible everywhere (Outlook too, via mso-hide) without relying on
    white-on-white text (SpamAssassin's HTML_FONT_LOW_CONTRAST), padded so nothing after it
    shows in the inbox preview line."""
    return (
        '<div style="display:none;font-size:1px;line-height:1px;max-height:0;max-width:0;'
        'opacity:0;overflow:hidden;mso-hide:all">'
        f"{text}{PREHEADER_PADDING}</div>"
    )


def apply_standards(html: str, *, color_scheme: ColorScheme = "light dark") -> str:
    """`html` (compiled and inlined) with the doctype, the head metas and a proper preheader."""
    body = _DOCTYPE.sub("", html, count=1)
    # At the end of the head: the charset meta stays within the first bytes, as HTML requires.
    head = _HEAD_CLOSE.search(body)
    if head is not None:
        body = body[: head.start()] + head_metas(color_scheme) + body[head.start() :]
    body = _MJML_PREVIEW.sub(lambda m: preheader_html(_reescape(m.group(1))), body, count=1)
    body = _IMG.sub(_fluid_height, body)
    return f"{DOCTYPE}\n{body}"


_IMG = re.compile(r'<img\b[^>]*\bheight="\d+"[^>]*>', re.I)
_FIXED_HEIGHT = re.compile(r"(?<![-\w])height:\s*\d+px")


def _fluid_height(match: re.Match[str]) -> str:
    """An image with a numeric height attribute keeps it (Outlook and images-off layouts reserve
    the space from it) but scales with its width everywhere else (`height:auto`)."""
    return _FIXED_HEIGHT.sub("height:auto", match.group(0))


def _reescape(text: str) -> str:
    """The preheader as premailer left it, escaped once again (it unescapes entities)."""
    return html_lib.escape(html_lib.unescape(text), quote=False)
