"""@openmeter/sdk@1.0.0-beta.185 against a real server: events, meters, meter queries, subjects.

Each test runs one scenario (tests/compat/scenarios/*.mjs) under Node and asserts every value
the SDK returned. See docs/compatibility.md for the method -> test map.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.compat.sdk import (
    UNDEFINED,
    assert_problem,
    assert_time,
    assert_ulid,
    parse_time,
    run_scenario,
)
from tests.support import ServerProcess, unique

TOKENS_TOTAL = {
    "slug": "tokens_total",
    "name": "tokens_total",
    "description": "AI Token Usage",
    "aggregation": "SUM",
    "eventType": "prompt",
    "valueProperty": "$.tokens",
    "groupBy": {"model": "$.model", "type": "$.type"},
}
API_REQUESTS_TOTAL = {
    "slug": "api_requests_total",
    "name": "api_requests_total",
    "description": "API Requests",
    "aggregation": "COUNT",
    "eventType": "request",
    "groupBy": {"method": "$.method", "route": "$.route"},
}


def _meter(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert_ulid(got["id"])
    assert_time(got["createdAt"])
    assert_time(got["updatedAt"])
    rest = {k: v for k, v in got.items() if k not in {"id", "createdAt", "updatedAt"}}
    assert rest == expected


def _row(
    value: int, start: str, end: str, subject: str | None, group_by: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "value": value,
        "windowStart": start,
        "windowEnd": end,
        "subject": subject,
        "groupBy": group_by or {},
    }


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Row order inside one window is unspecified (contract §12.3): compare in a fixed order."""
    return sorted(
        rows, key=lambda r: (r["windowStart"], r["subject"] or "", sorted(r["groupBy"].items()))
    )


def test_sdk_events_meters_and_queries(sdk: None, server: ServerProcess) -> None:
    a = unique("sub")
    b = unique("sub") + " b/2"  # space and slash: the SDK form-encodes them (subject=…+b%2F2)
    out = run_scenario("metering", server.url, {"a": a, "b": b})

    # events.ingest: single (cloudevents+json), batch (cloudevents-batch+json), duplicate → 204
    assert out["ingestOne"] == UNDEFINED
    assert out["ingestBatch"] == UNDEFINED
    assert out["ingestDuplicate"] == UNDEFINED

    # meters.list / get (by slug and by id)
    by_slug = {m["slug"]: m for m in out["list"]}
    _meter(by_slug["tokens_total"], TOKENS_TOTAL)
    _meter(by_slug["api_requests_total"], API_REQUESTS_TOTAL)
    assert out["getBySlug"] == by_slug["tokens_total"]
    assert out["getById"] == by_slug["tokens_total"]
    assert out["getCount"] == by_slug["api_requests_total"]

    day1, day3 = "2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z"
    # 100 + 50 + 200 + 25 for subject a; the duplicate (100000) is not counted
    assert out["total"] == {"from": day1, "to": day3, "data": [_row(375, day1, day3, a)]}
    # no from/to: earliest event floored to the minute .. latest event floored + 1 minute
    assert out["totalNoRange"] == {
        "data": [_row(375, "2024-01-01T00:10:00Z", "2024-01-02T10:01:00Z", a)]
    }
    assert out["hourly"] == {
        "from": day1,
        "to": "2024-01-01T03:00:00Z",
        "windowSize": "HOUR",
        "data": [
            _row(150, "2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z", a),
            _row(200, "2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z", a),
        ],
    }
    assert {k: v for k, v in out["byModel"].items() if k != "data"} == {"from": day1, "to": day3}
    assert _sorted(out["byModel"]["data"]) == [
        _row(200, day1, day3, a, {"model": "gpt-3.5"}),
        _row(175, day1, day3, a, {"model": "gpt-4"}),
    ]
    assert {k: v for k, v in out["filtered"].items() if k != "data"} == {"from": day1, "to": day3}
    assert _sorted(out["filtered"]["data"]) == [
        _row(125, day1, day3, a, {"model": "gpt-4", "type": "input"}),
        _row(50, day1, day3, a, {"model": "gpt-4", "type": "output"}),
    ]
    # DAY windows in Europe/Budapest (UTC+1 in January): local midnights are 23:00Z
    assert out["dailyBudapest"] == {
        "from": "2023-12-31T23:00:00Z",
        "to": "2024-01-02T23:00:00Z",
        "windowSize": "DAY",
        "data": [
            _row(350, "2023-12-31T23:00:00Z", "2024-01-01T23:00:00Z", a),
            _row(25, "2024-01-01T23:00:00Z", "2024-01-02T23:00:00Z", a),
        ],
    }
    # DST: the local day of 2024-03-31 is 23 hours long (23:00Z .. 22:00Z)
    assert out["dstBudapest"] == {
        "from": "2024-03-30T23:00:00Z",
        "to": "2024-04-01T22:00:00Z",
        "windowSize": "DAY",
        "data": [
            _row(11, "2024-03-30T23:00:00Z", "2024-03-31T22:00:00Z", b),
            _row(13, "2024-03-31T22:00:00Z", "2024-04-01T22:00:00Z", b),
        ],
    }
    assert {k: v for k, v in out["twoSubjects"].items() if k != "data"} == {
        "from": day1,
        "to": day3,
    }
    assert _sorted(out["twoSubjects"]["data"]) == _sorted(
        [_row(375, day1, day3, a), _row(7, day1, day3, b)]
    )
    assert _sorted(out["bySubjectGroupBy"]["data"]) == _sorted(
        [_row(175, day1, day3, a, {"model": "gpt-4"}), _row(7, day1, day3, b, {"model": "gpt-4"})]
    )
    assert {k: v for k, v in out["countByMethod"].items() if k != "data"} == {
        "from": day1,
        "to": day3,
    }
    assert _sorted(out["countByMethod"]["data"]) == [
        _row(2, day1, day3, a, {"method": "GET"}),
        _row(1, day1, day3, a, {"method": "POST"}),
    ]
    assert out["countMinute"] == {
        "from": day1,
        "to": "2024-01-01T00:03:00Z",
        "windowSize": "MINUTE",
        "data": [
            _row(1, "2024-01-01T00:01:00Z", "2024-01-01T00:02:00Z", a),
            _row(1, "2024-01-01T00:02:00Z", "2024-01-01T00:03:00Z", a),
        ],
    }

    # meters.subjects: shared server, so only membership of this test's subjects is checked
    assert isinstance(out["subjectsTokens"], list)
    assert all(isinstance(s, str) for s in out["subjectsTokens"])
    assert {a, b} <= set(out["subjectsTokens"])
    assert a in out["subjectsRequests"]
    assert b not in out["subjectsRequests"]
    assert len(out["subjectsTokens"]) == len(set(out["subjectsTokens"]))


def test_sdk_events_list_and_meter_create(
    sdk: None, clock_server: Callable[[str], ServerProcess]
) -> None:
    now = "2024-01-05T00:00:00Z"
    server = clock_server(now)
    s, meter = unique("sub"), unique("compute")
    out = run_scenario("events", server.url, {"s": s, "meter": meter})
    for key in ("ingestReadme", "ingestMinimal", "ingestBatch", "ingestDuplicate"):
        assert out[key] == UNDEFINED, key
    # rejected by the SDK itself, no request made
    assert out["badContentType"] == {
        "name": "TypeError",
        "message": "Unsupported datacontenttype: text/plain",
        "stack": out["badContentType"]["stack"],
    }

    events = out["list"]
    assert isinstance(events, list)
    assert len(events) == 4
    minimal_id = events[0]["event"]["id"]
    assert isinstance(minimal_id, str)
    assert len(minimal_id) == 36
    expected_events = [  # newest first
        {
            "specversion": "1.0",
            "id": minimal_id,
            "source": "@openmeter/sdk",
            "type": "request",
            "subject": s,
            "time": now,  # no time given: the server's clock
            "data": {"method": "GET", "route": "/x"},
        },
        {
            "specversion": "1.0",
            "id": "b-2",
            "source": "batch",
            "type": "prompt",
            "subject": s,
            "time": "2024-01-03T00:00:00Z",
            "datacontenttype": "application/json",
            "data": {"tokens": "3.5", "model": "gpt-4", "type": "output"},
        },
        {
            "specversion": "1.0",
            "id": "b-1",
            "source": "batch",
            "type": "prompt",
            "subject": s,
            "time": "2024-01-02T03:04:05.678Z",
            "data": {"tokens": 12, "model": "gpt-4", "type": "input"},
        },
        {
            "specversion": "1.0",
            "id": "id-1",
            "source": "my-app",
            "type": "my-type",
            "subject": s,
            "time": "2024-01-01T00:00:00Z",
            "data": {"api_calls": 1},
        },
    ]
    for got, expected in zip(events, expected_events, strict=True):
        assert got["event"] == expected  # datacontenttype only where it was sent
        rest = {k: v for k, v in got.items() if k != "event"}
        if expected["type"] == "my-type":
            # no meter has event type my-type (contract §2.2)
            assert rest == {
                "validationError": "no meter found for event type: my-type",
                "ingestedAt": now,
                "storedAt": now,
            }
        else:
            assert rest == {"ingestedAt": now, "storedAt": now}
    assert out["listLimit"] == events[:2]

    created = out["meterCreate"]
    assert created == {
        "id": assert_ulid(created["id"]),
        "slug": meter,
        "name": meter,
        "description": "Seconds of compute",
        "aggregation": "SUM",
        "eventType": "compute",
        "valueProperty": "$.seconds",
        "groupBy": {"region": "$.region"},
        "createdAt": now,
        "updatedAt": now,
    }
    assert out["meterGet"] == created
    assert sorted(m["slug"] for m in out["meterList"]) == sorted(
        ["api_requests_total", meter, "tokens_total"]
    )


def test_sdk_subjects(sdk: None, server: ServerProcess) -> None:
    k1, k2 = unique("customer"), unique("customer")
    out = run_scenario("subjects", server.url, {"k1": k1, "k2": k2})

    first, second = out["upsert"]
    for subject in (first, second):
        assert_ulid(subject["id"])
        assert_time(subject["createdAt"])
        assert subject["updatedAt"] == subject["createdAt"]
    assert first == {
        "id": first["id"],
        "key": k1,
        "displayName": "ACME",
        "createdAt": first["createdAt"],
        "updatedAt": first["updatedAt"],
    }
    assert second == {
        "id": second["id"],
        "key": k2,
        "displayName": "Globex",
        "metadata": {"tier": "gold", "seats": 5},
        "stripeCustomerId": "cus_123",
        "createdAt": second["createdAt"],
        "updatedAt": second["updatedAt"],
    }
    listed = {s["key"]: s for s in out["list"]}
    assert listed[k1] == first
    assert listed[k2] == second
    assert out["getByKey"] == first
    assert out["getById"] == second

    # partial update: displayName replaced, metadata kept (absent), stripeCustomerId cleared (null)
    (updated,) = out["update"]
    assert updated == {
        "id": second["id"],
        "key": k2,
        "displayName": "Globex Corp",
        "metadata": {"tier": "gold", "seats": 5},
        "createdAt": second["createdAt"],
        "updatedAt": updated["updatedAt"],
    }
    assert parse_time(updated["updatedAt"]) >= parse_time(second["updatedAt"])
    assert out["getUpdated"] == updated

    assert out["delete"] == UNDEFINED
    assert_problem(out["getDeleted"], 404)
    assert_problem(out["deleteAgain"], 404)
    keys_after = [s["key"] for s in out["listAfterDelete"]]
    assert k1 not in keys_after
    assert k2 in keys_after
