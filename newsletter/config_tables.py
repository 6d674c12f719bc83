"""The settings tables beside `[newsletter]`: `[serve]` (`newsletter serve`), `[inbox]`
(`newsletter inbox`), `[dkim]` (signing) and `[links]` (UTM tagging, click counts): frozen
dataclasses and their parsers, each reading its table through the one `TableReader`
(config_reader.py). They live at the ground floor, apart from the modules that use them, so that
`config.py` can read them without importing the web app, the transports or the renderer.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from dataclasses import dataclass

from .config_reader import TableReader, check_env_name
from .store_url import DEFAULT_URL, StoreUrlError, parse_store_url

__all__ = [
    "COUNT_CLICKS_KEY",
    "DEFAULT_MEDIUM",
    "LINKS_KEYS",
    "DkimSettings",
    "InboxSettings",
    "LinkTagging",
    "ScheduleSettings",
    "ServeSettings",
    "StoreSettings",
    "check_timezone",
    "normal_host",
    "parse_count_clicks",
    "parse_dkim_table",
    "parse_inbox_table",
    "parse_links_table",
    "parse_schedule_table",
    "parse_serve_table",
    "parse_store_table",
    "slugify",
]

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


def parse_serve_table(table: TableReader) -> ServeSettings:
    """The `[serve]` table as settings; problems go to `table.problems`, each with its key."""
    defaults = ServeSettings()
    host = table.value("host", defaults.host)
    if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host):
        table.problem("host", "must be a host name or address like '127.0.0.1'")
        host = defaults.host
    port = table.value("port", defaults.port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        table.problem("port", "must be a whole number from 0 to 65535")
        port = defaults.port
    proxy = table.value("proxy_headers", defaults.proxy_headers)
    if not isinstance(proxy, bool):
        table.problem("proxy_headers", "must be true or false")
        proxy = defaults.proxy_headers
    allowed = table.value("forwarded_allow_ips", list(defaults.forwarded_allow_ips))
    if isinstance(allowed, str):
        allowed = [part.strip() for part in allowed.split(",") if part.strip()]
    if not isinstance(allowed, list) or not all(isinstance(a, str) and a for a in allowed):
        table.problem("forwarded_allow_ips", "must be a list of addresses, e.g. ['127.0.0.1']")
        allowed = list(defaults.forwarded_allow_ips)
    root_path = table.value("root_path", defaults.root_path)
    if not isinstance(root_path, str) or (root_path and not re.match(r"^/[^\s?#]*$", root_path)):
        table.problem("root_path", "must be a path starting with '/', e.g. '/newsletter'")
        root_path = defaults.root_path
    archive = table.value("archive", defaults.archive)
    if not isinstance(archive, bool):
        table.problem("archive", "must be true or false")
        archive = defaults.archive
    table.finish()
    return ServeSettings(
        host=host.strip(),
        port=port,
        proxy_headers=proxy,
        forwarded_allow_ips=tuple(allowed),
        root_path=root_path.rstrip("/"),
        archive=archive,
    )


DEFAULT_QUARANTINE_FOLDER = "newsletter-quarantine"
# Bounces and feedback reports are a few KB (with the returned message, rarely over 1 MB).
DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024


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
    quarantine_folder: str = DEFAULT_QUARANTINE_FOLDER
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    soft_bounce_limit: int = 3
    trusted_authserv_id: str | None = None
    ca_file: str | None = None
    timeout: float = 30.0


def parse_inbox_table(table: TableReader) -> InboxSettings | None:
    """The `[inbox]` table as settings (None when absent or invalid; problems in the reader)."""
    if not table.present:
        return None
    before = len(table.problems)

    def text(key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = table.value(key, default)
        if value is None:
            if required:
                table.problem(key, "is required when [inbox] is present")
            return None
        if not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
            table.problem(key, "must be a non-empty string on one line")
            return None
        return value.strip()

    host = text("host", required=True)
    username = text("username", required=True)
    security = text("security", "tls") or "tls"
    if security not in ("tls", "starttls"):
        table.problem("security", "must be 'tls' (port 993) or 'starttls' (port 143); IMAP "
                      "without encryption would send the password in clear")  # fmt: skip
    port = table.value("port", 993 if security == "tls" else 143)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        table.problem("port", "must be a whole number from 1 to 65535")
        port = 993
    password_env = text("password_env", DEFAULT_PASSWORD_ENV) or DEFAULT_PASSWORD_ENV
    if check_env_name(password_env):
        table.problem(
            "password_env", "must be the name of an environment variable (not the password)"
        )
    table.refuse_secret(
        "password",
        f"secrets do not belong in newsletter.toml; set the password in the environment "
        f"variable named by 'password_env' (default {DEFAULT_PASSWORD_ENV})",
    )
    folder = text("folder", "INBOX") or "INBOX"
    processed = text("processed_folder", "Processed") or "Processed"
    if processed == folder:
        table.problem("processed_folder", "must differ from 'folder'")
    quarantine = text("quarantine_folder", DEFAULT_QUARANTINE_FOLDER) or DEFAULT_QUARANTINE_FOLDER
    if quarantine in (folder, processed):
        table.problem("quarantine_folder", "must differ from 'folder' and 'processed_folder'")
    max_bytes = table.value("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 65536:
        table.problem("max_message_bytes", "must be a whole number of bytes, at least 65536")
        max_bytes = DEFAULT_MAX_MESSAGE_BYTES
    limit = table.value("soft_bounce_limit", 3)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        table.problem("soft_bounce_limit", "must be a whole number of at least 1")
        limit = 3
    authserv = text("trusted_authserv_id")
    ca_file = text("ca_file")
    timeout = table.value("timeout", 30.0)
    if isinstance(timeout, float) and not math.isfinite(timeout):
        table.problem("timeout", "must be a finite number of seconds, not nan or inf")
        timeout = 30.0
    elif isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        table.problem("timeout", "must be a number of seconds")
        timeout = 30.0
    table.finish()
    if len(table.problems) > before or host is None or username is None:
        return None
    return InboxSettings(
        host=host,
        username=username,
        port=port,
        security=security,
        password_env=password_env,
        folder=folder,
        processed_folder=processed,
        quarantine_folder=quarantine,
        max_message_bytes=max_bytes,
        soft_bounce_limit=limit,
        trusted_authserv_id=authserv,
        ca_file=ca_file,
        timeout=float(timeout),
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


def parse_dkim_table(table: TableReader) -> DkimSettings | None:
    """The `[dkim]` table as settings (None when absent or invalid; problems in the reader)."""
    if not table.present:
        return None
    before = len(table.problems)
    values: dict[str, str] = {}
    for key in ("domain", "selector", "key_file"):
        value = table.value(key)
        if value is None:
            table.problem(key, "is required when [dkim] is present")
        elif not isinstance(value, str) or not value.strip():
            table.problem(key, "must be a non-empty string")
        else:
            values[key] = value.strip()
    if "domain" in values and not DOMAIN_NAME.match(values["domain"]):
        table.problem("domain", "must be a domain name like 'example.org'")
    if "selector" in values and not SELECTOR.match(values["selector"]):
        table.problem("selector", "must be letters, digits and '-' (e.g. 'news2026')")
    table.finish()
    if len(table.problems) > before:
        return None
    return DkimSettings(values["domain"], values["selector"], values["key_file"])


# --- [links]: UTM tagging (linktags.py applies it) ------------------------------------------------

LINKS_KEYS = ("domains", "utm_source", "utm_medium", "utm_campaign", "count_clicks")
COUNT_CLICKS_KEY = "count_clicks"
DEFAULT_MEDIUM = "email"

_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)


@dataclass(frozen=True)
class LinkTagging:
    """What to append to links to `domains` (and their subdomains).

    `campaign` None means: the issue's name, decided when the issue is tagged.
    """

    domains: tuple[str, ...]
    source: str
    medium: str = DEFAULT_MEDIUM
    campaign: str | None = None

    def parameters(self, issue_name: str) -> tuple[tuple[str, str], ...]:
        return (
            ("utm_source", self.source),
            ("utm_medium", self.medium),
            ("utm_campaign", self.campaign or issue_name),
        )

    def matches(self, host: str) -> bool:
        """True when `host` is one of the domains or a subdomain of one."""
        name = normal_host(host)
        return any(name == domain or name.endswith("." + domain) for domain in self.domains)


def slugify(text: str) -> str:
    """`Riverside Roots` → `riverside-roots`: lower case ASCII letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "newsletter"


def normal_host(host: str) -> str:
    """Lower case and, for international names, the ASCII (punycode) form."""
    name = host.strip().rstrip(".").lower()
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


def parse_count_clicks(table: TableReader, *, base_url: str | None) -> bool:
    """`[links] count_clicks` (default false). The redirects live at `<base_url>/c/...`, so
    counting needs `[newsletter] base_url`; without it, a problem naming the key."""
    value = table.value(COUNT_CLICKS_KEY, False)
    if not isinstance(value, bool):
        table.problem(COUNT_CLICKS_KEY, "must be true or false")
        return False
    if value and not base_url:
        table.problem(
            COUNT_CLICKS_KEY,
            "needs [newsletter] base_url: counted links point at <base_url>/c/<issue>/<n>, "
            "which `newsletter serve` answers",
        )
        return False
    return value


def parse_links_table(table: TableReader, *, newsletter_name: str = "") -> LinkTagging | None:
    """The `[links]` table as a `LinkTagging` (None when absent or invalid; problems in the
    reader). A table with only `count_clicks` tags nothing (see `parse_count_clicks`)."""
    if not table.present:
        return None
    table.seen.add(COUNT_CLICKS_KEY)  # read by parse_count_clicks
    if set(table.data) == {COUNT_CLICKS_KEY}:
        return None
    before = len(table.problems)

    def text(key: str) -> str | None:
        value = table.value(key)
        if value is None:
            return None
        if not isinstance(value, str):
            table.problem(key, f"must be a string, not {type(value).__name__}")
            return None
        value = value.strip()
        if not value:
            table.problem(key, "must not be empty (leave the key out to use the default)")
            return None
        if any(ord(char) < 0x20 or char == "\x7f" for char in value):
            table.problem(key, "must be on one line, without control characters")
            return None
        return value

    source = text("utm_source")
    medium = text("utm_medium")
    campaign = text("utm_campaign")

    domains: list[str] = []
    raw_domains = table.value("domains")
    if raw_domains is None:
        table.problem(
            "domains",
            "is required: the host names whose links get UTM parameters, "
            'e.g. domains = ["riverside-garden.example.org"]',
        )
    elif not isinstance(raw_domains, list) or not raw_domains:
        table.problem("domains", "must be a non-empty list of host names")
    else:
        for index, entry in enumerate(raw_domains, start=1):
            domain = (
                entry.strip().lower().removeprefix("*.").lstrip(".")
                if isinstance(entry, str)
                else None
            )
            if domain is None:
                table.problem("domains", f"entry {index} ({entry!r}) is not a string")
            elif "://" in domain or "/" in domain:
                table.problem(
                    "domains",
                    f"entry {index} ({entry!r}) must be a host name like "
                    "'riverside-garden.example.org', not a URL",
                )
            elif not _HOST_NAME.match(normal_host(domain)):
                table.problem("domains", f"entry {index} ({entry!r}) is not a host name")
            else:
                domains.append(normal_host(domain))
    table.finish()
    if len(table.problems) > before:
        return None
    return LinkTagging(
        domains=tuple(dict.fromkeys(domains)),
        source=source or slugify(newsletter_name),
        medium=medium or DEFAULT_MEDIUM,
        campaign=campaign,
    )


@dataclass(frozen=True)
class StoreSettings:
    """The `[store]` table: where subscribers and the send ledger live (`store_url`)."""

    url: str = DEFAULT_URL


def parse_store_table(table: TableReader) -> StoreSettings:
    """The `[store]` table; a URL holding a password is an error naming `store.url`."""
    url = table.string("url")
    table.finish()
    if url is None:
        return StoreSettings()
    try:
        # The root only anchors a relative SQLite path; what is checked here does not need it.
        parse_store_url(url, root=table.path.parent, origin="store.url", from_environment=False)
    except StoreUrlError as err:
        table.problem("url", str(err).removeprefix("store.url: "))
        return StoreSettings()
    return StoreSettings(url=url)


DEFAULT_GRACE_MINUTES = 60.0
DEFAULT_CHECK_EVERY = 30.0


@dataclass(frozen=True)
class ScheduleSettings:
    """The `[schedule]` table: scheduled sends (`newsletter send --at`, `run-due`).

    `timezone` (an IANA name) is how `--at` times are read and shown; None means the machine's
    local zone. A schedule found more than `grace_minutes` late (the machine was off) is reported
    as missed, not sent. `in_serve` makes `newsletter serve` run due sends itself, looking every
    `check_every` seconds.
    """

    timezone: str | None = None
    grace_minutes: float = DEFAULT_GRACE_MINUTES
    in_serve: bool = False
    check_every: float = DEFAULT_CHECK_EVERY


def check_timezone(value: str) -> str | None:
    """Why `value` is not an IANA time zone name this machine knows; None if it is."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"{value!r} is not a time zone name such as 'Europe/Amsterdam'"
    return None


def parse_schedule_table(table: TableReader) -> ScheduleSettings:
    """The `[schedule]` table; an unknown time zone is an error naming `schedule.timezone`."""
    timezone = table.string("timezone", check=check_timezone)
    grace = table.number("grace_minutes", minimum=0, maximum=7 * 24 * 60)
    in_serve = table.boolean("in_serve")
    every = table.number("check_every", minimum=1, maximum=3600)
    table.finish()
    return ScheduleSettings(
        timezone=timezone,
        grace_minutes=DEFAULT_GRACE_MINUTES if grace is None else grace,
        in_serve=bool(in_serve),
        check_every=DEFAULT_CHECK_EVERY if every is None else every,
    )
