"""The one registry of mail-provider transports: which kinds exist, where each lives, and what
its `[transport]` settings must be.

Pure data at the ground floor (it imports nothing of the package): `config.py` reads it to accept
a `kind` and to check each provider's settings when `newsletter.toml` is loaded, with the line of
the key at fault; `delivery/transports` reads it to import the chosen module. Adding a provider
is one `Provider(...)` line here (see docs/adding-a-provider.md); tests/test_providers.py checks
that every entry imports and that every provider module is registered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "PROVIDERS",
    "PROVIDER_SETTINGS",
    "Provider",
    "SettingProblem",
    "setting_problems",
    "usable_domain",
]

# `[transport]` keys that only some providers read; a provider lists those it reads in `uses`.
PROVIDER_SETTINGS = ("region", "domain", "message_stream")

_AWS_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$")
_SPARKPOST_SANDBOX = (
    "SparkPost has no test mode for your own messages: its options.sandbox sends only the stored "
    "template 'my-first-email' from sparkpostbox.com (5 messages per account lifetime). Remove "
    "sandbox, and use `newsletter send --test` or a sink address to try a send"
)
_SES_API_KEY_ENV = (
    "is not used by the ses transport, which reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / "
    "AWS_SESSION_TOKEN or an AWS profile; remove it"
)


@dataclass(frozen=True)
class Provider:
    """One provider transport: `newsletter.delivery.transports.<module>.<class_name>`.

    The other fields say what its `[transport]` settings must be (checked at load time by
    `setting_problems`): `uses` lists the provider-only keys it reads (PROVIDER_SETTINGS);
    `regions` the values `region` may take (any case; the first is the default), or
    `aws_region` that it must look like an AWS region; `sandbox_refused` /
    `api_key_env_refused` say why those keys are errors for it.
    """

    kind: str
    module: str
    class_name: str
    title: str  # the provider's name in messages ("SparkPost")
    uses: frozenset[str] = frozenset()
    regions: tuple[str, ...] = ()
    aws_region: bool = False
    sandbox_refused: str | None = None
    api_key_env_refused: str | None = None
    checks_domain: bool = False  # `domain` must be a usable sending-domain name

    @property
    def import_path(self) -> str:
        return f"newsletter.delivery.transports.{self.module}"


PROVIDERS: Mapping[str, Provider] = MappingProxyType(
    {
        provider.kind: provider
        for provider in (
            Provider("postmark", "postmark", "PostmarkTransport", "Postmark",
                     uses=frozenset({"message_stream"})),
            Provider("sendgrid", "sendgrid", "SendGridTransport", "SendGrid"),
            Provider("mailgun", "mailgun", "MailgunTransport", "Mailgun",
                     uses=frozenset({"region", "domain"}), regions=("us", "eu"),
                     checks_domain=True),
            Provider("ses", "ses", "SesTransport", "SES", uses=frozenset({"region"}),
                     aws_region=True, api_key_env_refused=_SES_API_KEY_ENV),
            Provider("resend", "resend", "ResendTransport", "Resend"),
            Provider("brevo", "brevo", "BrevoTransport", "Brevo"),
            Provider("mailjet", "mailjet", "MailjetTransport", "Mailjet"),
            Provider("sparkpost", "sparkpost", "SparkPostTransport", "SparkPost",
                     uses=frozenset({"region"}), regions=("us", "eu"),
                     sandbox_refused=_SPARKPOST_SANDBOX),
        )
    }
)  # fmt: skip


@dataclass(frozen=True)
class SettingProblem:
    """A `[transport]` key (without the table name) and what is wrong with it."""

    key: str
    message: str


def setting_problems(
    provider: Provider,
    *,
    region: str | None = None,
    domain: str | None = None,
    sandbox: bool = False,
    api_key_env: str | None = None,
) -> list[SettingProblem]:
    """What is wrong with these `[transport]` values for `provider` (empty when nothing).

    Called by the config at load time and by the transports' `from_settings`, so a setting is
    refused with the same words whichever way the transport is built.
    """
    problems: list[SettingProblem] = []
    if sandbox and provider.sandbox_refused:
        problems.append(SettingProblem("sandbox", provider.sandbox_refused))
    if api_key_env and provider.api_key_env_refused:
        problems.append(SettingProblem("api_key_env", provider.api_key_env_refused))
    if provider.regions:
        if (region or provider.regions[0]).strip().lower() not in provider.regions:
            choices = " or ".join(f"'{choice}'" for choice in provider.regions)
            message = f"must be {choices} for {provider.title}, not {region!r}"
            problems.append(SettingProblem("region", message))
    elif provider.aws_region and region is not None and not _AWS_REGION.match(region.strip()):
        problems.append(SettingProblem("region", f"{region.strip()!r} is not an AWS region name"))
    if provider.checks_domain and domain is not None and not usable_domain(domain):
        problems.append(
            SettingProblem("domain", f"{domain!r} is not a {provider.title} sending domain")
        )
    return problems


def usable_domain(domain: str) -> bool:
    """A name that can go into an API path: not empty, no '/' or '%', printable."""
    text = domain.strip()
    return bool(text) and "/" not in text and "%" not in text and text.isprintable()
