"""`newsletter send` and `status` as whole processes on a PostgreSQL store (issue 10), to a real
SMTP server on loopback: every recipient once, and `status` says so."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from newsletter.delivery.ledger import Ledger, State
from tests.pgserver import PostgresServer
from tests.smtpserver import SmtpTestServer
from tests.spamcache import SpamAssassinCache
from tests.test_cli_send import PASSWORD, server, smtp_project

__all__ = ["server", "smtp_project"]  # fixtures shared with test_cli_send

COUNT = 50


def newsletter(project: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env |= {
        "NEWSLETTER_SECRET": "a-test-signing-secret",
        "NEWSLETTER_SMTP_PASSWORD": PASSWORD,
        "NEWSLETTER_DATABASE_URL": url,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_send_on_postgresql_reaches_everyone_once_and_status_shows_it(
    smtp_project: Path,
    server: SmtpTestServer,
    postgres_server: PostgresServer,
    cached_spamassassin: SpamAssassinCache | None,
) -> None:
    url = postgres_server.new_store()
    rows = "".join(f"reader{n:03d}@example.org,Reader {n}\n" for n in range(COUNT))
    (smtp_project / "many.csv").write_text("email,name\n" + rows, encoding="utf-8")
    imported = newsletter(smtp_project, url, "subscribers", "import", "many.csv")
    assert imported.returncode == 0, imported.stderr

    sent = newsletter(smtp_project, url, "send", "2026-11", "--yes")
    assert sent.returncode == 0, sent.stderr
    assert f"sent {COUNT} now, {COUNT} of {COUNT} in all; failed 0, uncertain 0" in sent.stdout

    received = Counter(message.rcpt_tos[0] for message in server.messages)
    assert received == Counter(f"reader{n:03d}@example.org" for n in range(COUNT))
    assert not (smtp_project / "newsletter.db").exists(), "the SQLite default was not used"
    with Ledger(url) as ledger:
        issue = ledger.issue("2026-11")
        assert issue.counts()[State.SENT] == COUNT
        rows_sent = list(issue.rows(State.SENT))
        assert all(row.attempts == 1 and row.reply and row.message_id for row in rows_sent)

    status = newsletter(smtp_project, url, "status", "2026-11")
    assert status.returncode == 0, status.stderr
    assert re.search(rf"│ sent\s+│ {COUNT} │", status.stdout), status.stdout
    assert ": finished" in status.stdout  # the worker's lease, released

    again = newsletter(smtp_project, url, "send", "2026-11", "--yes")
    assert again.returncode == 0
    assert f"Everything was sent: all {COUNT} recipients already have '2026-11'." in again.stdout
    assert len(server.messages) == COUNT
