"""Meter queries, meter subjects and groupBy values against a real server, on every backend.

Every test creates its own meter (unique slug and event type), so shared servers never mix data.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from allotment.domain import limits
from allotment.domain.timeutil import format_rfc3339
from tests.support import unique

T = datetime(2024, 3, 30, 10, 0, tzinfo=UTC)


def ts(at: datetime) -> str:
    return format_rfc3339(at)


def make_meter(client: httpx.Client, aggregation: str = "SUM", **extra: Any) -> dict[str, Any]:
    slug = unique("mq")
    body: dict[str, Any] = {
        "slug": slug,
        "aggregation": aggregation,
        "eventType": slug,
        "groupBy": {"model": "$.model", "type": "$.type"},
        **extra,
    }
    if aggregation != "COUNT" and "valueProperty" not in body:
        body["valueProperty"] = "$.v"
    r = client.post("/api/v1/meters", json=body)
    assert r.status_code == 200, r.text
    meter: dict[str, Any] = r.json()
    return meter


def ingest(
    client: httpx.Client, meter: dict[str, Any], events: list[tuple[str, datetime, Any]]
) -> None:
    batch = [
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "test",
            "type": meter["eventType"],
            "subject": subject,
            "time": ts(at),
            "data": data,
        }
        for subject, at, data in events
    ]
    r = client.post(
        "/api/v1/events",
        content=json.dumps(batch),
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert r.status_code == 204, r.text


def query(client: httpx.Client, meter: dict[str, Any], **params: Any) -> dict[str, Any]:
    r = client.get(f"/api/v1/meters/{meter['slug']}/query", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body: dict[str, Any] = json.loads(r.text, parse_float=Decimal)
    return body


def values(body: dict[str, Any]) -> list[Any]:
    return [Decimal(str(row["value"])) for row in body["data"]]


def problem(r: httpx.Response, fragment: str) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert fragment in r.json()["detail"], r.json()["detail"]


# ---------------------------------------------------------------- totals and windows


def test_total_without_window_spans_first_to_last_minute(client: httpx.Client) -> None:
    m = make_meter(client)
    s = unique("s")
    times = [
        T + timedelta(seconds=5),
        T + timedelta(minutes=1),
        T + timedelta(hours=1),
        T + timedelta(days=1, seconds=30),
    ]
    ingest(client, m, [(s, at, {"v": "0.1"}) for at in times])
    body = query(client, m)
    assert body == {
        "data": [
            {
                "value": Decimal("0.4"),
                "windowStart": ts(T),
                "windowEnd": ts(T + timedelta(days=1, minutes=1)),
                "subject": None,
                "groupBy": {},
            }
        ]
    }
    ranged = query(
        client, m, **{"from": ts(T - timedelta(hours=1)), "to": ts(T + timedelta(days=2))}
    )
    assert ranged["from"] == ts(T - timedelta(hours=1))
    assert ranged["to"] == ts(T + timedelta(days=2))
    assert "windowSize" not in ranged
    assert ranged["data"][0]["windowStart"] == ts(T - timedelta(hours=1))
    assert ranged["data"][0]["windowEnd"] == ts(T + timedelta(days=2))


def test_empty_result_is_an_empty_list(client: httpx.Client) -> None:
    m = make_meter(client)
    assert query(client, m) == {"data": []}
    assert query(client, m, windowSize="DAY")["data"] == []


def test_hour_windows_and_subject_groups(client: httpx.Client) -> None:
    m = make_meter(client)
    a, b = unique("a"), unique("b")
    ingest(
        client,
        m,
        [
            (a, T + timedelta(minutes=10), {"v": 1, "model": "gpt-4"}),
            (b, T + timedelta(minutes=20), {"v": 2, "model": "gpt-3"}),
            (a, T + timedelta(minutes=70), {"v": 4, "model": "gpt-4"}),
            (b, T + timedelta(minutes=80), {"v": 8}),
        ],
    )
    body = query(
        client,
        m,
        windowSize="HOUR",
        subject=[a, b],
        groupBy="model",
        **{"from": ts(T), "to": ts(T + timedelta(hours=3))},
    )
    assert body["windowSize"] == "HOUR"
    rows = [(r["windowStart"], r["subject"], r["groupBy"], r["value"]) for r in body["data"]]
    h0, h1 = ts(T), ts(T + timedelta(hours=1))
    assert rows == [
        (h0, a, {"model": "gpt-4"}, 1),
        (h0, b, {"model": "gpt-3"}, 2),
        (h1, a, {"model": "gpt-4"}, 4),
        (h1, b, {"model": ""}, 8),
    ]
    only_a = query(client, m, windowSize="HOUR", subject=a)
    assert [(r["subject"], r["value"]) for r in only_a["data"]] == [(a, 1), (a, 4)]
    assert all(r["groupBy"] == {} for r in only_a["data"])


def test_day_windows_follow_dst_in_the_time_zone(client: httpx.Client) -> None:
    m = make_meter(client)
    s = unique("s")
    # Budapest 2024-03-31 is 23 hours long: [03-30T23:00Z, 03-31T22:00Z)
    ingest(
        client,
        m,
        [
            (s, datetime(2024, 3, 30, 22, 59, tzinfo=UTC), {"v": 1}),
            (s, datetime(2024, 3, 30, 23, 0, tzinfo=UTC), {"v": 10}),
            (s, datetime(2024, 3, 31, 21, 59, tzinfo=UTC), {"v": 100}),
            (s, datetime(2024, 3, 31, 22, 0, tzinfo=UTC), {"v": 1000}),
        ],
    )
    body = query(client, m, windowSize="DAY", windowTimeZone="Europe/Budapest")
    rows = [(r["windowStart"], r["windowEnd"], r["value"]) for r in body["data"]]
    assert rows == [
        ("2024-03-29T23:00:00Z", "2024-03-30T23:00:00Z", 1),
        ("2024-03-30T23:00:00Z", "2024-03-31T22:00:00Z", 110),
        ("2024-03-31T22:00:00Z", "2024-04-01T22:00:00Z", 1000),
    ]
    utc = query(client, m, windowSize="DAY")
    assert [r["value"] for r in utc["data"]] == [11, 1100]


def test_month_windows(client: httpx.Client) -> None:
    m = make_meter(client)
    s = unique("s")
    ingest(
        client,
        m,
        [
            (s, datetime(2024, 12, 31, 23, tzinfo=UTC), {"v": 1}),
            (s, datetime(2025, 1, 1, 1, tzinfo=UTC), {"v": 2}),
        ],
    )
    body = query(client, m, windowSize="MONTH", windowTimeZone="America/New_York")
    assert [(r["windowStart"], r["value"]) for r in body["data"]] == [("2024-12-01T05:00:00Z", 3)]


# ---------------------------------------------------------------- aggregations


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ("SUM", "0.6"),
        ("COUNT", "5"),
        ("AVG", "0.15"),
        ("MIN", "-0.1"),
        ("MAX", "0.4"),
        ("LATEST", "-0.1"),
        ("UNIQUE_COUNT", "4"),
    ],
)
def test_every_aggregation_is_exact(client: httpx.Client, aggregation: str, expected: str) -> None:
    m = make_meter(client, aggregation)
    s = unique("s")
    events = [
        (s, T, {"v": "0.1"}),
        (s, T + timedelta(seconds=1), {"v": 0.4}),
        (s, T + timedelta(minutes=3), {"v": "-0.1"}),
        (s, T + timedelta(minutes=2), {"v": 0.2}),
        (s, T + timedelta(minutes=4), {"nov": 1}),  # no value: only COUNT counts it
    ]
    ingest(client, m, events)
    assert values(query(client, m)) == [Decimal(expected)]


def test_sums_keep_more_than_28_significant_digits(client: httpx.Client) -> None:
    """Decimal's default context keeps 28 digits; sums must stay exact well beyond that, in
    the rollup upserts (separate requests), the SQL reads and the rendering."""
    m = make_meter(client)
    s = unique("s")
    big = "1" + "0" * 23  # 24 digits (NUMBER_INTEGER_DIGITS_MAX): sums of 33 digits
    ingest(client, m, [(s, T, {"v": big}), (s, T + timedelta(seconds=5), {"v": "0.000000001"})])
    ingest(client, m, [(s, T + timedelta(seconds=9), {"v": "0.000000002"})])
    ingest(client, m, [(s, T + timedelta(hours=2), {"v": big})])
    exact = Decimal("2" + "0" * 23 + ".000000003")
    assert values(query(client, m)) == [exact]
    day = T.replace(hour=0)
    assert values(
        query(
            client, m, **{"from": ts(day), "to": ts(day + timedelta(days=1)), "windowSize": "DAY"}
        )
    ) == [exact]
    # an unaligned range reads raw edge minutes too
    assert values(
        query(client, m, **{"from": ts(T + timedelta(seconds=1)), "to": ts(T + timedelta(hours=3))})
    ) == [Decimal("1" + "0" * 23 + ".000000003")]


def test_unaligned_from_and_to_are_exact(client: httpx.Client) -> None:
    m = make_meter(client)
    s = unique("s")
    ingest(client, m, [(s, T + timedelta(seconds=sec), {"v": sec}) for sec in (10, 20, 50, 70)])

    def total(lo: int, hi: int) -> list[Any]:
        return values(
            query(
                client,
                m,
                **{"from": ts(T + timedelta(seconds=lo)), "to": ts(T + timedelta(seconds=hi))},
            )
        )

    assert total(0, 120) == [150]
    assert total(15, 120) == [140]
    assert total(15, 50) == [20]
    assert total(15, 71) == [140]
    assert total(21, 49) == []


# ---------------------------------------------------------------- filters


def test_filter_group_by_and_advanced_filters(client: httpx.Client) -> None:
    m = make_meter(client)
    s = unique("s")
    ingest(
        client,
        m,
        [
            (s, T, {"v": 1, "model": "a"}),
            (s, T, {"v": 2, "model": "b"}),
            (s, T, {"v": 4, "model": "c"}),
            (s, T, {"v": 8}),
        ],
    )
    assert values(query(client, m, **{"filterGroupBy[model]": "a"})) == [1]
    assert values(query(client, m, **{"filterGroupBy[model]": ""})) == [8]
    adv = {"model": {"$in": ["a", "c"]}}
    assert values(query(client, m, advancedMeterGroupByFilters=json.dumps(adv))) == [5]
    adv = {"model": {"$nin": ["a", "c"]}}
    assert values(query(client, m, advancedMeterGroupByFilters=json.dumps(adv))) == [10]
    assert values(query(client, m, advancedMeterGroupByFilters='{"model": {"$ne": "a"}}')) == [14]
    # the Python SDK's repr form
    assert values(query(client, m, filterGroupBy="{'model': 'b'}")) == [2]


def test_post_query_with_array_filters_and_csv(client: httpx.Client) -> None:
    m = make_meter(client)
    s = unique("s")
    ingest(
        client,
        m,
        [
            (s, T, {"v": "1000.5", "model": "a"}),
            (s, T, {"v": 2, "model": "b"}),
            (s, T, {"v": 4, "model": "c"}),
        ],
    )
    body = {
        "from": ts(T),
        "to": ts(T + timedelta(days=1)),
        "windowSize": "DAY",
        "groupBy": ["subject", "model"],
        "filterGroupBy": {"model": ["a", "b"]},
    }
    r = client.post(f"/api/v1/meters/{m['id']}/query", json=body)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [(d["subject"], d["groupBy"], d["value"]) for d in data] == [
        (s, {"model": "a"}, 1000.5),
        (s, {"model": "b"}, 2),
    ]
    r = client.post(f"/api/v1/meters/{m['slug']}/query", json=body, headers={"accept": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv"
    assert r.headers["content-disposition"] == f"attachment; filename={m['slug']}.csv"
    assert r.text == (
        "window_start,window_end,subject,model,value\n"
        f"2024-03-30T00:00:00Z,2024-03-31T00:00:00Z,{s},a,1000.500000\n"
        f"2024-03-30T00:00:00Z,2024-03-31T00:00:00Z,{s},b,2.000000\n"
    )
    r = client.get(f"/api/v1/meters/{m['slug']}/query", headers={"accept": "text/csv"})
    assert r.text == (
        "window_start,window_end,value\n2024-03-30T10:00:00Z,2024-03-30T10:01:00Z,1006.500000\n"
    )


# ---------------------------------------------------------------- errors


def test_bad_parameters_are_400_naming_the_parameter(client: httpx.Client) -> None:
    m = make_meter(client)
    url = f"/api/v1/meters/{m['slug']}/query"
    t0, t1 = ts(T), ts(T + timedelta(hours=1))
    problem(client.get(url, params={"from": t0, "to": t0}), "from")
    problem(client.get(url, params={"from": t1, "to": t0}), "from")
    problem(client.get(url, params={"from": "yesterday"}), "from")
    problem(client.get(url, params={"windowSize": "WEEK"}), "windowSize")
    problem(client.get(url, params={"windowTimeZone": "Mars/Olympus"}), "windowTimeZone")
    problem(client.get(url, params={"groupBy": "nope"}), "invalid group by: nope")
    problem(client.get(url, params={"filterGroupBy[nope]": "x"}), "filterGroupBy")
    problem(
        client.get(
            url,
            params={
                "filterGroupBy[model]": "x",
                "advancedMeterGroupByFilters": '{"model":{"$eq":"x"}}',
            },
        ),
        "advancedMeterGroupByFilters",
    )
    problem(
        client.get(url, params={"advancedMeterGroupByFilters": "{"}), "advancedMeterGroupByFilters"
    )
    problem(
        client.get(url, params={"advancedMeterGroupByFilters": '{"model":{"$gt":"1"}}'}),
        "advancedMeterGroupByFilters",
    )
    problem(client.post(url, json={"subject": "x"}), "subject")
    problem(client.post(url, json={"windowSize": "YEAR"}), "windowSize")
    problem(client.get("/api/v1/meters/Not-A-Slug/query"), "meterIdOrSlug")
    r = client.get(f"/api/v1/meters/{unique('nometer')}/query")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_window_count_limit_at_n_and_n_plus_one(client: httpx.Client) -> None:
    m = make_meter(client)
    url = f"/api/v1/meters/{m['slug']}/query"
    n = limits.QUERY_WINDOWS_MAX
    ok = client.get(
        url, params={"from": ts(T), "to": ts(T + timedelta(minutes=n)), "windowSize": "MINUTE"}
    )
    assert ok.status_code == 200, ok.text
    over = client.get(
        url, params={"from": ts(T), "to": ts(T + timedelta(minutes=n + 1)), "windowSize": "MINUTE"}
    )
    problem(over, "QUERY_WINDOWS_MAX")


# ---------------------------------------------------------------- subjects, group-by values


def test_subjects_and_group_by_values(client: httpx.Client) -> None:
    m = make_meter(client)
    a, b = unique("a"), unique("b")
    ingest(
        client,
        m,
        [
            (b, T, {"v": 1, "model": "x"}),
            (a, T + timedelta(hours=2), {"v": 1, "model": "y"}),
            (a, T + timedelta(hours=2), {"v": 1}),
        ],
    )
    r = client.get(f"/api/v1/meters/{m['slug']}/subjects")
    assert r.status_code == 200
    assert r.json() == sorted([a, b])
    r = client.get(
        f"/api/v1/meters/{m['slug']}/subjects", params={"from": ts(T + timedelta(hours=1))}
    )
    assert r.json() == [a]
    url = f"/api/v1/meters/{m['slug']}/group-by/model/values"
    r = client.get(url, params={"from": ts(T), "to": ts(T + timedelta(days=1))})
    assert r.status_code == 200
    assert r.json() == ["", "x", "y"]
    r = client.get(url, params={"from": ts(T), "to": ts(T + timedelta(hours=1)), "search": "X"})
    assert r.json() == ["x"]
    problem(client.get(f"/api/v1/meters/{m['slug']}/group-by/nope/values"), "groupByKey")
    assert client.get(f"/api/v1/meters/{unique('x')}/subjects").status_code == 404
