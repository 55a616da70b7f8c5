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


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


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
    return _encode(timestamp_ms & ((1 << 48) - 1), 10) + _encode(rand & ((1 << 80) - 1), 16)


def is_ulid(value: str) -> bool:
    return ULID_PATTERN.match(value) is not None
