"""`TokenBook`: the opaque unsubscribe tokens of one list, made and read back.

Making a token needs no database (the reference is an HMAC of the subscriber's key), so a send
personalises as fast as before. Reading one checks its MAC first (a forgery never reaches the
database), then looks the reference up in `unsubscribe_refs`. That table is filled lazily: on a
miss, the references of every subscriber who has none yet (for this secret and list) are written,
at most once per `refill_seconds` per process, in short transactions. Several processes (uvicorn
workers, `inbox process`) may fill it at once: rows are inserted with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import AudienceError
from ..tokens import make_opaque_token, read_unsubscribe_token, subscriber_ref
from .addresses import address_key, lookup_key

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["TokenBook", "TokenLookupError", "opaque_token_maker"]

_CHUNK = 2000  # rows per transaction while filling: never a long write lock
_FIND = (
    "SELECT s.email FROM unsubscribe_refs r JOIN subscribers s ON s.key = r.subscriber_key"
    " WHERE r.keyring = :keyring AND r.ref = :ref"
)
_MISSING = (
    "SELECT s.key FROM subscribers s WHERE s.key > :after AND NOT EXISTS (SELECT 1 FROM"
    " unsubscribe_refs r WHERE r.subscriber_key = s.key AND r.keyring = :keyring)"
    " ORDER BY s.key LIMIT :limit"
)
_ADD = (
    "INSERT INTO unsubscribe_refs (keyring, ref, subscriber_key) VALUES (:keyring, :ref, :key)"
    " ON CONFLICT DO NOTHING"
)


class TokenLookupError(AudienceError):
    """The store did not answer (locked past its busy timeout, gone): the token may be fine."""


def opaque_token_maker(
    list_id: str, *, clock: Callable[[], float] = time.time
) -> Callable[[bytes, str], str]:
    """A `token_for(secret, email)` for the message template: opaque tokens of `list_id`."""

    def token_for(secret: bytes, email: str) -> str:
        # A recipient's address comes from the store, already normalised: casefolding gives
        # its key (the full normalisation would cost 40 % of a token, per message).
        return make_opaque_token(secret, list_id, address_key(email), now=clock())

    return token_for


class TokenBook:
    """Reads the unsubscribe tokens of one list (opaque, and the older form if accepted)."""

    def __init__(
        self,
        store: Store | Callable[[], Store],
        secret: bytes,
        list_id: str,
        *,
        max_age_days: int = 0,
        accept_legacy: bool = True,
        clock: Callable[[], float] = time.time,
        refill_seconds: float = 10.0,
    ) -> None:
        self._store = store if callable(store) else (lambda: store)
        self.secret = secret
        self.list_id = list_id
        self.max_age_days = max_age_days
        self.accept_legacy = accept_legacy
        self.clock = clock
        self.refill_seconds = refill_seconds
        self.keyring = hmac.new(
            secret, b"newsletter/keyring\x00" + list_id.encode("utf-8"), hashlib.sha256
        ).hexdigest()[:16]
        self._lock = threading.Lock()
        self._last_fill: float | None = None

    def make(self, email: str) -> str:
        """An opaque token for `email` on this list, made now."""
        return make_opaque_token(self.secret, self.list_id, lookup_key(email), now=self.clock())

    def recipient(self, token: str) -> str | None:
        """The address a genuine token names: the older form's address, or the subscriber the
        opaque form refers to (None when no subscriber has that reference: removed, or a token
        made for a test copy). AudienceError when it is not genuine, ExpiredTokenError when too
        old, TokenLookupError when the store does not answer."""
        claim = read_unsubscribe_token(
            self.secret,
            token,
            list_id=self.list_id,
            now=self.clock(),
            max_age_days=self.max_age_days,
            accept_legacy=self.accept_legacy,
        )
        if claim.address is not None:
            return claim.address
        assert claim.ref is not None
        ref = claim.ref.hex()
        found = self._find(ref)
        if found is None and self._may_fill():
            self.fill()
            found = self._find(ref)
        return found

    def resolve(self, token: str) -> str | None:
        """`recipient`, with None for anything not genuine (for mail, which has no page)."""
        try:
            return self.recipient(token)
        except AudienceError:
            return None

    def _find(self, ref: str) -> str | None:
        database = self._store()
        try:
            with database.read() as db:
                row = db.execute(_FIND, {"keyring": self.keyring, "ref": ref}).fetchone()
        except database.errors as err:
            raise TokenLookupError(f"{database.where}: cannot look up a token: {err}") from err
        return None if row is None else str(row[0])

    def _may_fill(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if self._last_fill is not None and now - self._last_fill < self.refill_seconds:
                return False
            self._last_fill = now
            return True

    def fill(self) -> int:
        """Write the references of every subscriber without one (for this secret and list);
        how many were written. Short transactions of a few thousand rows each."""
        database = self._store()
        written = 0
        after = ""
        try:
            while True:
                with database.read() as db:
                    keys = [
                        str(row[0])
                        for row in db.execute(
                            _MISSING, {"keyring": self.keyring, "after": after, "limit": _CHUNK}
                        ).fetchall()
                    ]
                if not keys:
                    return written
                rows = [
                    {
                        "keyring": self.keyring,
                        "ref": subscriber_ref(self.secret, self.list_id, key).hex(),
                        "key": key,
                    }
                    for key in keys
                ]
                with database.transaction() as db:
                    db.executemany(_ADD, rows)
                written += len(rows)
                after = keys[-1]
        except database.errors as err:
            raise TokenLookupError(f"{database.where}: cannot index the tokens: {err}") from err
