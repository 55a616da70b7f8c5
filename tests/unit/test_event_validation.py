"""CloudEvent envelope validation: every error names the event's index and the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from allotment.domain.errors import InvalidInput
from allotment.domain.events import CloudEvent, dedupe, validate_batch, validate_event

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _ev(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e1",
        "source": "app",
        "type": "prompt",
        "subject": "cust",
        "time": "2025-01-01T00:00:00.123Z",
        "data": {"tokens": 1},
    }
    base.update(over)
    return base


def test_valid_event_is_normalized() -> None:
    e = validate_event(_ev(extension="tolerated"), "events[0]", NOW)
    assert e == CloudEvent(
        id="e1",
        source="app",
        type="prompt",
        subject="cust",
        time=datetime(2025, 1, 1, 0, 0, 0, 123000, tzinfo=UTC),
        data={"tokens": 1},
    )
    assert e.to_wire() == {
        "specversion": "1.0",
        "id": "e1",
        "source": "app",
        "type": "prompt",
        "subject": "cust",
        "time": "2025-01-01T00:00:00.123Z",
        "data": {"tokens": 1},
    }


@pytest.mark.parametrize("time", [None, "__absent__"])
def test_missing_or_null_time_is_server_time(time: object) -> None:
    raw = _ev(time=time)
    if time == "__absent__":
        del raw["time"]
    assert validate_event(raw, "event", NOW).time == NOW


def test_offsets_are_converted_to_utc() -> None:
    e = validate_event(_ev(time="2025-03-06T00:00:00-08:00"), "event", NOW)
    assert e.to_wire()["time"] == "2025-03-06T08:00:00Z"


@pytest.mark.parametrize(
    ("over", "field", "rule"),
    [
        ({"specversion": "0.3"}, "specversion", "must be"),
        ({"specversion": None}, "specversion", "must be"),
        ({"id": ""}, "id", "must be a non-empty string"),
        ({"id": 5}, "id", "must be a non-empty string"),
        ({"source": ""}, "source", "must be a non-empty string"),
        ({"type": None}, "type", "must be a non-empty string"),
        ({"subject": ""}, "subject", "must be a non-empty string"),
        ({"time": "2025-01-01"}, "time", "RFC 3339"),
        ({"time": "2025-01-01T00:00:00"}, "time", "RFC 3339"),
        ({"time": 1700000000}, "time", "RFC 3339"),
        ({"datacontenttype": "text/plain"}, "datacontenttype", "application/json"),
        ({"dataschema": 3}, "dataschema", "URI"),
        ({"data": "a string"}, "data", "JSON object"),
        ({"data": [1, 2]}, "data", "JSON object"),
        ({"data": 7}, "data", "JSON object"),
    ],
)
def test_invalid_attribute_names_index_and_field(
    over: dict[str, Any], field: str, rule: str
) -> None:
    batch = [_ev(id="a"), _ev(id="b"), _ev(id="c"), _ev(**over)]
    with pytest.raises(InvalidInput) as info:
        validate_batch(batch, NOW)
    assert info.value.detail.startswith(f"events[3].{field}: ")
    assert rule in info.value.detail
    assert info.value.field == f"events[3].{field}"


@pytest.mark.parametrize("name", ["specversion", "id", "source", "type", "subject"])
def test_required_attributes(name: str) -> None:
    raw = _ev()
    del raw[name]
    with pytest.raises(InvalidInput, match=rf"^event\.{name}: required"):
        validate_batch([raw], NOW, single=True)


def test_non_object_element_is_named() -> None:
    with pytest.raises(InvalidInput, match=r"^events\[1\]: must be a JSON object"):
        validate_batch([_ev(), "nope"], NOW)


def test_null_data_and_json_content_type_are_fine() -> None:
    e = validate_event(_ev(data=None, datacontenttype="application/json"), "event", NOW)
    assert e.data is None
    assert e.to_wire()["datacontenttype"] == "application/json"
    assert "data" not in e.to_wire()


def test_dedupe_keeps_first_of_each_source_and_id() -> None:
    a1 = validate_event(_ev(id="a", data={"v": 1}), "e", NOW)
    a2 = validate_event(_ev(id="a", data={"v": 2}), "e", NOW)
    b = validate_event(_ev(id="a", source="other"), "e", NOW)
    assert dedupe([a1, a2, b]) == [a1, b]
