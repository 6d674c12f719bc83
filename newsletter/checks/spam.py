"""Spam score: the built sample message scored by SpamAssassin, offline (`spamassassin -L -t`).

Only the rules the Debian package ships are used (no `sa-update`, no network tests, no Bayes), so
a score is the same on every machine with the same SpamAssassin version. Bayes is switched off
because scoring would otherwise teach the editor's own Bayes database our sample message.

Because the score is a function of the message and of SpamAssassin's program, rules and
configuration, it is kept in `.newsletter-cache/spam.json` (`SpamCache`): a `send` right after a
`check` of the same content does not pay SpamAssassin's seconds again. The key is the message
without its Date header plus what identifies the installed SpamAssassin (`checks.spamid`).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..audience import Subscriber
from ..config import Settings
from ..delivery.message import MessageTemplate
from ..errors import NewsletterError
from ..render.model import RenderedIssue
from .cachefile import read_cache, write_cache
from .model import Finding, Severity
from .spamid import SPAMASSASSIN_PATHS, spamassassin_identity

WARN_SCORE = 3.0
ERROR_SCORE = 5.0
SPAM_TIMEOUT = 60.0
INSTALL_HINT = "install it with 'apt-get install spamassassin' (Debian/Ubuntu)"

# Rules that fire only because the sample was never handed to a mail server: it has no Received
# headers, so SpamAssassin sees no relays at all (or only trusted ones) and no relay to look up.
# The real message gets those headers from the sending server; these say nothing about content.
UNSENT_MESSAGE_RULES = frozenset(
    {
        "NO_RECEIVED",  # no Received headers
        "NO_RELAYS",  # not relayed via SMTP
        "ALL_TRUSTED",  # every relay (none) trusted
        "RDNS_NONE",  # relay without reverse DNS: there is no relay
        "RDNS_DYNAMIC",
        "UNPARSEABLE_RELAY",
    }
)

_SUMMARY = re.compile(
    r"Content analysis details:\s+\((-?\d+(?:\.\d+)?) points?, (-?\d+(?:\.\d+)?) required\)"
)
_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s*(.*)$")
_TESTS = re.compile(r"tests=([A-Z0-9_,\s]*?)\s+(?:autolearn|version)=", re.S)


@dataclass(frozen=True)
class SpamRule:
    name: str
    points: float
    description: str


@dataclass(frozen=True)
class SpamScore:
    """The score without the unsent-message rules, and the rules that fired (those left out
    are in `ignored`)."""

    score: float
    rules: tuple[SpamRule, ...]
    ignored: tuple[SpamRule, ...]
    required: float = 5.0


# --- the cache of scores ---------------------------------------------------------------------

SPAM_CACHE_FILE = "spam.json"
# Part of every key: bump it when what is scored or how a report is read changes.
SPAM_CACHE_VERSION = "1"
# Entries not used for this long are dropped when the file is written.
SPAM_CACHE_KEEP = 30 * 24 * 3600.0
_DATE_HEADER = re.compile(rb"(?im)^Date:[^\n]*\n")


def spam_cache_key(
    message: bytes, executable: str, *, extra: tuple[str, ...] = SPAMASSASSIN_PATHS
) -> str:
    """What a score depends on: the message (its Date header aside: it changes every second and,
    without Received headers, no rule compares it with anything) and the SpamAssassin used."""
    digest = hashlib.sha256()
    for part in (SPAM_CACHE_VERSION.encode(), spamassassin_identity(executable, extra).encode()):
        digest.update(part + b"\0")
    digest.update(_DATE_HEADER.sub(b"", message, count=1))
    return digest.hexdigest()


@dataclass
class SpamCache:
    """Scores per `spam_cache_key`, in a JSON file (None: in memory only). `read=False` scores
    afresh but still records the new score (`check --no-cache`)."""

    path: Path | None
    read: bool = True
    clock: Callable[[], float] = time.time
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: bool = False

    @classmethod
    def load(
        cls, path: Path | None, *, read: bool = True, clock: Callable[[], float] = time.time
    ) -> SpamCache:
        cache = cls(path, read, clock)
        if path is None:
            return cache
        cache.entries = {
            key: entry
            for key, entry in read_cache(path).items()
            if isinstance(entry, dict) and isinstance(entry.get("used_at"), int | float)
        }
        return cache

    def get(self, key: str) -> SpamScore | None:
        entry = self.entries.get(key) if self.read else None
        if entry is None:
            return None
        try:
            score = entry["score"]
            found = SpamScore(
                score=float(score["score"]),
                rules=tuple(SpamRule(**rule) for rule in score["rules"]),
                ignored=tuple(SpamRule(**rule) for rule in score["ignored"]),
                required=float(score["required"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        entry["used_at"] = self.clock()
        self.changed = True
        return found

    def put(self, key: str, score: SpamScore) -> None:
        self.entries[key] = {"used_at": self.clock(), "score": asdict(score)}
        self.changed = True

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        now = self.clock()
        kept = {
            key: entry
            for key, entry in self.entries.items()
            if now - entry["used_at"] < SPAM_CACHE_KEEP
        }
        write_cache(self.path, kept)


def find_spamassassin(executable: str | None) -> str | None:
    if not executable:
        return None
    if "/" in executable:
        return executable if Path(executable).is_file() else None
    return shutil.which(executable)


def score_message(message: bytes, executable: str, *, timeout: float = SPAM_TIMEOUT) -> SpamScore:
    """Run SpamAssassin on `message` (local tests only) and parse its report.

    Raises `NewsletterError` when it cannot run, takes longer than `timeout` or answers with
    something that is not a report.
    """
    with tempfile.TemporaryDirectory(prefix="newsletter-sa-") as folder:
        prefs = Path(folder) / "user_prefs"
        prefs.write_text("", encoding="utf-8")  # the editor's own SpamAssassin settings stay out
        command = [
            executable,
            "--local",
            "--test-mode",
            "--prefspath",
            str(prefs),
            "--cf=use_bayes 0",
            "--cf=bayes_auto_learn 0",
            "--cf=report_safe 0",
        ]
        try:
            completed = subprocess.run(
                command, input=message, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise NewsletterError(
                f"SpamAssassin took longer than {timeout:g} s and was stopped"
            ) from err
        except OSError as err:
            raise NewsletterError(f"cannot run SpamAssassin ({executable}): {err}") from err
    output = completed.stdout.decode("utf-8", "replace")
    parsed = parse_report(output)
    if parsed is None:
        error = completed.stderr.decode("utf-8", "replace").strip().splitlines()
        raise NewsletterError(
            f"SpamAssassin gave no report (exit status {completed.returncode})"
            + (f": {error[-1]}" if error else "")
        )
    return parsed


def parse_report(output: str) -> SpamScore | None:
    """The score and rules of a `spamassassin --test-mode` report; None when there is none."""
    summary = _SUMMARY.search(output)
    if summary is None:
        return None
    total, required = float(summary.group(1)), float(summary.group(2))
    rules: list[SpamRule] = []
    in_table = False
    for line in output[summary.end() :].splitlines():
        if line.startswith("----"):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.strip():
            break
        found = _RULE.match(line)
        if found:
            rules.append(SpamRule(found.group(2), float(found.group(1)), found.group(3).strip()))
        elif rules:  # a description continued on the next line
            last = rules[-1]
            rules[-1] = SpamRule(last.name, last.points, f"{last.description} {line.strip()}")
    if not rules:
        # Older reports without the table: the names are in X-Spam-Status, without points.
        tests = _TESTS.search(output)
        names = [n.strip() for n in tests.group(1).split(",") if n.strip()] if tests else []
        rules = [SpamRule(name, 0.0, "") for name in names]
    kept = tuple(rule for rule in rules if rule.name not in UNSENT_MESSAGE_RULES)
    ignored = tuple(rule for rule in rules if rule.name in UNSENT_MESSAGE_RULES)
    score = round(total - sum(rule.points for rule in ignored), 1)
    return SpamScore(score, kept, ignored, required)


def build_sample_message(rendered: RenderedIssue, settings: Settings) -> bytes:
    """The issue's message for the project's sample subscriber, as the send would build it.

    Raises `NewsletterError` when no message can be built (e.g. no unsubscribe configured).
    """
    template = MessageTemplate.prepare(
        rendered,
        settings,
        # A throwaway key: the sample's unsubscribe token is never used.
        secret=b"newsletter-check-sample",
        token_for=lambda secret, address: "sample-token",
    )
    return template.personalise(Subscriber.sample(settings.locale)).data


def check_spam(
    message: bytes | None,
    executable: str | None,
    *,
    issue_file: Path | None,
    timeout: float = SPAM_TIMEOUT,
    reason_missing: str | None = None,
    cache: SpamCache | None = None,
) -> list[Finding]:
    """Findings for the spam score of `message` (info findings when it cannot be scored).

    With a `cache`, a message scored before by the same SpamAssassin is not scored again, and a
    new score is recorded there (failures never are)."""
    if not executable:
        return []
    found = find_spamassassin(executable)
    if found is None:
        return [
            Finding(
                "info",
                "spam-skipped",
                f"spam score not checked: SpamAssassin ('{executable}') is not installed; "
                f"{INSTALL_HINT}",
            )
        ]
    if message is None:
        why = f" ({reason_missing})" if reason_missing else ""
        return [Finding("info", "spam-skipped", f"spam score not checked: no sample message{why}")]
    key = spam_cache_key(message, found) if cache is not None else ""
    result = cache.get(key) if cache is not None else None
    if result is None:
        try:
            result = score_message(message, found, timeout=timeout)
        except NewsletterError as err:
            return [Finding("warning", "spam-failed", f"spam score not checked: {err.message}")]
        if cache is not None:
            cache.put(key, result)
    if cache is not None:
        cache.save()
    listed = ", ".join(
        f"{rule.name} ({rule.points:+.1f}{': ' + rule.description if rule.description else ''})"
        for rule in sorted(result.rules, key=lambda rule: -rule.points)
        if rule.points != 0
    )
    detail = f"; rules: {listed}" if listed else ""
    severity: Severity
    if result.score >= ERROR_SCORE:
        severity = "error"
        verdict = "SpamAssassin would file it as spam"
    elif result.score >= WARN_SCORE:
        severity = "warning"
        verdict = f"close to SpamAssassin's spam threshold of {ERROR_SCORE:g}"
    else:
        return [Finding("info", "spam-score", f"spam score {result.score:g} (fine){detail}")]
    return [
        Finding(
            severity,
            "spam-score",
            f"spam score {result.score:g}: {verdict}{detail}",
            issue_file,
        )
    ]
