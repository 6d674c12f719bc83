"""The typed errors of the library, caught once at the CLI edge.

Every error carries a message a user can act on, an optional hint, and the exit code the
CLI uses. Messages name the file, line, key or recipient concerned.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class ExitCode(enum.IntEnum):
    """The exit statuses of every command, for cron and CI (documented in the README).

    A send exits 0 only when every recipient has the issue; otherwise the most pressing of what
    is left: paused (the sender was refused or the run was stopped), uncertain, deferred
    (waiting for a retry), failed.
    """

    OK = 0
    ERROR = 1  # usage, configuration, content: nothing was sent
    FAILED = 3  # some recipients failed permanently; the rest were sent
    UNCERTAIN = 4  # some messages may or may not have been delivered
    PAUSED = 5  # the run stopped before the end (sender refused, Ctrl-C, SIGTERM): run it again
    DEFERRED = 6  # some messages wait for a retry (--no-wait, or a retry later)


@dataclass(frozen=True)
class Problem:
    """One problem found while validating input (a file, a line, a key)."""

    message: str
    file: Path | None = None
    line: int | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


class NewsletterError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code: int = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ProblemsError(NewsletterError):
    """Several problems found at once; all are reported together."""

    title = "problems"

    def __init__(self, problems: list[Problem], *, hint: str | None = None) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = [f"{count} {self.title if count != 1 else self.title.rstrip('s')}:"]
        lines += [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines), hint=hint)


class ConfigError(ProblemsError):
    """`newsletter.toml` is missing, unreadable or invalid."""

    title = "configuration problems"


class ContentError(ProblemsError):
    """An issue's Markdown files are invalid."""

    title = "content problems"


class RenderError(ProblemsError):
    """A template failed to render or compile."""

    title = "template problems"


class ProjectError(NewsletterError):
    """The project layout is wrong (no project, issue not found, file exists)."""


class AudienceError(NewsletterError):
    """The subscriber list or one of its entries is invalid."""


class LedgerError(NewsletterError):
    """The send ledger refuses an operation (locked, changed content, ...)."""


class InboxError(NewsletterError):
    """The mailbox cannot be read or changed (connection, login, folder, server reply)."""


class DeliveryError(NewsletterError):
    """A message could not be handed to the transport."""

    def __init__(self, message: str, *, hint: str | None = None, reply: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reply = reply


class TransientDeliveryError(DeliveryError):
    """Worth retrying later: 4xx replies, dropped connections before the data was accepted."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        reply: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, hint=hint, reply=reply)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Not worth retrying for this recipient: 5xx replies, addresses the server cannot take."""


class RecipientRejectedError(PermanentDeliveryError):
    """The server refused this one recipient; others may still be sent."""


class UncertainDeliveryError(DeliveryError):
    """The message may or may not have been accepted (e.g. connection lost after the data)."""


class NotStartedError(DeliveryError):
    """A message of a batch the transport did not begin because the run is stopping: nothing of
    it reached the server, and its ledger row stays as it was (sent by the next run)."""


class TransportUnavailableError(DeliveryError):
    """The transport cannot work at all (server down, authentication failed): stop the run."""


class SenderRefusedError(TransportUnavailableError):
    """The server refused us, not the recipient (530/535 authentication, a 5xx at MAIL FROM, a
    5.7.x policy refusal of the message): no recipient can be sent to, so the run pauses and
    nobody is failed for it."""
