"""AWS Signature V4: the signer against AWS's published test vectors and botocore's SigV4Auth,
and the credential and region look-up."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import httpx
import pytest
from botocore.auth import SigV4Auth as BotoSigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from newsletter.delivery.transports._sigv4 import (
    AwsCredentials,
    SigV4Auth,
    canonical_request,
    load_credentials,
    resolve_region,
    sign_request,
    signature_fields,
)
from newsletter.errors import ConfigError

# The credentials and date of AWS's published SigV4 test suite (aws-sig-v4-test-suite).
SUITE_KEY = "AKIDEXAMPLE"
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SUITE_TIME = datetime(2015, 8, 30, 12, 36, 0, tzinfo=UTC)
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+session/token=="


def bare_request(
    method: str, url: str, headers: dict[str, str], body: bytes = b""
) -> httpx.Request:
    """A request carrying only the given headers (httpx adds Content-Length for a body)."""
    request = httpx.Request(method, url, headers=headers, content=body)
    for name in list(request.headers):
        if name.lower() not in {k.lower() for k in headers}:
            del request.headers[name]
    return request


@pytest.mark.parametrize(
    ("method", "body", "expected"),
    [
        # get-vanilla and post-vanilla from AWS's published SigV4 test suite.
        ("GET", b"", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        ("POST", b"", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ],
)
def test_published_test_vectors(method: str, body: bytes, expected: str) -> None:
    request = bare_request(
        method, "https://example.amazonaws.com/", {"Host": "example.amazonaws.com"}
    )
    sign_request(
        request, AwsCredentials(SUITE_KEY, SUITE_SECRET), "us-east-1", "service", SUITE_TIME
    )
    assert request.headers["X-Amz-Date"] == "20150830T123600Z"
    assert request.headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={expected}"
    )


def test_canonical_request_of_the_published_get_vanilla() -> None:
    headers = httpx.Headers({"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"})
    canonical, names = canonical_request("GET", b"/", headers, b"")
    assert names == "host;x-amz-date"
    assert canonical == (
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
        "host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


JSON = {"Content-Type": "application/json"}

CASES = [
    pytest.param(
        "POST",
        "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails",
        JSON,
        b'{"Content":{"Raw":{"Data":"RnJvbTogYQ0KDQpoaQ=="}}}',
        None,
        id="post-json-body",
    ),
    pytest.param(
        "POST",
        "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails",
        JSON,
        '{"FromEmailAddress":"Søren <s@example.org>"}'.encode(),
        TOKEN,
        id="session-token-and-utf8-body",
    ),
    pytest.param(
        "GET",
        "https://email.us-east-1.amazonaws.com/v2/email/suppression/addresses"
        "?Reason=COMPLAINT&PageSize=100&Reason=BOUNCE&NextToken=abc%2Bdef%2F%3D%3D",
        {},
        b"",
        None,
        id="query-string-sorted-repeated-encoded",
    ),
    pytest.param(
        "GET",
        "https://email.us-east-1.amazonaws.com/v2/email/suppression/addresses/"
        "j%C3%B6rg%40b%C3%BCcher.example",
        {},
        b"",
        TOKEN,
        id="unicode-path",
    ),
    pytest.param(
        "GET",
        "https://email.us-east-1.amazonaws.com/v2//email/./account/../account",
        {},
        b"",
        None,
        id="dot-segments-and-double-slashes",
    ),
    pytest.param(
        "POST",
        "http://127.0.0.1:8443/v2/email/outbound-emails?x=1",
        {"Content-Type": "application/json", "X-Amz-Meta-Note": "  two   spaces  "},
        b"",
        None,
        id="loopback-port-empty-body-header-whitespace",
    ),
]


@pytest.mark.parametrize(("method", "url", "headers", "body", "token"), CASES)
def test_same_signature_as_botocore(
    method: str, url: str, headers: dict[str, str], body: bytes, token: str | None
) -> None:
    when = datetime(2026, 11, 3, 8, 15, 42, tzinfo=UTC)
    mine = httpx.Request(method, url, headers={**headers, "User-Agent": "newsletter"}, content=body)
    sign_request(
        mine, AwsCredentials("AKIAEXAMPLE", "secret/Key+1", token), "eu-west-1", "ses", when
    )

    # botocore signs every header but a few (user-agent among them); give it the same ones.
    theirs = AWSRequest(
        method,
        str(mine.url),
        headers={
            "Host": mine.headers["Host"],
            "User-Agent": "newsletter",
            **headers,
        },
        data=body,
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        BotoSigV4Auth(
            Credentials("AKIAEXAMPLE", "secret/Key+1", token), "ses", "eu-west-1"
        ).add_auth(theirs)

    assert mine.headers["Authorization"] == theirs.headers["Authorization"]
    assert mine.headers["X-Amz-Date"] == theirs.headers["X-Amz-Date"]
    assert mine.headers.get("X-Amz-Security-Token") == theirs.headers.get("X-Amz-Security-Token")


@pytest.mark.parametrize(("method", "url", "headers", "body", "token"), CASES)
def test_signing_header_fields_gives_botocores_signature(
    method: str, url: str, headers: dict[str, str], body: bytes, token: str | None
) -> None:
    """The direct path signs a request given as target, fields and body (no httpx objects):
    the same signature as botocore's, on two days (the derived key is cached per day)."""
    parsed = httpx.URL(url)
    fields = [("Host", parsed.netloc.decode()), ("User-Agent", "newsletter"), *headers.items()]
    creds = AwsCredentials("AKIAEXAMPLE", "secret/Key+1", token)
    for when in (
        datetime(2026, 11, 3, 8, 15, 42, tzinfo=UTC),
        datetime(2026, 11, 4, 0, 0, 1, tzinfo=UTC),
    ):
        added = dict(
            signature_fields(
                method, parsed.raw_path.decode(), fields, body, creds, "eu-west-1", "ses", when
            )
        )
        theirs = AWSRequest(method, url, headers=dict(fields), data=body)
        naive = when.replace(tzinfo=None)
        with mock.patch("botocore.auth.get_current_datetime", return_value=naive):
            BotoSigV4Auth(
                Credentials("AKIAEXAMPLE", "secret/Key+1", token), "ses", "eu-west-1"
            ).add_auth(theirs)
        assert added["Authorization"] == theirs.headers["Authorization"]
        assert added["X-Amz-Date"] == theirs.headers["X-Amz-Date"]
        assert added.get("X-Amz-Security-Token") == theirs.headers.get("X-Amz-Security-Token")


def test_resigning_replaces_the_old_signature() -> None:
    request = httpx.Request("POST", "https://email.us-east-1.amazonaws.com/v2/x", content=b"{}")
    creds = AwsCredentials("AKIAEXAMPLE", "secret", TOKEN)
    sign_request(request, creds, "us-east-1", "ses", datetime(2026, 1, 1, tzinfo=UTC))
    first = request.headers["Authorization"]
    sign_request(request, creds, "us-east-1", "ses", datetime(2026, 1, 2, tzinfo=UTC))
    assert request.headers.get_list("Authorization") != [first]
    assert len(request.headers.get_list("Authorization")) == 1
    assert len(request.headers.get_list("X-Amz-Security-Token")) == 1
    assert request.headers["X-Amz-Date"] == "20260102T000000Z"


def test_auth_signs_a_real_request_with_the_injected_clock() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    auth = SigV4Auth(AwsCredentials("AKIAEXAMPLE", "secret"), "eu-west-1", "ses", clock=lambda: 0.0)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        client.post(
            "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails",
            json={"a": 1},
            auth=auth,
        )
    (request,) = seen
    assert request.headers["X-Amz-Date"] == "19700101T000000Z"
    assert (
        "Credential=AKIAEXAMPLE/19700101/eu-west-1/ses/aws4_request"
        in request.headers["Authorization"]
    )
    assert "secret" not in repr(auth)


# --- credentials -----------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_environment_credentials_come_first(tmp_path: Path) -> None:
    write(
        tmp_path / ".aws" / "credentials",
        "[default]\naws_access_key_id = FILE\naws_secret_access_key = s\n",
    )
    env = {"AWS_ACCESS_KEY_ID": "ENV", "AWS_SECRET_ACCESS_KEY": "x", "AWS_SESSION_TOKEN": "t"}
    found = load_credentials(env, home=tmp_path)
    assert (found.access_key, found.secret_key, found.token, found.source) == (
        "ENV",
        "x",
        "t",
        "environment",
    )
    assert repr(found) == "AwsCredentials(access_key='ENV', source='environment')"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AWS_ACCESS_KEY_ID": "A"}, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is empty"),
        (
            {"AWS_SECRET_ACCESS_KEY": "S"},
            "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is empty",
        ),
        (
            {},
            "the ses transport needs AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_",
        ),
        ({"AWS_PROFILE": "news"}, "AWS_PROFILE names profile 'news', which has no keys"),
    ],
)
def test_missing_credentials_name_what_to_set(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_credentials(env, home=tmp_path)
    assert message in str(caught.value)


def test_profile_from_the_shared_credentials_file(tmp_path: Path) -> None:
    write(
        tmp_path / ".aws" / "credentials",
        "[default]\naws_access_key_id = D\naws_secret_access_key = d\n"
        "[news]\naws_access_key_id = N\naws_secret_access_key = n\naws_session_token = tok\n",
    )
    assert load_credentials({}, home=tmp_path).access_key == "D"
    found = load_credentials({"AWS_PROFILE": "news"}, home=tmp_path)
    assert (found.access_key, found.secret_key, found.token) == ("N", "n", "tok")
    assert found.source == f"profile 'news' in {tmp_path / '.aws' / 'credentials'}"


def test_credentials_file_location_from_the_environment_and_config_file_fallback(
    tmp_path: Path,
) -> None:
    other = write(
        tmp_path / "elsewhere.ini", "[ops]\naws_access_key_id = O\naws_secret_access_key = o\n"
    )
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(other), "AWS_PROFILE": "ops"}
    assert load_credentials(env, home=tmp_path).access_key == "O"
    # A profile only in the config file uses the [profile NAME] section.
    write(
        tmp_path / ".aws" / "config",
        "[profile cfg]\naws_access_key_id = C\naws_secret_access_key = c\n",
    )
    assert load_credentials({"AWS_PROFILE": "cfg"}, home=tmp_path).access_key == "C"


@pytest.mark.parametrize(
    "key", ["role_arn = arn:aws:iam::1:role/x", "sso_session = corp", "credential_process = x"]
)
def test_unsupported_profile_kinds_are_a_clear_error(tmp_path: Path, key: str) -> None:
    write(tmp_path / ".aws" / "config", f"[profile corp]\n{key}\nregion = eu-west-1\n")
    with pytest.raises(ConfigError) as caught:
        load_credentials({"AWS_PROFILE": "corp"}, home=tmp_path)
    assert f"uses {key.split(' =')[0]}, which newsletter does not support" in str(caught.value)
    assert "aws configure export-credentials --profile corp --format env" in str(caught.value)


def test_half_a_key_pair_in_a_profile(tmp_path: Path) -> None:
    write(tmp_path / ".aws" / "credentials", "[default]\naws_access_key_id = D\n")
    with pytest.raises(ConfigError, match="has no aws_secret_access_key"):
        load_credentials({}, home=tmp_path)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path / ".aws" / "credentials", "no section header here\n")
    with pytest.raises(ConfigError, match="cannot read the AWS file"):
        load_credentials({}, home=tmp_path)


def test_region_order(tmp_path: Path) -> None:
    write(
        tmp_path / ".aws" / "config",
        "[default]\nregion = ap-south-1\n[profile eu]\nregion = eu-central-1\n",
    )
    env = {"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "us-east-2"}
    assert resolve_region("eu-west-1", env, home=tmp_path) == "eu-west-1"
    assert resolve_region(None, env, home=tmp_path) == "us-west-2"
    assert resolve_region(None, {"AWS_DEFAULT_REGION": "us-east-2"}, home=tmp_path) == "us-east-2"
    assert resolve_region(None, {}, home=tmp_path) == "ap-south-1"
    assert resolve_region(None, {"AWS_PROFILE": "eu"}, home=tmp_path) == "eu-central-1"
    assert resolve_region(None, {}, home=tmp_path / "nowhere") is None
