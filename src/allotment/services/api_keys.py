"""API keys: issue, list, revoke, and authenticate a presented secret (with a bounded cache).

The lookup cache (one per process) maps a presented secret to its key for at most
``cache_seconds`` (default 1 s, at most 60, 0 = none): within that time a request is
authenticated from memory, without a database read. A revoke drops the key at once from the
revoking process's cache and, on PostgreSQL, announces it (``NOTIFY``, delivered at commit) so
every other replica drops it on receipt (:mod:`allotment.storage.key_revocations`);
``cache_seconds`` bounds the staleness when a notice cannot arrive (a replica reconnecting its
listener, several processes on one SQLite file). With ``cache_seconds = 0`` every request reads
the key's row by its unique digest. Unknown secrets are never cached (a key just
created works at once), and a revoked key is never cached as valid.

Whether authentication is on (any key exists, :meth:`keys_exist`) is cached the same way: once
a key is known to exist the answer is True for good (keys are never deleted; a revoked one
still counts), and "no key" is remembered for at most ``cache_seconds``. A create makes it True
at once on the creating process and, on PostgreSQL, announces the new key on the same channel,
so another replica's listener ends its "no key" answer on receipt (the next request reads the
table); ``cache_seconds`` bounds it when no notice arrives. A read that raced a create or a
notice never stores its stale "no key" (a generation counter).

``last_used_at`` is written at most once a minute per key (on a cache miss), so the hot path
does not write.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import timedelta

from allotment.clock import Clock
from allotment.domain import limits
from allotment.domain.api_keys import (
    ApiKey,
    check_name,
    digest_matches,
    display_prefix,
    format_secret,
    hash_secret,
    looks_like_secret,
    parse_scope,
)
from allotment.domain.errors import Conflict, DomainError, InvalidInput, NotFound
from allotment.domain.ids import new_ulid
from allotment.domain.timeutil import to_micros
from allotment.storage import api_keys_repo, key_revocations
from allotment.storage.database import Database, DuplicateKey

log = logging.getLogger("allotment.auth")

TOUCH_EVERY = timedelta(minutes=1)
MISS = object()
"""What :meth:`ApiKeyService.cached` answers when only the database can tell."""


class ApiKeyService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        cache_seconds: float = limits.AUTH_CACHE_SECONDS_DEFAULT,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= cache_seconds <= limits.AUTH_CACHE_SECONDS_MAX:
            raise InvalidInput(
                f"ALLOTMENT_AUTH_CACHE_SECONDS: must be between 0 and "
                f"{limits.AUTH_CACHE_SECONDS_MAX:g}, got {cache_seconds:g}",
                field="ALLOTMENT_AUTH_CACHE_SECONDS",
            )
        self._db = db
        self._clock = clock
        self._ttl = cache_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, ApiKey]] = OrderedDict()
        self._keys_exist = False
        self._keys_checked_at = float("-inf")
        self._keys_generation = 0

    # ------------------------------------------------------------------ manage

    def create(self, name: object, scope: object) -> tuple[ApiKey, str]:
        """A new key and its secret (the only time the secret exists outside the caller)."""
        checked_name = check_name(name)
        checked_scope = parse_scope(scope)
        now = self._clock.now()
        secret = format_secret(secrets.token_bytes(32))
        key = ApiKey(
            id=new_ulid(to_micros(now) // 1000),
            name=checked_name,
            scope=checked_scope,
            prefix=display_prefix(secret),
            created_at=now,
            last_used_at=None,
            revoked_at=None,
        )
        try:
            with self._db.write() as tx:
                if api_keys_repo.live_by_name(tx, checked_name) is not None:
                    raise self._taken(checked_name)
                api_keys_repo.insert(tx, key, hash_secret(secret))
                key_revocations.announce(tx, key.id)  # other replicas: auth is on now
        except DuplicateKey as exc:
            raise self._taken(checked_name) from exc
        with self._lock:
            self._keys_exist = True
            self._keys_generation += 1
        return key, secret

    @staticmethod
    def _taken(name: str) -> Conflict:
        return Conflict(
            f"name: a live API key named {name!r} exists (revoke it first)", field="name"
        )

    def list(self, limit: int = 100, after_id: str | None = None) -> list[ApiKey]:
        with self._db.read() as tx:
            return api_keys_repo.list_all(tx, limit, after_id)

    def get(self, name: str) -> ApiKey:
        with self._db.read() as tx:
            key = api_keys_repo.live_by_name(tx, check_name(name))
        if key is None:
            raise NotFound(f"no live API key named {name!r}", field="name")
        return key

    def revoke(self, name: str) -> ApiKey:
        now = self._clock.now()
        with self._db.write() as tx:
            key = api_keys_repo.live_by_name(tx, check_name(name))
            if key is None or not api_keys_repo.revoke(tx, key.id, now):
                raise NotFound(f"no live API key named {name!r}", field="name")
            key_revocations.announce(tx, key.id)
        self.forget(key.id)
        return ApiKey(
            id=key.id,
            name=key.name,
            scope=key.scope,
            prefix=key.prefix,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=now,
        )

    def forget(self, key_id: str | None) -> None:
        """A notice that ``key_id`` was revoked or created (None: anything may have changed):
        drop it from the lookup cache (None drops every key) and stop trusting a cached
        "no key exists"."""
        with self._lock:
            self._keys_checked_at = float("-inf")
            self._keys_generation += 1
            if key_id is None:
                self._cache.clear()
                return
            for presented, (_, cached) in list(self._cache.items()):
                if cached.id == key_id:
                    del self._cache[presented]

    # ------------------------------------------------------------------ authenticate

    def cached_keys_exist(self) -> bool | None:
        """Whether authentication is on (a key exists), from memory; None when stale."""
        if self._keys_exist:
            return True  # keys are never deleted (a revoked one still counts)
        if self._monotonic() - self._keys_checked_at < self._ttl:
            return False
        return None

    def keys_exist(self) -> bool:
        """Whether authentication is on: from memory when fresh, else one read of the table.
        A "no key" read is only remembered if no create or notice came while it ran."""
        cached = self.cached_keys_exist()
        if cached is not None:
            return cached
        generation = self._keys_generation
        checked_at = self._monotonic()
        with self._db.read() as tx:
            found = api_keys_repo.any_key(tx)
        with self._lock:
            if found:
                self._keys_exist = True
            elif generation == self._keys_generation:
                self._keys_checked_at = checked_at
            return self._keys_exist

    def cached(self, secret: str) -> ApiKey | object | None:
        """The live key for ``secret`` from memory, None for a malformed secret, or
        :data:`MISS` when the database must be asked (:meth:`authenticate`). No IO.

        Entries are keyed by the presented secret itself (the process holds it while serving
        the request anyway), so a hit costs one dict read and one clock read: no hashing."""
        entry = self._cache.get(secret)
        if entry is not None:
            if self._monotonic() < entry[0]:
                return entry[1]
            with self._lock:
                self._cache.pop(secret, None)
            return MISS
        return MISS if looks_like_secret(secret) else None

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key whose secret this is, or None (unknown, malformed or revoked)."""
        if not looks_like_secret(secret):
            return None
        digest = hash_secret(secret)
        with self._db.read() as tx:
            found = api_keys_repo.by_hash(tx, digest)
        if found is None:
            return None
        key, stored = found
        if not digest_matches(stored, secret) or key.revoked:
            return None
        self._touch(key)
        if self._ttl > 0:
            with self._lock:
                self._cache[secret] = (self._monotonic() + self._ttl, key)
                self._cache.move_to_end(secret)
                while len(self._cache) > limits.AUTH_CACHE_ENTRIES_MAX:
                    self._cache.popitem(last=False)
        return key

    def _touch(self, key: ApiKey) -> None:
        now = self._clock.now()
        if key.last_used_at is not None and now - key.last_used_at < TOUCH_EVERY:
            return
        try:
            with self._db.write() as tx:
                api_keys_repo.touch(tx, key.id, now)
        except DomainError as exc:  # a busy database must not refuse a valid key
            log.warning("could not record last use of API key %s: %s", key.name, exc.detail)
