"""The public sign-up (web/signup.py) against a real uvicorn server on loopback, a real SMTP
server (tests/smtpserver.py) receiving the confirmation mails, and real Chromium."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from newsletter.audience import SubscriberStatus, SubscriberStore
from newsletter.audience.consent import ConsentStore, SignupRequest
from newsletter.config import Settings, TransportSettings
from newsletter.config_signup import SignupField, SignupSettings
from newsletter.errors import NewsletterError
from newsletter.sending import SendRequest, deliver, plan_send
from newsletter.tokens import make_token
from newsletter.web import ServeSettings, WebServer, create_app
from newsletter.web.signup import CONFIRM_PURPOSE, MAX_BODY_BYTES, SignupEvent, _client_key
from tests.browser import launch_chromium, require_chromium
from tests.smtpserver import SmtpTestServer
from tests.test_sending import RecordingChecker
from tests.test_web import running

if TYPE_CHECKING:
    from playwright.sync_api import Browser

SECRET = b"signup-test-secret"
PUBLIC = "https://riverside-garden.example.org"
EMBEDDING_SITE = "https://www.riverside-garden.example.org"
ISSUE = "2026-11"
WAIT = 5.0


@dataclasses.dataclass
class Site:
    server: WebServer
    store: SubscriberStore
    smtp: SmtpTestServer
    settings: Settings
    events: list[SignupEvent]

    @property
    def base(self) -> str:
        return self.server.url.rstrip("/")

    def own(self) -> dict[str, str]:
        return {"Origin": self.base}

    def post(self, data: dict[str, str], **headers: str) -> httpx.Response:
        return httpx.post(f"{self.base}/subscribe", data=data, headers=headers or self.own())

    def mails(self, count: int) -> list[EmailMessage]:
        assert self.smtp.wait_for_messages(count, timeout=WAIT), "the mail did not arrive"
        return [
            email.message_from_bytes(m.data, policy=email.policy.default)
            for m in self.smtp.messages
        ]

    def local(self, link: str) -> str:
        """A link from a mail (to the public address) as this test server's URL."""
        assert link.startswith(PUBLIC + "/confirm?"), link
        return self.base + link[len(PUBLIC) :]


def no_more_than(smtp: SmtpTestServer, count: int) -> None:
    """No mail beyond `count` arrives within a second (the mails leave after the answer)."""
    with pytest.raises(TimeoutError):
        smtp.wait_for_messages(count + 1, timeout=1.0)
    assert len(smtp.messages) == count


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def link_in(message: EmailMessage) -> str:
    found = re.search(r"https://\S+/confirm\?\S+", text_of(message))
    assert found, text_of(message)
    return found.group(0)


def signup_settings(settings: Settings, smtp_port: int, **signup: object) -> Settings:
    transport = TransportSettings(kind="smtp", host="127.0.0.1", port=smtp_port, security="none")
    options: dict[str, object] = {
        "enabled": True,
        "consent_version": "2026-12",
        "fields": (SignupField("city", "City"),),
        "allowed_origins": (EMBEDDING_SITE,),
        "per_client_per_hour": 1000,
        **signup,
    }
    return dataclasses.replace(
        settings,
        transport=transport,
        signup=SignupSettings(**options),  # type: ignore[arg-type]
    )


@contextmanager
def site_for(settings: Settings, smtp: SmtpTestServer) -> Iterator[Site]:
    events: list[SignupEvent] = []
    with SubscriberStore(settings.database_path) as store:
        server = WebServer(
            settings,
            secret=SECRET,
            serve_settings=ServeSettings(port=0),
            store=store,
            on_signup=events.append,
        )
        with running(server):
            yield Site(server, store, smtp, settings, events)


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


@pytest.fixture
def site(settings: Settings, smtp: SmtpTestServer) -> Iterator[Site]:
    with site_for(signup_settings(settings, smtp.port), smtp) as running_site:
        yield running_site


def form(address: str, **extra: str) -> dict[str, str]:
    return {"email": address, "consent": "2026-12", **extra}


# --- the page -----------------------------------------------------------------------------------


def test_the_form_page_has_every_field_and_strict_headers(site: Site) -> None:
    page = httpx.get(f"{site.base}/subscribe")
    assert page.status_code == 200
    for piece in (
        'name="email"',
        'name="name"',
        'name="city"',
        'name="consent" value="2026-12"',
        'name="website" tabindex="-1"',  # the honeypot
        "I want to receive Riverside Roots by email.",
        "<h1>Subscribe to Riverside Roots</h1>",
    ):
        assert piece in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "script" not in page.text.lower()


def test_no_signup_table_no_form(settings: Settings, smtp: SmtpTestServer) -> None:
    with site_for(settings, smtp) as plain:
        assert httpx.get(f"{plain.base}/subscribe").status_code == 404


# --- the whole flow -----------------------------------------------------------------------------


def test_sign_up_confirm_and_receive_the_next_issue(site: Site) -> None:
    answer = site.post(form("New.Reader@Example.org", name="Nia Reader", city="Gent"))
    assert answer.status_code == 200
    assert "Check your inbox" in answer.text
    person = site.store.get("new.reader@example.org")
    assert person is not None and person.status == SubscriberStatus.UNCONFIRMED
    [mail] = site.mails(1)
    assert site.smtp.messages[0].rcpt_tos == ("New.Reader@example.org",)
    assert mail["Subject"] == "Please confirm: Riverside Roots"
    link = link_in(mail)
    assert link in html.unescape(html_of(mail))
    assert "New.Reader" not in link  # the link names a random request, never the address
    # A GET (a link scanner) changes nothing; the button's POST confirms.
    page = httpx.get(site.local(link))
    assert page.status_code == 200 and "Confirm my subscription" in page.text
    assert site.store.get("new.reader@example.org").status == "unconfirmed"  # type: ignore[union-attr]
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action is not None
    done = httpx.post(site.local(link).split("?")[0] + html.unescape(action.group(1)), data={})
    assert done.status_code == 200 and "You are subscribed" in done.text
    person = site.store.get("new.reader@example.org")
    assert person is not None and person.status == SubscriberStatus.SUBSCRIBED
    assert (person.name, dict(person.attributes)) == ("Nia Reader", {"city": "Gent"})
    [consent] = ConsentStore(site.store).consents("new.reader@example.org")
    assert consent.confirmed_at is not None and consent.confirmed_at >= consent.requested_at
    assert (consent.source, consent.consent_version) == ("form page", "2026-12")
    assert consent.client_hash is None  # off by default
    # The next issue reaches them.
    (site.settings.root / ".newsletter-secret").write_text("send-secret\n", encoding="utf-8")
    plan = plan_send(site.settings, SendRequest(ISSUE), checker=RecordingChecker())
    assert deliver(plan).sent_now == 1
    assert site.smtp.messages[-1].rcpt_tos == ("New.Reader@example.org",)


def test_unconfirmed_people_are_never_sent_an_issue(site: Site) -> None:
    site.post(form("waiting@example.org"))
    site.mails(1)
    site.store.add("member@example.org")
    (site.settings.root / ".newsletter-secret").write_text("send-secret\n", encoding="utf-8")
    plan = plan_send(site.settings, SendRequest(ISSUE), checker=RecordingChecker())
    assert deliver(plan).sent_now == 1
    assert site.smtp.messages[-1].rcpt_tos == ("member@example.org",)


def test_the_welcome_message_follows_confirmation_once(site: Site) -> None:
    (site.settings.root / "welcome.md").write_text(
        "# Welcome to the garden!\n\nWe meet **every Saturday**.\n", encoding="utf-8"
    )
    site.post(form("ann@example.org"))
    link = site.local(link_in(site.mails(1)[0]))
    assert httpx.post(link, data={}).status_code == 200
    welcome = site.mails(2)[1]
    assert welcome["Subject"] == "Welcome to the garden!"
    assert "<strong>every Saturday</strong>" in html_of(welcome)
    # Signing up again when subscribed: the same answer, no mail, no second welcome.
    again = site.post(form("ann@example.org"))
    assert again.status_code == 200 and "Check your inbox" in again.text
    assert httpx.post(link, data={}).status_code == 400  # the link was used
    no_more_than(site.smtp, 2)


def test_an_unsubscribed_person_is_confirmed_again(site: Site) -> None:
    site.store.add("back@example.org")
    site.store.set_status("back@example.org", "unsubscribed", source="web page")
    site.post(form("back@example.org"))
    link = site.local(link_in(site.mails(1)[0]))
    assert site.store.get("back@example.org").status == "unsubscribed"  # type: ignore[union-attr]
    assert httpx.post(link, data={}).status_code == 200
    assert site.store.get("back@example.org").status == "subscribed"  # type: ignore[union-attr]


# --- embedded forms and CORS --------------------------------------------------------------------


def test_json_from_an_allowed_origin_with_cors(site: Site) -> None:
    preflight = httpx.options(
        f"{site.base}/subscribe",
        headers={"Origin": EMBEDDING_SITE, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"},
    )  # fmt: skip
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == EMBEDDING_SITE
    assert "POST" in preflight.headers["access-control-allow-methods"]
    answer = httpx.post(
        f"{site.base}/subscribe",
        json={"email": "js@example.org", "consent": True, "city": "Utrecht"},
        headers={"Origin": EMBEDDING_SITE},
    )
    assert answer.status_code == 200
    assert answer.json()["ok"] is True
    assert answer.headers["access-control-allow-origin"] == EMBEDDING_SITE
    site.mails(1)
    [consent] = ConsentStore(site.store).consents("js@example.org")
    assert consent.source == "embedded form"


def test_other_origins_get_no_cors_and_change_nothing(site: Site) -> None:
    evil = {"Origin": "https://evil.example"}
    preflight = httpx.options(f"{site.base}/subscribe", headers=evil)
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers
    for answer in (
        httpx.post(f"{site.base}/subscribe", json={"email": "x@example.org", "consent": True},
                   headers=evil),
        httpx.post(f"{site.base}/subscribe", data=form("x@example.org"), headers=evil),
    ):  # fmt: skip
        assert answer.status_code == 403
        assert "access-control-allow-origin" not in answer.headers
    assert site.store.get("x@example.org") is None


def test_a_plain_html_form_embedded_on_an_allowed_site(site: Site) -> None:
    answer = site.post(form("embedded@example.org"), Origin=EMBEDDING_SITE)
    assert answer.status_code == 200
    site.mails(1)
    assert ConsentStore(site.store).consents("embedded@example.org")[0].source == "embedded form"


# --- languages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "page_words", "mail_words"),
    [
        ("nl", "Vul je e-mailadres in.", "hopelijk jij"),
        ("nl-formal", "Vul uw e-mailadres in.", "hopelijk u,"),
    ],
)
def test_dutch_informal_and_formal(
    settings: Settings, smtp: SmtpTestServer, locale: str, page_words: str, mail_words: str
) -> None:
    dutch = signup_settings(dataclasses.replace(settings, locale=locale), smtp.port)
    with site_for(dutch, smtp) as nl:
        page = httpx.get(f"{nl.base}/subscribe")
        assert page_words in page.text and '<html lang="nl"' in page.text
        answer = nl.post(form("sanne@example.org"))
        assert "Kijk in" in answer.text
        [mail] = nl.mails(1)
        assert mail["Subject"] == "Graag bevestigen: Riverside Roots"
        assert mail_words in text_of(mail)
        confirm = httpx.get(nl.local(link_in(mail)))
        assert "Bevestig mijn abonnement" in confirm.text


def test_english_page_asked_for_on_a_dutch_newsletter(
    settings: Settings, smtp: SmtpTestServer
) -> None:
    dutch = signup_settings(dataclasses.replace(settings, locale="nl"), smtp.port)
    with site_for(dutch, smtp) as nl:
        page = httpx.get(f"{nl.base}/subscribe?lang=en")
        assert "Fill in your email address." in page.text
        nl.post(form("eva@example.org", lang="en"))
        assert "hopefully you" in text_of(nl.mails(1)[0])


# --- hostile ------------------------------------------------------------------------------------


def _answer_bytes(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = [(k, v) for k, v in response.headers.items() if k.lower() != "date"]
    return response.status_code, response.content, headers


def test_the_answer_is_identical_whatever_the_address_standing(site: Site) -> None:
    """No enumeration: new, pending, limited, subscribed, unsubscribed, bounced, complained."""
    address = "who@example.org"
    answers = [_answer_bytes(site.post(form(address)))]  # new
    answers.append(_answer_bytes(site.post(form(address))))  # pending, and limited
    for status in ("subscribed", "unsubscribed", "bounced", "complained"):
        site.store.remove(address)
        site.store.add(address)
        site.store.set_status(address, status, source="test")
        answers.append(_answer_bytes(site.post(form(address))))
    assert all(answer == answers[0] for answer in answers), answers
    # Mail went to the new address and to the unsubscribed one (a new hour: the record was
    # erased with `remove`), never to the subscribed, bounced or complained one.
    assert site.smtp.wait_for_messages(2, timeout=WAIT)
    no_more_than(site.smtp, 2)


def test_at_most_one_mail_per_address_per_hour_across_two_servers(
    site: Site, settings: Settings, smtp: SmtpTestServer
) -> None:
    with site_for(site.settings, smtp) as second:
        for n in range(10):
            target = site if n % 2 else second
            assert target.post(form("victim@example.org")).status_code == 200
            assert target.post(form("Victim@EXAMPLE.org")).status_code == 200
    assert smtp.wait_for_messages(1, timeout=WAIT)
    no_more_than(smtp, 1)
    assert len(ConsentStore(site.store).consents("victim@example.org")) == 1


def test_the_per_client_limit(settings: Settings, smtp: SmtpTestServer) -> None:
    with site_for(signup_settings(settings, smtp.port, per_client_per_hour=3), smtp) as small:
        codes = [small.post(form(f"p{n}@example.org")).status_code for n in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_the_honeypot_answers_the_same_and_does_nothing(site: Site) -> None:
    trapped = site.post(form("bot@example.org", website="https://spam.example"))
    normal = site.post(form("bot@example.org"))
    assert _answer_bytes(trapped) == _answer_bytes(normal)
    site.mails(1)
    assert len(ConsentStore(site.store).consents("bot@example.org")) == 1


def test_consent_is_required(site: Site) -> None:
    answer = site.post({"email": "noconsent@example.org"})
    assert answer.status_code == 400 and "Please tick the box to agree." in answer.text
    assert site.store.get("noconsent@example.org") is None


def test_oversized_bodies_are_refused(site: Site) -> None:
    big = form("big@example.org", city="x" * (MAX_BODY_BYTES + 1))
    assert site.post(big).status_code == 413
    streamed = httpx.post(
        f"{site.base}/subscribe",
        content=iter([b"email=big%40example.org&consent=on&city=", b"y" * MAX_BODY_BYTES]),
        headers={"Content-Type": "application/x-www-form-urlencoded", **site.own()},
    )
    assert streamed.status_code == 413
    assert site.store.get("big@example.org") is None


def _forged_tokens() -> dict[str, str]:
    good = make_token(SECRET, "nonce-that-was-never-issued", purpose=CONFIRM_PURPOSE)
    return {
        "empty": "",
        "garbage": "abc.def",
        "other secret": make_token(b"another-secret", "x", purpose=CONFIRM_PURPOSE),
        "unsubscribe token": make_token(SECRET, "ann@example.org"),
        "cut": good[:-3],
        "never issued": good,
    }


@pytest.mark.parametrize("name", list(_forged_tokens()))
def test_forged_tokens_confirm_nothing(site: Site, name: str) -> None:
    site.post(form("target@example.org"))
    site.mails(1)
    token = _forged_tokens()[name]
    url = f"{site.base}/confirm?token={token}"
    posted = httpx.post(url, data={})
    assert posted.status_code == 400 and "This link does not work" in posted.text
    assert site.store.get("target@example.org").status == "unconfirmed"  # type: ignore[union-attr]


def test_expired_and_replayed_links_confirm_nothing(site: Site) -> None:
    site.post(form("late@example.org"))
    site.post(form("twice@example.org"))
    mails = {m["To"]: site.local(link_in(m)) for m in site.mails(2)}
    with site.store.database.transaction() as db:  # the request was made eight days ago
        db.execute(
            "UPDATE signup_consents SET requested_at = requested_at - 8 * 86400"
            " WHERE subscriber_key = 'late@example.org'"
        )
    assert httpx.post(mails["late@example.org"], data={}).status_code == 400
    assert site.store.get("late@example.org").status == "unconfirmed"  # type: ignore[union-attr]
    assert httpx.post(mails["twice@example.org"], data={}).status_code == 200
    replay = httpx.post(mails["twice@example.org"], data={})
    assert replay.status_code == 400 and "This link does not work" in replay.text
    assert [e.new_status for e in site.store.events("twice@example.org")].count("subscribed") == 1


def test_header_injection_through_the_name_is_refused(site: Site) -> None:
    answer = site.post(form("inject@example.org", name="Ann\r\nBcc: victim@evil.example"))
    assert answer.status_code == 400
    assert "The name cannot contain line breaks." in answer.text
    assert site.store.get("inject@example.org") is None
    # A name that looks like an address is just a name: the mail goes to the address alone.
    site.post(form("inject@example.org", name='Ann" <victim@evil.example>, "x'))
    link = site.local(link_in(site.mails(1)[0]))
    (site.settings.root / "welcome.md").write_text("# Hi\n\nWelcome.\n", encoding="utf-8")
    httpx.post(link, data={})
    site.mails(2)
    for received in site.smtp.messages:
        assert received.rcpt_tos == ("inject@example.org",)
        parsed = email.message_from_bytes(received.data, policy=email.policy.default)
        assert [a.addr_spec for a in parsed["To"].addresses] == ["inject@example.org"]
        assert b"\nBcc:" not in received.data


XSS = '<img src=x onerror=alert(1)>"><script>alert(2)</script>'


def test_no_field_is_echoed_unescaped(site: Site) -> None:
    # Without consent the form comes back with every value filled in again.
    answer = site.post({"email": f"a{XSS}@example.org", "name": XSS, "city": XSS})
    assert answer.status_code == 400
    assert "<script>" not in answer.text and "<img src=x" not in answer.text
    assert "&lt;script&gt;" in answer.text
    for bad in (f"{XSS}", f'"{XSS}"@example.org'):
        echoed = site.post(form(bad, name=XSS))
        assert "<script>" not in echoed.text and "<img src=x" not in echoed.text
    query = httpx.get(f"{site.base}/subscribe", params={"lang": XSS})
    assert "<script>" not in query.text
    confirm = httpx.get(f"{site.base}/confirm", params={"token": XSS, "lang": XSS})
    assert confirm.status_code == 400 and "<script>" not in confirm.text


def test_client_addresses_are_stored_only_as_a_keyed_hash_when_asked(
    settings: Settings, smtp: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_SIGNUP_HASH_KEY", "k" * 32)
    hashed = signup_settings(settings, smtp.port, store_client_address=True)
    with site_for(hashed, smtp) as keyed:
        keyed.post(form("hash@example.org"))
        keyed.mails(1)
        [consent] = ConsentStore(keyed.store).consents("hash@example.org")
    assert consent.client_hash is not None and len(consent.client_hash) == 32
    assert "127.0.0.1" not in consent.client_hash


def test_expired_requests_are_purged_when_serving_starts(
    settings: Settings, smtp: SmtpTestServer
) -> None:
    configured = signup_settings(settings, smtp.port)
    with SubscriberStore(configured.database_path) as store:
        ConsentStore(store).request(SignupRequest("old@example.org", "form page", "1"), now=1.0)
        assert store.get("old@example.org") is not None
    with site_for(configured, smtp) as served:
        # The purge runs in the background as the server starts.
        for _ in range(50):
            if served.store.get("old@example.org") is None:
                break
            httpx.get(f"{served.base}/healthz")
        assert served.store.get("old@example.org") is None


# --- in a real browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_chromium()
    yield from launch_chromium()


@pytest.mark.browser
def test_subscribe_and_confirm_in_a_browser_without_javascript(
    browser: Browser, site: Site
) -> None:
    # Deferred like the browser itself (see tests/browser.py): Playwright is slow to import.
    from playwright.sync_api import expect

    context = browser.new_context(java_script_enabled=False, viewport={"width": 375, "height": 700})
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text))
    page.goto(f"{site.base}/subscribe")
    expect(page.get_by_role("heading", level=1)).to_have_text("Subscribe to Riverside Roots")
    # Every field has a label, and the keyboard goes through them in order, past the honeypot.
    page.keyboard.press("Tab")
    expect(page.get_by_label("Email address")).to_be_focused()
    page.keyboard.type("browser@example.org")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Name (optional)")).to_be_focused()
    page.keyboard.type("Bea Browser")
    page.keyboard.press("Tab")
    expect(page.get_by_label("City")).to_be_focused()
    page.keyboard.type("Leiden")
    page.keyboard.press("Tab")
    agree = page.get_by_label("I want to receive Riverside Roots by email.", exact=False)
    expect(agree).to_be_focused()
    box = page.locator("#website").bounding_box()
    assert box is not None and box["x"] < 0  # off screen, and aria-hidden
    page.keyboard.press("Space")
    expect(agree).to_be_checked()
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
    [mail] = site.mails(1)
    page.goto(site.local(link_in(mail)))
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Confirm your subscription to Riverside Roots"
    )
    assert site.store.get("browser@example.org").status == "unconfirmed"  # type: ignore[union-attr]
    page.get_by_role("button", name="Confirm my subscription").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are subscribed")
    person = site.store.get("browser@example.org")
    assert person is not None and person.status == SubscriberStatus.SUBSCRIBED
    assert dict(person.attributes) == {"city": "Leiden"} and person.name == "Bea Browser"
    [consent] = ConsentStore(site.store).consents("browser@example.org")
    assert consent.confirmed and consent.source == "form page"
    assert consent.consent_version == "2026-12"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert violations == []
    context.close()
    (site.settings.root / ".newsletter-secret").write_text("send-secret\n", encoding="utf-8")
    plan = plan_send(site.settings, SendRequest(ISSUE), checker=RecordingChecker())
    assert deliver(plan).sent_now == 1
    assert site.smtp.messages[-1].rcpt_tos == ("browser@example.org",)


def test_link_targets_the_public_address(site: Site) -> None:
    site.post(form("pub@example.org"))
    link = link_in(site.mails(1)[0])
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{PUBLIC}/confirm"
    assert set(parse_qs(parts.query)) == {"token", "lang"}
    assert Path(parts.path).name == "confirm"


def test_a_hidden_origin_is_taken_like_a_direct_post(site: Site) -> None:
    answer = site.post(form("private@example.org"), Origin="null")
    assert answer.status_code == 200
    site.mails(1)
    assert "access-control-allow-origin" not in answer.headers


def test_errors_are_tied_to_their_fields(site: Site) -> None:
    answer = site.post({"email": "nope", "consent": "on"})
    assert answer.status_code == 400
    assert 'aria-invalid="true" aria-describedby="error-email"' in answer.text
    assert '<p id="error-email">Please enter a valid email address.</p>' in answer.text
    assert 'value="nope"' in answer.text  # what was typed comes back to be corrected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"unsubscribe": "no url"}, "[signup] needs [unsubscribe] url"),
        ({"store_client_address": True}, "NEWSLETTER_SIGNUP_HASH_KEY must hold a key"),
    ],
)
def test_the_server_refuses_to_start_without_what_signup_needs(
    settings: Settings,
    smtp: SmtpTestServer,
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, object],
    message: str,
) -> None:
    monkeypatch.delenv("NEWSLETTER_SIGNUP_HASH_KEY", raising=False)
    configured = signup_settings(
        settings, smtp.port, **{k: v for k, v in change.items() if k != "unsubscribe"}
    )
    if "unsubscribe" in change:
        configured = dataclasses.replace(
            configured,
            unsubscribe=dataclasses.replace(configured.unsubscribe, url=None),
        )
    with pytest.raises(NewsletterError) as caught:
        create_app(configured, secret=SECRET)
    assert message in caught.value.message


def test_clients_are_counted_per_ipv6_64() -> None:
    assert _client_key("2001:db8:1:2:aaaa::1") == _client_key("2001:db8:1:2:bbbb::9")
    assert _client_key("2001:db8:1:2::1") != _client_key("2001:db8:1:3::1")
    assert _client_key("192.0.2.7") == "192.0.2.7"


def test_a_broken_welcome_file_does_not_undo_the_confirmation(site: Site) -> None:
    (site.settings.root / "welcome.md").write_bytes(b"# Hi\n\n\xff\xfe not UTF-8\n")
    site.post(form("broken@example.org"))
    link = site.local(link_in(site.mails(1)[0]))
    done = httpx.post(link, data={})
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert site.store.get("broken@example.org").status == "subscribed"  # type: ignore[union-attr]
    no_more_than(site.smtp, 1)


def test_subscribing_again_from_the_unsubscribe_page_is_a_sign_up(site: Site) -> None:
    """Issue 15 D9: with a [signup] table the unsubscribe page's "subscribe again" sends a
    confirmation link; the person is back only after following it. A bounced address is not
    offered the step at all (the editors decide), and gets no mail."""
    site.store.add("back@example.org")
    site.store.set_status("back@example.org", "unsubscribed", source="web page")
    site.store.add("gone@example.org")
    site.store.set_status("gone@example.org", "bounced", source="inbox")

    def again(address: str) -> httpx.Response:
        url = f"{site.base}/unsubscribe?token={make_token(SECRET, address)}"
        first = httpx.post(url, data={"action": "resubscribe"}, headers=site.own())
        found = re.search(r'name="step" value="([^"]+)"', first.text)
        if found is None:
            return first
        data = {"action": "resubscribe-confirm", "step": html.unescape(found.group(1))}
        return httpx.post(url, data=data, headers=site.own())

    answer = again("back@example.org")
    assert answer.status_code == 200 and "back@example.org" in html.unescape(answer.text)
    assert site.store.get("back@example.org").status == "unsubscribed"  # type: ignore[union-attr]
    (mail,) = site.mails(1)
    assert mail["To"].addresses[0].addr_spec == "back@example.org"
    assert httpx.post(site.local(link_in(mail)), data={}).status_code == 200
    assert site.store.get("back@example.org").status == "subscribed"  # type: ignore[union-attr]

    bounced = again("gone@example.org")
    assert "cannot subscribe again here" in html.unescape(bounced.text)
    no_more_than(site.smtp, 1)
    assert site.store.get("gone@example.org").status == "bounced"  # type: ignore[union-attr]
