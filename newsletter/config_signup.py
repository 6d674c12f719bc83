"""The `[signup]` table: the public sign-up form of `newsletter serve` (double opt-in).

Without the table there is no form (a project that only sends gains no public page by
upgrading); with it, `GET /subscribe` shows the form and `POST /subscribe` takes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config_reader import TableReader, check_env_name

__all__ = [
    "DEFAULT_HASH_KEY_ENV",
    "SIGNUP_FIELD_NAMES_RESERVED",
    "SignupField",
    "SignupSettings",
    "parse_signup_table",
]

DEFAULT_HASH_KEY_ENV = "NEWSLETTER_SIGNUP_HASH_KEY"
# Names the form already uses, or that the honeypot or the consent box take.
SIGNUP_FIELD_NAMES_RESERVED = frozenset(
    {"email", "name", "consent", "website", "lang", "source", "first_name", "last_name"}
)
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")


@dataclass(frozen=True)
class SignupField:
    """An extra field of the form, stored as the subscriber attribute `name`."""

    name: str
    label: str
    required: bool = False


@dataclass(frozen=True)
class SignupSettings:
    """The `[signup]` table. `consent_text` empty: the built-in text of the page's language."""

    enabled: bool = False
    consent_text: str = ""
    consent_version: str = "1"
    fields: tuple[SignupField, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    expire_days: int = 7
    per_client_per_hour: int = 10
    store_client_address: bool = False
    client_hash_env: str = DEFAULT_HASH_KEY_ENV
    welcome: str = "welcome.md"


def _fields(table: TableReader) -> tuple[SignupField, ...]:
    raw = table.value("fields", [])
    if not isinstance(raw, list):
        table.problem(
            "fields", 'must be a list, e.g. ["city"] or [{name = "city", label = "City"}]'
        )
        return ()
    found: list[SignupField] = []
    for entry in raw:
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            table.problem("fields", "each field must be a name or a table with name and label")
            continue
        name = entry.get("name")
        label = entry.get("label", name)
        required = entry.get("required", False)
        unknown = set(entry) - {"name", "label", "required"}
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            table.problem("fields", f"field name {name!r} must be lower-case letters, digits, _")
        elif name in SIGNUP_FIELD_NAMES_RESERVED:
            table.problem("fields", f"field name '{name}' is taken by the form itself")
        elif name in {f.name for f in found}:
            table.problem("fields", f"field '{name}' is listed twice")
        elif not isinstance(label, str) or not label.strip() or "\n" in label:
            table.problem("fields", f"the label of field '{name}' must be text on one line")
        elif not isinstance(required, bool):
            table.problem("fields", f"'required' of field '{name}' must be true or false")
        elif unknown:
            table.problem(
                "fields", f"field '{name}' has unknown keys: {', '.join(sorted(unknown))}"
            )
        else:
            found.append(SignupField(name, label.strip(), required))
    return tuple(found)


def parse_signup_table(table: TableReader) -> SignupSettings:
    """The `[signup]` table as settings; problems go to `table.problems`, each with its key."""
    defaults = SignupSettings()
    if not table.present:
        return defaults
    enabled = table.boolean("enabled")
    consent_text = table.string("consent_text", multiline=True)
    version = table.string("consent_version")
    if version is not None and not _VERSION.match(version):
        table.problem("consent_version", "must be a short label like '2026-12' or 'v2'")
        version = None
    if consent_text and version is None and "consent_version" not in table.data:
        # Proof of consent names the text shown: a changed text needs a new version.
        table.problem("consent_version", "is required with consent_text (e.g. '2026-12')")
    origins = table.value("allowed_origins", [])
    if isinstance(origins, str):
        origins = [origins]
    if not isinstance(origins, list) or not all(
        isinstance(o, str) and _ORIGIN.match(o.rstrip("/")) for o in origins
    ):
        table.problem(
            "allowed_origins",
            "must be a list of origins like ['https://www.example.org'] (scheme and host only)",
        )
        origins = []
    expire = table.number("expire_days", minimum=1, maximum=90, integer=True)
    per_client = table.number("per_client_per_hour", minimum=1, maximum=10000, integer=True)
    store_client = table.boolean("store_client_address")
    hash_env = table.string("client_hash_env", check=check_env_name)
    welcome = table.string("welcome")
    if welcome is not None and (welcome.startswith(("/", "\\")) or ".." in welcome.split("/")):
        table.problem("welcome", "must be a file inside the project, e.g. 'welcome.md'")
        welcome = None
    fields = _fields(table)
    table.finish()
    return SignupSettings(
        enabled=True if enabled is None else enabled,
        consent_text=(consent_text or "").strip(),
        consent_version=version or defaults.consent_version,
        fields=fields,
        allowed_origins=tuple(o.rstrip("/").lower() for o in origins),
        expire_days=int(expire) if expire is not None else defaults.expire_days,
        per_client_per_hour=(
            int(per_client) if per_client is not None else defaults.per_client_per_hour
        ),
        store_client_address=bool(store_client),
        client_hash_env=hash_env or defaults.client_hash_env,
        welcome=welcome or defaults.welcome,
    )
