"""`newsletter form`, `subscribers show / export --consent / remove / purge` and the `[signup]`
table, on a real temporary project (the example project plus a `[signup]` table)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from newsletter import cli
from newsletter.audience import SubscriberStore
from newsletter.audience.consent import ConsentStore, SignupRequest
from newsletter.config import load_settings
from newsletter.errors import ConfigError

SIGNUP = """
[signup]
consent_text = "Yes, send me Riverside Roots. I can unsubscribe at any time."
consent_version = "2026-12"
allowed_origins = ["https://www.riverside-garden.example.org"]
fields = [{ name = "city", label = "Town", required = true }, "plot"]
expire_days = 3
"""


@dataclass
class Result:
    exit_code: int
    out: str
    err: str


Run = Callable[..., Result]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], project: Path) -> Run:
    def invoke(*args: str) -> Result:
        monkeypatch.chdir(project)
        monkeypatch.setattr(sys, "argv", ["newsletter", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def signup_project(project: Path) -> Path:
    config = project / "newsletter.toml"
    config.write_text(config.read_text(encoding="utf-8") + SIGNUP, encoding="utf-8")
    return project


def confirmed(project: Path, address: str, now: float) -> None:
    with SubscriberStore(project / "newsletter.db") as store:
        consents = ConsentStore(store)
        request = SignupRequest(address, "form page", "2026-12", name="Ann", client_hash="f" * 32)
        result = consents.request(request, now=now)
        assert result.nonce is not None
        consents.confirm(result.nonce, now=now + 90, max_age=86400, source="web sign-up")


def test_form_prints_a_snippet_to_paste(run: Run, signup_project: Path) -> None:
    result = run("form")
    assert result.exit_code == 0, result.err
    out = result.out
    assert '<form method="post" action="https://riverside-garden.example.org/subscribe"' in out
    assert 'name="consent" value="2026-12" required' in out
    assert "Yes, send me Riverside Roots." in out
    assert '<label for="nl-city">Town</label>' in out
    assert '<label for="nl-plot">plot (optional)</label>' in out
    assert 'name="website" tabindex="-1"' in out
    assert result.err == ""  # allowed_origins is set: no note


def test_form_needs_a_signup_table(run: Run, project: Path) -> None:
    result = run("form")
    assert result.exit_code != 0
    assert "signup" in result.err and "is missing or switched off" in result.err


def test_show_prints_everything_stored(run: Run, signup_project: Path) -> None:
    confirmed(signup_project, "ann@example.org", 1_800_000_000.0)
    result = run("subscribers", "show", "ann@example.org")
    assert result.exit_code == 0, result.err
    for line in (
        "email: ann@example.org",
        "name: Ann",
        "status: subscribed",
        "  2027-01-15T08:00:00Z  - -> unconfirmed  (form page)",
        "  2027-01-15T08:01:30Z  unconfirmed -> subscribed  (web sign-up)",
        "  requested 2027-01-15T08:00:00Z, confirmed 2027-01-15T08:01:30Z, form page, "
        f"consent text version 2026-12, client address hash {'f' * 32}",
        "mails: none",
    ):
        assert line in result.out.splitlines(), result.out
    as_json = json.loads(run("subscribers", "show", "ann@example.org", "--json").out)
    assert as_json["consent"][0]["confirmed_at"] == "2027-01-15T08:01:30Z"
    assert as_json["consent"][0]["consent_version"] == "2026-12"
    assert [h["to"] for h in as_json["history"]] == ["unconfirmed", "subscribed"]
    missing = run("subscribers", "show", "nobody@example.org")
    assert missing.exit_code == 1 and "no subscriber nobody@example.org" in missing.err


def test_cli_add_records_who_added_them(run: Run, signup_project: Path) -> None:
    assert run("subscribers", "add", "bob@example.org").exit_code == 0
    shown = run("subscribers", "show", "bob@example.org").out
    assert ", cli add, consent text version -" in shown


def test_export_with_consent_columns(run: Run, signup_project: Path) -> None:
    confirmed(signup_project, "ann@example.org", 1_800_000_000.0)
    with SubscriberStore(signup_project / "newsletter.db") as store:
        store.add("=cmd@example.org", "Imported")
    result = run("subscribers", "export", "-", "--consent")
    assert result.exit_code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    by_email = {row["email"]: row for row in rows}
    assert by_email["ann@example.org"]["consent_source"] == "form page"
    assert by_email["ann@example.org"]["consent_version"] == "2026-12"
    assert by_email["ann@example.org"]["consent_confirmed_at"] == "2027-01-15T08:01:30Z"
    assert by_email["'=cmd@example.org"]["consent_source"] == ""  # formula-safe, none recorded
    plain = run("subscribers", "export", "-").out
    assert "consent_source" not in plain


def test_remove_erases_the_consent_records(run: Run, signup_project: Path) -> None:
    confirmed(signup_project, "ann@example.org", 1_800_000_000.0)
    assert run("subscribers", "remove", "ann@example.org").exit_code == 0
    with SubscriberStore(signup_project / "newsletter.db") as store, store.database.read() as db:
        assert db.execute("SELECT COUNT(*) FROM signup_consents").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM subscriber_events").fetchone()[0] == 0


def test_purge_removes_expired_unconfirmed_sign_ups(run: Run, signup_project: Path) -> None:
    with SubscriberStore(signup_project / "newsletter.db") as store:
        consents = ConsentStore(store)
        now = time.time()
        consents.request(SignupRequest("old@example.org", "form page", "1"), now=now - 4 * 86400)
        consents.request(SignupRequest("new@example.org", "form page", "1"), now=now - 3600)
    result = run("subscribers", "purge")
    assert result.exit_code == 0, result.err
    assert "Removed 1 unconfirmed sign-up older than 3 days" in result.out
    with SubscriberStore(signup_project / "newsletter.db") as store:
        assert store.get("old@example.org") is None
        assert store.get("new@example.org") is not None


# --- the [signup] table -------------------------------------------------------------------------


def test_the_signup_table_is_read(signup_project: Path) -> None:
    signup = load_settings(signup_project).signup
    assert signup.enabled and signup.consent_version == "2026-12" and signup.expire_days == 3
    assert [(f.name, f.label, f.required) for f in signup.fields] == [
        ("city", "Town", True),
        ("plot", "plot", False),
    ]
    assert signup.allowed_origins == ("https://www.riverside-garden.example.org",)
    assert not signup.store_client_address


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('allowed_origins = ["www.example.org"]', "signup.allowed_origins: must be a list of"),
        ('fields = ["email"]', "signup.fields: field name 'email' is taken by the form itself"),
        ('fields = ["Bad Name"]', "signup.fields: field name 'Bad Name' must be lower-case"),
        ("expire_days = 0", "signup.expire_days: must be at least 1"),
        ('consent_text = "I agree"', "signup.consent_version: is required with consent_text"),
        ('client_hash_env = "s3cr3t value"', "signup.client_hash_env: must be the name of"),
        ('welcome = "../../etc/passwd"', "signup.welcome: must be a file inside the project"),
    ],
)
def test_signup_table_problems_name_file_and_key(project: Path, body: str, expected: str) -> None:
    config = project / "newsletter.toml"
    config.write_text(config.read_text(encoding="utf-8") + f"\n[signup]\n{body}\n", "utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(project)
    assert f"{config}:" in str(caught.value)
    assert expected in str(caught.value)


def test_an_import_records_who_put_people_on_the_list(run: Run, signup_project: Path) -> None:
    (signup_project / "members.csv").write_text(
        "email,name\nann@example.org,Ann\nbob@example.org,Bob\n", encoding="utf-8"
    )
    with SubscriberStore(signup_project / "newsletter.db") as store:
        store.add("bob@example.org")  # already there: the import only updates him
    assert run("subscribers", "import", "members.csv").exit_code == 0
    with SubscriberStore(signup_project / "newsletter.db") as store:
        consents = ConsentStore(store)
        [ann] = consents.consents("ann@example.org")
        assert (ann.source, ann.confirmed) == ("import members.csv", True)
        assert consents.consents("bob@example.org") == ()
    # The same file again adds no one and records nothing twice.
    assert run("subscribers", "import", "members.csv").exit_code == 0
    with SubscriberStore(signup_project / "newsletter.db") as store:
        assert len(ConsentStore(store).consents("ann@example.org")) == 1


def test_serve_takes_a_sign_up_from_the_command_line(signup_project: Path) -> None:
    """`newsletter serve` as a process: the form answers and the mail lands in the outbox."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_SECRET"] = "a-test-signing-secret"
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        cwd=signup_project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # a busy machine takes a while to start Python
        while True:
            try:
                page = httpx.get(f"{base}/subscribe", timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "newsletter serve did not start"
                time.sleep(0.1)
        assert page.status_code == 200 and 'name="city"' in page.text
        answer = httpx.post(
            f"{base}/subscribe",
            data={"email": "cli@example.org", "city": "Gent", "consent": "2026-12"},
            headers={"Origin": base},
        )
        assert answer.status_code == 200
        outbox = signup_project / "outbox"
        deadline = time.monotonic() + 20
        while not list(outbox.rglob("*.eml")):
            assert time.monotonic() < deadline, "no confirmation mail in the outbox"
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=20)
    assert server.returncode == 0, err
    assert f"Serving unsubscribe links, the sign-up form and the archive at {base}" in out
    assert "cli@example.org: signup mail" in out
    assert "cli@example.org: confirm sent" in out
    [mail] = list((signup_project / "outbox").rglob("*.eml"))
    assert b"Please confirm: Riverside Roots" in mail.read_bytes()
