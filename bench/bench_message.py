"""Benchmark: per-recipient messages spliced from a pre-encoded template vs stdlib EmailMessage.

    python bench/bench_message.py [--source synthetic|example] [--recipients 10000] [--runs 5]

Reports messages/s of `personalise` + `bytes` (median of several runs) next to building an
`EmailMessage(policy=SMTP)` per recipient, their ratio, and the peak memory (RSS) while streaming
100,000 recipients through `personalise` without holding the messages.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html as html_lib
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.config import Footer, Settings, UnsubscribeSettings  # noqa: E402
from newsletter.delivery.message import MessageTemplate  # noqa: E402
from newsletter.render.model import EmbeddedImage, RenderedIssue  # noqa: E402
from newsletter.slots import Slot, SlotText  # noqa: E402

SECRET = b"bench-secret"
FIRST_NAME = Slot("subscriber.first_name", "there")


@dataclass(frozen=True)
class Person:
    email: str
    name: str
    first_name: str
    needs_smtputf8: bool = False

    def value(self, field: str) -> str | None:
        return {"email": self.email, "name": self.name, "first_name": self.first_name}.get(field)


def token_for(secret: bytes, address: str) -> str:
    return hmac.new(secret, address.encode(), hashlib.sha256).hexdigest()[:32]


def people(count: int) -> Iterator[Person]:
    """Recipients made on the fly, so the list itself takes no memory; every 10th is non-ASCII."""
    for number in range(count):
        if number % 10 == 0:
            yield Person(f"zoe{number}@example.org", f"Zoë Ünal {number}", "Zoë")
        else:
            yield Person(f"user{number}@example.org", f"User Number {number}", f"User{number}")


def synthetic_issue() -> RenderedIssue:
    """An ~84 KB HTML part shaped like MJML output: long inline-styled lines, a few slots."""
    row = (
        '<tr><td align="left" style="font-size:0px;padding:10px 25px;word-break:break-word;">'
        '<div style="font-family:Georgia,serif;font-size:16px;line-height:1.6;text-align:left;'
        'color:#1f2933;">Café de Flore — “naïve” résumé of the month, with a link to '
        '<a href="https://example.org/story?id=42&amp;utm_source=news" style="color:#1b6b5a;">'
        "the full story</a>.</div></td></tr>"
    )
    rows = "\n".join(row for _ in range(228))
    html = SlotText(
        (
            '<!doctype html><html lang="en"><body style="margin:0;padding:0;">'
            '<img src="cid:logo@bench" alt="Bench News" width="160"><p>Hello ',
            FIRST_NAME,
            f',</p>\n<table role="presentation" width="100%">\n{rows}\n</table>\n'
            '<p style="font-size:12px;"><a href="',
            Slot("web_url"),
            '">View in your browser</a> · <a href="',
            Slot("unsubscribe_url"),
            '">Unsubscribe</a></p></body></html>\n',
        )
    )
    text = SlotText(
        (
            "Hello ",
            FIRST_NAME,
            ",\n\n"
            + "Café de Flore — the story of the month: https://example.org/story?id=42\n" * 60,
            "\nView online: ",
            Slot("web_url"),
            "\nUnsubscribe: ",
            Slot("unsubscribe_url"),
            "\n",
        )
    )
    logo = EmbeddedImage("logo@bench", "logo.png", "image/png", bytes(range(256)) * 16)
    return RenderedIssue(
        name="2026-11",
        subject=SlotText(("November news for ", FIRST_NAME)),
        preheader="",
        html=html,
        text=text,
        web_html="",
        language="en",
        embedded_images=(logo,),
    )


def bench_settings() -> Settings:
    return Settings(
        root=REPO,
        name="Bench News",
        sender=Address("Bench News", addr_spec="news@example.org"),
        footer=Footer(address="1 Example Street"),
        base_url="https://news.example.org/",
        unsubscribe=UnsubscribeSettings(
            url="https://example.org/unsubscribe", mailto="unsubscribe@example.org"
        ),
    )


def example_issue() -> tuple[RenderedIssue, Settings]:
    """The repo's example issue, rendered by the real renderer."""
    from newsletter.config import load_settings
    from newsletter.content import load_issue
    from newsletter.render import render_issue

    settings = load_settings(REPO)
    folder = sorted(path for path in settings.issues_dir.iterdir() if path.is_dir())[-1]
    return render_issue(load_issue(folder), settings), settings


def stdlib_builder(rendered: RenderedIssue, settings: Settings) -> Callable[[Person], bytes]:
    """The straightforward way: a new EmailMessage per recipient, filled and serialised."""
    unsubscribe = settings.unsubscribe.url or ""
    web_url = f"{settings.base_url}{rendered.name}/web.html" if settings.base_url else ""

    def build(person: Person) -> bytes:
        url = f"{unsubscribe}?token={token_for(SECRET, person.email)}"

        def value(slot: Slot) -> str:
            if slot.path == "unsubscribe_url":
                return url
            if slot.path == "web_url":
                return web_url
            found = person.value(slot.field or "")
            return found or slot.default or ""

        message = EmailMessage(policy=policy.SMTP)
        message["From"] = settings.sender
        message["To"] = Address(person.name, addr_spec=person.email)
        message["Subject"] = rendered.subject.fill(value)
        message["Message-ID"] = f"<{rendered.name}.{person.email}@example.org>"
        message["List-Unsubscribe"] = f"<{url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(rendered.text.fill(value), cte="quoted-printable")
        html = rendered.html.fill(lambda slot: html_lib.escape(value(slot)))
        message.add_alternative(html, subtype="html", cte="quoted-printable")
        if rendered.embedded_images:
            part = message.get_body(("html",))
            assert isinstance(part, EmailMessage)
            for image in rendered.embedded_images:
                maintype, subtype = image.content_type.split("/")
                part.add_related(
                    image.data, maintype, subtype, cid=f"<{image.cid}>", filename=image.filename
                )
        return bytes(message)

    return build


def rate(build: Callable[[Person], bytes], count: int, runs: int) -> float:
    """Median messages/s of `build` over `count` recipients, `runs` times."""
    results = []
    for _ in range(runs):
        started = time.perf_counter()
        for person in people(count):
            build(person)
        results.append(count / (time.perf_counter() - started))
    return statistics.median(results)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["synthetic", "example"], default="synthetic")
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--stdlib-recipients", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stream", type=int, default=100_000)
    options = parser.parse_args()

    if options.source == "example":
        rendered, settings = example_issue()
    else:
        rendered, settings = synthetic_issue(), bench_settings()
    date = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    started = time.perf_counter()
    template = MessageTemplate.prepare(
        rendered, settings, secret=SECRET, token_for=token_for, date=date
    )
    prepare_ms = (time.perf_counter() - started) * 1000

    def spliced(person: Person) -> bytes:
        return template.personalise(person).data

    html_kb = sum(len(p.encode()) for p in rendered.html if isinstance(p, str)) / 1024
    message_kb = len(spliced(next(people(1)))) / 1024

    # Memory first, so the process peak is this stream's and not the stdlib run's.
    baseline = peak_rss_mb()
    started = time.perf_counter()
    for person in people(options.stream):
        template.personalise(person)
    stream_s = time.perf_counter() - started
    peak = peak_rss_mb()

    spliced_rate = rate(spliced, options.recipients, options.runs)
    stdlib_rate = rate(stdlib_builder(rendered, settings), options.stdlib_recipients, 3)

    print(
        f"issue: {options.source} · HTML {html_kb:.1f} KB · message {message_kb:.1f} KB · "
        f"{len(rendered.embedded_images)} embedded image(s) · prepare {prepare_ms:.1f} ms"
    )
    print()
    print(f"{'method':<38}{'recipients':>12}{'msg/s (median)':>17}{'µs/msg':>10}")
    print(
        f"{'MessageTemplate.personalise + bytes':<38}{options.recipients:>12,}"
        f"{spliced_rate:>17,.0f}{1e6 / spliced_rate:>10.1f}"
    )
    print(
        f"{'EmailMessage(policy=SMTP) per recipient':<38}{options.stdlib_recipients:>12,}"
        f"{stdlib_rate:>17,.0f}{1e6 / stdlib_rate:>10.1f}"
    )
    print(f"{'ratio':<38}{'':>12}{spliced_rate / stdlib_rate:>16,.0f}×")
    print()
    print(
        f"streaming {options.stream:,} recipients: {options.stream / stream_s:,.0f} msg/s, "
        f"peak RSS {peak:.0f} MB (baseline {baseline:.0f} MB; target < 150 MB)"
    )
    target = "met" if spliced_rate >= 20_000 else "NOT met"
    print(f"speed target >= 20,000 msg/s on one core: {target}")


if __name__ == "__main__":
    main()
