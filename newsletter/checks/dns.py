"""`newsletter dns check`: look up the DKIM, SPF and DMARC records the newsletter's mail is judged
by, and say what to publish where something is missing or wrong.

Online (it asks the system's resolver, or `nameserver` when given); never prints. Each record is
one `DnsFinding`: what was found, whether it is good, and the record to publish when not.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dns.exception
import dns.resolver
from cryptography.hazmat.primitives import serialization

from ..config import Settings
from ..dkim import DkimError, dns_record, load_private_key
from ..errors import NewsletterError

__all__ = ["DnsFinding", "DnsReport", "check_dns"]

Status = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class DnsFinding:
    """One record: its name and kind, what DNS holds, how good that is, and what to publish."""

    kind: Literal["DKIM", "SPF", "DMARC"]
    name: str
    status: Status
    message: str
    found: tuple[str, ...] = ()
    publish: str | None = None


@dataclass(frozen=True)
class DnsReport:
    findings: tuple[DnsFinding, ...]

    @property
    def ok(self) -> bool:
        return all(finding.status != "error" for finding in self.findings)


class DnsLookupError(NewsletterError):
    """DNS could not be asked at all (no resolver, every server failing)."""


def check_dns(
    settings: Settings,
    *,
    nameserver: str | None = None,
    port: int = 53,
    timeout: float = 5.0,
) -> DnsReport:
    """Look up DKIM (when `[dkim]` is set), SPF for the envelope domain and DMARC for From."""
    resolver = _resolver(nameserver, port, timeout)
    from_domain = settings.sender.domain.lower()
    envelope = settings.sending.return_path or settings.sender.addr_spec
    envelope_domain = envelope.rpartition("@")[2].lower()
    findings = [_dkim(settings, resolver, from_domain)]
    findings.append(_spf(settings, resolver, envelope_domain, from_domain))
    findings.append(_dmarc(resolver, from_domain))
    return DnsReport(tuple(findings))


def _resolver(nameserver: str | None, port: int, timeout: float) -> dns.resolver.Resolver:
    try:
        resolver = dns.resolver.Resolver(configure=nameserver is None)
    except dns.resolver.NoResolverConfiguration as err:
        raise DnsLookupError(
            "no DNS resolver is configured on this machine", hint="Pass --nameserver."
        ) from err
    if nameserver is not None:
        resolver.nameservers = [nameserver]
        resolver.port = port
    resolver.lifetime = timeout
    resolver.timeout = timeout
    return resolver


def _txt(resolver: dns.resolver.Resolver, name: str) -> tuple[str, ...]:
    """The TXT strings at `name` (each record's strings joined), () when there are none."""
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return ()
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as err:
        raise DnsLookupError(
            f"DNS did not answer for {name} ({err.__class__.__name__})",
            hint="Check the network, or ask another server with --nameserver.",
        ) from err
    return tuple(b"".join(record.strings).decode("utf-8", "replace") for record in answer)


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


def _dkim(settings: Settings, resolver: dns.resolver.Resolver, from_domain: str) -> DnsFinding:
    dkim = settings.dkim
    if dkim is None:
        return DnsFinding(
            "DKIM",
            f"<selector>._domainkey.{from_domain}",
            "warning" if settings.transport.kind == "smtp" else "ok",
            "no [dkim] table: messages are not signed here (a provider API or your server may "
            "sign them). Make a key with 'newsletter dkim keygen'.",
        )
    name = f"{dkim.selector}._domainkey.{dkim.domain}"
    expected = _expected_key(settings)
    found = _txt(resolver, name)
    keys = [record for record in found if _tags(record).get("p") is not None]
    publish = dns_record(expected) if expected else None
    if not keys:
        return DnsFinding(
            "DKIM", name, "error", "no DKIM key is published: receivers cannot check the "
            "signature, so DMARC fails and one-click unsubscribe is not trusted.", found, publish
        )  # fmt: skip
    if len(keys) > 1:
        return DnsFinding(
            "DKIM", name, "error", "more than one DKIM record: publish exactly one.", found, publish
        )
    published = _tags(keys[0]).get("p", "")
    if not published:
        return DnsFinding("DKIM", name, "error", "the key is revoked (empty p=).", found, publish)
    if expected is not None and published != expected:
        return DnsFinding(
            "DKIM",
            name,
            "error",
            f"the published key is not the one in {dkim.key_file}: signatures will fail.",
            found,
            publish,
        )
    return DnsFinding("DKIM", name, "ok", "the published key matches the signing key.", found)


def _expected_key(settings: Settings) -> str | None:
    """The base64 public key of `[dkim] key_file`, or None when it cannot be read."""
    assert settings.dkim is not None
    path = Path(settings.dkim.key_file).expanduser()
    if not path.is_absolute():
        path = settings.root / path
    try:
        key = load_private_key(path.read_bytes(), str(path))
    except (OSError, DkimError):
        return None
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(public).decode("ascii")


def _spf(
    settings: Settings, resolver: dns.resolver.Resolver, domain: str, from_domain: str
) -> DnsFinding:
    host = settings.transport.host if settings.transport.kind == "smtp" else None
    mechanism = f"a:{host}" if host and host not in ("localhost", "127.0.0.1") else "mx"
    publish = f"v=spf1 {mechanism} ~all"
    found = _txt(resolver, domain)
    spf = [record for record in found if record.lower().split(" ", 1)[0] == "v=spf1"]
    aligned = domain == from_domain or domain.endswith("." + from_domain)
    if not spf:
        return DnsFinding(
            "SPF", domain, "error", "no SPF record: receivers cannot tell which servers may "
            "send for this domain.", found, publish
        )  # fmt: skip
    if len(spf) > 1:
        return DnsFinding(
            "SPF", domain, "error", "more than one SPF record (a permanent error for "
            "receivers): merge them into one.", found, publish
        )  # fmt: skip
    terms = spf[0].lower().split()
    if "+all" in terms or "all" in terms:
        return DnsFinding(
            "SPF", domain, "error", "the record ends in +all: anyone may send as this domain.",
            found, publish
        )  # fmt: skip
    if (
        host
        and host.lower() not in spf[0].lower()
        and not any(
            term.startswith(("include:", "mx", "a", "ip4:", "ip6:", "redirect=")) for term in terms
        )
    ):
        return DnsFinding(
            "SPF", domain, "warning", f"the record does not seem to allow {host}.", found, publish
        )
    if not aligned:
        return DnsFinding(
            "SPF", domain, "warning", f"the envelope domain {domain} is not the From domain "
            f"{from_domain}: SPF passes but does not count for DMARC (DKIM must).", found
        )  # fmt: skip
    return DnsFinding("SPF", domain, "ok", "an SPF record is published.", found)


def _dmarc(resolver: dns.resolver.Resolver, from_domain: str) -> DnsFinding:
    name = f"_dmarc.{from_domain}"
    found = _txt(resolver, name)
    labels = from_domain.split(".")
    if not found and len(labels) > 2:
        # DMARC falls back to the organisational domain (approximated: the last two labels).
        parent = f"_dmarc.{'.'.join(labels[-2:])}"
        parent_found = _txt(resolver, parent)
        if parent_found:
            name, found = parent, parent_found
    records = [record for record in found if record.replace(" ", "").lower().startswith("v=dmarc1")]
    publish = f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{from_domain}"
    if not records:
        return DnsFinding(
            "DMARC", name, "error", "no DMARC record: Gmail and Yahoo require one from bulk "
            "senders. Start with p=none and read the reports, then move to quarantine.",
            found, publish
        )  # fmt: skip
    if len(records) > 1:
        return DnsFinding(
            "DMARC", name, "error", "more than one DMARC record: receivers ignore them all.",
            found, publish
        )  # fmt: skip
    policy = _tags(records[0]).get("p", "")
    if policy not in ("none", "quarantine", "reject"):
        return DnsFinding(
            "DMARC", name, "error", f"the policy p={policy or '(missing)'} is not valid.",
            found, publish
        )  # fmt: skip
    if policy == "none":
        return DnsFinding(
            "DMARC", name, "ok", "p=none (monitoring): enough for the bulk-sender rules; move "
            "to p=quarantine once the reports show only your own servers.", found
        )  # fmt: skip
    return DnsFinding("DMARC", name, "ok", f"p={policy}.", found)
