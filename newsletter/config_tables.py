"""The settings tables of `newsletter serve` (`[serve]`), `newsletter inbox` (`[inbox]`) and
DKIM signing (`[dkim]`): frozen dataclasses and their parsers, kept apart from the modules that
use them so that `config.py` can read them without importing the web app or the transports."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Problem

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_PASSWORD_ENV = "NEWSLETTER_IMAP_PASSWORD"


@dataclass(frozen=True)
class ServeSettings:
    """The `[serve]` table. Behind a reverse proxy, set `proxy_headers` and name the proxy in
    `forwarded_allow_ips`; `root_path` is the prefix the proxy strips (e.g. "/newsletter")."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    proxy_headers: bool = False
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)
    root_path: str = ""
    archive: bool = True


def parse_serve_table(table: Mapping[str, Any], path: Path) -> tuple[ServeSettings, list[Problem]]:
    """The `[serve]` table as settings, and every problem found (each naming its key)."""
    problems: list[Problem] = []
    defaults = ServeSettings()

    def problem(key: str, message: str) -> None:
        problems.append(Problem(message, file=path, key=f"serve.{key}"))

    host = table.get("host", defaults.host)
    if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host):
        problem("host", "must be a host name or address like '127.0.0.1'")
        host = defaults.host
    port = table.get("port", defaults.port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        problem("port", "must be a whole number from 0 to 65535")
        port = defaults.port
    proxy = table.get("proxy_headers", defaults.proxy_headers)
    if not isinstance(proxy, bool):
        problem("proxy_headers", "must be true or false")
        proxy = defaults.proxy_headers
    allowed = table.get("forwarded_allow_ips", list(defaults.forwarded_allow_ips))
    if isinstance(allowed, str):
        allowed = [part.strip() for part in allowed.split(",") if part.strip()]
    if not isinstance(allowed, list) or not all(isinstance(a, str) and a for a in allowed):
        problem("forwarded_allow_ips", "must be a list of addresses, e.g. ['127.0.0.1']")
        allowed = list(defaults.forwarded_allow_ips)
    root_path = table.get("root_path", defaults.root_path)
    if not isinstance(root_path, str) or (root_path and not re.match(r"^/[^\s?#]*$", root_path)):
        problem("root_path", "must be a path starting with '/', e.g. '/newsletter'")
        root_path = defaults.root_path
    archive = table.get("archive", defaults.archive)
    if not isinstance(archive, bool):
        problem("archive", "must be true or false")
        archive = defaults.archive
    known = {"host", "port", "proxy_headers", "forwarded_allow_ips", "root_path", "archive"}
    for key in table:
        if key not in known:
            problem(key, f"unknown key (use {', '.join(sorted(known))})")
    settings = ServeSettings(
        host=host.strip(),
        port=port,
        proxy_headers=proxy,
        forwarded_allow_ips=tuple(allowed),
        root_path=root_path.rstrip("/"),
        archive=archive,
    )
    return settings, problems


@dataclass(frozen=True)
class InboxSettings:
    """The `[inbox]` table: where replies and bounces arrive, and how to treat them."""

    host: str
    username: str
    port: int = 993
    security: str = "tls"  # "tls" (IMAPS, port 993) or "starttls" (port 143)
    password_env: str = DEFAULT_PASSWORD_ENV
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    soft_bounce_limit: int = 3
    trusted_authserv_id: str | None = None
    ca_file: str | None = None
    timeout: float = 30.0


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_inbox_table(
    table: Mapping[str, Any], path: Path
) -> tuple[InboxSettings | None, list[Problem]]:
    """The `[inbox]` table as settings (None when absent or invalid) and every problem found."""
    problems: list[Problem] = []
    if not table:
        return None, problems

    def problem(key: str, message: str) -> None:
        problems.append(Problem(message, file=path, key=f"inbox.{key}"))

    def text(key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = table.get(key, default)
        if value is None:
            if required:
                problem(key, "is required when [inbox] is present")
            return None
        if not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
            problem(key, "must be a non-empty string on one line")
            return None
        return value.strip()

    host = text("host", required=True)
    username = text("username", required=True)
    security = text("security", "tls") or "tls"
    if security not in ("tls", "starttls"):
        problem("security", "must be 'tls' (port 993) or 'starttls' (port 143); IMAP without "
                "encryption would send the password in clear")  # fmt: skip
    port = table.get("port", 993 if security == "tls" else 143)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        problem("port", "must be a whole number from 1 to 65535")
        port = 993
    password_env = text("password_env", DEFAULT_PASSWORD_ENV) or DEFAULT_PASSWORD_ENV
    if not _ENV_NAME.match(password_env):
        problem("password_env", "must be the name of an environment variable (not the password)")
    if "password" in table:
        problem(
            "password",
            f"secrets do not belong in newsletter.toml; set the password in the environment "
            f"variable named by 'password_env' (default {DEFAULT_PASSWORD_ENV})",
        )
    folder = text("folder", "INBOX") or "INBOX"
    processed = text("processed_folder", "Processed") or "Processed"
    if processed == folder:
        problem("processed_folder", "must differ from 'folder'")
    limit = table.get("soft_bounce_limit", 3)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        problem("soft_bounce_limit", "must be a whole number of at least 1")
        limit = 3
    authserv = text("trusted_authserv_id")
    ca_file = text("ca_file")
    timeout = table.get("timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        problem("timeout", "must be a number of seconds")
        timeout = 30.0
    known = {
        *("host", "username", "security", "port", "password_env", "password", "folder"),
        *("processed_folder", "soft_bounce_limit", "trusted_authserv_id", "ca_file", "timeout"),
    }
    for key in table:
        if key not in known:
            problem(key, "unknown key")
    if problems or host is None or username is None:
        return None, problems
    return (
        InboxSettings(
            host=host,
            username=username,
            port=port,
            security=security,
            password_env=password_env,
            folder=folder,
            processed_folder=processed,
            soft_bounce_limit=limit,
            trusted_authserv_id=authserv,
            ca_file=ca_file,
            timeout=float(timeout),
        ),
        problems,
    )


SELECTOR = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*$")
DOMAIN_NAME = re.compile(r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                     r"[A-Za-z][A-Za-z0-9-]{0,62}$")  # fmt: skip


@dataclass(frozen=True)
class DkimSettings:
    """The `[dkim]` table: sign with the key in `key_file` as `selector._domainkey.domain`."""

    domain: str
    selector: str
    key_file: str


def parse_dkim_table(
    table: Mapping[str, Any], path: Path
) -> tuple[DkimSettings | None, list[Problem]]:
    """The `[dkim]` table as settings (None when the table is empty) and every problem found."""
    problems: list[Problem] = []
    if not table:
        return None, problems
    values: dict[str, str] = {}
    for key in ("domain", "selector", "key_file"):
        value = table.get(key)
        if value is None:
            problems.append(
                Problem("is required when [dkim] is present", file=path, key=f"dkim.{key}")
            )
        elif not isinstance(value, str) or not value.strip():
            problems.append(Problem("must be a non-empty string", file=path, key=f"dkim.{key}"))
        else:
            values[key] = value.strip()
    if "domain" in values and not DOMAIN_NAME.match(values["domain"]):
        problems.append(
            Problem("must be a domain name like 'example.org'", file=path, key="dkim.domain")
        )
    if "selector" in values and not SELECTOR.match(values["selector"]):
        problems.append(
            Problem(
                "must be letters, digits and '-' (e.g. 'news2026')", file=path, key="dkim.selector"
            )
        )
    for key in table:
        if key not in ("domain", "selector", "key_file"):
            problems.append(
                Problem(
                    "unknown key (use domain, selector, key_file)", file=path, key=f"dkim.{key}"
                )
            )
    if problems:
        return None, problems
    return DkimSettings(values["domain"], values["selector"], values["key_file"]), problems
