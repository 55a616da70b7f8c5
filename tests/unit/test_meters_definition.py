"""Meter definitions: validation (every error names its field) and value extraction."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from allotment.domain.errors import InvalidInput
from allotment.domain.meters import (
    Aggregation,
    Extracted,
    decode_group_key,
    extract,
    group_key,
    parse_meter_definition,
)


def _raw(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "slug": "tokens_total",
        "aggregation": "SUM",
        "eventType": "prompt",
        "valueProperty": "$.tokens",
        "groupBy": {"model": "$.model"},
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def _meter(**over: Any) -> Any:
    return parse_meter_definition(_raw(**over))


def _error(**over: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_meter_definition(_raw(**over))
    return info.value


def test_valid_definition_defaults_name_to_slug() -> None:
    m = _meter(description="AI tokens", eventFrom="2024-01-01T01:00:00+01:00")
    assert m.slug == "tokens_total"
    assert m.name == "tokens_total"
    assert m.aggregation is Aggregation.SUM
    assert m.event_type == "prompt"
    assert m.value_property == "$.tokens"
    assert m.group_by == {"model": "$.model"}
    assert m.description == "AI tokens"
    assert m.event_from == datetime(2024, 1, 1, tzinfo=UTC)


def test_yaml_datetime_event_from_is_accepted() -> None:
    m = _meter(eventFrom=datetime(2024, 1, 1, 12))  # noqa: DTZ001 - PyYAML gives naive
    assert m.event_from == datetime(2024, 1, 1, 12, tzinfo=UTC)


def test_count_meter_needs_no_value_property() -> None:
    m = _meter(aggregation="COUNT", valueProperty=None)
    assert m.value_property is None


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"slug": None}, "slug"),
        ({"slug": ""}, "slug"),
        ({"slug": "Tokens"}, "slug"),
        ({"slug": "tokens-total"}, "slug"),
        ({"slug": "_tokens"}, "slug"),
        ({"slug": "tokens__total"}, "slug"),
        ({"slug": "a" * 65}, "slug"),
        ({"aggregation": None}, "aggregation"),
        ({"aggregation": "sum"}, "aggregation"),
        ({"aggregation": "MEDIAN"}, "aggregation"),
        ({"eventType": None}, "eventType"),
        ({"eventType": ""}, "eventType"),
        ({"valueProperty": None}, "valueProperty"),
        ({"valueProperty": "tokens"}, "valueProperty"),
        ({"aggregation": "COUNT"}, "valueProperty"),
        ({"aggregation": "UNIQUE_COUNT", "valueProperty": None}, "valueProperty"),
        ({"groupBy": {"1model": "$.model"}}, "groupBy"),
        ({"groupBy": {"mo-del": "$.model"}}, "groupBy"),
        ({"groupBy": ["$.model"]}, "groupBy"),
        ({"groupBy": {"model": "model"}}, "groupBy.model"),
        ({"groupBy": {"model": 3}}, "groupBy.model"),
        ({"groupBy": {"tokens": "$.tokens"}}, "groupBy.tokens"),
        ({"description": "x" * 1025}, "description"),
        ({"description": 5}, "description"),
        ({"eventFrom": "yesterday"}, "eventFrom"),
    ],
)
def test_invalid_definitions_name_the_field(over: dict[str, Any], field: str) -> None:
    err = _error(**over)
    assert err.field == field
    assert err.detail.startswith(field + ":") or err.detail.startswith(field)


def test_limits_at_n() -> None:
    assert _meter(slug="a" * 64).slug == "a" * 64
    assert _meter(description="x" * 1024).description == "x" * 1024


def test_slug_of_one_character_is_valid() -> None:
    assert _meter(slug="a").slug == "a"


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (12, Decimal(12)),
        (Decimal("1.25"), Decimal("1.25")),
        ("12", Decimal(12)),
        ("-0.5", Decimal("-0.5")),
        ("1e3", Decimal(1000)),
        ("0.1", Decimal("0.1")),
    ],
)
def test_numbers_and_numeric_strings_are_exact(raw: object, value: Decimal) -> None:
    result = extract(_meter(), {"tokens": raw, "model": "gpt"})
    assert result == Extracted(value, None, {"model": "gpt"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "invalid event: null and missing value property"),
        ({}, 'invalid event: missing value property: "$.tokens"'),
        ({"tokens": None}, "invalid event: value cannot be null"),
        ({"tokens": "NaN"}, "invalid event: value cannot be NaN"),
        ({"tokens": "nan"}, "invalid event: value cannot be NaN"),
        ({"tokens": "Infinity"}, "invalid event: value cannot be infinity"),
        ({"tokens": "-Inf"}, "invalid event: value cannot be infinity"),
        ({"tokens": "abc"}, "invalid event: value cannot be parsed as float64: abc"),
        ({"tokens": "1_000"}, "invalid event: value cannot be parsed as float64: 1_000"),
        ({"tokens": " 1"}, "invalid event: value cannot be parsed as float64:  1"),
        ({"tokens": True}, "invalid event: value cannot be parsed as float64: true"),
    ],
)
def test_values_that_do_not_fit_give_openmeter_messages(data: Any, message: str) -> None:
    assert extract(_meter(), data) == message


def test_count_meter_takes_any_data_and_groups_missing_paths_as_empty() -> None:
    m = _meter(aggregation="COUNT", valueProperty=None, groupBy={"route": "$.route", "m": "$.m"})
    assert extract(m, None) == Extracted(None, None, {"route": "", "m": ""})
    assert extract(m, {"route": "/a", "m": None}) == Extracted(None, None, {"route": "/a", "m": ""})


def test_group_values_are_stringified() -> None:
    m = _meter(groupBy={"n": "$.n", "b": "$.b", "f": "$.f"})
    result = extract(m, {"tokens": 1, "n": 3, "b": False, "f": Decimal("2.50")})
    assert isinstance(result, Extracted)
    assert result.groups == {"n": "3", "b": "false", "f": "2.5"}


def test_unique_count_stringifies_the_value() -> None:
    m = _meter(aggregation="UNIQUE_COUNT", valueProperty="$.user", groupBy=None)
    assert extract(m, {"user": "u1"}) == Extracted(None, "u1", {})
    assert extract(m, {"user": 42}) == Extracted(None, "42", {})
    assert extract(m, {"user": None}) == "invalid event: value cannot be null"
    assert extract(m, {}) == 'invalid event: missing value property: "$.user"'


def test_group_key_is_canonical_and_decodable() -> None:
    a = group_key({"type": "in", "model": "gpt-4"})
    b = group_key({"model": "gpt-4", "type": "in"})
    assert a == b == '{"model":"gpt-4","type":"in"}'
    assert group_key({}) == "{}"
    assert decode_group_key(group_key({"k": 'é"x'})) == {"k": 'é"x'}
