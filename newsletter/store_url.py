"""Where the store lives: `[store] url` / `NEWSLETTER_DATABASE_URL`, read and checked.

Two engines: `sqlite:///newsletter.db` (a file, relative to the project unless the path is
absolute: `sqlite:////srv/list.db`) and `postgresql://user@host:port/db?...` (psycopg 3, any
libpq parameter in the query). The rules a shared database needs are enforced here, before any
connection is made:

- no password in `newsletter.toml` (the URL's `user:password@` or `?password=`): libpq takes it
  from `PGPASSWORD`, `PGPASSFILE` (`~/.pgpass`) or a service file instead. A URL from the
  environment (`NEWSLETTER_DATABASE_URL`) may carry one: it is already a secret kept there;
- any URL shown is redacted (`shown`): a password never reaches a message or a log;
- TLS with the server's certificate and name verified (`sslmode=verify-full`) for every host that
  is not loopback or a Unix socket: defaulted when absent, refused when weakened.

Kept at the configuration's level (it imports nothing of newsletter) so that `config` can check
the TOML key and `store` can open what it names.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

__all__ = [
    "DEFAULT_URL",
    "ENV_NAME",
    "StoreUrl",
    "StoreUrlError",
    "is_local_host",
    "parse_store_url",
    "redact",
]

DEFAULT_URL = "sqlite:///newsletter.db"
ENV_NAME = "NEWSLETTER_DATABASE_URL"
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_REDACTED = "***"


class StoreUrlError(ValueError):
    """A store URL that cannot be used; the message never repeats a password."""


@dataclass(frozen=True)
class StoreUrl:
    """A checked store location.

    `engine` is "sqlite" or "postgresql". SQLite: `path` is the file. PostgreSQL: `conninfo`
    is what libpq is given (the URL, with `sslmode=verify-full` added for a remote host);
    `shown` is the redacted form, for messages.
    """

    engine: str
    shown: str
    path: Path | None = None
    conninfo: str = ""

    @property
    def is_sqlite(self) -> bool:
        return self.engine == "sqlite"

    def __str__(self) -> str:
        return self.shown


def redact(url: str) -> str:
    """`url` with any password (in `user:password@` or `?password=`) replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unreadable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = f"{userinfo.split(':', 1)[0]}:{_REDACTED}"
        netloc = f"{userinfo}@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, _REDACTED if k.lower() == "password" else v) for k, v in pairs],
            quote_via=quote,
            safe="/*",
        )
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def is_local_host(host: str) -> bool:
    """Whether `host` is this machine: a Unix socket directory, `localhost`, or a loopback IP."""
    host = host.strip().strip("[]")
    if not host or host.startswith("/") or host.startswith("@"):  # "@": abstract socket
        return True
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_store_url(
    url: str,
    *,
    root: Path,
    origin: str,
    from_environment: bool,
    environ: Mapping[str, str] = os.environ,
) -> StoreUrl:
    """Check `url` and say where it points. `origin` names where it came from in messages
    (`store.url`, `NEWSLETTER_DATABASE_URL`); `root` anchors a relative SQLite path."""
    text = url.strip()
    if not text:
        raise StoreUrlError(f"{origin}: must not be empty")
    scheme, sep, _rest = text.partition("://")
    if not sep:
        raise StoreUrlError(
            f"{origin}: {redact(text)!r} is not a store URL "
            f"(use {DEFAULT_URL} or postgresql://user@host/database)"
        )
    scheme = scheme.lower()
    if scheme == "sqlite":
        return _sqlite(text, root=root, origin=origin)
    if scheme in _POSTGRES_SCHEMES:
        return _postgresql(text, origin=origin, from_environment=from_environment, environ=environ)
    raise StoreUrlError(
        f"{origin}: unknown database kind {scheme!r} (newsletter stores in sqlite:// or "
        "postgresql://)"
    )


def _sqlite(text: str, *, root: Path, origin: str) -> StoreUrl:
    # sqlite:///relative.db and sqlite:////absolute.db, as SQLAlchemy writes them.
    rest = text.split("://", 1)[1]
    if not rest.startswith("/"):
        raise StoreUrlError(f"{origin}: a SQLite URL has no host: write sqlite:///file.db")
    path_text = unquote(rest[1:].split("?", 1)[0])
    if not path_text or path_text.endswith("/"):
        raise StoreUrlError(f"{origin}: {text!r} names no database file")
    path = Path(path_text).expanduser()
    if not path.is_absolute():
        path = root / path
    return StoreUrl("sqlite", shown=str(path), path=path)


def _hosts(parts_netloc: str, query: Mapping[str, str], environ: Mapping[str, str]) -> list[str]:
    """Every host libpq may connect to (a URL may list several, comma-separated)."""
    hosts_text = parts_netloc.rpartition("@")[2]
    hosts = []
    for entry in hosts_text.split(","):
        entry = entry.strip()
        if entry.startswith("["):  # [::1]:5432
            hosts.append(entry[1:].split("]", 1)[0])
        elif entry:
            hosts.append(unquote(entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry))
    if not hosts and "host" in query:
        hosts = [h for h in query["host"].split(",")]
    if not hosts and environ.get("PGHOST"):
        hosts = environ["PGHOST"].split(",")
    return hosts or [""]  # libpq's default: the Unix socket


def _postgresql(
    text: str, *, origin: str, from_environment: bool, environ: Mapping[str, str]
) -> StoreUrl:
    try:
        parts = urlsplit(text)
    except ValueError as err:
        raise StoreUrlError(f"{origin}: {redact(text)!r} is not a URL: {err}") from None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    has_password = ":" in userinfo or "password" in {k.lower() for k in query}
    if has_password and not from_environment:
        raise StoreUrlError(
            f"{origin}: the URL holds a password; passwords do not belong in newsletter.toml "
            "(set PGPASSWORD, or use ~/.pgpass / PGPASSFILE or a service file)"
        )
    remote = [h for h in _hosts(parts.netloc, query, environ) if not is_local_host(h)]
    sslmode = query.get("sslmode") or (environ.get("PGSSLMODE") if "sslmode" not in query else "")
    if remote:
        if sslmode and sslmode != "verify-full":
            raise StoreUrlError(
                f"{origin}: sslmode={sslmode} for {remote[0]}, a host that is not this machine; "
                "this program talks to a remote database only with TLS verified (verify-full)"
            )
        if "sslmode" not in query:
            query["sslmode"] = "verify-full"
    # Written out by hand: urlunsplit drops the `//` of a URL without a host (a Unix socket).
    encoded = urlencode(query, quote_via=quote, safe="/")
    conninfo = f"postgresql://{parts.netloc}{parts.path}" + (f"?{encoded}" if encoded else "")
    return StoreUrl("postgresql", shown=redact(conninfo), conninfo=conninfo)
