"""A sending worker as a child process, for the multi-worker tests on PostgreSQL:

    python -m tests.workerkit API_URL PROJECT STORE_URL COUNT AUDIENCE [PROVIDER]

sends the example issue through a loopback provider fake at API_URL (PROVIDER "postmark", token
in POSTMARK_SERVER_TOKEN; or "sendgrid", key in SENDGRID_API_KEY) to COUNT generated people
(AUDIENCE "list"), or to the subscribers of the store (AUDIENCE "store": an unsubscribe during
the send is seen), recording in STORE_URL. It prints "leased" once it holds its store, and
"done" at the end.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import sys
import threading
from pathlib import Path

from newsletter.audience import SubscriberStore
from newsletter.config import TransportSettings
from newsletter.delivery.ledger import Ledger
from newsletter.delivery.ratelimit import Backoff
from newsletter.delivery.sender import Audience, SendOptions, StoreAudience, send_issue
from newsletter.delivery.transports.postmark import PostmarkTransport
from newsletter.delivery.transports.sendgrid import SendGridTransport
from newsletter.store import Store
from tests.providerfake import FakeRequest, FakeResponse, ProviderFake
from tests.sendkit import ListAudience, example_template, people
from tests.test_transport_postmark import PostmarkFake
from tests.test_transport_sendgrid import KEY as SENDGRID_KEY


class CountingPostmark(PostmarkFake):
    """Postmark's fake answering as the real API does, without validating each batch against
    the API's schema (test_transport_postmark does that): the workers' tests send 200,000
    messages, and what they check is who got what how often."""

    def handle(self, request: FakeRequest) -> FakeResponse:
        if (request.method, request.path) != ("POST", "/email/batch"):
            return super().handle(request)
        if request.header("x-postmark-server-token") != self.token:
            return FakeResponse.json({"ErrorCode": 10, "Message": "no token"}, 401)
        answers = []
        for message in request.json():
            address = email.utils.parseaddr(message["To"])[1].lower()
            with self.lock:
                message_id = f"pm-{next(self.ids):08d}"
            self.server.accept(address, message_id)
            answers.append(
                {"ErrorCode": 0, "Message": "OK", "MessageID": message_id, "To": message["To"]}
            )
        return FakeResponse.json(answers)


# The start of a personalization as the transport writes it (compact JSON, `to` first), the
# first address of its `to` captured. A quote inside a JSON string is always escaped, so this
# matches the structure only, never text inside a value.
_TO = re.compile(rb'\{"to":\[\{"email":"([^"\\]*(?:\\.[^"\\]*)*)"')


def sendgrid_recipients(body: bytes) -> list[str]:
    """The address of each personalization of a SendGrid mail-send body, lower-cased, in order.

    The fake stands for a provider on other machines: in the benchmarks it shares the cores
    with the workers and the database, so it reads what it counts with one scan of the body
    (0.7 ms for 1,000 personalizations) instead of a parse of all of it (3.5 ms, most of the
    fake's CPU). A body in another form (no match) is parsed whole, so no recipient goes
    uncounted; escapes in an address are decoded as JSON."""
    found = _TO.findall(body)
    if not found:
        return [
            str(p["to"][0]["email"]).lower() for p in json.loads(body).get("personalizations", [])
        ]
    joined = b"\n".join(found)
    if b"\\" in joined:
        return [json.loads(b'"' + address + b'"').lower() for address in found]
    return joined.decode("utf-8").lower().split("\n")


class CountingSendGrid:
    """SendGrid's fake answering as the real API does (202 and an X-Message-Id per request),
    counting who got a message; it checks neither the schema nor the rendering
    (test_transport_sendgrid does): a batch of 1,000 costs it one scan of the body for the
    addresses (`sendgrid_recipients`) and one `accept_many`."""

    def __init__(self, server: ProviderFake) -> None:
        self.server = server
        self.count = 0
        self.lock = threading.Lock()
        server.handler = self.handle

    def handle(self, request: FakeRequest) -> FakeResponse:
        if request.header("authorization") != f"Bearer {SENDGRID_KEY}":
            return FakeResponse.json({"errors": [{"message": "bad key"}]}, 401)
        if (request.method, request.path) == ("GET", "/v3/scopes"):
            return FakeResponse.json({"scopes": ["mail.send", "suppression.read"]})
        if (request.method, request.path) != ("POST", "/v3/mail/send"):
            return self.server.problem(f"unexpected {request.method} {request.path}")
        with self.lock:
            self.count += 1
            message_id = f"sg-{self.count:06d}"
        self.server.accept_many(sendgrid_recipients(request.body), message_id)
        return FakeResponse(202, b"", {"X-Message-Id": message_id})


def main(
    api_url: str,
    project: str,
    store_url: str,
    count: str,
    audience_kind: str,
    provider: str = "postmark",
) -> None:
    template = example_template(Path(project))
    settings = TransportSettings(kind=provider, api_url=api_url, timeout=60.0, connections=2)
    kind = SendGridTransport if provider == "sendgrid" else PostmarkTransport
    transport = kind.from_settings(settings, os.environ)
    with Store.open(store_url) as store:
        audience: Audience = (
            StoreAudience(SubscriberStore(store))
            if audience_kind == "store"
            else ListAudience(people(int(count)))
        )
        print("leased", flush=True)
        send_issue(
            template,
            audience,
            transport=transport,
            ledger=Ledger(store),
            backoff=Backoff(base=0.05, cap=0.1),
            options=SendOptions(concurrency=2),
        )
    print("done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:7])
