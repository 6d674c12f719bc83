"""The container image (`Dockerfile`): built from this repo, run on a copy of the example project,
healthy by its own HEALTHCHECK, answering /healthz and a one-click unsubscribe from the host.

Needs a Docker engine that answers, and a build that can reach the package index (the image
installs the package with pip). Without an engine the test skips and says why; in CI it runs only
with NEWSLETTER_REQUIRE_DOCKER=1, and then a missing engine is a failure, not a skip.

The HEALTHCHECK command and the CMD's options are also checked without Docker, against a real
server on loopback, so the parts of the Dockerfile that can break silently are tested here too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from newsletter.audience import SubscriberStatus, SubscriberStore, make_token
from newsletter.cli.commands import app
from newsletter.config import Settings
from newsletter.web import ServeSettings, WebServer
from tests.conftest import REPO, copy_example_project
from tests.test_web import running

SECRET = "container-test-secret-0123456789"
CONTAINER_UID = 10001  # the Dockerfile's `newsletter` user
BUILD_SECONDS = 900
HEALTHY_SECONDS = 90


def _instruction(name: str) -> list[str]:
    """The exec-form (JSON) command of the Dockerfile's `CMD` or `HEALTHCHECK ... CMD`."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    found = re.search(rf"^{name}\b(?:[^\n]*?\bCMD)?\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert found is not None, f"the Dockerfile has no exec-form {name}"
    arguments: list[str] = json.loads(found.group(1))
    return arguments


# --- without Docker -----------------------------------------------------------------------------


def test_the_dockerfile_health_check_passes_on_a_healthy_server_and_fails_otherwise(
    settings: Settings,
) -> None:
    command = _instruction("HEALTHCHECK")
    assert command[:2] == ["python", "-c"] and "/healthz" in command[2]
    opened = SubscriberStore(settings.database_path)
    server = WebServer(settings, secret=b"x", serve_settings=ServeSettings(port=0), store=opened)
    with running(server):
        # The same code, aimed at this server's port instead of the container's 8000.
        code = command[2].replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
        assert code != command[2]
        healthy = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
        assert healthy.returncode == 0, healthy.stderr
        opened.close()  # the store can no longer be read: /healthz answers 503
        sick = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
        assert sick.returncode != 0
        assert b"503" in sick.stderr


def test_the_dockerfile_command_uses_options_serve_has() -> None:
    command = _instruction("CMD")
    assert command[:2] == ["newsletter", "serve"]
    help_text = CliRunner().invoke(app, ["serve", "--help"]).output
    for option in command[2::2]:
        assert option.startswith("--") and option in help_text
    assert command[command.index("--port") + 1] == "8000"
    assert re.search(r"^EXPOSE 8000$", (REPO / "Dockerfile").read_text(), re.MULTILINE)


def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    ignored = set((REPO / ".dockerignore").read_text(encoding="utf-8").split())
    for name in (".venv", ".git", "dist", "outbox", "*.db", ".secrets", ".newsletter-secret"):
        assert name in ignored


# --- with Docker --------------------------------------------------------------------------------


def _docker(
    *arguments: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *arguments], capture_output=True, text=True, timeout=timeout, env=env
    )


def _why_no_docker() -> str | None:
    if shutil.which("docker") is None:
        return "no `docker` command"
    try:
        info = _docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except subprocess.TimeoutExpired:
        return "the Docker daemon did not answer within 30 s"
    if info.returncode != 0:
        said = info.stderr.strip().splitlines()
        return f"the Docker daemon does not answer ({said[-1] if said else 'no message'})"
    return None


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image built from this repo; removed afterwards."""
    required = os.environ.get("NEWSLETTER_REQUIRE_DOCKER") == "1"
    if os.environ.get("CI") and not required:
        pytest.skip("the container test runs in CI only with NEWSLETTER_REQUIRE_DOCKER=1")
    reason = _why_no_docker()
    if reason is not None:
        if required:
            pytest.fail(f"NEWSLETTER_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(f"container image not built or tested: {reason}")
    tag = f"newsletter-test:{uuid.uuid4().hex[:12]}"
    built = _docker("build", "--tag", tag, str(REPO), timeout=BUILD_SECONDS)
    try:
        assert built.returncode == 0, f"docker build failed:\n{built.stdout}\n{built.stderr}"
        yield tag
    finally:
        _docker("image", "rm", "--force", tag)


@pytest.mark.slow
def test_the_container_is_healthy_and_unsubscribes(image: str, tmp_path: Path) -> None:
    project = copy_example_project(tmp_path / "project")
    with SubscriberStore(project / "newsletter.db") as store:
        store.add("ann@example.org", "Ann Example")
        store.add("bob@example.org", "Bob")
    user: list[str] = []
    if os.geteuid() == 0:  # hand the project to the image's own user, as a deployment would
        for path in [project, *project.rglob("*")]:
            os.chown(path, CONTAINER_UID, CONTAINER_UID)
    else:  # cannot chown: run as ourselves (still not root)
        user = ["--user", f"{os.getuid()}:{os.getgid()}"]
    name = f"newsletter-test-{uuid.uuid4().hex[:12]}"
    started = _docker(
        "run", "--detach", "--name", name, *user,
        "--publish", "127.0.0.1::8000",  # a free port on the host's loopback only
        "--volume", f"{project}:/project",
        "--env", "NEWSLETTER_SECRET",  # the value from our environment, not the command line
        "--health-interval", "1s", "--health-start-period", "30s",
        image,
        env={**os.environ, "NEWSLETTER_SECRET": SECRET},
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + HEALTHY_SECONDS
        while True:
            state = _docker(
                "inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", name
            )
            if state.stdout.split() == ["running", "healthy"]:
                break
            logs = _docker("logs", name)
            assert "exited" not in state.stdout, f"the container stopped:\n{logs.stderr}"
            assert time.monotonic() < deadline, f"not healthy: {state.stdout}\n{logs.stderr}"
            time.sleep(1)
        assert _docker("exec", name, "id", "-u").stdout.strip() != "0"
        no_pytest = "import importlib.util as u, sys; sys.exit(3 if u.find_spec('pytest') else 0)"
        assert _docker("exec", name, "python", "-c", no_pytest).returncode == 0  # no test extras
        published = _docker("port", name, "8000/tcp").stdout.split()[0]
        assert published.startswith("127.0.0.1:")
        base = f"http://{published}"

        health = httpx.get(f"{base}/healthz")
        assert (health.status_code, health.text) == (200, "ok\n")
        token = make_token(SECRET.encode(), "ann@example.org")
        one_click = httpx.post(
            f"{base}/unsubscribe?token={token}", data={"List-Unsubscribe": "One-Click"}
        )
        assert one_click.status_code == 200
        with SubscriberStore(project / "newsletter.db") as store:
            ann, bob = store.get("ann@example.org"), store.get("bob@example.org")
            assert ann is not None and ann.status == SubscriberStatus.UNSUBSCRIBED
            assert bob is not None and bob.status == SubscriberStatus.SUBSCRIBED
            assert store.events("ann@example.org")[-1].source == "web one-click"
    finally:
        _docker("rm", "--force", "--volumes", name)
