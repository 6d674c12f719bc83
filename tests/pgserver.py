"""A throw-away PostgreSQL cluster for tests: Debian's server, `initdb` + `pg_ctl` in a temporary
folder, listening only on a Unix socket in that folder (no TCP), removed afterwards.

Not a test module: the session fixture in conftest.py starts one per pytest(-xdist) worker.

    with PostgresServer() as server:         # ~1 s: initdb, start
        url = server.new_store()            # postgresql:///tests?host=/tmp/...&options=...

Every test gets a store of its own: a new schema of the `tests` database, named in the URL's
`options` (search_path), which costs a millisecond where a new database costs half a second.
The cluster trades durability for speed (fsync off): it lives only as long as the test run.
As root, the server runs as the `postgres` user (created by the package): PostgreSQL refuses to
run as root.

`require_postgresql()` skips the calling test when PostgreSQL is missing, unless
NEWSLETTER_REQUIRE_POSTGRESQL=1, where it fails instead (CI installs it).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg
import pytest

__all__ = ["PostgresServer", "postgresql_bin", "require_postgresql"]

SUPERUSER = "newsletter"


def postgresql_bin() -> Path | None:
    """The folder holding initdb and pg_ctl (PATH first, then Debian's versioned folders)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def require_postgresql() -> Path:
    """The server's bin folder; skips (or fails, in CI) when PostgreSQL is not installed."""
    found = postgresql_bin()
    if found is None:
        message = "PostgreSQL is missing: install Debian's postgresql to run its store tests"
        if os.environ.get("NEWSLETTER_REQUIRE_POSTGRESQL") == "1":
            pytest.fail(message + " (NEWSLETTER_REQUIRE_POSTGRESQL=1)")
        pytest.skip(message)
    return found


class PostgresServer:
    """One PostgreSQL cluster on a Unix socket in a fresh temporary folder."""

    def __init__(
        self, bin_dir: Path | None = None, *, durable: bool = False, settings: tuple[str, ...] = ()
    ) -> None:
        self.durable = durable  # fsync as in production (benchmarks); tests trade it for speed
        self.settings = settings  # more `name=value` server settings (benchmarks' statistics)
        found = bin_dir or postgresql_bin()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed")
        self.bin = found
        self.folder = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._counter = itertools.count(1)
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            entry = pwd.getpwnam(self._user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self.folder.chmod(0o755)

    @property
    def socket_dir(self) -> str:
        return str(self.folder)

    def _run(self, *command: str) -> None:
        done = subprocess.run(
            [str(self.bin / command[0]), *command[1:]],
            user=self._user,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{command[0]} failed: {done.stderr}{done.stdout}\n{log}")

    def start(self) -> PostgresServer:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )
        options = [
            "-c listen_addresses=''",
            f"-c unix_socket_directories='{self.socket_dir}'",
            "-c max_connections=200",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        options += [f"-c {setting}" for setting in self.settings]
        settings = " ".join(options)
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", settings, "-w", "start"
        )
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE tests TEMPLATE template0")
        return self

    def url(self, database: str = "postgres", schema: str | None = None) -> str:
        """The URL of `database` (and `schema` first on its search path), by the Unix socket."""
        url = f"postgresql:///{database}?host={quote(self.socket_dir, safe='/')}&user={SUPERUSER}"
        if schema is not None:
            url += "&options=" + quote(f"-c search_path={schema}", safe="")
        return url

    def new_store(self) -> str:
        """The URL of a new, empty schema of the `tests` database."""
        name = f"s{next(self._counter)}"
        with psycopg.connect(self.url("tests"), autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{name}"')
        return self.url("tests", name)

    def new_database(self) -> str:
        """A whole new database (for tests about more than one schema); its URL."""
        name = f"d{next(self._counter)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        try:
            if self.data.exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
