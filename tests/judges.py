"""A CSS compatibility judge on caniemail's data (scripts/judges/caniemail.json): which CSS
features an email relies on, and in how many of the 11 major clients each one is unsupported.

What only enhances the design is left out on purpose, because a client that ignores it still
shows the design as intended: rules inside `@media` (phone tweaks, dark mode), Outlook.com's
`[data-ogsc]`/`[data-ogsb]` dark-mode twins, the `color-scheme` declarations, and CSS inside
Outlook's `<!--[if mso]>` blocks (written for Outlook alone). Vendor-prefixed and `mso-`
properties have no caniemail entry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "scripts" / "judges" / "caniemail.json"
MAX_UNSUPPORTED = 3
# Signals to clients that can use them, ignored harmlessly by the rest (which show the light
# design, as intended).
ENHANCEMENT_PROPERTIES = frozenset({"color-scheme", "supported-color-schemes"})

_MSO_BLOCK = re.compile(r"<!--\[if [^\]]*mso[^\]]*\]>.*?<!\[endif\]-->", re.S | re.I)
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>(.*?)</style>", re.S | re.I)
_STYLE_ATTR = re.compile(r"""\sstyle=(?:"([^"]*)"|'([^']*)')""", re.I)
_DECLARATION = re.compile(r"(?:^|;)\s*(-{0,2}[a-zA-Z][a-zA-Z-]*)\s*:\s*([^;]*)")


@dataclass(frozen=True)
class Verdict:
    slug: str
    title: str
    unsupported: tuple[str, ...]  # the clients that do not support it


def _without_enhancements(css: str) -> str:
    """`css` without @media blocks and [data-ogs*] rules (matching braces, not regexes)."""
    out: list[str] = []
    index = 0
    while index < len(css):
        at_media = css.startswith("@media", index)
        brace = css.find("{", index)
        if brace == -1:
            out.append(css[index:])
            break
        selector = css[index:brace]
        depth, end = 0, brace
        for end in range(brace, len(css)):
            if css[end] == "{":
                depth += 1
            elif css[end] == "}":
                depth -= 1
                if depth == 0:
                    break
        if not at_media and "[data-ogs" not in selector:
            out.append(css[index : end + 1])
        index = end + 1
        while index < len(css) and css[index] in " \t\r\n":
            index += 1
        at_media = False
    return "".join(out)


def relied_on_declarations(html: str) -> list[tuple[str, str]]:
    """(property, value) of every declaration the design relies on."""
    html = _MSO_BLOCK.sub("", html)
    found: list[tuple[str, str]] = []
    for block in _STYLE_BLOCK.findall(html):
        for body in re.findall(r"\{([^{}]*)\}", _without_enhancements(block)):
            found += [(m.group(1).lower(), m.group(2).strip()) for m in _DECLARATION.finditer(body)]
    for match in _STYLE_ATTR.finditer(html):
        style = match.group(1) if match.group(1) is not None else match.group(2)
        found += [(m.group(1).lower(), m.group(2).strip()) for m in _DECLARATION.finditer(style)]
    return found


def judge(html: str) -> list[Verdict]:
    """A verdict for every caniemail CSS feature the email relies on, worst first."""
    data = json.loads(DATA.read_text(encoding="utf-8"))
    features = data["features"]
    slugs: set[str] = set()
    for name, value in relied_on_declarations(html):
        if name.startswith("--") or "var(" in value:
            slugs.add("css-variables")
        for function in ("clamp", "min", "max", "calc"):
            if f"{function}(" in value:
                slugs.add(f"css-function-{function}" if function != "calc" else "css-unit-calc")
        if name.startswith(("-", "mso-")) or name in ENHANCEMENT_PROPERTIES:
            continue
        if name == "display" and value.startswith("none"):
            slugs.add("css-display-none")
        slugs.add(f"css-{name}")
    verdicts = [
        Verdict(
            slug,
            features[slug]["title"],
            tuple(sorted(c for c, s in features[slug]["support"].items() if s == "n")),
        )
        for slug in slugs
        if slug in features
    ]
    return sorted(verdicts, key=lambda v: (-len(v.unsupported), v.slug))
