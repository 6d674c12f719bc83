from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError

MINIMAL = """\
[newsletter]
name = "Test News"
from = "Test News <news@example.org>"

[footer]
address = "1 Main Street\\nTown"
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "newsletter.toml").write_text(text, encoding="utf-8")
    return tmp_path


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.name == "Test News"
    assert settings.sender.addr_spec == "news@example.org"
    assert settings.sender.display_name == "Test News"
    assert settings.locale == "en"
    assert settings.transport.kind == "outbox"
    assert settings.footer.address == "1 Main Street\nTown"
    assert settings.warnings == ()


def test_example_project_config_loads(settings: Settings) -> None:
    assert settings.reply_to is not None
    assert [link.network for link in settings.footer.social] == ["instagram", "mastodon", "web"]
    assert settings.footer.partners[0].name == "Buurtfonds"
    assert settings.unsubscribe.url == "https://riverside-garden.example.org/unsubscribe"


def test_every_problem_is_reported_at_once_with_its_key_and_line(tmp_path: Path) -> None:
    text = """\
[newsletter]
name = "X"
from = "not an address"
locale = "english"
brand_color = "green"

[footer]
contact = "a@b.org"

[transport]
kind = "smpt"
password = "hunter2"
"""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    message = str(caught.value)
    path = tmp_path / "newsletter.toml"
    assert f"{path}:3: newsletter.from: is not an email address" in message
    assert f"{path}:4: newsletter.locale: must be a locale code" in message
    assert f"{path}:5: newsletter.brand_color: must be a colour" in message
    assert f"{path}:7: footer.address: is required" in message  # the [footer] line
    assert "unknown transport 'smpt'; use one of outbox, smtp, postmark," in message
    assert "(did you mean 'smtp'?)" in message
    assert f"{path}:12: transport.password: secrets do not belong in newsletter.toml" in message
    assert "hunter2" not in message
    assert message.startswith("6 configuration problems:")


def test_unknown_keys_are_warned_with_a_suggestion(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, MINIMAL.replace('name = "Test News"', 'name = "T"\nlocal = "nl"'))
    )
    assert any(
        "newsletter.toml:3: unknown key 'newsletter.local' is ignored (did you mean 'locale'?)" in w
        for w in settings.warnings
    )


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL + "\nbroken = \n"))
    assert "newsletter.toml:8: is not valid TOML" in str(caught.value)


def test_missing_config_has_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert "newsletter.toml: not found" in str(caught.value)
    assert caught.value.hint and "newsletter init" in caught.value.hint


def test_header_injection_in_from_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'from = "Test News <news@example.org>"', 'from = "A <a@example.org>\\r\\nBcc: x@evil.org"'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert "newsletter.from: must be on one line" in str(caught.value)


def test_secret_comes_from_the_environment_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    monkeypatch.delenv("NEWSLETTER_SECRET", raising=False)
    assert settings.secret() is None
    (tmp_path / ".newsletter-secret").write_text("from-file\n")
    assert settings.secret() == b"from-file"
    monkeypatch.setenv("NEWSLETTER_SECRET", "from-env")
    assert settings.secret() == b"from-env"


# --- one reader for every table -------------------------------------------------------------------


def test_an_unknown_key_is_a_warning_in_every_table_alike(tmp_path: Path) -> None:
    text = MINIMAL.replace('name = "Test News"', 'name = "T"\nlocal = "nl"') + (
        '\n[serve]\nprot = 9000\n\n[dkim]\ndomain = "example.org"\nselector = "s1"\n'
        'key_file = "dkim.pem"\nkeyfile = "x.pem"\n'
    )
    settings = load_settings(write(tmp_path, text))
    path = tmp_path / "newsletter.toml"
    assert settings.warnings == (
        f"{path}:3: unknown key 'newsletter.local' is ignored (did you mean 'locale'?)",
        f"{path}:10: unknown key 'serve.prot' is ignored (did you mean 'port'?)",
        f"{path}:16: unknown key 'dkim.keyfile' is ignored (did you mean 'key_file'?)",
    )
    assert settings.serve.port == 8080


def test_an_unknown_table_is_warned_with_its_line(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL + "\n[sever]\nport = 1\n"))
    assert settings.warnings == (
        f"{tmp_path / 'newsletter.toml'}:8: unknown table '[sever]' is ignored "
        "(did you mean '[serve]'?)",
    )


@pytest.mark.parametrize("table", ["newsletter", "serve", "inbox", "links"])
def test_a_key_that_looks_like_a_secret_is_an_error_in_every_table(
    tmp_path: Path, table: str
) -> None:
    extra = {
        "newsletter": "",
        "serve": "\n[serve]\n",
        "inbox": '\n[inbox]\nhost = "imap.example.org"\nusername = "u"\n',
        "links": '\n[links]\ndomains = ["example.org"]\n',
    }[table]
    text = MINIMAL + extra + 'smtp_token = "s3cret"\n'
    if table == "newsletter":
        text = MINIMAL.replace('name = "Test News"', 'name = "T"\nsmtp_token = "s3cret"')
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    message = str(caught.value)
    assert f"{table}.smtp_token: secrets do not belong in newsletter.toml" in message
    assert "s3cret" not in message


# (table header, its body, the line of the error, the error). The header goes on line 9 (after
# MINIMAL, a blank line and a comment); [newsletter] and [footer] are MINIMAL's own (lines 1, 5).
ERRORS_IN_EVERY_TABLE = [
    ("[newsletter]", 'logo_width = "wide"', 2, "newsletter.logo_width: must be a whole number"),
    ("[footer]", "contact = 3", 6, "footer.contact: must be a string"),
    ("[footer.social]", 'myspace = "https://myspace.example"', 10,
     "footer.social.myspace: unknown network"),
    ("[[footer.partners]]", 'name = "No logo"', 9, "footer.partners[1]: needs at least a 'logo'"),
    ("[unsubscribe]", 'url = "http://example.org/u"', 10, "unsubscribe.url: must be an https://"),
    ("[transport]", "port = 70000", 10, "transport.port: must be at most 65535"),
    ("[sending]", "max_attempts = 0", 10, "sending.max_attempts: must be at least 1"),
    ("[sending]", 'retry_for = "2 weeks"', 10, "sending.retry_for: must be seconds or a duration"),
    ("[sending]", 'retry_for = "30s"', 10, "sending.retry_for: must be at least 60 seconds"),
    ("[sending]", "retry_for = nan", 10, "sending.retry_for: must be at least 60 seconds"),
    ("[sending]", 'wait_for_retries = "-5m"', 10, "sending.wait_for_retries: must be seconds"),
    ("[sending]", 'return_path = "Bounces <b@example.org>"', 10,
     "sending.return_path: must be a bare email address"),
    ("[sending]", 'return_path = "b+x@example.org"', 10,
     "sending.return_path: must not contain '+'"),
    ("[sending]", "verp = true", 10, "sending.verp: needs return_path"),
    ("[sending]", 'feedback_id = "a b"', 10, "sending.feedback_id: must be letters"),
    ("[links]", 'domains = ["https://example.org/"]', 10, "links.domains: entry 1"),
    ("[serve]", 'root_path = "news"', 10, "serve.root_path: must be a path starting with '/'"),
    ("[inbox]", 'soft_bounce_limit = 0\nhost = "imap.example.org"\nusername = "u"', 10,
     "inbox.soft_bounce_limit: must be a whole number of at least 1"),
    ("[dkim]", 'selector = "s1"\nkey_file = "k.pem"\ndomain = "localhost"', 12,
     "dkim.domain: must be a domain name"),
]  # fmt: skip


@pytest.mark.parametrize(("header", "body", "line", "expected"), ERRORS_IN_EVERY_TABLE)
def test_an_error_in_any_table_names_file_line_and_key(
    tmp_path: Path, header: str, body: str, line: int, expected: str
) -> None:
    if header in MINIMAL:
        text = MINIMAL.replace(f"{header}\n", f"{header}\n{body}\n")
    else:
        text = MINIMAL + f"\n# a comment\n{header}\n{body}\n"
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert f"{tmp_path / 'newsletter.toml'}:{line}: {expected}" in str(caught.value)


def test_a_missing_required_key_points_at_its_table(tmp_path: Path) -> None:
    text = MINIMAL + '\n[inbox]\nhost = "imap.example.org"\n'
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    path = tmp_path / "newsletter.toml"
    assert f"{path}:8: inbox.username: is required when [inbox] is present" in str(caught.value)


# --- provider settings, checked at load time by the registry's rules -----------------------------


@pytest.mark.parametrize(
    ("transport", "expected"),
    [
        ('kind = "mailgun"\nregion = "asia"',
         ":10: transport.region: must be 'us' or 'eu' for Mailgun, not 'asia'"),
        ('kind = "mailgun"\ndomain = "mg.example.org/x"',
         ":10: transport.domain: 'mg.example.org/x' is not a Mailgun sending domain"),
        ('kind = "sparkpost"\nsandbox = true',
         ":10: transport.sandbox: SparkPost has no test mode for your own messages"),
        ('kind = "ses"\nregion = "Europe"', ":10: transport.region: 'Europe' is not an AWS region"),
        ('kind = "ses"\napi_key_env = "MY_KEY"',
         ":10: transport.api_key_env: is not used by the ses transport"),
    ],
)  # fmt: skip
def test_a_provider_setting_error_is_found_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str, expected: str
) -> None:
    for variable in ("MAILGUN_API_KEY", "SPARKPOST_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_REGION"):
        monkeypatch.delenv(variable, raising=False)  # found without looking at any secret
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL + f"\n[transport]\n{transport}\n"))
    assert f"{tmp_path / 'newsletter.toml'}{expected}" in str(caught.value)


def test_good_provider_settings_load(tmp_path: Path) -> None:
    text = MINIMAL + '\n[transport]\nkind = "mailgun"\nregion = "EU"\ndomain = "mg.example.org"\n'
    settings = load_settings(write(tmp_path, text))
    assert (settings.transport.region, settings.transport.domain) == ("EU", "mg.example.org")
    assert settings.warnings == ()


def test_a_provider_setting_for_another_transport_is_warned(tmp_path: Path) -> None:
    text = MINIMAL + '\n[transport]\nkind = "sendgrid"\nmessage_stream = "news"\n'
    settings = load_settings(write(tmp_path, text))
    assert settings.warnings == (
        f"{tmp_path / 'newsletter.toml'}:10: 'transport.message_stream' is not used by the "
        "sendgrid transport (only by postmark); it is ignored",
    )


# --- hostile or unlucky values (issue 15: D10, D12, D17) ---------------------------------------


@pytest.mark.parametrize(
    ("table", "value"),
    [
        ("[transport]", "timeout = nan"),
        ("[transport]", "timeout = inf"),
        ("[sending]", "rate_per_second = nan"),
        ("[sending]", "rate_per_hour = inf"),
        ("[inbox]", 'host = "imap.example.org"\nusername = "u"\ntimeout = nan'),
        ("[inbox]", 'host = "imap.example.org"\nusername = "u"\ntimeout = -inf'),
    ],
)
def test_a_number_that_is_not_finite_is_refused_with_its_key(
    tmp_path: Path, table: str, value: str
) -> None:
    key = value.splitlines()[-1].split(" = ")[0]
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL + f"\n{table}\n{value}\n"))
    path = tmp_path / "newsletter.toml"
    line = 8 + len(value.splitlines())
    assert f"{path}:{line}: {table.strip('[]')}.{key}: must be a finite number" in str(caught.value)


@pytest.mark.parametrize(
    "extra",
    ["deep = " + "{ a = " * 2000 + "1" + " }" * 2000, "deep = " + "[" * 2000 + "]" * 2000],
)
def test_thousands_of_nested_tables_are_a_clear_error(tmp_path: Path, extra: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL + "\n" + extra + "\n"))
    assert f"{tmp_path / 'newsletter.toml'}:8: is nested too deeply" in str(caught.value)


def test_thousands_of_nested_table_headers_are_only_an_unknown_table(tmp_path: Path) -> None:
    deep = "[" + ".".join(["a"] * 2000) + "]\nx = 1\n"
    settings = load_settings(write(tmp_path, MINIMAL + "\n" + deep))
    assert "unknown table '[a]'" in " ".join(settings.warnings)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("from", "a@example.org, evil@attacker.example", "must be exactly one address"),
        ("from", "News <a@example.org>, evil@attacker.example", "must be exactly one address"),
        ("from", "a@example.org <evil@attacker.example>", "must be exactly one address"),
        ("from", "a@example.org; evil@attacker.example", "must be exactly one address"),
        ("from", "Evil\\u2028From: evil@attacker.example <a@example.org>", "control"),
        ("from", "Evil\\u2029 <a@example.org>", "control"),
        ("from", "Evil\\u0000 <a@example.org>", "control"),
        ("from", "Evil\\u202e <a@example.org>", "control"),
        ("reply_to", "a@example.org, evil@attacker.example", "must be exactly one address"),
        ("reply_to", "Team\\u2028 <team@example.org>", "control"),
    ],
)
def test_a_config_address_that_does_not_parse_exactly_is_refused(
    tmp_path: Path, key: str, value: str, expected: str
) -> None:
    text = MINIMAL.replace('name = "Test News"', f'name = "Test News"\n{key} = "{value}"')
    if key == "from":
        text = text.replace('from = "Test News <news@example.org>"\n', "")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    message = str(caught.value)
    assert f"{tmp_path / 'newsletter.toml'}:3: newsletter.{key}: " in message
    assert expected in message


def test_a_reviewer_with_two_addresses_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'name = "Test News"', 'name = "Test News"\nreviewers = ["a@example.org, b@evil.example"]'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert ":3: newsletter.reviewers: entry 1" in str(caught.value)


def test_unsubscribe_mailto_with_two_addresses_is_refused(tmp_path: Path) -> None:
    text = MINIMAL + '\n[unsubscribe]\nmailto = "u@example.org, evil@attacker.example"\n'
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert ":9: unsubscribe.mailto: must be exactly one address" in str(caught.value)


def test_good_addresses_still_load(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'name = "Test News"',
        'name = "Test News"\nreply_to = "\\"Team, Garden\\" <team@example.org>"\n'
        'reviewers = ["Ann <ann@example.org>", "bob@example.org"]',
    )
    settings = load_settings(write(tmp_path, text))
    assert settings.reply_to is not None
    assert settings.reply_to.display_name == "Team, Garden"
    assert settings.reviewers == ("Ann <ann@example.org>", "bob@example.org")


@pytest.mark.parametrize(
    "url", ["http://api.example.com/v3", "http://10.0.0.5:8080", "http://localhost.evil.example/"]
)
def test_a_provider_api_url_over_plain_http_off_loopback_is_refused(
    tmp_path: Path, url: str
) -> None:
    text = MINIMAL + f'\n[transport]\nkind = "postmark"\napi_url = "{url}"\n'
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert ":10: transport.api_url: must be https://" in str(caught.value)


@pytest.mark.parametrize(
    "url", ["https://api.eu.example.com", "http://127.0.0.1:8025", "http://localhost:9/x",
            "http://[::1]:8080/"],
)  # fmt: skip
def test_a_provider_api_url_over_https_or_to_loopback_loads(tmp_path: Path, url: str) -> None:
    text = MINIMAL + f'\n[transport]\nkind = "postmark"\napi_url = "{url}"\n'
    assert load_settings(write(tmp_path, text)).transport.api_url == url


def test_sending_durable_is_a_boolean(tmp_path: Path) -> None:
    """Issue 15, D23: `[sending] durable = true` asks for an fsync per ledger commit."""
    assert load_settings(write(tmp_path, MINIMAL)).sending.durable is False
    on = load_settings(write(tmp_path, MINIMAL + "\n[sending]\ndurable = true\n"))
    assert on.sending.durable is True
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL + '\n[sending]\ndurable = "yes"\n'))
    assert "sending.durable" in str(caught.value)


def test_token_settings_load_and_bad_values_name_file_and_key(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, MINIMAL)).unsubscribe.token_days == 1095
    text = MINIMAL + "\n[unsubscribe]\ntoken_days = 0\nlegacy_tokens = false\n"
    unsubscribe = load_settings(write(tmp_path, text)).unsubscribe
    assert (unsubscribe.token_days, unsubscribe.legacy_tokens) == (0, False)
    for value, expected in (
        ("-1", "unsubscribe.token_days: must be at least 0"),
        ("2.5", "unsubscribe.token_days"),
        ('"forever"', "unsubscribe.token_days"),
    ):
        text = MINIMAL + f"\n[unsubscribe]\ntoken_days = {value}\n"
        with pytest.raises(ConfigError) as caught:
            load_settings(write(tmp_path, text))
        assert f"{tmp_path / 'newsletter.toml'}:9: {expected}" in str(caught.value)
    text = MINIMAL + '\n[unsubscribe]\nlegacy_tokens = "no"\n'
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert ":9: unsubscribe.legacy_tokens" in str(caught.value)
