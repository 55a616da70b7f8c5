"""The key locks of the enforcement sessions (storage/enforcement_repo.py): in-process stripes on
SQLite (a key maps to one of ``STRIPES`` locks; two keys sharing a stripe only serialise), and
on PostgreSQL the pairs of 32-bit numbers that name a key's transaction-scoped advisory lock
(:func:`advisory_pairs`)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

STRIPES = 1024


class StripedLocks:
    """In-process locks for SQLite: a key maps to one of ``STRIPES`` locks; a session takes
    its stripes in ascending order (no deadlock; two keys sharing a stripe only serialise)."""

    def __init__(self) -> None:
        self._locks = [threading.Lock() for _ in range(STRIPES)]
        self._holders: dict[int, object] = {}
        """Stripe → the token of the non-blocking holder (:meth:`try_take`) holding it."""

    def try_take(self, keys: Sequence[str], token: object) -> tuple[list[int] | None, object]:
        """Take the keys' stripes without waiting: ``(stripes, None)``; or, when one is held,
        ``(None, holder)`` with nothing taken — ``holder`` the token its :meth:`try_take`
        holder passed, ``None`` when a blocking :meth:`held` session holds it."""
        stripes = sorted({_stripe(k) for k in keys})
        for n, s in enumerate(stripes):
            if not self._locks[s].acquire(blocking=False):
                for t in reversed(stripes[:n]):
                    self._locks[t].release()
                return None, self._holders.get(s)
        for s in stripes:
            self._holders[s] = token
        return stripes, None

    def give_back(self, stripes: Sequence[int], token: object) -> None:
        """Release what :meth:`try_take` took (from any thread)."""
        for s in reversed(stripes):
            if self._holders.get(s) is token:
                del self._holders[s]  # before the release: a holder named is still holding
            self._locks[s].release()

    @contextmanager
    def held(self, keys: Sequence[str]) -> Iterator[None]:
        stripes = sorted({_stripe(k) for k in keys})
        taken: list[threading.Lock] = []
        try:
            for s in stripes:
                lock = self._locks[s]
                lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()


def _stripe(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest()) % STRIPES


ADVISORY_LOCKS = (
    "SELECT count(pg_advisory_xact_lock(k1, k2)) FROM unnest(?::int[], ?::int[]) AS k(k1, k2)"
)
"""Take the advisory locks of :func:`advisory_pairs` one after the other, in the arrays'
order (an ``unnest`` is read in order, and each lock is taken as its row is produced)."""


def advisory_pairs(keys: Sequence[str]) -> tuple[list[int], list[int]]:
    """The advisory locks of ``keys`` as the two ``int4`` arguments of
    ``pg_advisory_xact_lock(int, int)``: 64 bits of a keyed BLAKE2b of each key, distinct
    pairs in ascending order (every session takes its locks in that one order, so two never
    wait on each other crosswise). The two-argument form is a lock space of its own: the
    one-``bigint`` locks taken elsewhere (migrations, meters) never collide with these; two
    keys whose hashes collide (one chance in 2**64 per pair) only serialise."""
    pairs = sorted({_pair(k) for k in keys})
    return [a for a, _ in pairs], [b for _, b in pairs]


def _pair(key: str) -> tuple[int, int]:
    digest = hashlib.blake2b(key.encode(), digest_size=8, person=b"allotment-key").digest()
    return int.from_bytes(digest[:4], signed=True), int.from_bytes(digest[4:], signed=True)
