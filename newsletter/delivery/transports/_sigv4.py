"""AWS Signature Version 4 for httpx, and AWS credentials from the standard places.

Credentials are looked for, in this order (the first complete set wins):

1. the environment: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN` for
   temporary credentials);
2. the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`),
   profile `AWS_PROFILE` (default `default`): `aws_access_key_id`, `aws_secret_access_key`,
   `aws_session_token`;
3. the shared config file (`AWS_CONFIG_FILE`, default `~/.aws/config`), section `[default]` or
   `[profile NAME]`, the same keys.

The region is `[transport] region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `region`
in the profile's section of the config file.

Not supported (a clear `ConfigError` says so): profiles that assume a role (`role_arn`), SSO
profiles, `credential_process`, web identity tokens, and the EC2/ECS instance metadata services.
Export temporary credentials into the environment instead, e.g. with
`aws configure export-credentials --format env`. Credentials are read once; expired session
tokens are not refreshed.

The signer follows botocore's `SigV4Auth` (the tests compare the two on the same requests): the
path is normalised (dot segments and repeated slashes removed) and URI-encoded once more, the
query is sorted, the payload is hashed, and the signed headers are `host`, `content-type`,
`content-md5` and every `x-amz-*` header: headers an intermediary may rewrite (`accept-encoding`,
`connection`, `user-agent`) are left out on purpose.
"""

from __future__ import annotations

import configparser
import functools
import hashlib
import hmac
import os
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote

import httpx

from ...errors import ConfigError, Problem

__all__ = [
    "AwsCredentials",
    "SigV4Auth",
    "canonical_request",
    "load_credentials",
    "resolve_region",
    "sign_request",
    "signature_fields",
]

ALGORITHM = "AWS4-HMAC-SHA256"
_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_SIGNED_ALWAYS = frozenset({"host", "content-type", "content-md5"})
_SIGNATURE_FIELDS = ("authorization", "x-amz-date", "x-amz-security-token")
_UNSUPPORTED_PROFILE_KEYS = (
    "role_arn",
    "source_profile",
    "credential_source",
    "credential_process",
    "sso_session",
    "sso_start_url",
    "sso_account_id",
    "web_identity_token_file",
)


@dataclass(frozen=True)
class AwsCredentials:
    """An access key pair (and session token); `source` says where it came from, for messages."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    source: str = "environment"


# --- credentials and region ------------------------------------------------------------------


def _config_error(
    message: str, key: str = "transport.kind", config_path: Path | None = None
) -> ConfigError:
    return ConfigError([Problem(message, file=config_path, key=key)])


def _file(environ: Mapping[str, str], variable: str, default: str, home: Path) -> Path:
    value = environ.get(variable, "").strip()
    if value:
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path.cwd() / path
    return home / ".aws" / default


def _read_ini(path: Path) -> configparser.RawConfigParser | None:
    """The parsed file, None when it does not exist; `ConfigError` when it cannot be read."""
    if not path.is_file():
        return None
    parser = configparser.RawConfigParser()
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError, configparser.Error) as err:
        raise _config_error(f"cannot read the AWS file {path}: {err}") from err
    return parser


def _section(parser: configparser.RawConfigParser, profile: str, config_file: bool) -> str | None:
    """The section of `profile`: `[name]` in the credentials file, `[profile name]` in config."""
    names = [profile] if not config_file or profile == "default" else []
    if config_file:
        names.append(f"profile {profile}")
    return next((name for name in names if parser.has_section(name)), None)


def _profile_credentials(
    parser: configparser.RawConfigParser, section: str, path: Path, profile: str
) -> AwsCredentials | None:
    values = {key.lower(): value.strip() for key, value in parser.items(section)}
    access = values.get("aws_access_key_id", "")
    secret = values.get("aws_secret_access_key", "")
    if access and secret:
        token = values.get("aws_session_token") or values.get("aws_security_token") or None
        return AwsCredentials(access, secret, token, f"profile '{profile}' in {path}")
    if access or secret:
        missing = "aws_secret_access_key" if access else "aws_access_key_id"
        raise _config_error(f"profile '{profile}' in {path} has no {missing}")
    unsupported = [key for key in _UNSUPPORTED_PROFILE_KEYS if key in values]
    if unsupported:
        raise _config_error(
            f"profile '{profile}' in {path} uses {unsupported[0]}, which newsletter does not "
            "support; put static or temporary keys in the environment instead "
            f"(e.g. `aws configure export-credentials --profile {profile} --format env`)"
        )
    return None


def load_credentials(
    environ: Mapping[str, str] = os.environ,
    *,
    home: Path | None = None,
    config_path: Path | None = None,
) -> AwsCredentials:
    """The AWS credentials from the environment or the shared files (see the module docstring).

    Raises `ConfigError` naming the variable, file or profile when nothing usable is found
    (`config_path`, the project's newsletter.toml, is named in it).
    """
    try:
        return _load_credentials(environ, home if home is not None else Path.home())
    except ConfigError as err:
        if config_path is None:
            raise
        raise ConfigError(
            [Problem(p.message, file=config_path, key=p.key) for p in err.problems]
        ) from err


def _load_credentials(environ: Mapping[str, str], home: Path) -> AwsCredentials:
    access = environ.get("AWS_ACCESS_KEY_ID", "").strip()
    secret = environ.get("AWS_SECRET_ACCESS_KEY", "").strip()
    if access and secret:
        token = (
            environ.get("AWS_SESSION_TOKEN", "").strip()
            or environ.get("AWS_SECURITY_TOKEN", "").strip()
            or None
        )
        return AwsCredentials(access, secret, token, "environment")
    if access or secret:
        present, missing = (
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            if access
            else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        )
        raise _config_error(
            f"{present} is set but {missing} is empty or not set; the ses transport needs both"
        )
    explicit = environ.get("AWS_PROFILE", "").strip() or environ.get("AWS_DEFAULT_PROFILE", "")
    profile = explicit.strip() or "default"
    searched: list[str] = []
    for variable, default, config_file in (
        ("AWS_SHARED_CREDENTIALS_FILE", "credentials", False),
        ("AWS_CONFIG_FILE", "config", True),
    ):
        path = _file(environ, variable, default, home)
        searched.append(str(path))
        parser = _read_ini(path)
        if parser is None:
            continue
        section = _section(parser, profile, config_file)
        if section is None:
            continue
        found = _profile_credentials(parser, section, path, profile)
        if found is not None:
            return found
    if explicit:
        raise _config_error(
            f"AWS_PROFILE names profile '{profile}', which has no keys in {' or '.join(searched)}"
        )
    raise _config_error(
        "the ses transport needs AWS credentials: set AWS_ACCESS_KEY_ID and "
        f"AWS_SECRET_ACCESS_KEY, or add a [default] profile to {searched[0]}"
    )


def resolve_region(
    explicit: str | None, environ: Mapping[str, str] = os.environ, *, home: Path | None = None
) -> str | None:
    """The AWS region: `explicit`, AWS_REGION, AWS_DEFAULT_REGION, or the profile's config."""
    for value in (explicit, environ.get("AWS_REGION"), environ.get("AWS_DEFAULT_REGION")):
        if value and value.strip():
            return value.strip()
    home = home if home is not None else Path.home()
    parser = _read_ini(_file(environ, "AWS_CONFIG_FILE", "config", home))
    if parser is None:
        return None
    profile = (environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE") or "").strip()
    section = _section(parser, profile or "default", True)
    if section is None or not parser.has_option(section, "region"):
        return None
    return parser.get(section, "region").strip() or None


# --- signing ---------------------------------------------------------------------------------


def _normalise_path(path: str) -> str:
    """RFC 3986 dot-segment removal plus collapsed slashes, as AWS services compute it."""
    if not path:
        return "/"
    output: list[str] = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        if segment == "..":
            if output:
                output.pop()
        else:
            output.append(segment)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and output else ""
    return first + "/".join(output) + last


def _canonical_query(query: str) -> str:
    """Sorted `key=value` pairs, each part URI-encoded the AWS way (idempotent when encoded)."""
    if not query:
        return ""
    pairs = []
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def _signed_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased name → canonical value of the headers that are signed."""
    found: dict[str, list[str]] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in _SIGNED_ALWAYS or lower.startswith("x-amz-"):
            found.setdefault(lower, []).append(" ".join(value.split()))
    return {name: ",".join(values) for name, values in sorted(found.items())}


@functools.lru_cache(maxsize=64)
def _canonical_target(target: str) -> tuple[str, str]:
    """(canonical URI, canonical query) of a request target: the same few paths every time."""
    path, _, query = target.partition("?")
    return quote(_normalise_path(path), safe="/~"), _canonical_query(query)


def _canonical(method: str, target: str, signed: Mapping[str, str], body: bytes) -> tuple[str, str]:
    names = ";".join(signed)
    uri, query = _canonical_target(target)
    lines = [
        method.upper(),
        uri,
        query,
        "".join(f"{name}:{value}\n" for name, value in signed.items()),
        names,
        hashlib.sha256(body).hexdigest(),
    ]
    return "\n".join(lines), names


def canonical_request(
    method: str, raw_path: bytes, headers: httpx.Headers, body: bytes
) -> tuple[str, str]:
    """(the canonical request, the signed header names joined with `;`)."""
    return _canonical(
        method, raw_path.decode("ascii"), _signed_headers(headers.multi_items()), body
    )


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


@functools.lru_cache(maxsize=8)
def _signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    """The key derived for one day, region and service (four HMACs): the same all day."""
    key = _hmac(("AWS4" + secret).encode("utf-8"), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def _authorization(
    method: str,
    target: str,
    fields: Iterable[tuple[str, str]],
    body: bytes,
    credentials: AwsCredentials,
    region: str,
    service: str,
    timestamp: str,
) -> str:
    """The `Authorization` value for a request with these header fields (X-Amz-Date included)."""
    canonical, names = _canonical(method, target, _signed_headers(fields), body)
    day = timestamp[:8]
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        (ALGORITHM, timestamp, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest())
    )
    key = _signing_key(credentials.secret_key, day, region, service)
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    return (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={names}, Signature={signature}"
    )


def sign_request(
    request: httpx.Request,
    credentials: AwsCredentials,
    region: str,
    service: str,
    now: datetime,
) -> None:
    """Add `X-Amz-Date`, `X-Amz-Security-Token` (if any) and `Authorization` to `request`.

    The body must have been read (`request.read()`); earlier signature headers are replaced,
    so a retried request is signed afresh.
    """
    headers = request.headers
    for name in _SIGNATURE_FIELDS:
        if name in headers:
            del headers[name]
    if "host" not in headers:
        headers["Host"] = request.url.netloc.decode("ascii")
    timestamp = now.astimezone(UTC).strftime(_TIMESTAMP)
    headers["X-Amz-Date"] = timestamp
    if credentials.token:
        headers["X-Amz-Security-Token"] = credentials.token
    headers["Authorization"] = _authorization(
        request.method,
        request.url.raw_path.decode("ascii"),
        headers.multi_items(),
        request.content,
        credentials,
        region,
        service,
        timestamp,
    )


def signature_fields(
    method: str,
    target: str,
    fields: Sequence[tuple[str, str]],
    body: bytes,
    credentials: AwsCredentials,
    region: str,
    service: str,
    now: datetime,
) -> list[tuple[str, str]]:
    """The fields `sign_request` adds, for a request given as its target (path and query, as
    sent), header fields (Host included) and body: the same signature without httpx objects."""
    return _signature_fields(
        method,
        target,
        fields,
        body,
        credentials,
        region,
        service,
        now.astimezone(UTC).strftime(_TIMESTAMP),
    )


def _signature_fields(
    method: str,
    target: str,
    fields: Sequence[tuple[str, str]],
    body: bytes,
    credentials: AwsCredentials,
    region: str,
    service: str,
    timestamp: str,
) -> list[tuple[str, str]]:
    kept = [(n, v) for n, v in fields if n.lower() not in _SIGNATURE_FIELDS]
    added = [("X-Amz-Date", timestamp)]
    if credentials.token:
        added.append(("X-Amz-Security-Token", credentials.token))
    authorization = _authorization(
        method, target, [*kept, *added], body, credentials, region, service, timestamp
    )
    return [*added, ("Authorization", authorization)]


class SigV4Auth(httpx.Auth):
    """An `httpx.Auth` that signs every request (the clock is injectable for tests)."""

    requires_request_body = True

    def __init__(
        self,
        credentials: AwsCredentials,
        region: str,
        service: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self.clock = clock

    def __repr__(self) -> str:  # never the secret
        return f"SigV4Auth({self.credentials.access_key!r}, {self.region!r}, {self.service!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        now = datetime.fromtimestamp(self.clock(), UTC)
        sign_request(request, self.credentials, self.region, self.service, now)
        yield request

    def fields(
        self, method: str, target: str, fields: Sequence[tuple[str, str]], body: bytes
    ) -> list[tuple[str, str]]:
        """`signature_fields` of a request now (for requests sent without httpx)."""
        timestamp = time.strftime(_TIMESTAMP, time.gmtime(self.clock()))
        return _signature_fields(
            method, target, fields, body, self.credentials, self.region, self.service, timestamp
        )
