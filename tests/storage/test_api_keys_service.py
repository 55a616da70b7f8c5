"""The API key service on real databases: revocation, the bounded lookup cache, last use."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from allotment.clock import FrozenClock
from allotment.domain import limits
from allotment.domain.api_keys import ApiKey, Scope, hash_secret
from allotment.domain.errors import Conflict, InvalidInput, NotFound
from allotment.services.api_keys import MISS, ApiKeyService
from allotment.storage import api_keys_repo
from allotment.storage.database import Database
from allotment.storage.key_revocations import RevocationListener

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _service(db: Database, ticks: Ticks, clock: FrozenClock, ttl: float = 1.0) -> ApiKeyService:
    return ApiKeyService(db, clock, cache_seconds=ttl, monotonic=ticks)


def test_revocation_by_another_process_is_seen_within_the_cache_time(db: Database) -> None:
    clock, ticks = FrozenClock(T0), Ticks()
    one, two = _service(db, ticks, clock), _service(db, ticks, clock)  # two replicas
    key, secret = one.create("app", "runtime")
    assert two.authenticate(secret) == key
    assert two.cached(secret) == key  # from memory
    one.revoke("app")
    assert one.cached(secret) is MISS  # the revoking process forgets at once
    assert one.authenticate(secret) is None
    assert two.cached(secret) == key  # the other: until its entry is stale
    ticks.now += 1.0
    assert two.cached(secret) is MISS
    assert two.authenticate(secret) is None
    assert two.cached(secret) is MISS  # refused keys are never cached


def test_no_cache_reads_every_time(db: Database) -> None:
    clock, ticks = FrozenClock(T0), Ticks()
    one, two = _service(db, ticks, clock), _service(db, ticks, clock, ttl=0)
    _, secret = one.create("app", "read")
    assert two.authenticate(secret) is not None
    assert two.cached(secret) is MISS
    one.revoke("app")
    assert two.authenticate(secret) is None


def test_auth_is_on_once_any_key_exists(db: Database) -> None:
    clock, ticks = FrozenClock(T0), Ticks()
    one, two = _service(db, ticks, clock), _service(db, ticks, clock)
    assert not two.keys_exist()
    one.create("first", "read")
    assert one.cached_keys_exist() is True
    assert two.cached_keys_exist() is False  # known absent for the cache time
    ticks.now += 1.0
    assert two.cached_keys_exist() is None
    assert two.keys_exist()
    one.revoke("first")
    ticks.now += 5
    assert two.keys_exist()  # a revoked key still counts: revoking all keys does not open up


def test_a_notice_ends_a_cached_no_key_at_once(db: Database) -> None:
    """Another replica's create reaches this one as a notice (``forget``): "no key" is no
    longer trusted, even though the cache time (60 s) is far from up."""
    clock, ticks = FrozenClock(T0), Ticks()
    one, two = _service(db, ticks, clock), _service(db, ticks, clock, ttl=60)
    assert not two.keys_exist()
    ticks.now += 59.9
    assert two.cached_keys_exist() is False
    key, _ = one.create("first", "read")
    two.forget(key.id)  # what the listener does on the create's notice
    assert two.cached_keys_exist() is None
    assert two.keys_exist()
    ticks.now += 1000
    assert two.cached_keys_exist() is True  # for good: keys are never deleted


def test_no_cache_asks_the_database_whether_keys_exist_every_time(db: Database) -> None:
    clock, ticks = FrozenClock(T0), Ticks()
    one, two = _service(db, ticks, clock), _service(db, ticks, clock, ttl=0)
    assert not two.keys_exist()
    assert two.cached_keys_exist() is None
    one.create("first", "read")
    assert two.keys_exist()


def test_a_stale_no_key_read_is_not_remembered(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that saw no key while a create (this process) or a notice (another's) came in
    must neither turn authentication off nor keep "no key" for the cache time."""
    clock, ticks = FrozenClock(T0), Ticks()
    one, two = _service(db, ticks, clock, ttl=60), _service(db, ticks, clock, ttl=60)
    real_any_key = api_keys_repo.any_key
    during: list[object] = []

    def racing_any_key(tx: object) -> bool:
        found = real_any_key(tx)  # type: ignore[arg-type]
        meanwhile = threading.Thread(target=during.pop())  # type: ignore[arg-type]
        meanwhile.start()  # another request's thread, while this read is still open
        meanwhile.join()
        return found

    monkeypatch.setattr(api_keys_repo, "any_key", racing_any_key)
    during.append(lambda: two.forget("01NOTICE"))  # another replica's create, announced
    assert not two.keys_exist()  # what the read saw …
    assert two.cached_keys_exist() is None  # … is not kept
    during.append(lambda: one.create("first", "read"))  # this process creates meanwhile
    assert one.keys_exist()  # the read saw no key, but the create came first: auth is on
    assert one.cached_keys_exist() is True  # and stays on


def test_last_use_is_written_at_most_once_a_minute(db: Database) -> None:
    clock, ticks = FrozenClock(T0), Ticks()
    svc = _service(db, ticks, clock, ttl=0)
    _, secret = svc.create("app", "read")
    svc.authenticate(secret)
    assert svc.get("app").last_used_at == T0
    clock.set(T0 + timedelta(seconds=59))
    svc.authenticate(secret)
    assert svc.get("app").last_used_at == T0
    clock.set(T0 + timedelta(seconds=60))
    svc.authenticate(secret)
    assert svc.get("app").last_used_at == T0 + timedelta(seconds=60)


def test_the_cache_holds_at_most_its_limit(db: Database) -> None:
    clock, ticks = FrozenClock(T0), Ticks()
    svc = _service(db, ticks, clock)
    n = limits.AUTH_CACHE_ENTRIES_MAX
    secrets = [f"alm_{i:043d}" for i in range(n + 1)]
    with db.write() as tx:  # n + 1 keys in one transaction
        for i, secret in enumerate(secrets):
            key = ApiKey(f"id{i:05d}", f"k{i}", Scope.READ, secret[:12], T0, T0, None)
            api_keys_repo.insert(tx, key, hash_secret(secret))
    for secret in secrets[:n]:
        assert svc.authenticate(secret) is not None
    assert all(svc.cached(s) is not MISS for s in secrets[:n])  # N: all held
    assert svc.authenticate(secrets[n]) is not None
    assert svc.cached(secrets[0]) is MISS  # N + 1: the oldest is dropped
    assert all(svc.cached(s) is not MISS for s in secrets[1:])


def test_rules(db: Database) -> None:
    svc = _service(db, Ticks(), FrozenClock(T0))
    svc.create("app", "read")
    with pytest.raises(Conflict):
        svc.create("app", "admin")
    with pytest.raises(NotFound):
        svc.revoke("nobody")
    svc.revoke("app")
    with pytest.raises(NotFound):
        svc.revoke("app")
    svc.create("app", "admin")  # the name is free once revoked
    assert [k.revoked_at is None for k in svc.list()] == [False, True]
    for ttl in (-0.1, limits.AUTH_CACHE_SECONDS_MAX + 0.001):
        with pytest.raises(InvalidInput, match="ALLOTMENT_AUTH_CACHE_SECONDS"):
            _service(db, Ticks(), FrozenClock(T0), ttl=ttl)
    _service(db, Ticks(), FrozenClock(T0), ttl=limits.AUTH_CACHE_SECONDS_MAX)


def test_a_create_notice_turns_auth_on_in_the_other_processes(db: Database, db_url: str) -> None:
    """PostgreSQL: the first key's create NOTIFYs; another process caching "no key" for 60 s
    asks the table again on receipt. SQLite: no notices, the time bound."""
    clock, ticks = FrozenClock(T0), Ticks()
    one, two = _service(db, ticks, clock), _service(db, ticks, clock, ttl=60)
    if db.dialect != "postgresql":
        assert not two.keys_exist()
        one.create("first", "read")
        assert two.cached_keys_exist() is False  # until its answer is 60 s old
        ticks.now += 60
        assert two.keys_exist()
        return
    listener = RevocationListener(db_url, two.forget)
    listener.start()
    try:
        assert listener.listening.wait(10)
        assert not two.keys_exist()
        assert two.cached_keys_exist() is False
        one.create("first", "read")
        deadline = time.monotonic() + 10
        while two.cached_keys_exist() is False:
            assert time.monotonic() < deadline, "no notice"
            time.sleep(0.01)
        assert two.keys_exist()
    finally:
        listener.close()


def test_a_revocation_notice_empties_the_other_caches(db: Database, db_url: str) -> None:
    """PostgreSQL: the revoke's NOTIFY reaches another process's listener, which drops the
    key long before the cache time (60 s here) is up. SQLite: no notices, the time bound."""
    clock, ticks = FrozenClock(T0), Ticks()
    one, two = _service(db, ticks, clock), _service(db, ticks, clock, ttl=60)
    key, secret = one.create("app", "runtime")
    other, other_secret = one.create("other", "read")
    assert two.authenticate(secret) == key
    if db.dialect != "postgresql":
        one.revoke("app")
        assert two.cached(secret) == key  # until its entry is 60 s old
        return
    listener = RevocationListener(db_url, two.forget)
    listener.start()
    try:
        assert listener.listening.wait(10)
        assert two.cached(secret) is MISS  # the listener's first act: forget everything
        assert two.authenticate(secret) is not None
        assert two.authenticate(other_secret) is not None
        one.revoke("app")
        deadline = time.monotonic() + 10
        while two.cached(secret) is not MISS:
            assert time.monotonic() < deadline, "no notice"
            time.sleep(0.01)
        assert two.authenticate(secret) is None
        found = two.cached(other_secret)  # only the revoked key is dropped
        assert isinstance(found, ApiKey)
        assert found.id == other.id
    finally:
        listener.close()
    assert not listener.listening.is_set()
