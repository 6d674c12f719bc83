"""Amazon SES v2 transport against a loopback server that plays SES.

The fake checks every request: its SigV4 signature (recomputed with botocore's signer from what
arrived), the body against the `SendEmailRequest` shape of SES's own service model (converted to
JSON Schema here), and the raw message inside. What every provider shares (full send, crash and
resume, whole-request failures) is tested once in tests/test_transport_contract.py, with
`SesFake` from here.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from botocore.auth import SigV4Auth as BotoSigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from newsletter.config import TransportSettings
from newsletter.delivery.message import MessageTemplate, Personalisation
from newsletter.delivery.sender import send_test
from newsletter.delivery.suppressions import Suppression, SuppressionKind, suppression_source
from newsletter.delivery.transports import describe_transport, make_transport
from newsletter.delivery.transports._sigv4 import AwsCredentials
from newsletter.delivery.transports.base import BatchItem
from newsletter.delivery.transports.ses import (
    SIMULATOR,
    SesTransport,
    send_email_body,
    send_email_json,
)
from newsletter.errors import (
    ConfigError,
    RecipientRejectedError,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from tests.conftest import copy_example_project
from tests.providerfake import FakeRequest, FakeResponse, ProviderFake
from tests.sendkit import SECRET, Person, example_template, token_for

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REGION = "eu-west-1"
MODEL = Path(__file__).resolve().parent / "specs" / "ses" / "service-2.json"


# --- the SES service model as JSON Schema ------------------------------------------------------


def botocore_schema(model: dict[str, Any], root: str) -> dict[str, Any]:
    """JSON Schema (2020-12) of botocore shape `root`: structures closed, lists/strings bounded."""
    shapes = model["shapes"]
    defs: dict[str, Any] = {}

    def convert(name: str) -> dict[str, Any]:
        if name not in defs:
            defs[name] = {}  # placeholder: shapes may be recursive
            defs[name] = schema_of(shapes[name])
        return {"$ref": f"#/$defs/{name}"}

    def schema_of(shape: dict[str, Any]) -> dict[str, Any]:
        kind = shape["type"]
        if kind == "structure":
            out: dict[str, Any] = {
                "type": "object",
                "properties": {m: convert(v["shape"]) for m, v in shape["members"].items()},
                "additionalProperties": False,
            }
            if shape.get("required"):
                out["required"] = shape["required"]
            if shape.get("union"):
                out["maxProperties"] = 1
            return out
        if kind == "list":
            out = {"type": "array", "items": convert(shape["member"]["shape"])}
            if "min" in shape:
                out["minItems"] = shape["min"]
            if "max" in shape:
                out["maxItems"] = shape["max"]
            return out
        if kind == "map":
            return {"type": "object", "additionalProperties": convert(shape["value"]["shape"])}
        if kind == "string":
            out = {"type": "string"}
            if "enum" in shape:
                out["enum"] = shape["enum"]
            if "min" in shape:
                out["minLength"] = shape["min"]
            if "max" in shape:
                out["maxLength"] = shape["max"]
            return out
        if kind == "blob":  # base64 in rest-json
            return {"type": "string", "pattern": r"^[A-Za-z0-9+/]*={0,2}$"}
        if kind in ("integer", "long"):
            return {"type": "integer"}
        if kind in ("double", "float"):
            return {"type": "number"}
        if kind == "boolean":
            return {"type": "boolean"}
        if kind == "timestamp":
            return {"type": ["string", "number"]}
        raise ValueError(f"unknown shape type {kind}")

    top = convert(root)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **top, "$defs": defs}


def ses_validator(root: str) -> Any:
    from jsonschema import Draft202012Validator

    model = json.loads(MODEL.read_text(encoding="utf-8"))
    validator = Draft202012Validator(botocore_schema(model, root))

    def errors(body: object) -> list[str]:
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
            for e in validator.iter_errors(body)
        ]

    return errors


SEND_SCHEMA = ses_validator("SendEmailRequest")


def test_the_converted_schema_catches_wrong_bodies() -> None:
    good = {"Content": {"Raw": {"Data": "RnJvbTogYQ0KDQp4"}}, "Destination": {"ToAddresses": []}}
    assert SEND_SCHEMA(good) == []
    assert SEND_SCHEMA({"Content": {"Raw": {}}})  # Data is required
    assert SEND_SCHEMA({"Content": {"Raw": {"Data": "***"}}})  # not base64
    assert SEND_SCHEMA({"Content": {}, "Destinations": ["a"]})  # unknown member
    assert SEND_SCHEMA({})  # Content is required


# --- the fake ----------------------------------------------------------------------------------


def botocore_authorization(request: FakeRequest, url: str, token: str | None) -> str:
    """The Authorization header botocore computes for what arrived (same headers, same time)."""
    auth = request.header("authorization") or ""
    found = re.search(r"SignedHeaders=([^,]+)", auth)
    signed = found.group(1).split(";") if found else []
    twin = AWSRequest(
        request.method,
        url,
        headers={name: request.headers[name] for name in signed if name in request.headers},
        data=request.body,
    )
    twin.context["timestamp"] = request.header("x-amz-date")
    signer = BotoSigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, token), "ses", REGION)
    # The steps of botocore's add_auth, with the request's own timestamp instead of "now".
    # Private steps of add_auth, which botocore-stubs leave out.
    signer._modify_request_before_signing(twin)  # type: ignore[attr-defined]
    canonical = signer.canonical_request(twin)
    signature = signer.signature(signer.string_to_sign(twin, canonical), twin)
    signer._inject_signature_to_request(twin, signature)  # type: ignore[attr-defined]  # private
    return str(twin.headers["Authorization"])


def header_block(data: bytes) -> dict[str, str]:
    head = data.partition(b"\r\n\r\n")[0].decode("utf-8")
    unfolded = re.sub(r"\r\n[ \t]+", " ", head)
    return {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in unfolded.split("\r\n"))
    }


class SesFake:
    """Plays SES v2: SigV4 checked with botocore, SendEmail (Raw), GetAccount, suppressions."""

    def __init__(self, server: ProviderFake, *, token: str | None = None) -> None:
        self.server = server
        self.token = token
        self.simulator = False  # sandbox: every Destination must be the mailbox simulator
        self.rejected: set[str] = set()
        self.account: dict[str, Any] = {
            "SendingEnabled": True,
            "ProductionAccessEnabled": True,
            "EnforcementStatus": "HEALTHY",
            # A large production account: the pace it sets never slows these tests down
            # (test_requests_are_paced_to_the_accounts_send_rate sets a small one).
            "SendQuota": {
                "Max24HourSend": 5_000_000.0,
                "MaxSendRate": 100_000.0,
                "SentLast24Hours": 0.0,
            },
        }
        self.suppressed: list[dict[str, Any]] = []
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        server.handler = self.handle

    def handle(self, request: FakeRequest) -> FakeResponse:
        fake = self.server
        refused = self.check_signature(request)
        if refused is not None:
            return refused
        if request.method == "GET" and request.path == "/v2/email/account":
            return FakeResponse.json(self.account)
        if request.method == "GET" and request.path == "/v2/email/suppression/addresses":
            return self.suppression_page(request)
        if (request.method, request.path) != ("POST", "/v2/email/outbound-emails"):
            return fake.problem(f"unexpected {request.method} {request.path}")
        if request.header("content-type") != "application/json":
            return fake.problem(f"content type {request.header('content-type')}")
        body = request.json()
        problems = SEND_SCHEMA(body)
        if problems:
            return fake.problem(f"schema: {problems[:3]}")
        return self.send(body)

    def check_signature(self, request: FakeRequest) -> FakeResponse | None:
        auth = request.header("authorization") or ""
        scope = f"Credential={ACCESS_KEY}/{(request.header('x-amz-date') or '')[:8]}/{REGION}/ses/"
        if not auth.startswith("AWS4-HMAC-SHA256 ") or scope not in auth:
            return self.error(403, "UnrecognizedClientException", "The security token included "
                              "in the request is invalid.")  # fmt: skip
        if request.header("x-amz-security-token") != self.token:
            return self.error(403, "UnrecognizedClientException", "bad session token")
        query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, values in request.query.items()
            for v in values
        )
        url = f"{self.server.url}{request.path}" + (f"?{query}" if query else "")
        if auth != botocore_authorization(request, url, self.token):
            return self.error(403, "SignatureDoesNotMatch", "The request signature we "
                              "calculated does not match the signature you provided.")  # fmt: skip
        return None

    @staticmethod
    def error(status: int, kind: str, message: str) -> FakeResponse:
        return FakeResponse.json(
            {"message": message}, status, {"x-amzn-ErrorType": f"{kind}:http://internal/"}
        )

    def send(self, body: dict[str, Any]) -> FakeResponse:
        fake = self.server
        destination = body["Destination"]
        if set(destination) != {"ToAddresses"} or len(destination["ToAddresses"]) != 1:
            return fake.problem(f"destination {destination}")
        (target,) = destination["ToAddresses"]
        try:
            data = base64.b64decode(body["Content"]["Raw"]["Data"], validate=True)
        except binascii.Error:
            return fake.problem("Raw.Data is not base64")
        headers = header_block(data)
        to = email.utils.parseaddr(headers["to"])[1].lower()
        if self.simulator and target != SIMULATOR:
            return fake.problem(f"sandbox send to {target}, not the simulator")
        if not self.simulator and target.lower() != to:
            return fake.problem(f"Destination {target} is not the To header {to}")
        if body["FromEmailAddress"] != email.utils.parseaddr(headers["from"])[1]:
            return fake.problem(f"FromEmailAddress {body['FromEmailAddress']} is not From")
        unsubscribe = headers.get("list-unsubscribe", "")
        if token_for(SECRET, to) not in unsubscribe and "[TEST]" not in headers["subject"]:
            return fake.problem(f"List-Unsubscribe of {to} is not theirs: {unsubscribe}")
        if headers.get("list-unsubscribe-post") != "List-Unsubscribe=One-Click":
            return fake.problem("no List-Unsubscribe-Post")
        if to in self.rejected:
            return self.error(400, "MessageRejected", "Illegal address")
        with self.lock:
            message_id = f"0102019c-{next(self.ids):08d}-ses"
        fake.accept(to, message_id)
        return FakeResponse.json({"MessageId": message_id})

    def suppression_page(self, request: FakeRequest) -> FakeResponse:
        token = request.query.get("NextToken", ["0"])[0]
        start = int(token.split("+")[0]) if token != "0" else 0
        size = int(request.query["PageSize"][0])
        chunk = self.suppressed[start : start + 2]  # two a page, to exercise paging
        answer: dict[str, Any] = {"SuppressedDestinationSummaries": chunk}
        if start + 2 < len(self.suppressed):
            answer["NextToken"] = f"{start + 2}+a/b=="  # characters that need encoding
        assert size == 100
        return FakeResponse.json(answer)


@pytest.fixture
def server() -> Iterator[ProviderFake]:
    with ProviderFake(hang_seconds=3) as running:
        yield running


@pytest.fixture
def ses(server: ProviderFake) -> SesFake:
    return SesFake(server)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    return example_template(copy_example_project(tmp_path_factory.mktemp("ses")))


def settings_for(server: ProviderFake, **changes: Any) -> TransportSettings:
    values: dict[str, Any] = {
        "kind": "ses",
        "api_url": server.url,
        "region": REGION,
        "timeout": 0.4,
        "connections": 2,
    }
    values.update(changes)
    return TransportSettings(**values)


def transport_for(
    server: ProviderFake, token: str | None = None, secret: str = SECRET_KEY, **changes: Any
) -> SesTransport:
    credentials = AwsCredentials(ACCESS_KEY, secret, token)
    return SesTransport(settings_for(server, **changes), credentials=credentials, region=REGION)


def item_for(template: MessageTemplate, person: Person) -> BatchItem:
    return BatchItem(person.email, template.personalise(person), Personalisation(template, person))


def aws_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Credentials in the environment, and a HOME without an ~/.aws folder."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "HOME": str(tmp_path),
        **extra,
    }


# --- tests -------------------------------------------------------------------------------------


def test_each_message_is_the_exact_mime_message_signed(
    server: ProviderFake, template: MessageTemplate
) -> None:
    SesFake(server, token="session-token/+=")
    transport = transport_for(server, token="session-token/+=")
    items = [item_for(template, Person(f"{n}@example.org", f"Reader {n}")) for n in "ab"]
    results = [result for item in items for result in transport.send_batch([item])]
    transport.close()
    assert [r.error for r in results] == [None, None]
    assert [r.receipt.reply for r in results if r.receipt] == [
        "0102019c-00000001-ses",
        "0102019c-00000002-ses",
    ]
    posts = server.posts("/v2/email/outbound-emails")
    for item, request in zip(items, posts, strict=True):
        body = request.json()
        assert base64.b64decode(body["Content"]["Raw"]["Data"]) == item.message.data
        assert body["Destination"] == {"ToAddresses": [item.message.recipient]}
        assert body["FromEmailAddress"] == "news@riverside-garden.example.org"
        assert "ListManagementOptions" not in body  # SES adds no unsubscribe of its own
        assert request.header("x-amz-security-token") == "session-token/+="
        assert "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token" in (
            request.header("authorization") or ""
        )
    assert server.problems == []


def test_sandbox_sends_to_the_mailbox_simulator(
    server: ProviderFake, ses: SesFake, template: MessageTemplate
) -> None:
    ses.simulator = True
    item = item_for(template, Person("ann@example.org"))
    (result,) = transport_for(server, sandbox=True).send_batch([item])
    assert result.receipt is not None and result.receipt.recipient == "ann@example.org"
    body = server.posts()[-1].json()
    assert body["Destination"] == {"ToAddresses": [SIMULATOR]}
    assert base64.b64decode(body["Content"]["Raw"]["Data"]) == item.message.data
    assert "mailbox simulator" in describe_transport_for(server, sandbox=True)
    assert server.problems == []


def describe_transport_for(server: ProviderFake, **changes: Any) -> str:
    return SesTransport.describe_settings(settings_for(server, **changes))


def test_internationalised_address_is_refused_without_a_request(
    server: ProviderFake, ses: SesFake, template: MessageTemplate
) -> None:
    (result,) = transport_for(server).send_batch([item_for(template, Person("jörg@example.org"))])
    assert isinstance(result.error, RecipientRejectedError)
    assert "SMTPUTF8" in str(result.error) and "jörg@example.org" in str(result.error)
    assert server.posts() == []


# The failures every provider shares (429, 5xx, 401/403, malformed or empty answers, no answer)
# are in tests/test_transport_contract.py; these are SES's own (its error types and wording).
@pytest.mark.parametrize(
    ("fault", "error", "text", "retry_after"),
    [
        (SesFake.error(429, "TooManyRequestsException", "Too many requests"),
         TransientDeliveryError, "TooManyRequestsException: Too many requests", None),
        (SesFake.error(400, "ThrottlingException", "Maximum sending rate exceeded."),
         TransientDeliveryError, "throttled", None),
        (SesFake.error(403, "UnrecognizedClientException", "invalid token"),
         TransportUnavailableError, "AWS credentials were refused", None),
        (SesFake.error(400, "AccountSuspendedException", "suspended"),
         TransportUnavailableError, "the account may not send", None),
        (SesFake.error(400, "MailFromDomainNotVerifiedException", "not verified"),
         TransportUnavailableError, "sending domain is not verified", None),
        (SesFake.error(400, "MessageRejected", "Email address is not verified. The following "
                       "identities failed the check in region EU-WEST-1: a@example.org"),
         TransportUnavailableError, "SES sandbox", None),
        (SesFake.error(400, "LimitExceededException", "Daily message quota exceeded."),
         TransportUnavailableError, "sending quota", None),
        (FakeResponse.json({}), UncertainDeliveryError, "without a MessageId", None),
    ],
    ids=["429", "throttling-400", "403", "suspended", "domain", "sandbox-account", "quota",
         "no-id"],
)  # fmt: skip
def test_whole_request_failures_are_typed(
    server: ProviderFake,
    ses: SesFake,
    template: MessageTemplate,
    fault: FakeResponse,
    error: type[Exception],
    text: str,
    retry_after: float | None,
) -> None:
    server.fail_next(fault)
    with pytest.raises(error) as caught:
        transport_for(server).send_batch([item_for(template, Person("a@example.org"))])
    assert text in str(caught.value)
    if isinstance(caught.value, TransientDeliveryError):
        assert caught.value.retry_after == retry_after
    if isinstance(caught.value, TransportUnavailableError) and "403" in str(caught.value):
        assert "from environment" in (caught.value.hint or "")
        assert "ses:SendEmail" in (caught.value.hint or "")
    assert not server.accepted


def test_message_over_the_size_limit_is_refused_without_a_request(
    server: ProviderFake, ses: SesFake, template: MessageTemplate, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.delivery.transports import ses as module

    monkeypatch.setattr(module, "MAX_MESSAGE_BYTES", 100_000)  # the example is ~185 KB
    (result,) = transport_for(server).send_batch([item_for(template, Person("a@example.org"))])
    assert isinstance(result.error, RecipientRejectedError)
    assert "after base64; SES takes at most 100,000" in str(result.error)
    assert server.posts() == []


def test_rejected_message_fails_that_recipient(
    server: ProviderFake, ses: SesFake, template: MessageTemplate
) -> None:
    ses.rejected.add("bad@example.org")
    (result,) = transport_for(server).send_batch([item_for(template, Person("bad@example.org"))])
    assert isinstance(result.error, RecipientRejectedError)
    assert "MessageRejected: Illegal address" in str(result.error)


def test_wrong_secret_is_refused_by_signature(
    server: ProviderFake, ses: SesFake, template: MessageTemplate
) -> None:
    transport = transport_for(server, secret="not-the-secret")
    with pytest.raises(TransportUnavailableError, match="SignatureDoesNotMatch") as caught:
        transport.check()
    assert "not-the-secret" not in str(caught.value) + repr(transport)
    transport_for(server).check()  # the right one passes


def test_check_reads_the_account(server: ProviderFake, ses: SesFake) -> None:
    transport_for(server).check()
    ses.account["SendingEnabled"] = False
    with pytest.raises(TransportUnavailableError, match="sending is disabled"):
        transport_for(server).check()
    ses.account.update(SendingEnabled=True, EnforcementStatus="SHUTDOWN")
    with pytest.raises(TransportUnavailableError, match="shut down"):
        transport_for(server).check()


def test_configuration(settings: Any, server: ProviderFake, tmp_path: Path) -> None:
    configured = replace(settings, transport=settings_for(server))
    made = make_transport(configured, environ=aws_env(tmp_path, AWS_SESSION_TOKEN="tok"))
    assert isinstance(made, SesTransport)
    assert made.credentials == AwsCredentials(ACCESS_KEY, SECRET_KEY, "tok", "environment")
    assert describe_transport(configured) == f"ses {server.url}"
    # The region's endpoint when no api_url is set; the region from AWS_REGION.
    plain = replace(settings, transport=TransportSettings(kind="ses"))
    env = aws_env(tmp_path, AWS_REGION="us-east-2")
    regional = make_transport(plain, environ=env)
    assert isinstance(regional, SesTransport)
    assert regional.api_url == "https://email.us-east-2.amazonaws.com"

    def problem(transport: TransportSettings, environ: dict[str, str]) -> str:
        with pytest.raises(ConfigError) as caught:
            make_transport(replace(settings, transport=transport), environ=environ)
        return str(caught.value)

    assert "transport.region: the ses transport needs an AWS region" in problem(
        TransportSettings(kind="ses"), aws_env(tmp_path)
    )
    assert "'eu-west-1/../x' is not an AWS region name" in problem(
        TransportSettings(kind="ses", region="eu-west-1/../x"), aws_env(tmp_path)
    )
    assert "transport.api_key_env: is not used by the ses transport" in problem(
        TransportSettings(kind="ses", region=REGION, api_key_env="SES_KEY"), aws_env(tmp_path)
    )
    missing = problem(TransportSettings(kind="ses", region=REGION), {"HOME": str(tmp_path)})
    assert "newsletter.toml" in missing and "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in missing


def test_credentials_from_a_profile_in_home(settings: Any, tmp_path: Path) -> None:
    aws = tmp_path / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        "[news]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = s3cret\n"
    )
    (aws / "config").write_text("[profile news]\nregion = eu-central-1\n")
    env = {"HOME": str(tmp_path), "AWS_PROFILE": "news"}
    made = make_transport(replace(settings, transport=TransportSettings(kind="ses")), environ=env)
    assert isinstance(made, SesTransport)
    assert (made.credentials.access_key, made.region) == ("AKIAPROFILE", "eu-central-1")
    assert "s3cret" not in repr(made) and "s3cret" not in repr(made.credentials)


def test_test_send_through_ses(
    server: ProviderFake, ses: SesFake, template: MessageTemplate
) -> None:
    results = send_test(
        template, Person("sam@example.org", "Sam"), ["Rita <rita@example.org>"],
        transport_for(server),
    )  # fmt: skip
    assert [r.error for r in results] == [None]
    body = server.posts()[-1].json()
    assert body["Destination"] == {"ToAddresses": ["rita@example.org"]}
    data = base64.b64decode(body["Content"]["Raw"]["Data"])
    assert header_block(data)["subject"].startswith("[TEST] ")
    assert token_for(SECRET, "sam@example.org") not in data.decode()
    assert server.problems == []


def test_suppressions_page_with_signed_next_tokens(server: ProviderFake, ses: SesFake) -> None:
    ses.suppressed = [
        {"EmailAddress": "b@example.org", "Reason": "BOUNCE", "LastUpdateTime": 1764000000},
        {"EmailAddress": "c@example.org", "Reason": "COMPLAINT", "LastUpdateTime": 1764000100.5},
        {"EmailAddress": "d@example.org", "Reason": "BOUNCE",
         "LastUpdateTime": "2025-11-25T10:00:00Z"},
        {"EmailAddress": "weird@example.org", "Reason": "OTHER", "LastUpdateTime": 0},
    ]  # fmt: skip
    source = transport_for(server).suppression_source()
    found = list(source.fetch(since=datetime(2025, 11, 1, tzinfo=UTC)))
    assert found == [
        Suppression("b@example.org", SuppressionKind.BOUNCE,
                    datetime.fromtimestamp(1764000000, UTC), "BOUNCE"),
        Suppression("c@example.org", SuppressionKind.COMPLAINT,
                    datetime.fromtimestamp(1764000100.5, UTC), "COMPLAINT"),
        Suppression("d@example.org", SuppressionKind.BOUNCE,
                    datetime(2025, 11, 25, 10, tzinfo=UTC), "BOUNCE"),
    ]  # fmt: skip
    queries = [r.query for r in server.requests if "suppression" in r.path]
    assert [q.get("NextToken") for q in queries] == [None, ["2+a/b=="]]
    assert all(q["StartDate"] == ["2025-11-01T00:00:00Z"] for q in queries)
    assert server.problems == []  # the fake checked each signature, query included


def test_suppression_source_from_settings(
    settings: Any, server: ProviderFake, tmp_path: Path
) -> None:
    configured = replace(settings, transport=settings_for(server, sandbox=True))
    source = suppression_source(configured, aws_env(tmp_path))
    assert source.name == "ses"


def test_send_email_json_is_the_body_encoded() -> None:
    """The request spliced around the base64 parses to the SendEmail body, whatever the
    addresses hold."""
    data = b"From: a\r\nTo: b\r\n\r\n" + bytes(range(256)) * 40
    for sender, destination in [
        ("news@example.org", "reader@example.org"),
        ('"Quote \\ back"@example.org', "ünï@exämple.org"),
    ]:
        encoded = send_email_json(data, sender, destination)
        assert json.loads(encoded) == send_email_body(data, sender, destination)
        assert base64.b64decode(json.loads(encoded)["Content"]["Raw"]["Data"]) == data


def test_requests_are_paced_to_the_accounts_send_rate(
    server: ProviderFake, ses: SesFake, template: MessageTemplate
) -> None:
    """`check()` reads MaxSendRate; the requests of all threads are then spaced to it, so more
    connections never mean throttled requests."""
    ses.account["SendQuota"]["MaxSendRate"] = 4.0
    transport = transport_for(server, connections=3)
    transport.check()
    items = [item_for(template, Person(f"r{n}@example.org")) for n in range(9)]
    started = time.monotonic()
    threads = [threading.Thread(target=transport.send_batch, args=([i],)) for i in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    transport.close()
    assert sum(ses.server.accepted.values()) == 9
    assert elapsed >= 8 / 4.0 - 0.01  # 9 requests at 4 a second: the last 2 s after the first
    assert server.problems == []
