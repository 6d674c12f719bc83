"""The sign-up commands: `newsletter form`, `newsletter subscribers show`, `... purge`.

`form` prints an HTML form to paste into the organisation's website; `show` prints everything
the store holds about one person (a GDPR access request); `purge` removes sign-up requests never
confirmed in time (`serve` also does so when it starts, and every hour).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated

import typer
from jinja2 import Environment

from ..errors import AudienceError, ConfigError, Problem
from ._output import plain_console as console
from ._output import visible
from ._project import project_settings
from .subscribers import open_store

if TYPE_CHECKING:
    from ..config import Settings
    from ..web.signup import SignupEvent

__all__ = ["form", "purge", "show", "signup_event"]

_SNIPPET = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(
    """<!-- {{ name }}: sign-up form (double opt-in). Paste it into a page of your website. -->
<form method="post" action="{{ action }}" accept-charset="utf-8">
  <p><label for="nl-email">{{ w.email_label }}</label><br>
  <input type="email" id="nl-email" name="email" required autocomplete="email" maxlength="254"></p>
  <p><label for="nl-name">{{ w.name_label }}</label><br>
  <input type="text" id="nl-name" name="name" autocomplete="name" maxlength="200"></p>
{% for f in fields %}
  <p><label for="nl-{{ f.name }}">{{ f.label }}
  {%- if not f.required %} {{ w.optional }}{% endif %}</label><br>
  <input type="text" id="nl-{{ f.name }}" name="{{ f.name }}" maxlength="200"
  {%- if f.required %} required{% endif %}></p>
{% endfor %}
  <div style="position:absolute;left:-10000px" aria-hidden="true">
    <label for="nl-website">{{ w.honeypot_label }}</label>
    <input type="text" id="nl-website" name="website" tabindex="-1" autocomplete="off">
  </div>
  <p><label><input type="checkbox" name="consent" value="{{ version }}" required>
  {{ consent }}</label></p>
  <input type="hidden" name="lang" value="{{ language }}">
  <p><button type="submit">{{ w.button }}</button></p>
</form>
"""
)


def _signup_site_prefix(settings: Settings) -> str:
    from ..web.app import unsubscribe_path  # noqa: PLC0415 (the web app is heavy)
    from ..web.signup import public_prefix  # noqa: PLC0415 (the web app is heavy)

    prefix = public_prefix(settings, unsubscribe_path(settings, settings.serve.root_path))
    if prefix is None:
        raise ConfigError(
            [Problem("is needed: the form posts to the same server", key="unsubscribe.url",
                     file=settings.config_path)],
            hint='Set url = "https://news.example.org/unsubscribe" under [unsubscribe].',
        )  # fmt: skip
    return prefix


def form() -> None:
    """Print an HTML sign-up form to paste into your website (it posts to `newsletter serve`).

    Needs `[signup]` in newsletter.toml. Add your website's address to `[signup]
    allowed_origins`, or the server refuses the form's posts.

    Example:

        newsletter form > signup-form.html
    """
    from ..signup_words import signup_words  # noqa: PLC0415 (only this command needs it)

    settings = project_settings()
    config = settings.signup
    if not config.enabled:
        raise ConfigError(
            [Problem("is missing or switched off", key="signup", file=settings.config_path)],
            hint='Add [signup] with consent_version = "1" (see the README, "Sign-up form").',
        )
    words = signup_words(settings.locale)
    consent = config.consent_text or words.sub("consent_default", name=settings.name)
    snippet = _SNIPPET.render(
        name=settings.name,
        action=f"{_signup_site_prefix(settings)}/subscribe",
        w=words.subscribe,
        fields=config.fields,
        version=config.consent_version,
        consent=consent,
        language=words.language,
    )
    # Plain print: the snippet goes to a file or the clipboard exactly as it is.
    typer.echo(snippet, nl=False)
    if not config.allowed_origins:
        typer.echo(
            "note: [signup] allowed_origins is empty, so only pages of the server itself may "
            "post this form; add your website, e.g. allowed_origins = "
            '["https://www.example.org"]',
            err=True,
        )


def show(
    email: Annotated[str, typer.Argument(help="The address.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Print everything stored about one person: details, history, consent, mails sent.

    For a GDPR (AVG) access request: `--json` gives a file you can send them.

    Examples:

        newsletter subscribers show ann@example.org

        newsletter subscribers show ann@example.org --json > ann.json
    """
    from ..audience.access import iso, person_record  # noqa: PLC0415 (see open_store)

    with open_store() as store:
        record = person_record(store, email)
    if record is None:
        raise AudienceError(f"no subscriber {email.strip()}")
    data = record.as_json()
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    lines = [
        f"email: {data['email']}",
        f"name: {data['name']}",
        f"status: {data['status']}",
        *(f"attribute {k}: {v}" for k, v in sorted(data["attributes"].items())),
        f"on the list since: {data['created_at']}",
        f"last changed: {data['updated_at']}",
        "history:",
        *(
            f"  {e['at']}  {e['from'] or '-'} -> {e['to']}  ({e['source']})"
            for e in data["history"]
        ),
        "consent:" if record.consents else "consent: none recorded",
        *(
            f"  requested {iso(c.requested_at)}, "
            + (f"confirmed {iso(c.confirmed_at)}" if c.confirmed else "not confirmed")
            + f", {c.source}, consent text version {c.consent_version or '-'}"
            + (f", client address hash {c.client_hash}" if c.client_hash else "")
            for c in record.consents
        ),
        "mails:" if record.deliveries else "mails: none",
        *(f"  {d['issue']}: {d['state']} ({d['at']})" for d in data["deliveries"]),
    ]
    if record.soft_bounces:
        lines += ["soft bounces:", *(f"  {b['at']}  {b['status'] or ''}" for b in
                                      data["soft_bounces"])]  # fmt: skip
    for line in lines:
        console.print(visible(line), markup=False, highlight=False)


def purge() -> None:
    """Remove sign-ups never confirmed within `[signup] expire_days` (7 unless set).

    `newsletter serve` does this when it starts and every hour; run it when serve is not
    running. People who were on the list before stay; only their unanswered requests go.

    Example:

        newsletter subscribers purge
    """
    from ..audience.consent import ConsentStore  # noqa: PLC0415 (see open_store)

    settings = project_settings()
    with open_store() as store:
        removed = ConsentStore(store).purge(
            now=time.time(), max_age=settings.signup.expire_days * 86400.0
        )
    console.print(
        f"Removed {removed} unconfirmed sign-up{'' if removed == 1 else 's'} older than "
        f"{settings.signup.expire_days} days",
        markup=False,
    )


def signup_event(event: SignupEvent) -> None:
    """One line per sign-up event for `newsletter serve`'s output (never a token)."""
    console.print(
        visible(f"{event.email}: {event.action} {event.outcome}"), markup=False, highlight=False
    )
