"""What every check reads: the rendered parts with their slots marked, the HTML scanned once, and
a locator that finds where in the sources (item files, issue.md, newsletter.toml, templates) a URL
or a piece of text came from."""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode

from ..audience import Subscriber
from ..config import Settings
from ..content import Issue, Item
from ..render.model import RenderedIssue
from ..render.samples import sample_filler
from ..render.theme import package_theme_dir
from ..slots import Slot, SlotText

# Slots are filled with markers of the renderer's own form, so a URL holding a per-recipient
# value (the unsubscribe link) is recognisable in the checked text.
SLOT_MARKER = re.compile(r"NLSLOT(\d+)X")
_SKIPPED_CONTENT = {"style", "script", "title", "head"}


@dataclass(frozen=True)
class LinkTag:
    """An `<a href>`: its target, its visible text (image alt texts included) and labels."""

    href: str
    text: str
    title: str | None = None
    aria_label: str | None = None


@dataclass(frozen=True)
class ImageTag:
    src: str
    alt: str | None
    width: str | None
    height: str | None


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class HtmlScan:
    lang: str | None
    links: tuple[LinkTag, ...]
    images: tuple[ImageTag, ...]
    headings: tuple[Heading, ...]
    text: str  # the visible text, whitespace collapsed


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lang: str | None = None
        self.links: list[LinkTag] = []
        self.images: list[ImageTag] = []
        self.headings: list[Heading] = []
        self.text: list[str] = []
        self._skip = 0
        self._link: tuple[dict[str, str | None], list[str]] | None = None
        self._heading: tuple[int, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "html":
            self.lang = values.get("lang")
        elif tag in _SKIPPED_CONTENT:
            self._skip += 1
        elif tag == "a" and values.get("href") is not None:
            self._link = (values, [])
        elif tag == "img":
            alt = values.get("alt")
            self.images.append(
                ImageTag(
                    src=values.get("src") or "",
                    alt=alt,
                    width=values.get("width"),
                    height=values.get("height"),
                )
            )
            if self._link is not None and alt:
                self._link[1].append(f" {alt} ")
        elif re.fullmatch(r"h[1-6]", tag):
            self._heading = (int(tag[1]), [])
        elif tag in ("br", "p", "div", "td", "li", "tr"):
            self._data(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_CONTENT:
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._link is not None:
            values, text = self._link
            self.links.append(
                LinkTag(
                    href=values.get("href") or "",
                    text=_collapse("".join(text)),
                    title=values.get("title"),
                    aria_label=values.get("aria-label"),
                )
            )
            self._link = None
        elif self._heading is not None and tag == f"h{self._heading[0]}":
            level, text = self._heading
            self.headings.append(Heading(level, _collapse("".join(text))))
            self._heading = None
        elif tag in ("p", "div", "td", "li", "tr"):
            self._data(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._data(data)

    def _data(self, data: str) -> None:
        self.text.append(data)
        if self._link is not None:
            self._link[1].append(data)
        if self._heading is not None:
            self._heading[1].append(data)


def scan_html(html: str) -> HtmlScan:
    """Links, images, headings, `<html lang>` and visible text (MSO conditionals are skipped)."""
    scanner = _Scanner()
    scanner.feed(html)
    scanner.close()
    return HtmlScan(
        lang=scanner.lang,
        links=tuple(scanner.links),
        images=tuple(scanner.images),
        headings=tuple(scanner.headings),
        text=_collapse("".join(scanner.text)),
    )


def _collapse(text: str) -> str:
    return " ".join(text.split())


def mark_slots(text: SlotText, slots: list[Slot]) -> str:
    """`text` with each slot written as a marker `NLSLOT<n>X` (n: its index in `slots`)."""

    def marker(slot: Slot) -> str:
        if slot not in slots:
            slots.append(slot)
        return f"NLSLOT{slots.index(slot)}X"

    return text.fill(marker)


# --- where things come from ---------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    file: Path | None = None
    line: int | None = None


@dataclass
class Locator:
    """Finds the file and line a URL or text came from, searching the sources in order."""

    sources: list[tuple[Path, str]] = field(default_factory=list)

    @classmethod
    def for_issue(cls, issue: Issue, settings: Settings) -> Locator:
        paths: list[Path] = [item.path for item in issue.items]
        paths.append(issue.path)
        paths.append(settings.config_path)
        if settings.templates_dir.is_dir():
            paths.extend(sorted(p for p in settings.templates_dir.rglob("*.j2") if p.is_file()))
        paths.extend(sorted(p for p in package_theme_dir().glob("*.j2") if p.is_file()))
        sources = []
        for path in paths:
            try:
                sources.append((path, path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")))
            except (OSError, UnicodeDecodeError):
                continue
        return cls(sources)

    def find(self, *needles: str, within: Path | None = None, whole: bool = False) -> Location:
        """The first source (or just `within`) holding any of `needles`, by source order.

        `whole`: a needle must not continue into more URL characters (so `https://a.org/x`
        is not found inside `https://a.org/xy`).
        """
        wanted = [n for n in dict.fromkeys(needles) if n]
        for path, text in self.sources:
            if within is not None and path != within:
                continue
            for needle in wanted:
                if whole:
                    found = re.search(re.escape(needle) + r"(?![^\s\"'<>()\[\]{}|\\^`])", text)
                    index = found.start() if found else -1
                else:
                    index = text.find(needle)
                if index >= 0:
                    return Location(path, text.count("\n", 0, index) + 1)
        return Location()

    def url(self, url: str) -> Location:
        """Where `url` is written, trying the forms rendering may have changed it into."""
        return self.find(*url_variants(url), whole=True)

    def link(self, text: str, url: str) -> Location:
        """Where the Markdown link `[text](url)` is written; else where `url` first is."""
        wanted = _collapse(re.sub(r"[*_`~]", "", text)).lower()
        for path, source in self.sources:
            for variant in dict.fromkeys(url_variants(url)):
                if not variant:
                    continue
                for found in re.finditer(r"\]\(\s*<?" + re.escape(variant), source):
                    start = source.rfind("[", 0, found.start())
                    label = _collapse(re.sub(r"[*_`~]", "", source[start + 1 : found.start()]))
                    if start >= 0 and label.lower() == wanted:
                        return Location(path, source.count("\n", 0, found.start()) + 1)
        return self.url(url)

    def key_line(self, path: Path, key: str, *, table: str | None = None) -> int | None:
        """The line of `key:` (front matter) or `key =` (TOML, inside `[table]`) in `path`."""
        for source, text in self.sources:
            if source != path:
                continue
            current = ""
            for number, line in enumerate(text.splitlines(), start=1):
                header = re.match(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?", line)
                if header:
                    current = header.group(1)
                    continue
                if re.match(rf"^\s*\"?{re.escape(key)}\"?\s*[:=]", line) and (
                    table is None or current == table
                ):
                    return number
        return None

    def template(self, name: str) -> Path | None:
        """The theme file in use for `name`: the project's override, else the default theme."""
        for path, _ in self.sources:
            if path.name == name and path.parent != package_theme_dir():
                return path
        for path, _ in self.sources:
            if path.name == name:
                return path
        return None


def url_variants(url: str) -> list[str]:
    """`url` and the forms it may have in a source: unescaped, without UTM tags, decoded..."""
    variants = [url, html_lib.unescape(url)]
    base, _, query = url.partition("?")
    if query:
        fragment = ""
        if "#" in query:
            query, fragment = query.split("#", 1)
            fragment = "#" + fragment
        kept = [
            (k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not k.startswith("utm_")
        ]
        variants.append(base + (f"?{urlencode(kept)}" if kept else "") + fragment)
        variants.append(base + (f"?{urlencode(kept)}" if kept else ""))
    variants.append(unquote(url))
    variants.append(url.split("#", 1)[0])
    variants.append(url.rstrip("/"))
    return variants


# --- the context every check reads ------------------------------------------------------------


@dataclass(frozen=True)
class CheckContext:
    """An issue, its rendering and settings, prepared once for all checks."""

    issue: Issue  # drafts left out, as sent
    all_items: tuple[Item, ...]
    rendered: RenderedIssue
    settings: Settings
    slots: tuple[Slot, ...]
    html: str  # slots as markers
    text: str  # slots as markers
    sample_html: str  # slots filled for the sample subscriber, as a reader sees it
    sample_text: str
    sample_subject: str
    scan: HtmlScan
    web_url: str
    locator: Locator

    @classmethod
    def build(cls, issue: Issue, rendered: RenderedIssue, settings: Settings) -> CheckContext:
        slots: list[Slot] = []
        html = mark_slots(rendered.html, slots)
        text = mark_slots(rendered.text, slots)
        # The same sample subscriber as `newsletter build` and the preview.
        sample = Subscriber.sample(settings.locale).as_dict()
        return cls(
            issue=issue.without_drafts(),
            all_items=issue.items,
            rendered=rendered,
            settings=settings,
            slots=tuple(slots),
            html=html,
            text=text,
            sample_html=rendered.html.fill(sample_filler(rendered, settings, sample, html=True)),
            sample_text=rendered.text.fill(sample_filler(rendered, settings, sample, html=False)),
            sample_subject=rendered.subject.fill(
                sample_filler(rendered, settings, sample, html=False)
            ),
            scan=scan_html(html),
            web_url=f"{settings.base_url}{rendered.name}/web.html" if settings.base_url else "",
            locator=Locator.for_issue(issue, settings),
        )

    def slot_in(self, value: str) -> Slot | None:
        """The per-recipient slot `value` holds, if any."""
        found = SLOT_MARKER.search(value)
        if found is None:
            return None
        index = int(found.group(1))
        return self.slots[index] if index < len(self.slots) else None

    @property
    def email_template(self) -> Path | None:
        return self.locator.template("email.mjml.j2")

    @property
    def text_template(self) -> Path | None:
        return self.locator.template("email.txt.j2")
