"""Issue 15, D3 and D12: content and theme templates run in a sandbox with limits on size and
time; image paths stay inside the project; hostile inputs are clear errors, never tracebacks."""

from __future__ import annotations

import email
import email.policy
import struct
import zlib
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.checks import check_issue
from newsletter.config import Settings, load_settings
from newsletter.content import load_issue
from newsletter.delivery.message import MessageTemplate
from newsletter.errors import ContentError, RenderError
from newsletter.render import render_issue, sandbox


def item(issue_folder: Path, body: str, name: str = "05-hostile.md", meta: str = "") -> Path:
    path = issue_folder / name
    path.write_text(f"---\ntitle: Hostile\n{meta}---\nFirst line\n\n{body}\n", encoding="utf-8")
    return path


def render_error(settings: Settings, issue_folder: Path) -> str:
    with pytest.raises(RenderError) as caught:
        render_issue(load_issue(issue_folder), settings)
    return str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}",
        "{{ lipsum.__globals__['os'].system('touch PWNED') }}",
        "{{ joiner.__init__.__globals__.os.system('touch PWNED') }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ subscriber.__class__.__init__.__globals__ }}",
        "{{ range.__self__ }}",
    ],
)
def test_content_cannot_reach_python(
    settings: Settings, issue_folder: Path, body: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(issue_folder)
    path = item(issue_folder, body)
    message = render_error(settings, issue_folder)
    assert f"{path}:6: " in message
    assert not (issue_folder / "PWNED").exists()
    for name in ("cycler", "lipsum", "joiner"):
        if body.startswith("{{ " + name):
            assert f"unknown template variable: '{name}' is undefined" in message


def test_a_theme_override_cannot_reach_python(
    project: Path, issue_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    (project / "templates").mkdir()
    template = project / "templates" / "email.txt.j2"
    template.write_text("Hi\n{{ cycler.__init__.__globals__.os.system('touch PWNED') }}\n")
    message = render_error(load_settings(project), issue_folder)
    assert f"{template}:2: " in message
    assert not (project / "PWNED").exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{{ 'A' * 10**9 }}", "too large"),
        ("{{ ['A'] * 10**9 }}", "too large"),
        ("{{ 9 ** 999999 }}", "too large"),
        ("{{ 'A' * 600000 + 'B' * 600000 }}", "too large"),
        ("{{ '%0999999999d' % 1 }}", "too large"),
        ("{{ '%0999999999d' | format(1) }}", "too large"),
        ("{{ '{:>999999999}'.format(1) }}", "too large"),
        ("{{ 'a'.ljust(10**9) }}", "too large"),
        ("{{ 'a' | center(10**9) }}", "too large"),
        ("{{ ('A' * 1000) | replace('A', 'B' * 100000) }}", "too large"),
        ("{{ ('A' * 100000).join(['x'] * 100000) }}", "too large"),
        ("{% for i in range(100000) %}{{ 'x' * 20 }}{% endfor %}", "larger than 1 MB"),
        (
            "{% set ns = namespace(s='AA') %}{% for i in range(64) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "too large",
        ),
    ],
)
def test_huge_output_is_refused_fast(
    settings: Settings, issue_folder: Path, body: str, expected: str
) -> None:
    path = item(issue_folder, body)
    message = render_error(settings, issue_folder)
    assert f"{path}:" in message
    assert expected in message


def test_a_slow_template_is_stopped_naming_the_file(
    settings: Settings, issue_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "RENDER_SECONDS", 0.3)
    path = item(
        issue_folder,
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    )
    message = render_error(settings, issue_folder)
    assert f"{path}:6: " in message
    assert "took longer than 0.3 s" in message


@pytest.mark.parametrize(
    "body",
    [
        "{% include '/etc/passwd' %}",
        "{% include '../../../../../../etc/passwd' %}",
        "{% import '/etc/passwd' as x %}",
        "{% extends '/etc/passwd' %}",
        "{% from 'email.mjml.j2' import x %}",
    ],
)
def test_content_cannot_include_files(settings: Settings, issue_folder: Path, body: str) -> None:
    path = item(issue_folder, body)
    message = render_error(settings, issue_folder)
    assert f"{path}:6: " in message
    assert "include" in message
    assert "root:" not in message


def test_a_theme_cannot_include_files_outside_its_folders(
    project: Path, issue_folder: Path
) -> None:
    (project / "templates").mkdir()
    template = project / "templates" / "email.txt.j2"
    template.write_text("Hi\n{% include '/etc/passwd' %}\n")
    message = render_error(load_settings(project), issue_folder)
    assert f"{template}:2: " in message
    assert "root:" not in message


def test_a_recursive_macro_is_a_clear_error(settings: Settings, issue_folder: Path) -> None:
    path = item(issue_folder, "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")
    message = render_error(settings, issue_folder)
    assert f"{path}:6: " in message
    assert "calls itself" in message


def test_documented_names_still_work(settings: Settings, issue_folder: Path) -> None:
    item(
        issue_folder,
        "Hi {{ subscriber.first_name | default('there') | upper }}, "
        "{% for n in range(3) %}{{ n }}{% endfor %} {{ 'ab' * 3 }} "
        "{{ '%d' | format(5000000) }} {{ range(0, 5000000, 1000000) | list | length }} "
        "[out]({{ unsubscribe_url }})",
    )
    rendered = render_issue(load_issue(issue_folder), settings)
    text = rendered.text.fill(lambda slot: f"<{slot.path}>")
    assert "012 ababab 5000000 5" in text


# --- image paths -------------------------------------------------------------------------------


def image_error(issue_folder: Path, reference: str) -> tuple[Path, str]:
    path = item(issue_folder, "Body", meta=f"image: '{reference}'\nimage_alt: A picture\n")
    with pytest.raises(ContentError) as caught:
        load_issue(issue_folder)
    return path, str(caught.value)


def test_an_absolute_image_path_is_refused(issue_folder: Path) -> None:
    outside = issue_folder.parent.parent.parent / "secret.png"
    outside.write_bytes((issue_folder / "garden.jpg").read_bytes())
    path, message = image_error(issue_folder, str(outside))
    assert f"{path}:3: image: " in message
    assert "inside the project" in message


def test_an_image_path_escaping_the_project_is_refused(issue_folder: Path) -> None:
    outside = issue_folder.parent.parent.parent / "secret.jpg"
    outside.write_bytes((issue_folder / "garden.jpg").read_bytes())
    path, message = image_error(issue_folder, "../../../secret.jpg")
    assert f"{path}:3: image: " in message
    assert "inside the project" in message


def test_a_symlinked_image_pointing_outside_is_refused(issue_folder: Path) -> None:
    outside = issue_folder.parent.parent.parent / "secret.jpg"
    outside.write_bytes((issue_folder / "garden.jpg").read_bytes())
    (issue_folder / "link.jpg").symlink_to(outside)
    path, message = image_error(issue_folder, "link.jpg")
    assert f"{path}:3: image: " in message
    assert "inside the project" in message


def test_an_image_elsewhere_in_the_project_is_fine(project: Path, issue_folder: Path) -> None:
    item(issue_folder, "Body", meta="image: '../../images/logo.png'\nimage_alt: Logo\n")
    assert load_issue(issue_folder).items[-1].image == "../../images/logo.png"


def test_a_project_logo_outside_the_project_is_refused(project: Path, issue_folder: Path) -> None:
    outside = project.parent / "logo.png"
    outside.write_bytes((project / "images" / "logo.png").read_bytes())
    config = project / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('logo = "images/logo.png"', f'logo = "{outside}"'))
    message = render_error(load_settings(project), issue_folder)
    assert "newsletter.logo" in message and "inside the project" in message


def bomb_png(width: int, height: int) -> bytes:
    """A PNG header claiming width x height pixels, with next to no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [30000, 10000])
def test_a_decompression_bomb_is_a_clear_error(
    settings: Settings, issue_folder: Path, side: int
) -> None:
    (issue_folder / "bomb.png").write_bytes(bomb_png(side, side))
    item(issue_folder, "Body", meta="image: bomb.png\nimage_alt: A bomb\n")
    message = render_error(settings, issue_folder)
    assert f"{issue_folder / 'bomb.png'}" in message
    assert "pixels" in message


# --- per-recipient values in link addresses (D13) ----------------------------------------------


@dataclass(frozen=True)
class Person:
    email: str
    city: str | None = None
    name: str | None = None
    needs_smtputf8: bool = False

    def value(self, field: str) -> str | None:
        return {"email": self.email, "city": self.city, "name": self.name}.get(field)


HOSTILE_URLS = [
    "javascript:alert(document.cookie)",
    " JavaScript:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "\x01javascript:alert(1)",
]


def url_template(settings: Settings, issue_folder: Path) -> tuple[MessageTemplate, Path]:
    path = item(
        issue_folder,
        "[Your plot]({{ subscriber.city }}) and "
        "[the map](https://example.org/map?c={{ subscriber.city }})",
    )
    rendered = render_issue(load_issue(issue_folder), settings)
    template = MessageTemplate.prepare(
        rendered, settings, secret=b"s", token_for=lambda s, a: "t", date=None
    )
    return template, path


@pytest.mark.parametrize("value", HOSTILE_URLS)
def test_a_subscriber_value_cannot_set_a_links_scheme(
    settings: Settings, issue_folder: Path, value: str
) -> None:
    template, _ = url_template(settings, issue_folder)
    person = Person("ann@example.org", city=value)
    message = email.message_from_bytes(
        template.personalise(person).data, policy=email.policy.default
    )
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    assert part is not None
    html = str(part.get_content())
    assert 'href="#"' in html
    assert 'href="javascript' not in html.lower() and 'href="data:' not in html
    # The same value after a fixed scheme is only a query value, escaped as usual.
    assert "https://example.org/map?c=" in html
    # The provider path gives the same neutral value.
    assert 'href="#"' in template.content(person).html


@pytest.mark.parametrize(
    "value", ["https://example.org/plots/7", "mailto:ann@example.org", "tel:+3212345678", "/x"]
)
def test_a_subscriber_value_with_a_safe_scheme_is_kept(
    settings: Settings, issue_folder: Path, value: str
) -> None:
    template, _ = url_template(settings, issue_folder)
    html = template.content(Person("ann@example.org", city=value)).html
    assert f'href="{value}"' in html


def test_check_flags_a_link_address_from_a_subscriber_field(
    settings: Settings, issue_folder: Path
) -> None:
    _, path = url_template(settings, issue_folder)
    issue = load_issue(issue_folder)
    report = check_issue(
        issue, render_issue(issue, settings), settings, offline=True, spamassassin=None
    )
    found = [f for f in report.findings if f.code == "link-from-subscriber"]
    assert len(found) == 1
    assert "subscriber.city" in found[0].message
    assert found[0].severity == "warning"
    assert (found[0].file, found[0].line) == (path, 6)
