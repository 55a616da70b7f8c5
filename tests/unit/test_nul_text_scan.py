"""``nul_text.spells_nul``: the byte scan that decides whether a JSON body is walked for NUL."""

from __future__ import annotations

import msgspec
import pytest

from allotment.domain.nul_text import spells_nul


@pytest.mark.parametrize(
    ("value", "spelled"),
    [
        ({"a": "x"}, False),
        ({"a": 'quote " and \\ backslash'}, False),  # escapes, but no NUL
        ({"a": "line\nbreak\t\u0001"}, False),
        ({"a": "x\x00y"}, True),
        ({"k\x00": 1}, True),
        ([{"a": "\\u0000 spelled out, not a NUL"}], False),  # walked, nothing found
    ],
)
def test_spells_nul_exactly_when_the_text_holds_the_escape(value: object, spelled: bool) -> None:
    body = msgspec.json.encode(value)
    assert spells_nul(body) is (b"\\u0000" in body)  # the same answer as the 6-byte search
    assert spells_nul(body) or not spelled  # a NUL is never missed
