"""A sending worker as a child process, for the multi-worker tests on PostgreSQL:

    python -m tests.workerkit API_URL PROJECT STORE_URL COUNT AUDIENCE

sends the example issue through Postmark's loopback fake at API_URL (token in
POSTMARK_SERVER_TOKEN) to COUNT generated people (AUDIENCE "list"), or to the subscribers of the
store (AUDIENCE "store": an unsubscribe during the send is seen), recording in STORE_URL. It
prints "leased" once it holds its lease, and "done" at the end.
"""

from __future__ import annotations

import email.utils
import os
import sys
from pathlib import Path

from newsletter.audience import SubscriberStore
from newsletter.config import TransportSettings
from newsletter.delivery.ledger import Ledger
from newsletter.delivery.ratelimit import Backoff
from newsletter.delivery.sender import Audience, SendOptions, StoreAudience, send_issue
from newsletter.delivery.transports.postmark import PostmarkTransport
from newsletter.store import Store
from tests.providerfake import FakeRequest, FakeResponse
from tests.sendkit import ListAudience, example_template, people
from tests.test_transport_postmark import PostmarkFake


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


def main(api_url: str, project: str, store_url: str, count: str, audience_kind: str) -> None:
    template = example_template(Path(project))
    settings = TransportSettings(kind="postmark", api_url=api_url, timeout=60.0, connections=2)
    transport = PostmarkTransport.from_settings(settings, os.environ)
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
    main(*sys.argv[1:6])
