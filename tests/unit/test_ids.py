"""ULIDs (domain/ids.py): Crockford base32 of the 48-bit millisecond then 80 random bits,
most significant first; monotonic within the process."""

from __future__ import annotations

from allotment.domain import ids

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _reference(value: int, length: int) -> str:
    """Five bits per character, the plain way."""
    return "".join(_ALPHABET[(value >> (5 * (length - 1 - k))) & 31] for k in range(length))


def test_the_encoding_is_base32_of_time_then_randomness() -> None:
    for ms, rand in ((0, 0), (1, 1), ((1 << 48) - 1, (1 << 80) - 1), (1_733_560_000_123, 12345)):
        value = (ms << 80) | rand
        assert ids._encode_ulid(value) == _reference(ms, 10) + _reference(rand, 16)
    assert ids._encode_ulid(0) == "0" * 26
    assert ids._encode_ulid(((1 << 48) - 1) << 80 | ((1 << 80) - 1)) == "7" + "Z" * 25


def test_new_ulids_are_valid_and_ordered_within_one_millisecond() -> None:
    # an instant no later than any this process used: each takes the last one's, + 1
    made = [ids.new_ulid(0) for _ in range(50)]
    assert all(ids.is_ulid(u) for u in made)
    assert made == sorted(made)
    assert len(set(made)) == 50
    assert len({u[:10] for u in made}) == 1
