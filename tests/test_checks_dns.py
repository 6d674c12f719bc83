"""`newsletter dns check` against a real DNS server on loopback (tests/dnsserver.py)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from newsletter import cli
from newsletter.checks.dns import DnsLookupError, check_dns
from newsletter.config import Settings, load_settings
from newsletter.dkim import generate_key
from tests.dnsserver import DnsTestServer

DOMAIN = "riverside-garden.example.org"
SELECTOR = "news2026"


@pytest.fixture
def signing_project(project: Path) -> tuple[Settings, str]:
    """The example project with SMTP, a bounce mailbox and a DKIM key; the key's record."""
    key = generate_key()
    (project / "dkim.pem").write_bytes(key.private_pem)
    config = project / "newsletter.toml"
    text = config.read_text(encoding="utf-8").replace('kind = "outbox"', 'kind = "smtp"', 1)
    text += (
        f'\n[dkim]\ndomain = "{DOMAIN}"\nselector = "{SELECTOR}"\nkey_file = "dkim.pem"\n'
        f'\n[sending]\nreturn_path = "bounces@{DOMAIN}"\n'
    )
    config.write_text(text, encoding="utf-8")
    return load_settings(project), key.record()


def good_records(record: str) -> dict[str, list[str]]:
    return {
        f"{SELECTOR}._domainkey.{DOMAIN}": [record],
        DOMAIN: ["v=spf1 mx a:mail.example.net ~all", "google-site-verification=abc"],
        f"_dmarc.{DOMAIN}": [f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{DOMAIN}"],
    }


def test_published_records_pass(signing_project: tuple[Settings, str]) -> None:
    settings, record = signing_project
    with DnsTestServer(good_records(record)) as server:
        report = check_dns(settings, nameserver="127.0.0.1", port=server.port)
    assert report.ok
    assert [(f.kind, f.status) for f in report.findings] == [
        ("DKIM", "ok"),
        ("SPF", "ok"),
        ("DMARC", "ok"),
    ]
    # The long DKIM key arrives split into 255-octet strings and is joined again.
    assert report.findings[0].found == (record,)
    assert f"{SELECTOR}._domainkey.{DOMAIN}" in server.asked


def test_missing_records_say_what_to_publish(signing_project: tuple[Settings, str]) -> None:
    settings, record = signing_project
    with DnsTestServer({}) as server:
        report = check_dns(settings, nameserver="127.0.0.1", port=server.port)
    assert not report.ok
    dkim, spf, dmarc = report.findings
    assert (dkim.status, dkim.publish) == ("error", record)
    assert spf.status == "error" and spf.publish is not None
    assert spf.publish.startswith("v=spf1 ") and spf.publish.endswith(" ~all")
    assert dmarc.status == "error"
    assert dmarc.publish == f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{DOMAIN}"
    # DMARC looked at the From domain, then its organisational domain.
    assert f"_dmarc.{DOMAIN}" in server.asked and "_dmarc.example.org" in server.asked


def test_wrong_records_are_errors(signing_project: tuple[Settings, str]) -> None:
    settings, _ = signing_project
    other = generate_key().record()
    records = {
        f"{SELECTOR}._domainkey.{DOMAIN}": [other],
        DOMAIN: ["v=spf1 mx ~all", "v=spf1 include:_spf.example.net ~all"],
        f"_dmarc.{DOMAIN}": ["v=DMARC1; p=maybe"],
    }
    with DnsTestServer(records) as server:
        report = check_dns(settings, nameserver="127.0.0.1", port=server.port)
    dkim, spf, dmarc = report.findings
    assert dkim.status == "error" and "not the one in dkim.pem" in dkim.message
    assert spf.status == "error" and "more than one SPF record" in spf.message
    assert dmarc.status == "error" and "p=maybe" in dmarc.message


def test_plus_all_and_monitoring_dmarc(signing_project: tuple[Settings, str]) -> None:
    settings, record = signing_project
    records = good_records(record)
    records[DOMAIN] = ["v=spf1 +all"]
    records[f"_dmarc.{DOMAIN}"] = []
    records["_dmarc.example.org"] = ["v=DMARC1; p=none"]
    with DnsTestServer(records) as server:
        report = check_dns(settings, nameserver="127.0.0.1", port=server.port)
    _, spf, dmarc = report.findings
    assert spf.status == "error" and "+all" in spf.message
    assert dmarc.status == "ok" and dmarc.name == "_dmarc.example.org"
    assert "p=quarantine" in dmarc.message


def test_a_silent_server_is_a_clear_error(signing_project: tuple[Settings, str]) -> None:
    settings, _ = signing_project
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with pytest.raises(DnsLookupError) as caught:
            check_dns(settings, nameserver="127.0.0.1", port=silent.getsockname()[1], timeout=0.5)
    assert "DNS did not answer for" in caught.value.message


def test_the_command_prints_what_to_publish(
    signing_project: tuple[Settings, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings, record = signing_project
    records = good_records(record)
    del records[f"_dmarc.{DOMAIN}"]
    monkeypatch.chdir(settings.root)
    with DnsTestServer(records) as server:
        monkeypatch.setattr(
            sys, "argv", ["newsletter", "dns", "check", "--nameserver", f"127.0.0.1:{server.port}"]
        )
        with pytest.raises(SystemExit) as exited:
            cli.main()
    assert exited.value.code == 1
    out = capsys.readouterr().out
    assert f"ok  DKIM {SELECTOR}._domainkey.{DOMAIN}" in out
    assert f"error  DMARC _dmarc.{DOMAIN}: no DMARC record" in out
    assert (
        f'publish: TXT _dmarc.{DOMAIN} "v=DMARC1; p=none; rua=mailto:dmarc-reports@{DOMAIN}"' in out
    )
