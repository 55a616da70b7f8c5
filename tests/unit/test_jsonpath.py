"""The JSONPath subset meters use: $.a.b, $.a[0], $['key']."""

from __future__ import annotations

from decimal import Decimal

import pytest

from allotment.domain.errors import InvalidInput
from allotment.domain.meters import MISSING, compile_path, lookup

DOC = {
    "a": {"b": 1, "list": [10, {"x": "deep"}], "with.dot": "dotted", "q'uote": 7},
    "n": None,
    "tokens": Decimal("1.5"),
    "key with space": "spaced",
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", DOC),
        ("$.tokens", Decimal("1.5")),
        ("$.a.b", 1),
        ("$.a.list[0]", 10),
        ("$.a.list[1].x", "deep"),
        ("$['a']['b']", 1),
        ('$["a"]["b"]', 1),
        ("$['key with space']", "spaced"),
        ("$.a['with.dot']", "dotted"),
        ("$.a['q\\'uote']", 7),
        ("$.n", None),
    ],
)
def test_lookup_finds_values(path: str, expected: object) -> None:
    assert lookup(DOC, compile_path(path)) == expected


@pytest.mark.parametrize(
    "path",
    ["$.missing", "$.a.b.c", "$.a.list[2]", "$.a.list.x", "$.tokens[0]", "$.n.x", "$['nope']"],
)
def test_lookup_missing_paths(path: str) -> None:
    assert lookup(DOC, compile_path(path)) is MISSING


def test_lookup_in_null_document_is_missing() -> None:
    assert lookup(None, compile_path("$.a")) is MISSING


@pytest.mark.parametrize("path", ["a.b", "", ".a", "tokens"])
def test_path_must_start_with_dollar(path: str) -> None:
    with pytest.raises(InvalidInput, match="must start with"):
        compile_path(path, "valueProperty")


@pytest.mark.parametrize("path", ["$a", "$.a[", "$.a[x]", "$..a", "$.a[-1]", "$.a.*", "$['a"])
def test_unsupported_syntax_is_rejected_naming_the_field(path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        compile_path(path, "groupBy.model")
    assert info.value.field == "groupBy.model"
    assert info.value.detail.startswith("groupBy.model:")
