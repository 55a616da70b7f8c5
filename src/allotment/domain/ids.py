"""ULID identifiers (26 characters, Crockford base32, time-ordered)."""

from __future__ import annotations

import os
import re
import threading

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_PATTERN = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")

_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)
"""Every two-character string, indexed by its 10-bit value."""
_SHIFTS = tuple(range(120, -1, -10))
"""Where each two-character group of a 26-character ULID (130 bits) starts."""


def _encode_ulid(value: int) -> str:
    """A 128-bit ``value`` in 26 Crockford base32 characters, most significant first (the
    48-bit time's 10, then the 80 random bits' 16), two characters per lookup."""
    pairs = _PAIRS
    return "".join([pairs[(value >> s) & 1023] for s in _SHIFTS])


def new_ulid(timestamp_ms: int) -> str:
    """A ULID for the given millisecond; monotonic within one process."""
    global _last_ms, _last_rand
    with _lock:
        if timestamp_ms <= _last_ms:
            timestamp_ms = _last_ms
            rand = _last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_ms, _last_rand = timestamp_ms, rand
    return _encode_ulid(((timestamp_ms & ((1 << 48) - 1)) << 80) | (rand & ((1 << 80) - 1)))


def is_ulid(value: str) -> bool:
    return ULID_PATTERN.match(value) is not None
