"""`newsletter serve`, `inbox process` and `dkim keygen` as an editor runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from newsletter.audience import SubscriberStore, make_token

SECRET = "a-test-signing-secret"


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_SECRET"] = SECRET
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_answers_one_click_unsubscribe_from_the_command_line(project: Path) -> None:
    with SubscriberStore(project / "newsletter.db") as store:
        store.add("ann@example.org", "Ann")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_SECRET"] = SECRET
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        token = make_token(SECRET.encode(), "ann@example.org")
        url = f"http://127.0.0.1:{port}/unsubscribe?token={token}"
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.post(url, data={"List-Unsubscribe": "One-Click"}, timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "newsletter serve did not start"
                time.sleep(0.1)
        assert response.status_code == 200
        forged = httpx.post(
            url.replace(token, token[:-2] + "xx"), data={"List-Unsubscribe": "One-Click"}
        )
        assert forged.status_code == 400
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=20)
    assert server.returncode == 0, err
    assert f"Serving unsubscribe links and the archive at http://127.0.0.1:{port}" in out
    assert "ann@example.org: unsubscribed" in out
    with SubscriberStore(project / "newsletter.db") as store:
        found = store.get("ann@example.org")
        assert found is not None and found.status == "unsubscribed"


def test_dkim_keygen_prints_the_record_and_refuses_to_overwrite(project: Path) -> None:
    result = run(project, "dkim", "keygen", "--selector", "news2026")
    assert result.returncode == 0, result.stderr
    # Outside the tracked tree by default: in .secrets/, which init's .gitignore covers.
    key = project / ".secrets" / "dkim-news2026.pem"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
    assert (key.parent.stat().st_mode & 0o777) == 0o700
    assert not (project / "dkim-news2026.pem").exists()
    assert 'key_file = ".secrets/dkim-news2026.pem"' in result.stdout
    assert "does not cover it" in result.stdout  # the example project has no .gitignore
    (project / ".gitignore").write_text(".secrets/\n")
    other = run(project, "dkim", "keygen", "--selector", "news2027")
    assert other.returncode == 0 and "does not cover it" not in other.stdout
    assert "news2026._domainkey.riverside-garden.example.org" in result.stdout
    assert "v=DKIM1; k=rsa; p=" in result.stdout
    before = key.read_bytes()
    again = run(project, "dkim", "keygen", "--selector", "news2026")
    assert again.returncode == 1
    assert key.read_bytes() == before


def test_inbox_process_without_an_inbox_table_says_what_to_add(project: Path) -> None:
    result = run(project, "inbox", "process")
    assert result.returncode == 1
    assert "newsletter.toml: has no [inbox] table: add one with host and username" in result.stderr


def test_dkim_keygen_makes_the_configured_secrets_folder(project: Path) -> None:
    config = project / "newsletter.toml"
    config.write_text(
        config.read_text(encoding="utf-8")
        + '\n[dkim]\ndomain = "riverside-garden.example.org"\nselector = "s1"\n'
        'key_file = ".secrets/dkim-s1.pem"\n',
        encoding="utf-8",
    )
    result = run(project, "dkim", "keygen")
    assert result.returncode == 0, result.stderr
    key = project / ".secrets" / "dkim-s1.pem"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
