"""`newsletter send` and `status` as an editor runs them, against a real SMTP server on loopback."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.audience import SubscriberStore
from newsletter.config import load_settings
from tests.smtpserver import SmtpTestServer
from tests.spamcache import SpamAssassinCache

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-pa55"


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer(starttls=True, username="editor", password=PASSWORD) as running:
        yield running


@pytest.fixture
def smtp_project(project: Path, server: SmtpTestServer) -> Path:
    (project / "ca.pem").write_bytes(server.ca_pem())
    config = project / "newsletter.toml"
    text = config.read_text(encoding="utf-8")
    text = re.sub(
        r'kind = "outbox".*\npath = "outbox"',
        f'kind = "smtp"\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "starttls"\n'
        f'username = "editor"\nca_file = "ca.pem"\nconnections = 2',
        text,
    )
    assert 'kind = "smtp"' in text
    config.write_text(text, encoding="utf-8")
    (project / "list.csv").write_text(
        "email,name,plot\n"
        "ann@example.org,Ann Smith,4\n"
        "bob@example.org,Bob,\n"
        '"sor@example.org","Søren ""Evil"" <x@y> <script>",9\n',
        encoding="utf-8",
    )
    return project


@pytest.fixture
def fresh_spamassassin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SpamAssassinCache | None:
    """An empty report cache: the first check of the test runs the real SpamAssassin."""
    real = shutil.which("spamassassin")
    if real is None:
        return None
    cache = SpamAssassinCache(tmp_path / "spamassassin", real)
    monkeypatch.setenv("PATH", cache.search_path(os.environ.get("PATH")))
    return cache


def newsletter(
    project: Path, *args: str, password: str | None = PASSWORD, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_SECRET"] = "a-test-signing-secret"
    env["COLUMNS"] = "200"
    if password is not None:
        env["NEWSLETTER_SMTP_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=project,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_import_test_send_send_resume_and_status(
    smtp_project: Path, server: SmtpTestServer, fresh_spamassassin: SpamAssassinCache | None
) -> None:
    imported = newsletter(smtp_project, "subscribers", "import", "list.csv")
    assert imported.returncode == 0, imported.stderr
    assert "3 added" in imported.stdout

    test = newsletter(smtp_project, "send", "2026-11", "--test", "--to", "rev@example.org")
    assert test.returncode == 0, test.stderr
    assert "test sent to rev@example.org" in test.stdout
    (copy,) = server.messages
    parsed = email.message_from_bytes(copy.data, policy=email.policy.default)
    assert parsed["Subject"].startswith("[TEST] Harvest festival")
    assert copy.rcpt_tos == ("rev@example.org",) and copy.tls and copy.auth_user == "editor"

    declined = newsletter(smtp_project, "send", "2026-11", stdin="n\n")
    assert declined.returncode != 0
    assert re.search(r"Subscribed\s+3\b", declined.stdout)
    assert re.search(r"Already sent\s+0\b", declined.stdout)
    assert "Aborted." in declined.stderr
    assert len(server.messages) == 1, "declining sends nothing"

    sent = newsletter(smtp_project, "send", "2026-11", "--yes")
    assert sent.returncode == 0, sent.stderr
    assert "2026-11: sent 3 now, 3 of 3 in all; failed 0, uncertain 0, waiting 0" in sent.stdout
    real = [m for m in server.messages if not m.rcpt_tos[0].startswith("rev@")]
    assert sorted(m.rcpt_tos[0] for m in real) == [
        "ann@example.org",
        "bob@example.org",
        "sor@example.org",
    ]
    for received in real:
        parsed = email.message_from_bytes(received.data, policy=email.policy.default)
        assert [a.addr_spec for a in parsed["To"].addresses] == [received.rcpt_tos[0]]
        html_part = parsed.get_body(("html",))
        assert html_part is not None
        assert "<script>" not in html_part.get_content()
    evil = next(m for m in real if m.rcpt_tos[0] == "sor@example.org")
    parsed = email.message_from_bytes(evil.data, policy=email.policy.default)
    assert parsed["To"].addresses[0].display_name == 'Søren "Evil" <x@y> <script>'
    plain_part = parsed.get_body(("plain",))
    assert plain_part is not None
    assert "Dear Søren," in plain_part.get_content()

    again = newsletter(smtp_project, "send", "2026-11", "--yes")
    assert again.returncode == 0
    assert "Everything was sent: all 3 recipients already have '2026-11'." in again.stdout
    assert len(server.messages) == 4

    status = newsletter(smtp_project, "status", "2026-11")
    assert status.returncode == 0
    assert "│ sent      │ 3 │" in status.stdout
    if fresh_spamassassin is not None:
        # The sends ran the spam check: the first with the real SpamAssassin, the rest reused it.
        calls = fresh_spamassassin.calls()
        assert calls[:1] == ["miss"] and "miss" not in calls[1:], calls


def test_rejected_recipient_is_reported_and_the_exit_status_is_non_zero(
    smtp_project: Path, server: SmtpTestServer, cached_spamassassin: SpamAssassinCache | None
) -> None:
    newsletter(smtp_project, "subscribers", "import", "list.csv")
    server.reject_recipient("bob@example.org")
    sent = newsletter(smtp_project, "send", "2026-11", "--yes")
    assert sent.returncode == 3, "0 only when every recipient is sent; 3: some failed"
    assert "failed 1" in sent.stdout
    assert "failed: bob@example.org:" in sent.stderr and "550" in sent.stderr
    status = newsletter(smtp_project, "status", "2026-11")
    assert "failed: bob@example.org:" in status.stdout
    # Issue 12: "550 5.1.1 No such user" is a hard bounce, as in a DSN: the next issue skips Bob.
    with SubscriberStore(load_settings(smtp_project).database_path) as store:
        bob = store.get("bob@example.org")
        ann = store.get("ann@example.org")
        assert bob is not None and bob.status == "bounced"
        assert ann is not None and ann.status == "subscribed"
        assert store.events("bob@example.org")[-1].source == "send: hard bounce 5.1.1"


def test_missing_password_is_an_error_before_anything_is_sent(
    smtp_project: Path, server: SmtpTestServer, cached_spamassassin: SpamAssassinCache | None
) -> None:
    newsletter(smtp_project, "subscribers", "import", "list.csv")
    result = newsletter(smtp_project, "send", "2026-11", "--yes", password=None)
    assert result.returncode == 1
    assert "NEWSLETTER_SMTP_PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr
    assert not server.messages


def test_wrong_password_pauses_with_a_clear_reason(
    smtp_project: Path, server: SmtpTestServer, cached_spamassassin: SpamAssassinCache | None
) -> None:
    newsletter(smtp_project, "subscribers", "import", "list.csv")
    result = newsletter(smtp_project, "send", "2026-11", "--yes", password="wrong")
    assert result.returncode == 5, "a sender-level refusal is a pause (5), not a content error"
    assert "authentication failed for editor at 127.0.0.1" in result.stderr
    assert "wrong" not in result.stderr.replace("wrong-", "")
    assert not server.messages


def test_dry_run_sends_and_records_nothing(
    smtp_project: Path, server: SmtpTestServer, cached_spamassassin: SpamAssassinCache | None
) -> None:
    newsletter(smtp_project, "subscribers", "import", "list.csv")
    result = newsletter(smtp_project, "send", "2026-11", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Dry run: 3 messages rendered" in result.stdout
    assert not server.messages
    status = newsletter(smtp_project, "status", "2026-11")
    assert "'2026-11' has not been sent yet." in status.stdout


def test_send_runs_the_check_first_and_refuses_on_errors(
    smtp_project: Path, server: SmtpTestServer, cached_spamassassin: SpamAssassinCache | None
) -> None:
    newsletter(smtp_project, "subscribers", "import", "list.csv")
    long_item = smtp_project / "issues" / "2026-11" / "05-minutes.md"
    paragraph = "The committee discussed the compost rota and the shed roof at length. " * 20
    long_item.write_text(
        "---\ntitle: Minutes\n---\n" + "\n\n".join([paragraph] * 80) + "\n", encoding="utf-8"
    )
    refused = newsletter(smtp_project, "send", "2026-11", "--yes", "--no-link-check")
    assert refused.returncode == 1
    assert "Gmail" in refused.stdout  # the size finding, printed before the refusal
    assert "error: the check found 1 error(s); nothing was sent" in refused.stderr
    assert not server.messages
    forced = newsletter(smtp_project, "send", "2026-11", "--yes", "--no-link-check", "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(server.messages) == 3


def test_exit_codes_tell_cron_what_is_left(
    smtp_project: Path, server: SmtpTestServer, cached_spamassassin: SpamAssassinCache | None
) -> None:
    """0 all sent, 3 failed, 4 uncertain, 5 paused, 6 deferred and waiting, 1 usage errors."""
    newsletter(smtp_project, "subscribers", "import", "list.csv")
    usage = newsletter(smtp_project, "send", "2026-11", "--no-such-option")
    assert usage.returncode == 1
    server.drop_after_data(recipient="bob@example.org")
    uncertain = newsletter(smtp_project, "send", "2026-11", "--yes", "--no-wait")
    assert uncertain.returncode == 4, uncertain.stderr
    assert newsletter(smtp_project, "status", "2026-11").returncode == 4
    server.clear_faults()
    server.defer("rcpt", recipient="bob@example.org", times=None)
    args = ("send", "2026-11", "--yes", "--no-wait", "--resend-uncertain")
    deferred = newsletter(smtp_project, *args)
    assert deferred.returncode == 6, deferred.stderr
    status = newsletter(smtp_project, "status", "2026-11")
    assert status.returncode == 6, "status exits like the send it describes"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for code in ("`0`", "`1`", "`3`", "`4`", "`5`", "`6`"):
        assert code in readme.split("### Exit codes", 1)[1].split("##", 1)[0]


def start_send(project: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_SECRET="a-test-signing-secret",
        COLUMNS="200",
        NEWSLETTER_SMTP_PASSWORD=PASSWORD,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "send", "2026-11", "--yes", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_like_ctrl_c(
    smtp_project: Path,
    server: SmtpTestServer,
    cached_spamassassin: SpamAssassinCache | None,
    signum: int,
) -> None:
    """D8: the messages in flight finish and are recorded; the run ends paused (5)."""
    newsletter(smtp_project, "subscribers", "import", "list.csv")
    server.delay("data_end", 0.8, times=None)
    child = start_send(smtp_project)
    deadline = time.monotonic() + 90
    while server.transactions < 1:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    child.send_signal(signum)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 5, (out, err)
    assert "Stopping" in err and "Traceback" not in err
    status = newsletter(smtp_project, "status", "2026-11")
    assert "uncertain │ 0" in status.stdout, status.stdout
    sent_before = len(server.messages)
    assert 1 <= sent_before < 3
    server.clear_faults()
    resumed = newsletter(smtp_project, "send", "2026-11", "--yes")
    assert resumed.returncode == 0, resumed.stderr
    rcpts = [m.rcpt_tos[0] for m in server.messages]
    assert sorted(rcpts) == ["ann@example.org", "bob@example.org", "sor@example.org"]


def test_send_and_status_output(
    smtp_project: Path, server: SmtpTestServer, cached_spamassassin: SpamAssassinCache | None
) -> None:
    """D18, D19, D20, D22 and issue 12's wording: markup is markup, each address once, no empty
    bar, a finished issue says so, `status` lists 20 failures unless --all."""
    rows = "".join(f"dead{n:02d}@example.org,Dead {n}\n" for n in range(25))
    (smtp_project / "many.csv").write_text("email,name\n" + rows, encoding="utf-8")
    newsletter(smtp_project, "subscribers", "import", "many.csv")
    newsletter(smtp_project, "subscribers", "import", "list.csv")
    for n in range(25):
        server.reject_recipient(f"dead{n:02d}@example.org")
    sent = newsletter(smtp_project, "send", "2026-11", "--yes")
    assert sent.returncode == 3, sent.stderr
    line = next(x for x in sent.stderr.splitlines() if "failed: dead00@example.org" in x)
    assert line.count("dead00@example.org") == 1, line
    assert "… and 5 more failed" in sent.stderr
    status = newsletter(smtp_project, "status", "2026-11")
    assert status.stdout.count("  failed: dead") == 20
    assert "--all" in status.stdout
    every = newsletter(smtp_project, "status", "2026-11", "--all")
    assert every.stdout.count("  failed: dead") == 25

    server.clear_faults()
    again = newsletter(smtp_project, "send", "2026-11", "--yes")
    assert again.returncode == 3 and "0/" not in again.stdout, "no bar when nothing is left"

    test = newsletter(smtp_project, "send", "2026-11", "--test", "--to", "x@example.org")
    assert test.returncode == 0
    server.reject_recipient("x@example.org")
    refused = newsletter(smtp_project, "send", "2026-11", "--test", "--to", "x@example.org")
    assert refused.returncode == 1
    assert "[red]" not in refused.stderr and "not sent to x@example.org: " in refused.stderr
    assert refused.stderr.count("x@example.org") == 1, refused.stderr


def test_a_finished_issue_says_everything_was_sent(
    smtp_project: Path, server: SmtpTestServer, cached_spamassassin: SpamAssassinCache | None
) -> None:
    newsletter(smtp_project, "subscribers", "import", "list.csv")
    assert newsletter(smtp_project, "send", "2026-11", "--yes").returncode == 0
    again = newsletter(smtp_project, "send", "2026-11", "--yes")
    assert again.returncode == 0
    assert "Everything was sent: all 3 recipients already have '2026-11'." in again.stdout
    assert "━" not in again.stdout, "no empty progress bar"


def test_status_after_a_kill_gives_a_reason_not_none(
    smtp_project: Path, server: SmtpTestServer, cached_spamassassin: SpamAssassinCache | None
) -> None:
    newsletter(smtp_project, "subscribers", "import", "list.csv")
    server.delay("data_end", 5.0, times=None)
    child = start_send(smtp_project)
    deadline = time.monotonic() + 90
    while server.transactions < 1:
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.5)  # the data is in; the server holds its reply for 5 s
    child.kill()
    child.communicate()
    status = newsletter(smtp_project, "status", "2026-11")
    assert ": None" not in status.stdout
    assert "uncertain:" in status.stdout and "being sent" in status.stdout
    assert status.returncode == 4
    plan = newsletter(smtp_project, "send", "2026-11", "--resend-uncertain", stdin="n\n")
    assert "resending, as asked" in plan.stdout and "not resent" not in plan.stdout


def test_deferred_mail_waits_for_a_later_run_and_status_says_when(
    smtp_project: Path, server: SmtpTestServer, cached_spamassassin: SpamAssassinCache | None
) -> None:
    config = smtp_project / "newsletter.toml"
    config.write_text(
        config.read_text(encoding="utf-8")
        + '\n[sending]\nwait_for_retries = 0\nretry_for = "2d"\n',
        encoding="utf-8",
    )
    newsletter(smtp_project, "subscribers", "import", "list.csv")
    server.defer("rcpt", recipient="bob@example.org", times=None)
    sent = newsletter(smtp_project, "send", "2026-11", "--yes")
    assert sent.returncode == 6, sent.stdout + sent.stderr
    assert "1 message(s) wait for a retry; the next at " in sent.stdout
    status = newsletter(smtp_project, "status", "2026-11")
    assert status.returncode == 6
    assert re.search(r"1 deferred: next attempt at \d{4}-\d\d-\d\d \d\d:\d\d", status.stdout)
    assert "given up at" in status.stdout and "retry_for" in status.stdout


def test_status_shows_terminal_controls_in_replies_without_obeying_them(
    smtp_project: Path, server: SmtpTestServer, cached_spamassassin: SpamAssassinCache | None
) -> None:
    """A hostile server's reply (or provider error) reaches the editor's terminal as text."""
    newsletter(smtp_project, "subscribers", "import", "list.csv")
    server.reject_recipient(
        "ann@example.org", reply="550 5.1.1 gone \x1b]0;pwned\x07\x1b[2J\u202eevil"
    )
    sent = newsletter(smtp_project, "send", "2026-11", "--yes")
    assert sent.returncode == 3
    status = newsletter(smtp_project, "status", "2026-11")
    for output in (sent.stderr, status.stdout):
        assert "failed: ann@example.org" in output
        assert "\x1b" not in output and "\x07" not in output and "\u202e" not in output
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil" in status.stdout
