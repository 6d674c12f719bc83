"""Pull a provider's bounces, complaints and unsubscribes into the subscriber store.

A provider transport offers its suppression list as a `SuppressionSource` (`transport.
suppression_source()`); `sync_suppressions(source, store)` marks each listed subscriber `bounced`,
`complained` or `unsubscribed` (source `provider:<name>`), so they are never mailed again. It only
ever moves people *out* of `subscribed`: nobody is re-subscribed, and someone who already left
keeps the status they have. Addresses the store does not know are counted, not added.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from ..audience import SubscriberStatus, SubscriberStore
from ..config import Settings
from ..config_reader import located
from ..errors import AudienceError, ConfigError, Problem
from ..providers import PROVIDERS
from .transports import provider_class
from .transports.base import Suppression, SuppressionKind, SuppressionSource

# Suppression, SuppressionKind and SuppressionSource live in transports/base.py (the providers
# import them from there, below this module); re-exported for code written against this module.
__all__ = [
    "Suppression",
    "SuppressionKind",
    "SuppressionSource",
    "SyncReport",
    "suppression_source",
    "sync_suppressions",
]

MAX_LISTED_CHANGES = 1000


_STATUS = {
    SuppressionKind.BOUNCE: SubscriberStatus.BOUNCED,
    SuppressionKind.COMPLAINT: SubscriberStatus.COMPLAINED,
    SuppressionKind.UNSUBSCRIBE: SubscriberStatus.UNSUBSCRIBED,
}


@dataclass(frozen=True)
class SyncReport:
    """What a sync found and changed. `changes` lists (address, old status, new status)."""

    provider: str
    seen: int = 0
    changed: Mapping[str, int] = field(default_factory=dict)
    unchanged: int = 0
    unknown: int = 0
    changes: tuple[tuple[str, str, str], ...] = ()
    dry_run: bool = False

    @property
    def total_changed(self) -> int:
        return sum(self.changed.values())


def sync_suppressions(
    source: SuppressionSource,
    store: SubscriberStore,
    *,
    since: datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> SyncReport:
    """Apply `source`'s suppressions to `store`; subscribed people only ever leave.

    `dry_run` reports what would change without writing. `progress` gets the number of
    suppressions read so far, every 500.
    """
    origin = f"provider:{source.name}"
    seen = unchanged = unknown = 0
    changed: dict[str, int] = {}
    changes: list[tuple[str, str, str]] = []
    handled: dict[str, str] = {}
    for suppression in source.fetch(since):
        seen += 1
        if progress is not None and seen % 500 == 0:
            progress(seen)
        new = _STATUS[suppression.kind]
        try:
            found = store.get(suppression.email)
        except AudienceError:  # an address the store could never hold
            found = None
        if found is None:
            unknown += 1
            continue
        current = handled.get(found.key, found.status)
        if current != SubscriberStatus.SUBSCRIBED:
            unchanged += 1
            continue
        if not dry_run:
            store.set_status(found.email, new, source=origin)
        handled[found.key] = new
        changed[new.value] = changed.get(new.value, 0) + 1
        if len(changes) < MAX_LISTED_CHANGES:
            changes.append((found.email, str(current), new.value))
    return SyncReport(
        provider=source.name,
        seen=seen,
        changed=changed,
        unchanged=unchanged,
        unknown=unknown,
        changes=tuple(changes),
        dry_run=dry_run,
    )


def suppression_source(
    settings: Settings, environ: Mapping[str, str] = os.environ, *, provider: str | None = None
) -> SuppressionSource:
    """The suppression list of `provider` (default: the configured transport kind).

    Uses the provider's real key even when `sandbox` is on (a test token cannot read lists).
    Raises `ConfigError` for a provider without one or a missing key (with file, line and key).
    """
    try:
        return _suppression_source(settings, environ, provider)
    except ConfigError as err:
        raise ConfigError(located(err.problems, settings.config_path), hint=err.hint) from err


def _suppression_source(
    settings: Settings, environ: Mapping[str, str], provider: str | None
) -> SuppressionSource:
    kind = provider or settings.transport.kind
    if kind not in PROVIDERS:
        raise ConfigError(
            [
                Problem(
                    f"'{kind}' is not a provider with a suppression list "
                    f"(one of: {', '.join(PROVIDERS)})",
                    file=settings.config_path,
                    key="transport.kind",
                )
            ]
        )
    transport = settings.transport
    if transport.kind != kind:  # another provider than the one sending: its defaults
        transport = replace(transport, kind=kind, api_url=None, api_key_env=None)
    cls = provider_class(kind)
    made = cls.from_settings(
        replace(transport, sandbox=False), environ, config_path=settings.config_path
    )
    source = made.suppression_source()
    if source is None:
        raise ConfigError(
            [
                Problem(
                    f"reading the {kind} suppression list is not supported yet",
                    file=settings.config_path,
                    key="transport.kind",
                )
            ]
        )
    return source
