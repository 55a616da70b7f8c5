"""Console sessions: an admin key traded, at the console's login form, for a cookie secret.

A browser cannot add an ``Authorization`` header to a link or a form, so the operator console
(``/console``, docs/console.md) logs in once with an admin key and then carries a session
cookie. The cookie's value is 32 random bytes (base64url); only its SHA-256 digest is stored,
with the key that logged in and an absolute expiry. A session is honoured only while its key is
live and has the admin scope: revoking the key ends every session it opened, on every replica,
with the revoke's commit (each console request reads the session's row and its key's row —
two indexed reads, no cache). Logging out deletes the row.
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta

from allotment.clock import Clock
from allotment.domain.api_keys import ApiKey, Scope, hash_secret
from allotment.storage import console_sessions_repo
from allotment.storage.database import Database

SESSION_SECONDS = 8 * 3600
"""A session's life from its login (a working day); then the login form again."""
SESSION_SECRET_BYTES = 32
_SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")
"""The cookie value's shape: 32 bytes in unpadded base64url (anything else costs no read)."""


class ConsoleSessions:
    def __init__(self, db: Database, clock: Clock, *, seconds: int = SESSION_SECONDS) -> None:
        self._db = db
        self._clock = clock
        self.seconds = seconds
        self._life = timedelta(seconds=seconds)

    def open(self, key: ApiKey) -> str:
        """A new session for this (authenticated, admin) key: the cookie's secret."""
        if key.scope is not Scope.ADMIN or key.revoked:
            raise ValueError("a console session needs a live admin key")
        secret = secrets.token_urlsafe(SESSION_SECRET_BYTES)
        now = self._clock.now()
        with self._db.write() as tx:
            console_sessions_repo.delete_expired(tx, now)
            console_sessions_repo.insert(tx, hash_secret(secret), key.id, now, now + self._life)
        return secret

    def key_of(self, secret: str) -> ApiKey | None:
        """The live admin key behind this session secret, or None (unknown, expired, the key
        revoked or no longer admin)."""
        if _SECRET.match(secret) is None:
            return None
        with self._db.read() as tx:
            key = console_sessions_repo.live_key(tx, hash_secret(secret), self._clock.now())
        if key is None or key.revoked or key.scope is not Scope.ADMIN:
            return None
        return key

    def close(self, secret: str) -> None:
        if _SECRET.match(secret) is None:
            return
        with self._db.write() as tx:
            console_sessions_repo.delete(tx, hash_secret(secret))
