"""Sender authentication, from the settings alone (no network): mail sent through our own SMTP
server unsigned, a DKIM domain DMARC will not count for the From address, and a free-mail From
address that the mailbox provider's DMARC policy rejects when it comes from anyone else's servers.

`newsletter dns check` (dnscheck.py) looks the records up; this module never does.
"""

from __future__ import annotations

from .context import CheckContext
from .model import Finding

__all__ = ["FREE_MAIL_DOMAINS", "aligned", "check_authentication", "is_free_mail"]

# Mailbox providers whose addresses only their own servers may send from (DMARC p=reject or
# quarantine, or Gmail/Microsoft's bulk-sender rules); an issue From one of them sent through our
# SMTP server fails DMARC at the largest inboxes.
FREE_MAIL_DOMAINS = frozenset(
    """
    gmail.com googlemail.com outlook.com hotmail.com hotmail.co.uk hotmail.nl hotmail.fr
    hotmail.de live.com live.nl live.co.uk msn.com yahoo.com yahoo.co.uk yahoo.fr yahoo.de
    ymail.com rocketmail.com aol.com icloud.com me.com mac.com gmx.com gmx.de gmx.net gmx.at
    web.de proton.me protonmail.com pm.me zoho.com yandex.com yandex.ru mail.ru mail.com
    fastmail.com tutanota.com tuta.io ziggo.nl kpnmail.nl planet.nl xs4all.nl telenet.be
    skynet.be orange.fr free.fr laposte.net t-online.de
    """.split()
)
# Transports that deliver our own MIME bytes through a server the editor runs or rents: the
# provider APIs sign with their own keys and set their own bounce domain.
OWN_SERVER_TRANSPORTS = frozenset({"smtp"})


def is_free_mail(domain: str) -> bool:
    """Whether `domain` belongs to a free-mail provider."""
    return domain.lower().rstrip(".") in FREE_MAIL_DOMAINS


def aligned(dkim_domain: str, from_domain: str) -> bool:
    """DMARC relaxed alignment, approximated without the public-suffix list: the domains are
    equal or one is a subdomain of the other (mail.example.org signs for example.org)."""
    signing = dkim_domain.lower().rstrip(".")
    author = from_domain.lower().rstrip(".")
    return signing == author or author.endswith("." + signing) or signing.endswith("." + author)


def check_authentication(context: CheckContext) -> list[Finding]:
    """Findings about how receiving servers will authenticate this newsletter's mail."""
    settings = context.settings
    config = settings.config_path
    locate = context.locator.key_line
    from_domain = settings.sender.domain
    findings: list[Finding] = []
    own_server = settings.transport.kind in OWN_SERVER_TRANSPORTS
    if own_server and is_free_mail(from_domain):
        findings.append(
            Finding(
                "error",
                "free-mail-from",
                f"From is a {from_domain} address sent through your own SMTP server: "
                f"{from_domain}'s DMARC policy tells Gmail, Outlook and Yahoo to reject or junk "
                "it. Send from an address at your own domain (see docs/deliverability.md).",
                file=config,
                line=locate(config, "from", table="newsletter"),
            )
        )
    if settings.dkim is not None and not aligned(settings.dkim.domain, from_domain):
        findings.append(
            Finding(
                "error",
                "dkim-not-aligned",
                f"DKIM signs as {settings.dkim.domain} but From is at {from_domain}: DMARC "
                "only counts a signature of the From domain (or its parent or subdomain), so "
                f'this one proves nothing. Set [dkim] domain = "{from_domain}" and publish '
                "its key.",
                file=config,
                line=locate(config, "domain", table="dkim"),
            )
        )
    if own_server and settings.dkim is None:
        findings.append(
            Finding(
                "warning",
                "no-dkim",
                "mail goes out through SMTP without a DKIM signature unless your server adds "
                "one: Gmail and Yahoo require DKIM for bulk senders, and one-click unsubscribe "
                "(RFC 8058) needs a signature covering List-Unsubscribe. Run 'newsletter dkim "
                "keygen' and add a [dkim] table, or sign on the server.",
                file=config,
                line=locate(config, "kind", table="transport"),
            )
        )
    return findings
