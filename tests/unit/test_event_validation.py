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


# ---------------------------------------------------------------- the ingest fast path

_TIMES = [
    "2025-01-01T00:00:00Z",
    "2025-01-01T00:00:00.000Z",
    "2025-01-01T00:00:00.120Z",
    "2025-01-01T00:00:00.123456789Z",
    "2025-01-01T00:00:00.1000000Z",
    "2024-02-29T23:59:59.999999Z",
    "2025-12-31T23:59:59.5Z",
    "2025-01-01T00:00:60Z",
    "2025-01-01t00:00:00Z",
    "2025-01-01T00:00:00z",
    "2025-01-01 00:00:00Z",
    "2025-01-01T00:00:00+00:00",
    "2025-01-01T01:00:00+01:00",
    "2025-02-29T00:00:00Z",
    "2025-13-01T00:00:00Z",
    "2025-01-01T24:00:00Z",
    "2025-01-01T00:60:00Z",
    "2025-01-01T00:00:00.Z",
    "2025-01-01T00:00:00.1a2Z",
    "2025-01-01T00:00:0Z",
    "2025-01-01T00:00:00",
    "２０２５-01-01T00:00:00Z",
    "2025-01-01T00:00:00.١٢٣Z",
    "0999-12-31T23:59:59Z",
    "1000-01-01T00:00:00Z",
    "2025-1-01T00:00:00.00Z",
    "2025-01-01T0a:00:00Z",
    "",
]


@pytest.mark.parametrize("text", _TIMES)
def test_stored_time_agrees_with_parse_and_format(text: str) -> None:
    from allotment.domain.events import stored_time
    from allotment.domain.timeutil import format_rfc3339, parse_rfc3339, to_micros

    fast = stored_time(text)
    try:
        at = parse_rfc3339(text, "time")
    except InvalidInput:
        assert fast is None  # the general path words the error
        return
    if fast is not None:
        assert fast == (to_micros(at), format_rfc3339(at))


def test_stored_time_property() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    from allotment.domain.events import stored_time
    from allotment.domain.timeutil import format_rfc3339, parse_rfc3339, to_micros

    @given(
        st.datetimes(
            min_value=datetime(1970, 1, 1),  # noqa: DTZ001 (hypothesis wants naive bounds)
            max_value=datetime(8999, 12, 31),  # noqa: DTZ001 (the accepted range, limits.py)
        ),
        st.text("0123456789", max_size=12),
    )
    def check(at: datetime, digits: str) -> None:
        text = at.strftime("%Y-%m-%dT%H:%M:%S") + (f".{digits}" if digits else "") + "Z"
        parsed = parse_rfc3339(text, "time")
        assert stored_time(text) == (to_micros(parsed), format_rfc3339(parsed))

    check()


def test_fast_path_stores_exactly_what_the_general_path_stores() -> None:
    import msgspec

    from allotment.clock import FrozenClock
    from allotment.domain.events import build_event
    from allotment.http.routes.events import decode_events
    from allotment.services.events import prepare

    class _C:
        clock = FrozenClock(NOW)

    events = [
        _ev(id="a"),
        _ev(id="b", time=None),
        _ev(id="c", time="2025-01-01T00:00:00.120Z", datacontenttype="application/json"),
        _ev(id="d", time="2025-01-01T01:00:00+01:00", dataschema="https://x/y"),
        _ev(id="e", data={"tokens": 1.50, "n": "2", "big": 12345678901234567890.5e-3}),
        _ev(id="f", data=None, extension=1),
        _ev(id="g", data={}, time="2025-01-01T00:00:60Z"),
    ]
    body = msgspec.json.encode(events).replace(b"1.5,", b"1.50,")
    fast = decode_events(body, "batch", _C())  # type: ignore[arg-type]
    raw = msgspec.json.Decoder(float_hook=__import__("decimal").Decimal).decode(body)
    general = [
        prepare(
            build_event(
                f"events[{i}]",
                specversion=r.get("specversion"),
                id=r.get("id"),
                source=r.get("source"),
                type=r.get("type"),
                subject=r.get("subject"),
                time=r.get("time"),
                datacontenttype=r.get("datacontenttype"),
                dataschema=r.get("dataschema"),
                data=r.get("data"),
                now=NOW,
            )
        )
        for i, r in enumerate(raw)
    ]
    assert fast == general
    assert b'"tokens":1.50' in fast[4][5].encode()


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"specversion": "1.00"}, "specversion"),
        ({"datacontenttype": "text/plain"}, "datacontenttype"),
        ({"dataschema": ""}, "dataschema"),
        ({"id": ""}, "id"),
    ],
)
def test_the_door_words_an_envelope_error_as_the_general_path_does(
    over: dict[str, Any], field: str
) -> None:
    """The typed decode refuses these itself (``_EventIn``'s literal and non-empty fields);
    the body then takes the slow path, which names the event and the field exactly as
    :func:`validate_batch` does, and the fixed values are the domain's."""
    import msgspec

    from allotment.clock import FrozenClock
    from allotment.domain.events import DATA_CONTENT_TYPE, SPEC_VERSION
    from allotment.http.routes.events import decode_events

    class _C:
        clock = FrozenClock(NOW)

    good = _ev(id="a", datacontenttype=DATA_CONTENT_TYPE, specversion=SPEC_VERSION)
    assert len(decode_events(msgspec.json.encode([good]), "batch", _C())) == 1  # type: ignore[arg-type]
    bad = [good, {**_ev(id="b"), **over}]
    with pytest.raises(InvalidInput) as door:
        decode_events(msgspec.json.encode(bad), "batch", _C())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as general:
        validate_batch(bad, NOW)
    assert door.value.field == general.value.field == f"events[1].{field}"
    assert str(door.value) == str(general.value)
