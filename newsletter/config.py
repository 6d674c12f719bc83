"""`newsletter.toml`: loaded once into frozen settings, every problem reported with its key.

Secrets are never read from the file: the file names the environment variable that holds them.

About 730 lines: the `Settings` tree and the checks of every value that has no table of its own
in `config_tables` (addresses, the sender, sending, the store location). Each is short; kept
together so that one file shows what `newsletter.toml` may hold at its top level.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .config_reader import TableReader, check_env_name
from .config_signup import SignupSettings, parse_signup_table
from .config_tables import (
    DkimSettings,
    InboxSettings,
    LinkTagging,
    ScheduleSettings,
    ServeSettings,
    StoreSettings,
    parse_count_clicks,
    parse_dkim_table,
    parse_inbox_table,
    parse_links_table,
    parse_schedule_table,
    parse_serve_table,
    parse_store_table,
)
from .errors import ConfigError, Problem
from .providers import PROVIDER_SETTINGS, PROVIDERS, setting_problems
from .store_url import ENV_NAME as STORE_ENV_NAME
from .store_url import StoreUrl, StoreUrlError, parse_store_url

CONFIG_NAME = "newsletter.toml"
SECRET_FILE_NAME = ".newsletter-secret"
# What can be recomputed (link answers, check results, resized images); git-ignored by `init`.
CACHE_DIR_NAME = ".newsletter-cache"
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
# Every `[transport] kind`; the providers come from the one registry (providers.py).
TRANSPORT_KINDS = ("outbox", "smtp", *PROVIDERS)
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
    # How many days an opaque unsubscribe token stays valid (0: for ever). Long on purpose: a
    # link in an old issue must still work when someone finds it years later.
    token_days: int = 1095
    # Whether links of release 0.1's form (the address inside) are still accepted.
    legacy_tokens: bool = True


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
    # A cap on tries of one message; None: retried until `retry_for` has passed.
    max_attempts: int | None = None
    # Deferred mail (4xx, 429, 5xx) is retried for this long after its first deferral, across
    # runs, like an MTA's queue lifetime (Postfix: 5 days); then it fails.
    retry_for: float = 86400.0
    # How long `send` itself stays to retry deferred mail; later retries are for the next run.
    wait_for_retries: float = 900.0
    pause_after_failures: int = 10
    # The SMTP envelope sender (where bounces go); the From address when None.
    return_path: str | None = None
    # Each message's envelope sender names its recipient: <local>+<token>@<domain>.
    verp: bool = False
    # Gmail's Feedback-ID sender part; the header is "<issue>:<feedback_id>".
    feedback_id: str | None = None
    # An fsync per ledger commit (SQLite synchronous=FULL): survives a power cut, not only a
    # crash of the process. Cost measured in bench/bench_durable.py (README: Sending).
    durable: bool = False
    # `send` and scheduled sends need an approval (`newsletter approve`) of exactly the content
    # sent; `approvers` names who may give it (anyone when empty).
    require_approval: bool = False
    approvers: tuple[str, ...] = ()


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
    # "light dark": the theme's dark palette is declared and used; "light": clients are told the
    # design is light-only (those that honour color-scheme leave it as it is).
    color_scheme: Literal["light dark", "light"] = "light dark"
    # A logo drawn for dark backgrounds, shown instead of `logo` in dark mode.
    logo_dark: str | None = None
    # The masthead: "brand" (logo on a block of the brand colour), "plain" (on white, a brand
    # rule below) or "logo" (the logo alone); the subject as its heading or not.
    masthead: Literal["brand", "plain", "logo"] = "brand"
    masthead_subject: bool = True
    # The default item layout (an issue or item can choose another) and the contents list.
    layout: Literal["above", "left", "right", "thumbnail"] = "above"
    in_this_issue: bool = False
    reviewers: tuple[str, ...] = ()
    list_id: str | None = None
    unsubscribe: UnsubscribeSettings = field(default_factory=UnsubscribeSettings)
    transport: TransportSettings = field(default_factory=TransportSettings)
    sending: SendingSettings = field(default_factory=SendingSettings)
    links: LinkTagging | None = None
    # `[links] count_clicks`: links in the email go through `<base_url>c/<issue>/<n>` (clicks.py).
    count_clicks: bool = False
    serve: ServeSettings = field(default_factory=ServeSettings)
    inbox: InboxSettings | None = None
    dkim: DkimSettings | None = None
    store: StoreSettings = field(default_factory=StoreSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    signup: SignupSettings = field(default_factory=SignupSettings)
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

    @property
    def cache_dir(self) -> Path:
        """`.newsletter-cache/`: safe to delete at any time; everything in it is rebuilt."""
        return self.root / CACHE_DIR_NAME

    def database(self, environ: Mapping[str, str] = os.environ) -> StoreUrl:
        """Where the store is: `NEWSLETTER_DATABASE_URL` if set, else `[store] url` (default: the
        project's newsletter.db). ConfigError naming the variable or key if it cannot be used."""
        return _resolve_store(self.store.url, self.root, environ)

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
_LOCALE = re.compile(r"^[a-z]{2,3}(?:_[A-Z]{2})?(?:-(?:formal|informal))?$")
KNOWN_TABLES = ("newsletter", "footer", "unsubscribe", "transport", "sending", "links", "serve",
                "inbox", "dkim", "store", "schedule", "signup")  # fmt: skip


# Characters that end a header line or hide text in some reader (C0/C1 controls, Unicode line
# and paragraph separators, bidi overrides): never part of a configured address.
_ADDRESS_FORBIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)


def address_problem(value: str) -> str | None:
    """Why `value` is not exactly one address `Name <addr@host>` or `addr@host`; None if it is.

    A list (`a@b, c@d`), a second `<...>`, or a control or line-separator character is refused,
    never reinterpreted: a header must say what the editor wrote.
    """
    forbidden = _ADDRESS_FORBIDDEN.search(value)
    if forbidden:
        return (
            "must not contain control or line-separator characters "
            f"(found U+{ord(forbidden.group()):04X})"
        )
    found = [pair for pair in getaddresses([value]) if any(pair)]
    if len(found) > 1:
        return f"must be exactly one address, not {len(found)} ({value!r})"
    if len(found) != 1 or _one_address(value) is None:
        return "is not an email address like 'Name <name@example.org>'"
    return None


def parse_address(value: str) -> Address | None:
    """`Name <addr@host>` or a bare address, as an `Address`; None unless it is exactly one."""
    return None if address_problem(value) else _one_address(value)


def _one_address(value: str) -> Address | None:
    name, addr = parseaddr(value)
    if not addr or "@" not in addr or addr.count("@") != 1:
        return None
    local, _, domain = addr.rpartition("@")
    if not local or "." not in domain:
        return None
    try:
        address = Address(display_name=name, addr_spec=addr)
    except (ValueError, IndexError):
        return None
    # What we would write must read back as the same single address.
    if getaddresses([str(address)]) != [(name, addr)]:
        return None
    return address


def _check_address(value: str) -> str | None:
    return address_problem(value)


def _check_api_url(value: str) -> str | None:
    """https://, or http:// only to this machine (a test server): an API key never goes in clear."""
    if re.match(r"^https://[^\s/]+", value):
        return None
    if not re.match(r"^http://[^\s/]+", value):
        return "must be an https:// URL"
    try:
        host = urlsplit(value).hostname or ""
    except ValueError:
        return "must be an https:// URL"
    if not _is_loopback(host):
        return (
            "must be https:// (plain http:// would send the API key in clear; it is allowed "
            "only to this machine: localhost, 127.0.0.1 or ::1)"
        )
    return None


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def _check_register(value: str) -> str | None:
    if value not in ("formal", "informal"):
        return "must be 'formal' (u, Sie, vous) or 'informal' (je, du, tu)"
    return None


def _with_register(locale: str, register: str | None) -> str:
    """`locale` with the register named apart (`register = "formal"`) folded in: nl-formal."""
    if not register or locale.endswith(("-formal", "-informal")):
        return locale
    return f"{locale}-{register}"


def _check_locale(value: str) -> str | None:
    if not _LOCALE.match(value):
        return "must be a locale code like 'en', 'nl' or 'pt_BR'"
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
    except RecursionError as err:
        # tomllib recurses once per nested inline table or array.
        raise ConfigError(
            [
                Problem(
                    "is nested too deeply (tables or arrays inside each other)",
                    file=path,
                    line=_deepest_line(text),
                )
            ]
        ) from err
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


def _deepest_line(text: str, limit: int = 100) -> int | None:
    """The first line where `{` and `[` nest deeper than `limit` (strings roughly skipped)."""
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        for char in re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", line.split("#", 1)[0]):
            if char in "{[":
                depth += 1
                if depth > limit:
                    return number
            elif char in "}]":
                depth = max(0, depth - 1)
    return None


def store_location(root: Path, environ: Mapping[str, str] = os.environ) -> StoreUrl:
    """Where the project at `root` keeps its store, reading only `[store]` of newsletter.toml
    (for commands that need nothing else of it): like `Settings.database`."""
    path = root / CONFIG_NAME
    table: object = None
    text = ""
    if not environ.get(STORE_ENV_NAME, "").strip() and path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
            table = tomllib.loads(text).get("store")
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            load_settings(root)  # reports the problem with its line
    problems: list[Problem] = []
    store = parse_store_table(TableReader("store", table, path=path, text=text, problems=problems))
    if problems:
        raise ConfigError(problems)
    return _resolve_store(store.url, root, environ)


def _resolve_store(url: str, root: Path, environ: Mapping[str, str]) -> StoreUrl:
    override = environ.get(STORE_ENV_NAME, "").strip()
    try:
        return parse_store_url(
            override or url,
            root=root,
            origin=STORE_ENV_NAME if override else "store.url",
            from_environment=bool(override),
            environ=environ,
        )
    except StoreUrlError as err:
        if override:
            raise ConfigError([Problem(str(err))]) from None
        message = str(err).removeprefix("store.url: ")
        problem = Problem(message, file=root / CONFIG_NAME, key="store.url")
        raise ConfigError([problem]) from None


def settings_from_mapping(
    root: Path, data: Mapping[str, Any], *, path: Path, text: str = ""
) -> Settings:
    """Validate parsed TOML `data` (the text is used for line numbers); `ConfigError` lists
    every problem, each with file, line and key."""
    problems: list[Problem] = []
    warnings: list[str] = []

    def table(name: str, *, required: bool = False) -> TableReader:
        return TableReader(
            name,
            data.get(name),
            path=path,
            text=text,
            problems=problems,
            warnings=warnings,
            required=required,
        )

    top = TableReader("", data, path=path, text=text, problems=problems, warnings=warnings)
    for table_name in data:
        if table_name not in KNOWN_TABLES:
            suggestion = difflib.get_close_matches(table_name, KNOWN_TABLES, n=1)
            hint = f" (did you mean '[{suggestion[0]}]'?)" if suggestion else ""
            top.warning(table_name, f"unknown table '[{table_name}]' is ignored{hint}")

    main = _read_newsletter(table("newsletter", required=True))
    footer = _read_footer(table("footer", required=True))
    unsubscribe = _read_unsubscribe(table("unsubscribe"))
    transport = _read_transport(table("transport"))
    sending = _read_sending(table("sending"))
    links_table = table("links")
    count_clicks = parse_count_clicks(links_table, base_url=main.get("base_url"))
    links = parse_links_table(links_table, newsletter_name=main.get("name") or "")
    serve = parse_serve_table(table("serve"))
    inbox = parse_inbox_table(table("inbox"))
    dkim = parse_dkim_table(table("dkim"))
    store = parse_store_table(table("store"))
    schedule = parse_schedule_table(table("schedule"))
    signup = parse_signup_table(table("signup"))

    if problems:
        raise ConfigError(problems)
    assert footer is not None
    sender = parse_address(main["from"])
    assert sender is not None
    reply_to = main.get("reply_to")
    return Settings(
        root=root,
        name=main["name"],
        sender=sender,
        reply_to=parse_address(reply_to) if reply_to else None,
        locale=_with_register(main.get("locale") or "en", main.get("register")),
        base_url=main["base_url"].rstrip("/") + "/" if main.get("base_url") else None,
        logo=main.get("logo"),
        logo_width=int(main["logo_width"]) if main.get("logo_width") else 160,
        brand_color=main.get("brand_color") or "#1b6b5a",
        text_color=main.get("text_color") or "#1f2933",
        background_color=main.get("background_color") or "#f2f4f3",
        color_scheme="light" if main.get("color_scheme") == "light" else "light dark",
        logo_dark=main.get("logo_dark"),
        masthead=main.get("masthead") or "brand",
        masthead_subject=main.get("masthead_subject") is not False,
        layout=main.get("layout") or "above",
        in_this_issue=bool(main.get("in_this_issue")),
        reviewers=tuple(main.get("reviewers") or ()),
        list_id=main.get("list_id"),
        footer=footer,
        unsubscribe=unsubscribe,
        transport=transport,
        sending=sending,
        links=links,
        count_clicks=count_clicks,
        serve=serve,
        inbox=inbox,
        dkim=dkim,
        store=store,
        schedule=schedule,
        signup=signup,
        warnings=tuple(warnings),
    )


def _read_newsletter(main: TableReader) -> dict[str, Any]:
    """The `[newsletter]` table's values by key (None where absent or invalid)."""
    values: dict[str, Any] = {
        "name": main.string("name", required=True),
        "from": main.string("from", required=True, check=_check_address),
        "reply_to": main.string("reply_to", check=_check_address),
        "locale": main.string("locale", check=_check_locale),
        "register": main.string("register", check=_check_register),
        "base_url": main.string("base_url", check=_check_url),
        "logo": main.string("logo"),
        "logo_width": main.number("logo_width", minimum=16, integer=True),
        "brand_color": main.string("brand_color", check=_check_colour),
        "text_color": main.string("text_color", check=_check_colour),
        "background_color": main.string("background_color", check=_check_colour),
        "list_id": main.string("list_id"),
        "color_scheme": main.string("color_scheme", check=_check_color_scheme),
        "logo_dark": main.string("logo_dark"),
        "masthead": main.string("masthead", check=_one_of("brand", "plain", "logo")),
        "masthead_subject": main.boolean("masthead_subject"),
        "layout": main.string("layout", check=_one_of("above", "left", "right", "thumbnail")),
        "in_this_issue": main.boolean("in_this_issue"),
    }
    reviewers: list[str] = []
    for index, reviewer in enumerate(main.get("reviewers", list) or []):
        reason = address_problem(reviewer) if isinstance(reviewer, str) else "is not text"
        if reason:
            main.problem("reviewers", f"entry {index + 1} ({reviewer!r}) {reason}")
        else:
            reviewers.append(reviewer)
    values["reviewers"] = reviewers
    main.finish()
    return values


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if value in choices:
            return None
        return "must be one of " + ", ".join(f"'{choice}'" for choice in choices)

    return check


def _check_color_scheme(value: str) -> str | None:
    return None if value in ("light dark", "light") else "must be 'light dark' or 'light'"


def _read_footer(foot: TableReader) -> Footer | None:
    """The `[footer]` table (None when its address is missing or invalid)."""
    address = foot.string("address", required=True, multiline=True)
    contact = foot.string("contact")
    note = foot.string("note", multiline=True)
    social: list[SocialLink] = []
    networks = foot.sub("social")
    for network, url in networks.data.items():
        networks.seen.add(network)
        if network not in SOCIAL_NETWORKS:
            suggestion = difflib.get_close_matches(network, SOCIAL_NETWORKS, n=1)
            hint = f" (did you mean '{suggestion[0]}'?)" if suggestion else ""
            networks.problem(
                network, f"unknown network; use one of {', '.join(SOCIAL_NETWORKS)}{hint}"
            )
        elif not isinstance(url, str) or _check_url(url):
            networks.problem(network, "must be an http(s) URL")
        else:
            social.append(SocialLink(network, url))
    partners: list[Partner] = []
    for index, entry in enumerate(foot.get("partners", list) or []):
        key = f"partners[{index + 1}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("logo"), str):
            foot.problem(key, "needs at least a 'logo' (and a 'name')")
            continue
        unknown = set(entry) - {"name", "logo", "url"}
        if unknown:
            foot.problem(key, f"unknown keys {sorted(unknown)}")
        url = entry.get("url")
        if url is not None and (not isinstance(url, str) or _check_url(url)):
            foot.problem(key, "url must be an http(s) URL")
            continue
        partners.append(Partner(str(entry.get("name", "")), entry["logo"], url))
    foot.finish()
    if address is None:
        return None
    return Footer(
        address=address.strip(),
        contact=contact,
        social=tuple(social),
        partners=tuple(partners),
        note=note,
    )


def _read_unsubscribe(unsub: TableReader) -> UnsubscribeSettings:
    settings = UnsubscribeSettings(
        url=unsub.string("url", check=_check_https_url),
        mailto=unsub.string("mailto", check=_check_address),
        secret_env=unsub.string("secret_env", check=check_env_name) or DEFAULT_SECRET_ENV,
    )
    token_days = unsub.number("token_days", minimum=0, maximum=36500, integer=True)
    legacy = unsub.boolean("legacy_tokens")
    settings = dataclasses.replace(
        settings,
        token_days=settings.token_days if token_days is None else int(token_days),
        legacy_tokens=settings.legacy_tokens if legacy is None else legacy,
    )
    unsub.finish()
    return settings


def _read_transport(trans: TableReader) -> TransportSettings:
    """The `[transport]` table; a provider's own settings are checked here, at load time, by the
    rules of the provider registry (providers.py)."""
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
    port = trans.number("port", minimum=1, maximum=65535, integer=True)
    for secret_key in ("api_key", "token", "secret"):
        trans.refuse_secret(
            secret_key,
            "secrets do not belong in newsletter.toml; set the key in the environment "
            "variable named by 'api_key_env' (each provider has a default name)",
        )
    trans.refuse_secret(
        "password",
        "secrets do not belong in newsletter.toml; set the password in the environment "
        "variable named by 'password_env' (default NEWSLETTER_SMTP_PASSWORD)",
    )
    defaults = TransportSettings()
    transport = TransportSettings(
        kind=kind,
        path=trans.string("path") or defaults.path,
        host=trans.string("host") or defaults.host,
        port=int(port) if port is not None else (465 if security == "tls" else defaults.port),
        security=security,
        username=trans.string("username"),
        password_env=trans.string("password_env", check=check_env_name) or defaults.password_env,
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
        api_url=trans.string("api_url", check=_check_api_url),
        api_key_env=trans.string("api_key_env", check=check_env_name),
        sandbox=bool(trans.boolean("sandbox")),
        region=trans.string("region"),
        domain=trans.string("domain"),
        message_stream=trans.string("message_stream"),
    )
    provider = PROVIDERS.get(kind)
    if provider is not None:
        found = setting_problems(
            provider,
            region=transport.region,
            domain=transport.domain,
            sandbox=transport.sandbox,
            api_key_env=transport.api_key_env,
        )
        for problem in found:
            trans.problem(problem.key, problem.message)
    uses = provider.uses if provider is not None else frozenset()
    for key in PROVIDER_SETTINGS:
        if key in trans.data and key not in uses:
            readers = [p.kind for p in PROVIDERS.values() if key in p.uses]
            trans.warning(
                key,
                f"'{trans.key_name(key)}' is not used by the {kind} transport (only by "
                f"{', '.join(readers)}); it is ignored",
            )
    trans.finish()
    return transport


def _check_return_path(value: str) -> str | None:
    address = parse_address(value)
    if address is None or address.display_name or address.addr_spec != value.strip():
        return "must be a bare email address such as bounces@example.org"
    if "+" in address.username:
        return "must not contain '+' (VERP adds +<token> to it)"
    return None


def _check_feedback_id(value: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9._-]+(?::[A-Za-z0-9._-]+){0,2}", value):
        return "must be letters, digits, '.', '_' or '-', in at most three ':'-separated parts"
    return None


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _approvers(send: TableReader) -> tuple[str, ...]:
    """`[sending] approvers`: names on one line each, no duplicates."""
    names: list[str] = []
    for index, name in enumerate(send.get("approvers", list) or []):
        if not isinstance(name, str) or not name.strip():
            send.problem("approvers", f"entry {index + 1} ({name!r}) must be a name")
        elif _ADDRESS_FORBIDDEN.search(name) or len(name) > 200:
            send.problem(
                "approvers", f"entry {index + 1} ({name!r}) must be a short name on one line"
            )
        elif name.strip().casefold() in (n.casefold() for n in names):
            send.problem("approvers", f"entry {index + 1} ({name!r}) is listed twice")
        else:
            names.append(name.strip())
    return tuple(names)


def _read_sending(send: TableReader) -> SendingSettings:
    defaults = SendingSettings()
    settings = SendingSettings(
        rate_per_second=send.number("rate_per_second") or 0.0,
        rate_per_hour=send.number("rate_per_hour") or 0.0,
        max_attempts=_whole(send.number("max_attempts", minimum=1, integer=True)),
        retry_for=_or(
            send.duration("retry_for", minimum=60, maximum=30 * 86400), defaults.retry_for
        ),
        wait_for_retries=_or(send.duration("wait_for_retries"), defaults.wait_for_retries),
        pause_after_failures=int(
            send.number("pause_after_failures", minimum=1, integer=True)
            or defaults.pause_after_failures
        ),
        return_path=send.string("return_path", check=_check_return_path),
        verp=bool(send.boolean("verp")),
        feedback_id=send.string("feedback_id", check=_check_feedback_id),
        durable=bool(send.boolean("durable")),
        require_approval=bool(send.boolean("require_approval")),
        approvers=_approvers(send),
    )
    if settings.verp and settings.return_path is None:
        send.problem("verp", "needs return_path (the bounce mailbox the tokens are added to)")
    send.finish()
    return settings
