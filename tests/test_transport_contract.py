"""The provider contract, once for every provider transport, against each provider's own fake.

What every provider must do the same way, through the real sender and ledger:
- a full send: everyone sent exactly once with the id the ledger holds, a refused address fails
  alone, a rate limit and a server error on the way are retried;
- a request that is never answered leaves its recipients uncertain, and they are not sent again;
- crash (SIGKILL of a sending child, several times) and resume: nobody lost, nobody twice;
- whole-request failures typed alike: 429 (Retry-After in seconds or as a date), 5xx, 401/403,
  malformed or empty 2xx bodies, no answer, a dropped connection, nobody listening.

Each provider is described once in `PROVIDERS` (an adapter: how to put its fake on a server,
how to make the fake refuse an address, how to build the transport, how it words an error).
What only one provider does (payload shape against its spec, its own error codes, sandbox,
suppression paging, idempotency keys) stays in tests/test_transport_<provider>.py, which also
defines the fakes used here.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from newsletter.config import TransportSettings
from newsletter.delivery.ledger import Ledger, State
from newsletter.delivery.message import MessageTemplate, Personalisation
from newsletter.delivery.ratelimit import Backoff
from newsletter.delivery.sender import SendOptions, send_issue
from newsletter.delivery.transports._http import HttpProviderTransport
from newsletter.delivery.transports._sigv4 import AwsCredentials
from newsletter.delivery.transports.base import BatchItem
from newsletter.delivery.transports.brevo import BrevoTransport
from newsletter.delivery.transports.mailgun import MailgunTransport
from newsletter.delivery.transports.mailjet import MailjetTransport
from newsletter.delivery.transports.postmark import PostmarkTransport
from newsletter.delivery.transports.resend import ResendTransport
from newsletter.delivery.transports.sendgrid import SendGridTransport
from newsletter.delivery.transports.ses import SesTransport
from newsletter.delivery.transports.sparkpost import SparkPostTransport
from newsletter.errors import (
    DeliveryError,
    TransientDeliveryError,
    TransportUnavailableError,
    UncertainDeliveryError,
)
from tests import (
    test_transport_brevo as brevo,
)
from tests import (
    test_transport_mailgun as mailgun,
)
from tests import (
    test_transport_mailjet as mailjet,
)
from tests import (
    test_transport_postmark as postmark,
)
from tests import (
    test_transport_resend as resend,
)
from tests import (
    test_transport_sendgrid as sendgrid,
)
from tests import (
    test_transport_ses as ses,
)
from tests import (
    test_transport_sparkpost as sparkpost,
)
from tests.conftest import copy_example_project
from tests.providerfake import (
    DROP,
    HANG,
    FakeRequest,
    FakeResponse,
    Fault,
    ProviderFake,
    crash_and_resume,
)
from tests.sendkit import ListAudience, Person, example_template, people

FAST = Backoff(base=0.01, cap=0.02)
TIMEOUT = 0.4  # how long a test waits for an answer that never comes


def posts(request: FakeRequest) -> bool:
    """Faults go to sending requests, not to the checks some transports make first."""
    return request.method == "POST"


# --- the adapters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """What the contract needs to know about one provider."""

    kind: str
    # Puts the provider's fake on `server`; returns the function that makes it refuse an address.
    install: Callable[[ProviderFake], Callable[[str], None]]
    # The transport for (api_url, timeout, connections), with the key the fake expects.
    make: Callable[[str, float, int], HttpProviderTransport]
    # An error answer in the provider's own format (status, message).
    error: Callable[[int, str], FakeResponse]
    # The environment of a crash-test child (its keys), given a temporary HOME.
    env: Callable[[Path], dict[str, str]]
    hint: str  # what the hint of a refused key names
    # The 2xx status whose body the transport reads; None when it reads no body (SendGrid: 202).
    ok_status: int | None
    hosted: bool  # images published with base_url (the provider cannot embed them)
    # Recipients in one sending request, for providers that batch (None: one a request).
    recipients_in: Callable[[FakeRequest], int] | None = None
    full_batches: bool = False  # batches are filled to max_batch (no split by size)
    connections: int = 2
    # The transport proves its settings with a GET before the first send (Mailgun's domain
    # tracking check); when nothing answers that, the run stops instead of retrying.
    checks_first: bool = False
    counts: tuple[Any, ...] = ()  # full-send sizes (pytest.param, marks)
    crash_count: int = 2000


def _settings(
    kind: str, url: str, timeout: float, connections: int, **extra: Any
) -> TransportSettings:
    return TransportSettings(
        kind=kind, api_url=url, timeout=timeout, connections=connections, **extra
    )


def _postmark(server: ProviderFake) -> Callable[[str], None]:
    return postmark.PostmarkFake(server).inactive.add


def _sendgrid(server: ProviderFake) -> Callable[[str], None]:
    fake = sendgrid.SendGridFake(server)
    fake.keep = False  # what each recipient would receive is checked in its own file
    return fake.invalid.add


def _mailgun(server: ProviderFake) -> Callable[[str], None]:
    return mailgun.MailgunFake(server).bounced.add


def _ses(server: ProviderFake) -> Callable[[str], None]:
    return ses.SesFake(server).rejected.add


def _resend(server: ProviderFake) -> Callable[[str], None]:
    return resend.ResendFake(server).invalid.add


def _brevo(server: ProviderFake) -> Callable[[str], None]:
    return brevo.BrevoFake(server).invalid.add


def _mailjet(server: ProviderFake) -> Callable[[str], None]:
    return mailjet.MailjetFake(server).invalid.add


def _sparkpost(server: ProviderFake) -> Callable[[str], None]:
    fake = sparkpost.SparkPostFake(server)

    def refuse(address: str) -> None:
        fake.rejected[address] = f"Invalid recipient address {address}"

    return refuse


def _ses_error(status: int, message: str) -> FakeResponse:
    kinds = {429: "TooManyRequestsException", 401: "UnrecognizedClientException",
             403: "UnrecognizedClientException"}  # fmt: skip
    return ses.SesFake.error(status, kinds.get(status, "InternalFailure"), message)


def _resend_error(status: int, message: str) -> FakeResponse:
    names = {429: "rate_limit_exceeded", 401: "missing_api_key", 403: "invalid_api_key"}
    return resend._error(status, names.get(status, "internal_server_error"), message)


def _key_env(variable: str, key: str) -> Callable[[Path], dict[str, str]]:
    return lambda home: {variable: key}


PROVIDERS = [
    Provider(
        "postmark",
        _postmark,
        lambda url, timeout, n: PostmarkTransport(
            _settings("postmark", url, timeout, n), api_key=postmark.TOKEN
        ),
        lambda status, message: FakeResponse.json(
            {"ErrorCode": status, "Message": message}, status
        ),
        _key_env("POSTMARK_SERVER_TOKEN", postmark.TOKEN),
        "POSTMARK_SERVER_TOKEN",
        ok_status=200,
        hosted=False,
        recipients_in=lambda request: len(request.json()),
        # Each message carries its ~110 KB of images: a batch of 500 is split in two requests.
        counts=(pytest.param(501), pytest.param(3000, marks=pytest.mark.slow)),
    ),
    Provider(
        "sendgrid",
        _sendgrid,
        lambda url, timeout, n: SendGridTransport(
            _settings("sendgrid", url, timeout, n), api_key=sendgrid.KEY
        ),
        lambda status, message: FakeResponse.json(
            {"errors": [{"message": message, "field": None, "help": None}]}, status
        ),
        _key_env("SENDGRID_API_KEY", sendgrid.KEY),
        "SENDGRID_API_KEY",
        ok_status=None,
        hosted=False,
        recipients_in=lambda request: len(request.json()["personalizations"]),
        full_batches=True,
        counts=(pytest.param(3000),),
        crash_count=20_000,
    ),
    Provider(
        "mailgun",
        _mailgun,
        lambda url, timeout, n: MailgunTransport(
            _settings("mailgun", url, timeout, n), api_key=mailgun.KEY
        ),
        lambda status, message: FakeResponse.json({"message": message}, status),
        _key_env("MAILGUN_API_KEY", mailgun.KEY),
        "MAILGUN_API_KEY",
        ok_status=200,
        hosted=False,
        connections=4,
        checks_first=True,
        counts=(pytest.param(400), pytest.param(3000, marks=pytest.mark.slow)),
    ),
    Provider(
        "ses",
        _ses,
        lambda url, timeout, n: SesTransport(
            _settings("ses", url, timeout, n, region=ses.REGION),
            credentials=AwsCredentials(ses.ACCESS_KEY, ses.SECRET_KEY),
            region=ses.REGION,
        ),
        _ses_error,
        lambda home: ses.aws_env(home, AWS_REGION=ses.REGION),
        "ses:SendEmail",
        ok_status=200,
        hosted=False,
        connections=4,
        counts=(pytest.param(300), pytest.param(3000, marks=pytest.mark.slow)),
    ),
    Provider(
        "resend",
        _resend,
        lambda url, timeout, n: ResendTransport(
            _settings("resend", url, timeout, n), api_key=resend.KEY
        ),
        _resend_error,
        _key_env("RESEND_API_KEY", resend.KEY),
        "RESEND_API_KEY",
        ok_status=200,
        hosted=True,
        recipients_in=lambda request: len(request.json()) if request.path.endswith("batch") else 1,
        full_batches=True,
        counts=(pytest.param(400), pytest.param(2500, marks=pytest.mark.slow)),
    ),
    Provider(
        "brevo",
        _brevo,
        lambda url, timeout, n: BrevoTransport(
            _settings("brevo", url, timeout, n), api_key=brevo.KEY
        ),
        lambda status, message: FakeResponse.json({"code": "error", "message": message}, status),
        _key_env("BREVO_API_KEY", brevo.KEY),
        "BREVO_API_KEY",
        ok_status=201,
        hosted=True,
        connections=4,
        counts=(pytest.param(300), pytest.param(2000, marks=pytest.mark.slow)),
        crash_count=1500,
    ),
    Provider(
        "mailjet",
        _mailjet,
        lambda url, timeout, n: MailjetTransport(
            _settings("mailjet", url, timeout, n),
            api_key=mailjet.KEY,
            secret_key=mailjet.SECRET_KEY,
        ),
        lambda status, message: FakeResponse.json(
            {"ErrorIdentifier": "x", "StatusCode": status, "ErrorMessage": message}, status
        ),
        lambda home: {"MAILJET_API_KEY": mailjet.KEY, "MAILJET_SECRET_KEY": mailjet.SECRET_KEY},
        "MAILJET_API_KEY",  # check() names MAILJET_SECRET_KEY too; a refused send does not
        ok_status=200,
        hosted=False,
        recipients_in=lambda request: len(request.json()["Messages"]),
        full_batches=True,
        counts=(pytest.param(300), pytest.param(2500, marks=pytest.mark.slow)),
    ),
    Provider(
        "sparkpost",
        _sparkpost,
        lambda url, timeout, n: SparkPostTransport(
            _settings("sparkpost", f"{url}/api/v1", timeout, n), api_key=sparkpost.KEY
        ),
        lambda status, message: FakeResponse.json({"errors": [{"message": message}]}, status),
        _key_env("SPARKPOST_API_KEY", sparkpost.KEY),
        "SPARKPOST_API_KEY",
        ok_status=200,
        hosted=False,
        recipients_in=lambda request: len(request.json()["recipients"]),
        full_batches=True,
        counts=(pytest.param(2500), pytest.param(6000, marks=pytest.mark.slow)),
        crash_count=4000,
    ),
]


def each_provider(*, slow: bool = False) -> list[Any]:
    marks = [pytest.mark.slow] if slow else []
    return [pytest.param(p, id=p.kind, marks=marks) for p in PROVIDERS]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ProviderFake]:
    with ProviderFake(hang_seconds=3) as running:
        yield running


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    """The example issue with its images embedded (rendered once: ~0.5 s)."""
    template = example_template(copy_example_project(tmp_path_factory.mktemp("embedded")))
    assert template.images
    return template


@pytest.fixture(scope="module")
def hosted(tmp_path_factory: pytest.TempPathFactory) -> MessageTemplate:
    """The example issue with its images published (base_url), for Resend and Brevo."""
    project = copy_example_project(tmp_path_factory.mktemp("hosted"))
    template = example_template(resend.publish_images(project))
    assert not template.images
    return template


def template_for(
    provider: Provider, embedded: MessageTemplate, hosted: MessageTemplate
) -> MessageTemplate:
    return hosted if provider.hosted else embedded


def items_for(template: MessageTemplate, persons: list[Person]) -> list[BatchItem]:
    return [
        BatchItem(p.email, template.personalise(p), Personalisation(template, p)) for p in persons
    ]


# --- full send --------------------------------------------------------------------------------


def full_send_cases() -> list[Any]:
    return [
        pytest.param(provider, *case.values, id=f"{provider.kind}-{case.values[0]}",
                     marks=case.marks)
        for provider in PROVIDERS
        for case in provider.counts
    ]  # fmt: skip


@pytest.mark.parametrize(("provider", "count"), full_send_cases())
def test_full_send_matches_the_ledger(
    provider: Provider,
    count: int,
    server: ProviderFake,
    embedded: MessageTemplate,
    hosted: MessageTemplate,
    tmp_path: Path,
) -> None:
    template = template_for(provider, embedded, hosted)
    refuse = provider.install(server)
    refused = {"reader00007@example.org", f"reader{count - 3:05d}@example.org"}
    for address in refused:
        refuse(address)
    server.record_requests = provider.recipients_in is not None  # bodies of big batches only
    # One rate limit and one server error along the way: both are retried.
    slow_down = provider.error(429, "slow down")
    server.fail_next(replace(slow_down, headers={**slow_down.headers, "Retry-After": "0"}),
                     when=posts)  # fmt: skip
    server.fail_next(provider.error(500, "Internal Server Error"), when=posts)
    audience = ListAudience(people(count))
    transport = provider.make(server.url, 10.0, provider.connections)
    with Ledger(tmp_path / "ledger.db") as ledger:
        report = send_issue(
            template,
            audience,
            transport=transport,
            ledger=ledger,
            backoff=FAST,
            options=SendOptions(concurrency=provider.connections),
        )
        issue = ledger.issue(template.issue)
        replies = {row.email: row.reply for row in issue.rows(State.SENT)}
        failed = {row.email for row in issue.rows(State.FAILED)}
    assert report.complete, report
    assert failed == refused
    assert report.counts[State.SENT] == count - len(refused)
    assert set(server.accepted.values()) == {1}, "nobody twice"
    assert set(server.accepted) == set(audience.people) - refused
    assert {address: [reply] for address, reply in replies.items()} == server.ids
    if provider.recipients_in is not None:
        sizes = [provider.recipients_in(r) for r in server.posts() if r.body]
        assert max(sizes) <= transport.max_batch
        if provider.full_batches:
            assert max(sizes) == min(transport.max_batch, count)
    assert server.problems == []


@pytest.mark.parametrize("provider", each_provider())
def test_an_unanswered_request_is_uncertain_and_never_sent_again(
    provider: Provider,
    server: ProviderFake,
    embedded: MessageTemplate,
    hosted: MessageTemplate,
    tmp_path: Path,
) -> None:
    template = template_for(provider, embedded, hosted)
    provider.install(server)
    server.fail_next(HANG, when=posts)
    audience = ListAudience(people(5))
    everyone = set(audience.people)
    with Ledger(tmp_path / "ledger.db") as ledger:
        for _ in range(2):  # the second run is a resume: the uncertain ones stay as they are
            report = send_issue(
                template,
                audience,
                transport=provider.make(server.url, 0.5, 2),
                ledger=ledger,
                backoff=FAST,
                options=SendOptions(concurrency=2),
            )
            assert report.complete, report
        issue = ledger.issue(template.issue)
        uncertain = {row.email for row in issue.uncertain()}
        sent = {row.email for row in issue.rows(State.SENT)}
    # The hung request held one batch: max_batch of them, or all five.
    assert uncertain and sent | uncertain == everyone and not sent & uncertain
    assert set(server.accepted) == sent and set(server.accepted.values()) <= {1}
    assert server.problems == []


@pytest.mark.slow
@pytest.mark.parametrize("provider", each_provider())
def test_crash_mid_run_and_resume_sends_everyone_once(
    provider: Provider, server: ProviderFake, project: Path, tmp_path: Path
) -> None:
    provider.install(server)
    server.record_requests = False
    if provider.hosted:
        resend.publish_images(project)
    crash_and_resume(
        server,
        provider.kind,
        project,
        tmp_path / "crash.db",
        count=provider.crash_count,
        env=provider.env(tmp_path),
    )


# --- whole-request failures -------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One way a whole request fails, and what every transport must make of it."""

    name: str
    fault: Callable[[Provider], Fault]
    error: type[DeliveryError]
    text: str
    retry_after: tuple[float, float] | None = None  # (above, at most) for a transient error
    needs_body: bool = False  # only for transports that read the 2xx body
    # Short only where the client must give up; elsewhere a loaded machine must not time out.
    timeout: float = 5.0


def _with(response: FakeResponse, **headers: str) -> FakeResponse:
    return replace(response, headers={**response.headers, **headers})


def _in_30_seconds() -> str:
    return email.utils.formatdate(time.time() + 30, usegmt=True)


FAILURES = [
    Failure("429", lambda p: p.error(429, "fake says slow down"), TransientDeliveryError,
            "HTTP 429"),
    Failure("429-retry-after", lambda p: _with(p.error(429, "fake says slow down"),
                                               **{"Retry-After": "7"}),
            TransientDeliveryError, "retry after 7s", (6.999, 7.0)),
    Failure("429-retry-after-date", lambda p: _with(p.error(429, "fake says slow down"),
                                                    **{"Retry-After": _in_30_seconds()}),
            TransientDeliveryError, "HTTP 429", (27.0, 30.0)),
    Failure("500", lambda p: p.error(500, "fake says oops"), TransientDeliveryError,
            "HTTP 500"),
    Failure("503-html", lambda p: FakeResponse(503, b"<html>maintenance</html>"),
            TransientDeliveryError, "HTTP 503"),
    Failure("503-retry-after", lambda p: _with(p.error(503, "fake says later"),
                                               **{"Retry-After": "5"}),
            TransientDeliveryError, "HTTP 503", (4.999, 5.0)),
    Failure("401", lambda p: p.error(401, "fake says bad key"), TransportUnavailableError,
            "HTTP 401"),
    Failure("403", lambda p: p.error(403, "fake says forbidden"), TransportUnavailableError,
            "HTTP 403"),
    Failure("malformed", lambda p: FakeResponse(p.ok_status or 200, b'{"id": "x", "a'),
            UncertainDeliveryError, "malformed JSON", needs_body=True),
    Failure("empty", lambda p: FakeResponse(p.ok_status or 200, b""), UncertainDeliveryError,
            "empty body", needs_body=True),
    Failure("hang", lambda p: HANG, UncertainDeliveryError, f"no answer within {TIMEOUT:g}s",
            timeout=TIMEOUT),
    Failure("dropped", lambda p: DROP, UncertainDeliveryError, "after the request was sent"),
]  # fmt: skip


def failure_cases() -> list[Any]:
    return [
        pytest.param(provider, failure, id=f"{provider.kind}-{failure.name}")
        for provider in PROVIDERS
        for failure in FAILURES
        if provider.ok_status is not None or not failure.needs_body
    ]


@pytest.mark.parametrize(("provider", "failure"), failure_cases())
def test_whole_request_failures_are_typed(
    provider: Provider,
    failure: Failure,
    server: ProviderFake,
    embedded: MessageTemplate,
    hosted: MessageTemplate,
) -> None:
    provider.install(server)
    transport = provider.make(server.url, failure.timeout, 2)
    batch = [Person("a@example.org"), Person("b@example.org")][: transport.max_batch]
    server.fail_next(failure.fault(provider), when=posts)
    with pytest.raises(DeliveryError) as caught:
        transport.send_batch(items_for(template_for(provider, embedded, hosted), batch))
    transport.close()
    error = caught.value
    assert type(error) is failure.error, error
    assert failure.text in str(error)
    if failure.text.startswith("HTTP 4") or failure.text == "HTTP 500":
        assert "fake says" in str(error), "the provider's own words are kept"
    if isinstance(error, TransientDeliveryError):
        if failure.retry_after is None:
            assert error.retry_after is None
        else:
            low, high = failure.retry_after
            assert error.retry_after is not None and low < error.retry_after <= high
    if isinstance(error, TransportUnavailableError):
        assert provider.hint in (error.hint or "")
    assert not server.accepted
    assert server.problems == []


@pytest.mark.parametrize("provider", each_provider())
def test_nothing_listening_is_transient(
    provider: Provider, embedded: MessageTemplate, hosted: MessageTemplate
) -> None:
    with ProviderFake() as gone:
        url = gone.url
    transport = provider.make(url, TIMEOUT, 1)
    items = items_for(template_for(provider, embedded, hosted), [Person("a@example.org")])
    expected = TransportUnavailableError if provider.checks_first else TransientDeliveryError
    with pytest.raises(DeliveryError) as caught:
        transport.send_batch(items)
    assert type(caught.value) is expected and "cannot connect" in str(caught.value)
