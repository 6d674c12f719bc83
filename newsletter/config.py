"""`newsletter.toml`: loaded once into frozen settings, every problem reported with its key.

Secrets are never read from the file: the file names the environment variable that holds them.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from .config_tables import (
    DkimSettings,
    InboxSettings,
    ServeSettings,
    parse_dkim_table,
    parse_inbox_table,
    parse_serve_table,
)
from .errors import ConfigError, Problem
from .linktags import LinkTagging, parse_links_table

CONFIG_NAME = "newsletter.toml"
SECRET_FILE_NAME = ".newsletter-secret"
DEFAULT_SECRET_ENV = "NEWSLETTER_SECRET"
DEFAULT_SMTP_PASSWORD_ENV = "NEWSLETTER_SMTP_PASSWORD"

SOCIAL_NETWORKS = (
    "facebook",
    "instagram",
    "linkedin",
    "x",
    "mastodon",
    "bluesky",
    "youtube",
    "github",
    "web",
)
PROVIDER_KINDS = (
    "postmark",
    "sendgrid",
    "mailgun",
    "ses",
    "resend",
    "brevo",
    "mailjet",
    "sparkpost",
)
TRANSPORT_KINDS = ("outbox", "smtp", *PROVIDER_KINDS)
SMTP_SECURITY = ("starttls", "tls", "none")


@dataclass(frozen=True)
class Partner:
    name: str
    logo: str
    url: str | None = None


@dataclass(frozen=True)
class SocialLink:
    network: str
    url: str


@dataclass(frozen=True)
class Footer:
    address: str
    contact: str | None = None
    social: tuple[SocialLink, ...] = ()
    partners: tuple[Partner, ...] = ()
    note: str | None = None


@dataclass(frozen=True)
class UnsubscribeSettings:
    url: str | None = None
    mailto: str | None = None
    secret_env: str = DEFAULT_SECRET_ENV


@dataclass(frozen=True)
class TransportSettings:
    kind: str = "outbox"
    path: str = "outbox"
    host: str = "localhost"
    port: int = 587
    security: str = "starttls"
    username: str | None = None
    password_env: str = DEFAULT_SMTP_PASSWORD_ENV
    timeout: float = 30.0
    connections: int = 3
    max_messages_per_connection: int = 100
    ca_file: str | None = None
    local_hostname: str | None = None
    # Mail-provider APIs: the key comes from the environment variable `api_key_env` (each
    # provider module has its own default name); `api_url` overrides the endpoint (EU regions,
    # a test server); `sandbox` switches on the provider's test mode.
    api_url: str | None = None
    api_key_env: str | None = None
    sandbox: bool = False
    region: str | None = None
    domain: str | None = None
    message_stream: str | None = None


@dataclass(frozen=True)
class SendingSettings:
    rate_per_second: float = 0.0
    rate_per_hour: float = 0.0
    max_attempts: int = 5
    pause_after_failures: int = 10


@dataclass(frozen=True)
class Settings:
    """Everything `newsletter.toml` says, validated."""

    root: Path
    name: str
    sender: Address
    footer: Footer
    locale: str = "en"
    reply_to: Address | None = None
    base_url: str | None = None
    logo: str | None = None
    logo_width: int = 160
    brand_color: str = "#1b6b5a"
    text_color: str = "#1f2933"
    background_color: str = "#f2f4f3"
    reviewers: tuple[str, ...] = ()
    list_id: str | None = None
    unsubscribe: UnsubscribeSettings = field(default_factory=UnsubscribeSettings)
    transport: TransportSettings = field(default_factory=TransportSettings)
    sending: SendingSettings = field(default_factory=SendingSettings)
    links: LinkTagging | None = None
    serve: ServeSettings = field(default_factory=ServeSettings)
    inbox: InboxSettings | None = None
    dkim: DkimSettings | None = None
    warnings: tuple[str, ...] = ()

    @property
    def issues_dir(self) -> Path:
        return self.root / "issues"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def dist_dir(self) -> Path:
        return self.root / "dist"

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def database_path(self) -> Path:
        return self.root / "newsletter.db"

    def secret(self) -> bytes | None:
        """The signing secret: from the environment, else from the ignored file `init` writes."""
        value = os.environ.get(self.unsubscribe.secret_env)
        if value:
            return value.encode()
        secret_file = self.root / SECRET_FILE_NAME
        if secret_file.is_file():
            text = secret_file.read_text(encoding="utf-8").strip()
            if text:
                return text.encode()
        return None


# --- validation helpers -------------------------------------------------------------------------

_HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_LOCALE = re.compile(r"^[a-z]{2,3}(?:_[A-Z]{2})?$")


class _Reader:
    """Reads one TOML table, collecting problems instead of stopping at the first."""

    def __init__(
        self, path: Path, text: str, table: str, data: Mapping[str, Any], problems: list[Problem]
    ) -> None:
        self.path = path
        self.text = text
        self.table = table
        self.data = data
        self.problems = problems
        self.seen: set[str] = set()

    def key_name(self, key: str) -> str:
        return f"{self.table}.{key}" if self.table else key

    def line_of(self, key: str) -> int | None:
        return _line_of(self.text, self.table, key)

    def problem(self, key: str, message: str) -> None:
        self.problems.append(
            Problem(message, file=self.path, line=self.line_of(key), key=self.key_name(key))
        )

    def get(self, key: str, kind: type | tuple[type, ...], *, required: bool = False) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if required:
                self.problems.append(Problem("is required", file=self.path, key=self.key_name(key)))
            return None
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML integers are acceptable where a float is expected; booleans are not numbers here.
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            self.problem(key, f"must be {_kind_name(kinds)}, not a boolean")
            return None
        if not isinstance(value, kinds):
            self.problem(key, f"must be {_kind_name(kinds)}, not {type(value).__name__}")
            return None
        return value

    def string(
        self,
        key: str,
        *,
        required: bool = False,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        value = self.get(key, str, required=required)
        if value is None:
            return None
        if required and not value.strip():
            self.problem(key, "must not be empty")
            return None
        if "\r" in value or ("\n" in value and key not in {"address", "note"}):
            self.problem(key, "must be on one line")
            return None
        if check is not None:
            message = check(value)
            if message:
                self.problem(key, message)
                return None
        return str(value)

    def number(self, key: str, *, minimum: float = 0, integer: bool = False) -> float | None:
        value = self.get(key, int if integer else float)
        if value is None:
            return None
        if value < minimum:
            self.problem(key, f"must be at least {minimum:g}")
            return None
        return float(value)

    def warn_unknown(self, warnings: list[str], known: set[str] | None = None) -> None:
        known_keys = known if known is not None else self.seen
        for key in self.data:
            if key in known_keys:
                continue
            suggestion = difflib.get_close_matches(key, sorted(known_keys), n=1)
            hint = f" (did you mean '{suggestion[0]}'?)" if suggestion else ""
            line = self.line_of(key)
            where = f"{self.path}:{line}" if line else str(self.path)
            warnings.append(f"{where}: unknown key '{self.key_name(key)}' is ignored{hint}")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _line_of(text: str, table: str, key: str) -> int | None:
    """Best-effort line number of `key` inside `[table]` (tomllib reports no positions)."""
    current = ""
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
    assignment = re.compile(r"^\s*(\"?)([A-Za-z0-9_\-]+)\1\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        found = header.match(line)
        if found:
            current = found.group(1)
            continue
        found = assignment.match(line)
        if found and found.group(2) == key and current == table:
            return number
    return None


def parse_address(value: str) -> Address | None:
    """`Name <addr@host>` or a bare address, as an `Address`; None when it is not one."""
    if "\n" in value or "\r" in value:
        return None
    name, addr = parseaddr(value)
    if not addr or "@" not in addr or addr.count("@") != 1:
        return None
    local, _, domain = addr.rpartition("@")
    if not local or "." not in domain:
        return None
    try:
        return Address(display_name=name, addr_spec=addr)
    except (ValueError, IndexError):
        return None


def _check_address(value: str) -> str | None:
    return (
        None if parse_address(value) else "is not an email address like 'Name <name@example.org>'"
    )


def _check_url(value: str) -> str | None:
    if not re.match(r"^https?://[^\s/]+", value):
        return "must be an http(s) URL"
    return None


def _check_https_url(value: str) -> str | None:
    if not re.match(r"^https://[^\s/]+", value):
        return "must be an https:// URL"
    return None


def _check_colour(value: str) -> str | None:
    return None if _HEX_COLOUR.match(value) else "must be a colour like '#1b6b5a'"


def _check_locale(value: str) -> str | None:
    if not _LOCALE.match(value):
        return "must be a locale code like 'en', 'nl' or 'pt_BR'"
    return None


def _check_env_name(value: str) -> str | None:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
        return "must be the name of an environment variable (not the secret itself)"
    return None


# --- loading ------------------------------------------------------------------------------------


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above `start` that holds `newsletter.toml`."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    return None


def load_settings(root: Path) -> Settings:
    """Read and validate `root/newsletter.toml`; raise `ConfigError` listing every problem."""
    path = root / CONFIG_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise ConfigError(
            [Problem("not found", file=path)],
            hint="Run 'newsletter init' to create a project, or change to the project folder.",
        ) from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([Problem(f"is not UTF-8 text ({err.reason})", file=path)]) from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        line_match = re.search(r"line (\d+)", str(err))
        raise ConfigError(
            [
                Problem(
                    f"is not valid TOML: {err}",
                    file=path,
                    line=int(line_match.group(1)) if line_match else None,
                )
            ]
        ) from err
    return settings_from_mapping(root, data, path=path, text=text)


def settings_from_mapping(
    root: Path, data: Mapping[str, Any], *, path: Path, text: str = ""
) -> Settings:
    problems: list[Problem] = []
    warnings: list[str] = []

    def table(name: str, *, required: bool = False) -> Mapping[str, Any]:
        value = data.get(name)
        if value is None:
            if required:
                problems.append(Problem(f"the [{name}] table is required", file=path))
            return {}
        if not isinstance(value, dict):
            problems.append(Problem("must be a table", file=path, key=name))
            return {}
        return value

    known_tables = {
        *("newsletter", "footer", "unsubscribe", "transport", "sending", "links"),
        *("serve", "inbox", "dkim"),
    }
    for table_name in data:
        if table_name not in known_tables:
            suggestion = difflib.get_close_matches(table_name, sorted(known_tables), n=1)
            hint = f" (did you mean '[{suggestion[0]}]'?)" if suggestion else ""
            warnings.append(f"{path}: unknown table '[{table_name}]' is ignored{hint}")

    main = _Reader(path, text, "newsletter", table("newsletter", required=True), problems)
    name = main.string("name", required=True)
    sender_text = main.string("from", required=True, check=_check_address)
    reply_text = main.string("reply_to", check=_check_address)
    locale = main.string("locale", check=_check_locale) or "en"
    base_url = main.string("base_url", check=_check_url)
    logo = main.string("logo")
    logo_width = main.number("logo_width", minimum=16, integer=True)
    brand_color = main.string("brand_color", check=_check_colour)
    text_color = main.string("text_color", check=_check_colour)
    background_color = main.string("background_color", check=_check_colour)
    list_id = main.string("list_id")
    reviewers_value = main.get("reviewers", list)
    reviewers: list[str] = []
    for index, reviewer in enumerate(reviewers_value or []):
        if not isinstance(reviewer, str) or parse_address(reviewer) is None:
            main.problem("reviewers", f"entry {index + 1} ({reviewer!r}) is not an email address")
        else:
            reviewers.append(reviewer)
    main.warn_unknown(warnings)

    foot = _Reader(path, text, "footer", table("footer", required=True), problems)
    address = foot.string("address", required=True)
    contact = foot.string("contact")
    note = foot.string("note")
    social: list[SocialLink] = []
    social_table = foot.get("social", dict) or {}
    for network, url in social_table.items():
        if network not in SOCIAL_NETWORKS:
            suggestion = difflib.get_close_matches(network, SOCIAL_NETWORKS, n=1)
            hint = f" (did you mean '{suggestion[0]}'?)" if suggestion else ""
            problems.append(
                Problem(
                    f"unknown network; use one of {', '.join(SOCIAL_NETWORKS)}{hint}",
                    file=path,
                    key=f"footer.social.{network}",
                )
            )
        elif not isinstance(url, str) or _check_url(url):
            problems.append(
                Problem("must be an http(s) URL", file=path, key=f"footer.social.{network}")
            )
        else:
            social.append(SocialLink(network, url))
    partners: list[Partner] = []
    for index, entry in enumerate(foot.get("partners", list) or []):
        key = f"footer.partners[{index + 1}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("logo"), str):
            problems.append(Problem("needs at least a 'logo' (and a 'name')", file=path, key=key))
            continue
        unknown = set(entry) - {"name", "logo", "url"}
        if unknown:
            problems.append(Problem(f"unknown keys {sorted(unknown)}", file=path, key=key))
        url = entry.get("url")
        if url is not None and (not isinstance(url, str) or _check_url(url)):
            problems.append(Problem("url must be an http(s) URL", file=path, key=key))
            continue
        partners.append(Partner(str(entry.get("name", "")), entry["logo"], url))
    foot.warn_unknown(warnings)

    unsub = _Reader(path, text, "unsubscribe", table("unsubscribe"), problems)
    unsubscribe = UnsubscribeSettings(
        url=unsub.string("url", check=_check_https_url),
        mailto=unsub.string("mailto", check=_check_address),
        secret_env=unsub.string("secret_env", check=_check_env_name) or DEFAULT_SECRET_ENV,
    )
    unsub.warn_unknown(warnings)

    trans = _Reader(path, text, "transport", table("transport"), problems)
    kind = trans.string("kind") or "outbox"
    if kind not in TRANSPORT_KINDS:
        suggestion = difflib.get_close_matches(kind, TRANSPORT_KINDS, n=1)
        hint = f" (did you mean '{suggestion[0]}'?)" if suggestion else ""
        trans.problem(
            "kind", f"unknown transport '{kind}'; use one of {', '.join(TRANSPORT_KINDS)}{hint}"
        )
    security = trans.string("security") or "starttls"
    if security not in SMTP_SECURITY:
        trans.problem("security", f"must be one of {', '.join(SMTP_SECURITY)}")
    port = trans.number("port", minimum=1, integer=True)
    if port is not None and port > 65535:
        trans.problem("port", "must be at most 65535")
    for secret_key in ("password", "api_key", "token", "secret"):
        if secret_key not in trans.data or secret_key == "password":
            continue
        trans.problem(
            secret_key,
            "secrets do not belong in newsletter.toml; set the key in the environment "
            "variable named by 'api_key_env' (each provider has a default name)",
        )
        trans.seen.add(secret_key)
    if "password" in trans.data:
        trans.problem(
            "password",
            "secrets do not belong in newsletter.toml; set the password in the environment "
            "variable named by 'password_env' (default NEWSLETTER_SMTP_PASSWORD)",
        )
        trans.seen.add("password")
    defaults = TransportSettings()
    transport = TransportSettings(
        kind=kind,
        path=trans.string("path") or defaults.path,
        host=trans.string("host") or defaults.host,
        port=int(port) if port is not None else (465 if security == "tls" else defaults.port),
        security=security,
        username=trans.string("username"),
        password_env=trans.string("password_env", check=_check_env_name) or defaults.password_env,
        timeout=trans.number("timeout", minimum=1) or defaults.timeout,
        connections=int(
            trans.number("connections", minimum=1, integer=True) or defaults.connections
        ),
        max_messages_per_connection=int(
            trans.number("max_messages_per_connection", minimum=1, integer=True)
            or defaults.max_messages_per_connection
        ),
        ca_file=trans.string("ca_file"),
        local_hostname=trans.string("local_hostname"),
        api_url=trans.string("api_url", check=_check_url),
        api_key_env=trans.string("api_key_env", check=_check_env_name),
        sandbox=bool(trans.get("sandbox", bool)),
        region=trans.string("region"),
        domain=trans.string("domain"),
        message_stream=trans.string("message_stream"),
    )
    trans.warn_unknown(warnings)

    send = _Reader(path, text, "sending", table("sending"), problems)
    sending_defaults = SendingSettings()
    sending = SendingSettings(
        rate_per_second=send.number("rate_per_second") or 0.0,
        rate_per_hour=send.number("rate_per_hour") or 0.0,
        max_attempts=int(
            send.number("max_attempts", minimum=1, integer=True) or sending_defaults.max_attempts
        ),
        pause_after_failures=int(
            send.number("pause_after_failures", minimum=1, integer=True)
            or sending_defaults.pause_after_failures
        ),
    )
    send.warn_unknown(warnings)

    links, link_problems = parse_links_table(table("links"), newsletter_name=name or "")
    for problem in link_problems:
        key = (problem.key or "").removeprefix("links.")
        problems.append(replace(problem, file=path, line=_line_of(text, "links", key)))

    serve, found = parse_serve_table(table("serve"), path)
    problems += found
    inbox, found = parse_inbox_table(table("inbox"), path)
    problems += found
    dkim, found = parse_dkim_table(table("dkim"), path)
    problems += found

    if problems:
        raise ConfigError(problems)
    assert name is not None and sender_text is not None and address is not None
    sender = parse_address(sender_text)
    assert sender is not None
    return Settings(
        root=root,
        name=name,
        sender=sender,
        reply_to=parse_address(reply_text) if reply_text else None,
        locale=locale,
        base_url=base_url.rstrip("/") + "/" if base_url else None,
        logo=logo,
        logo_width=int(logo_width) if logo_width else 160,
        brand_color=brand_color or "#1b6b5a",
        text_color=text_color or "#1f2933",
        background_color=background_color or "#f2f4f3",
        reviewers=tuple(reviewers),
        list_id=list_id,
        footer=Footer(
            address=address.strip(),
            contact=contact,
            social=tuple(social),
            partners=tuple(partners),
            note=note,
        ),
        unsubscribe=unsubscribe,
        transport=transport,
        sending=sending,
        links=links,
        serve=serve,
        inbox=inbox,
        dkim=dkim,
        warnings=tuple(warnings),
    )
