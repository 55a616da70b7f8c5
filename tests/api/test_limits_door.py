"""Bounds at the door (issue 12; docs/limits.md): each at the limit and just past it, with
nothing stored past it and every read afterwards answering — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from allotment.domain import limits
from tests.api import test_features as shared
from tests.api.test_features import create_feature, create_meter, ok, problem, set_clock
from tests.support import unique

clock_server = shared.clock_server  # fixtures: a module-scoped server on the test clock
tc = shared.tc

MAX_INT = 10**limits.NUMBER_INTEGER_DIGITS_MAX - 1  # 24 nines: the largest accepted integer
TINY = "0." + "0" * (limits.NUMBER_FRACTION_DIGITS_MAX - 1) + "1"  # 1e-18
TINIER = "0." + "0" * limits.NUMBER_FRACTION_DIGITS_MAX + "1"  # 1e-19
BATCH = {"content-type": "application/cloudevents-batch+json"}
SINGLE = {"content-type": "application/cloudevents+json"}


def entitlement(c: httpx.Client, interval: str = "MONTH") -> tuple[str, str, str]:
    """(entitlement URL, subject, meter slug) of a metered entitlement on a new SUM meter."""
    meter = create_meter(c)
    feature = create_feature(c, meter["slug"])
    subject = unique("s")
    body = {"type": "metered", "featureKey": feature["key"], "usagePeriod": {"interval": interval}}
    e = ok(c.post(f"/api/v1/subjects/{subject}/entitlements", json=body), 201)
    return f"/api/v1/subjects/{subject}/entitlements/{e['id']}", subject, meter["slug"]


def grant(c: httpx.Client, base: str, amount: str) -> httpx.Response:
    body = (f'{{"amount": {amount}, "effectiveAt": "2024-01-01T00:00:00Z",'
            ' "expiration": {"duration": "YEAR", "count": 1}}')  # fmt: skip
    return c.post(base + "/grants", content=body, headers={"content-type": "application/json"})


def event_text(subject: str, type_: str, data: str, time: str = "2024-01-01T00:00:00Z") -> str:
    return (f'{{"specversion":"1.0","id":"{unique("e")}","source":"limits","type":"{type_}",'
            f'"subject":"{subject}","time":"{time}","data":{data}}}')  # fmt: skip


def post_events(c: httpx.Client, *texts: str) -> httpx.Response:
    return c.post("/api/v1/events", content="[" + ",".join(texts) + "]", headers=BATCH)


def stored(c: httpx.Client, subject: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = ok(c.get("/api/v1/events", params={"subject": subject}))
    return listed


def total(c: httpx.Client, slug: str, subject: str) -> Any:
    rows = ok(c.get(f"/api/v1/meters/{slug}/query", params={"subject": subject}))["data"]
    return sum(r["value"] for r in rows)


# ---------------------------------------------------------------- 1. grant amounts


def test_grant_amount_at_the_limit_and_past_it(tc: httpx.Client) -> None:
    base, _, _ = entitlement(tc)
    ok(grant(tc, base, str(MAX_INT)), 201)
    ok(grant(tc, base, str(MAX_INT)), 201)  # two of them: their sum is formatted exactly
    ok(grant(tc, base, TINY), 201)
    third = ok(grant(tc, base, str(MAX_INT)), 201)  # its id comes back, so it can be voided
    r = tc.delete(f"/api/v1/grants/{third['id']}")
    assert r.status_code == 204, r.text
    for past in ("1e24", str(MAX_INT + 1), "1e60", "9e59", "-1e24"):
        body = problem(grant(tc, base, past), 400, "amount", "NUMBER_INTEGER_DIGITS_MAX", "1e24")
        assert body["extensions"]["field"] == "amount" if "extensions" in body else True
    problem(grant(tc, base, TINIER), 400, "amount", "1E-19", "NUMBER_FRACTION_DIGITS_MAX")
    grants = [g for g in ok(tc.get(base + "/grants")) if not g.get("voidedAt")]
    assert sorted(str(g["amount"]) for g in grants) == sorted([str(MAX_INT)] * 2 + ["1e-18"])
    value = ok(tc.get(base + "/value"))
    assert value["balance"] == 2 * MAX_INT + 10**-18
    ok(tc.get(base + "/history", params={"from": "2024-01-01T00:00:00Z", "windowSize": "DAY"}))
    ok(tc.get("/api/v1/grants"))


def test_rollover_amounts_are_bounded_too(tc: httpx.Client) -> None:
    base, _, _ = entitlement(tc)
    body = {"amount": 1, "effectiveAt": "2024-01-01T00:00:00Z",
            "expiration": {"duration": "YEAR", "count": 1}}  # fmt: skip
    r = tc.post(base + "/grants", json={**body, "maxRolloverAmount": 10**24})
    problem(r, 400, "maxRolloverAmount", "NUMBER_INTEGER_DIGITS_MAX")
    ok(tc.post(base + "/grants", json={**body, "maxRolloverAmount": MAX_INT}), 201)


# ---------------------------------------------------------------- 2. event numbers


def test_event_numbers_at_the_limit_and_past_it(tc: httpx.Client) -> None:
    base, subject, slug = entitlement(tc)
    ok(post_events(tc, event_text(subject, slug, f'{{"value": {MAX_INT}}}'),
                   event_text(subject, slug, f'{{"value": {MAX_INT}}}'),
                   event_text(subject, slug, f'{{"value": {TINY}}}')), 204)  # fmt: skip
    for past, shown in (("1e24", "1E+24"), ("1e60", "1E+60"), ("1e400", "1E+400"),
                        (str(MAX_INT + 1), "1000000000000000000000000"),
                        ("-1e9999999999999999999", "")):  # fmt: skip
        r = post_events(tc, event_text(subject, slug, '{"value": 1}'),
                        event_text(subject, slug, f'{{"n": {{"deep": [1, {past}]}}}}'))  # fmt: skip
        words = ["events[1].data.n.deep[1]", shown, "NUMBER_INTEGER_DIGITS_MAX"]
        if not shown:  # beyond what a Decimal holds at all: the decoder says where
            words = ["far outside any accepted number"]
        problem(r, 400, *words)
    r = post_events(tc, event_text(subject, slug, f'{{"value": {TINIER}}}'))
    problem(r, 400, "events[0].data.value", "1E-19", "NUMBER_FRACTION_DIGITS_MAX")
    r = tc.post("/api/v1/events", content=event_text(subject, slug, '{"value": 1e24}'),
                headers=SINGLE)  # fmt: skip
    problem(r, 400, "event.data.value", "NUMBER_INTEGER_DIGITS_MAX")
    assert len(stored(tc, subject)) == 3  # nothing of the refused requests
    assert total(tc, slug, subject) == pytest.approx(2 * MAX_INT)
    ok(tc.get(f"/api/v1/meters/{slug}/query"))  # every subject, and no subject filter
    ok(tc.get(f"/api/v1/subjects/{subject}/entitlements"))
    r = tc.get(base + "/value", params={"time": "2024-01-02T00:00:00Z"})  # finding 2
    assert r.status_code == 200, r.text
    exact = Decimal(f"{2 * MAX_INT}{TINY[1:]}")  # 2 × (10^24 - 1) + 10^-18, all 43 digits
    assert json.loads(r.text, parse_float=Decimal)["usage"] == exact


def test_a_numeric_string_out_of_range_is_stored_but_not_counted(tc: httpx.Client) -> None:
    """OpenMeter's rule for a value that cannot be parsed: the event is accepted and stored,
    the meter does not count it (its validation error is listed)."""
    _, subject, slug = entitlement(tc)
    ok(post_events(tc, event_text(subject, slug, '{"value": "1e60"}'),
                   event_text(subject, slug, f'{{"value": "{MAX_INT}"}}')), 204)  # fmt: skip
    assert total(tc, slug, subject) == MAX_INT
    listed = stored(tc, subject)
    assert any("out of range" in json.dumps(e) for e in listed), listed


# ---------------------------------------------------------------- 3. JSON depth and keys


def nested(levels: int) -> str:
    """An object ``levels`` deep: {"a":{"a":…{"a":1}…}}."""
    return '{"a":' * levels + "1" + "}" * levels


def test_event_data_depth_at_the_limit_and_past_it(tc: httpx.Client) -> None:
    _, subject, _ = entitlement(tc)
    in_batch = limits.JSON_DEPTH_MAX - 2  # the array is level 1, the event 2
    ok(post_events(tc, event_text(subject, "other", nested(in_batch))), 204)
    r = post_events(tc, event_text(subject, "other", nested(in_batch + 1)))
    problem(r, 400, "events[0].data" + ".a" * in_batch, "JSON_DEPTH_MAX", "32")
    alone = limits.JSON_DEPTH_MAX - 1  # a single event is level 1
    one = event_text(subject, "other", nested(alone))
    ok(tc.post("/api/v1/events", content=one, headers=SINGLE), 204)
    too = event_text(subject, "other", nested(alone + 1))
    problem(tc.post("/api/v1/events", content=too, headers=SINGLE), 400, "JSON_DEPTH_MAX")
    for far in (980, 5000):  # what the decoder itself cannot descend: still a 400
        r = post_events(tc, event_text(subject, "other", nested(far)))
        problem(r, 400, "JSON_DEPTH_MAX")
        # the typed decode stops at specversion first; the general decode meets the depth
        bad = event_text(subject, "other", nested(far)).replace('"1.0"', "1", 1)
        problem(post_events(tc, bad), 400, "JSON_DEPTH_MAX")
    assert len(stored(tc, subject)) == 2
    ok(tc.get("/api/v1/events"))


def test_event_data_keys_at_the_limit_and_past_it(tc: httpx.Client) -> None:
    _, subject, _ = entitlement(tc)
    keys = limits.JSON_OBJECT_KEYS_MAX
    at = json.dumps({f"k{i}": i for i in range(keys)})
    past = json.dumps({f"k{i}": i for i in range(keys + 1)})
    ok(post_events(tc, event_text(subject, "other", at)), 204)
    problem(post_events(tc, event_text(subject, "other", past)), 400,
            "events[0].data", f"{keys + 1} keys", "JSON_OBJECT_KEYS_MAX")  # fmt: skip
    assert len(stored(tc, subject)) == 1


def test_any_body_is_bounded_in_depth(tc: httpx.Client) -> None:
    """Every JSON body, not only events: an unknown member nested at the limit is ignored,
    one level more (or a thousand) is a 400 that names it."""
    slug = unique("m")
    meter = {"slug": slug, "aggregation": "COUNT", "eventType": slug}
    at = json.dumps(meter)[:-1] + ', "x": ' + nested(limits.JSON_DEPTH_MAX - 1) + "}"
    r = tc.post("/api/v1/meters", content=at, headers={"content-type": "application/json"})
    assert r.status_code in (200, 201), r.text
    past = json.dumps(meter)[:-1] + ', "x": ' + nested(limits.JSON_DEPTH_MAX) + "}"
    r = tc.post("/api/v1/meters", content=past, headers={"content-type": "application/json"})
    problem(r, 400, "x" + ".a" * (limits.JSON_DEPTH_MAX - 1), "JSON_DEPTH_MAX")
    far = nested(2000)
    for url in ("/api/v1/meters", "/api/v1/features", "/v1/customers"):
        r = tc.post(url, content=far, headers={"content-type": "application/json"})
        problem(r, 400, "JSON_DEPTH_MAX")


# ---------------------------------------------------------------- 4./5. times


EDGES_OK = ("1970-01-01T00:00:00Z", "8999-12-31T23:59:59.999999Z", "1970-01-01T01:00:00+01:00",
            "8999-12-31T22:59:59-01:00", "2024-06-30T23:59:60Z")  # fmt: skip
EDGES_PAST = ("1969-12-31T23:59:59.999999Z", "9000-01-01T00:00:00Z", "1970-01-01T00:59:59+01:00",
              "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z",
              "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:60Z", "8999-12-31T23:59:60Z",
              "0500-01-01T00:00:00Z")  # fmt: skip


def test_event_times_at_the_range_edges(tc: httpx.Client) -> None:
    _, subject, slug = entitlement(tc)
    ok(post_events(tc, *(event_text(subject, slug, '{"value": 1}', t) for t in EDGES_OK)), 204)
    for past in EDGES_PAST:
        r = post_events(tc, event_text(subject, slug, '{"value": 1}', past))
        problem(r, 400, "events[0].time", past, "TIME_MIN_YEAR", "TIME_MAX_YEAR")
    q = f"/api/v1/meters/{slug}/query"
    span = {"subject": subject, "from": "1970-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}
    assert total(tc, slug, subject) == len(EDGES_OK)  # all stored, all counted
    rows = ok(tc.get(q, params=span))["data"]
    assert sum(r["value"] for r in rows) == 3  # the epoch twice, and the leap second
    ok(tc.get(q))
    ok(tc.get(q, params={"subject": subject}))
    epoch = {"from": "1970-01-01T00:00:00Z", "to": "1970-03-01T00:00:00Z"}
    ok(tc.get(q, params={"windowSize": "DAY", "windowTimeZone": "America/New_York", **epoch}))
    ok(tc.get(q, params={"windowSize": "MONTH", "windowTimeZone": "Pacific/Kiritimati",
                         "from": "8999-01-01T00:00:00Z"}))  # fmt: skip


@pytest.mark.parametrize("param", ["from", "to"])
def test_time_parameters_at_the_range_edges(tc: httpx.Client, param: str) -> None:
    slug = create_meter(tc)["slug"]
    q = f"/api/v1/meters/{slug}/query"
    ok(tc.get(q, params={param: "1970-01-01T00:00:00Z"}))
    for past in EDGES_PAST:
        problem(tc.get(q, params={param: past}), 400, f"query parameter {param}", "TIME_MAX_YEAR")


def test_time_fields_at_the_range_edges(tc: httpx.Client) -> None:
    base, _, _ = entitlement(tc)
    body = {"amount": 1, "expiration": {"duration": "YEAR", "count": 1}}
    ok(tc.post(base + "/grants", json={**body, "effectiveAt": "8999-12-31T23:59:00Z"}), 201)
    for past in EDGES_PAST:
        r = tc.post(base + "/grants", json={**body, "effectiveAt": past})
        problem(r, 400, "effectiveAt", "TIME_MAX_YEAR")
    far = {"effectiveAt": "8999-12-31T00:00:00Z", "expiration": {"duration": "YEAR", "count": 1000}}
    r = tc.post(base + "/grants", json={**body, **far})
    assert r.status_code in (201, 400), r.text  # a far expiration: an answer, never a 500


# ---------------------------------------------------------------- 6. value and history time


def test_value_far_from_now_is_bounded(tc: httpx.Client) -> None:
    set_clock(tc, "2024-01-01T00:00:00Z")
    base, _, _ = entitlement(tc, "PT1H")
    ok(tc.get(base + "/value", params={"time": "2024-02-01T00:00:00Z"}))  # 744 periods
    for far in ("2100-01-01T00:00:00Z", "8999-12-31T00:00:00Z"):
        r = tc.get(base + "/value", params={"time": far}, timeout=10)
        problem(r, 400, "time", str(limits.ENGINE_PERIODS_MAX), "ENGINE_PERIODS_MAX")
    month, _, _ = entitlement(tc, "MONTH")
    ok(tc.get(month + "/value", params={"time": "2100-01-01T00:00:00Z"}))
    problem(tc.get(month + "/value", params={"time": "9999-12-31T00:00:00Z"}), 400, "time")
    r = tc.get(month + "/value", params={"time": "8999-12-31T00:00:00Z"}, timeout=10)
    problem(r, 400, "ENGINE_PERIODS_MAX")
    r = tc.get(base + "/history", params={"from": "2024-01-01T00:00:00Z", "windowSize": "MONTH",
                                          "to": "2100-01-01T00:00:00Z"}, timeout=10)  # fmt: skip
    problem(r, 400, "ENGINE_PERIODS_MAX")


def test_a_recurring_grant_far_from_now_is_bounded(tc: httpx.Client) -> None:
    base, _, _ = entitlement(tc, "YEAR")
    body = {"amount": 1, "effectiveAt": "2024-01-01T00:00:00Z", "recurrence": {"interval": "DAY"},
            "expiration": {"duration": "YEAR", "count": 1000}}  # fmt: skip
    ok(tc.post(base + "/grants", json=body), 201)
    ok(tc.get(base + "/value", params={"time": "2025-01-01T00:00:00Z"}))
    r = tc.get(base + "/value", params={"time": "2900-01-01T00:00:00Z"}, timeout=10)
    problem(r, 400, "time", "ENGINE_PERIODS_MAX")


# ---------------------------------------------------------------- 7./9. integer parameters


@pytest.mark.parametrize("url", ["/api/v1/features", "/api/v1/grants", "/api/v1/entitlements"])
@pytest.mark.parametrize("name", ["offset", "page"])
def test_integer_parameters_at_the_limit_and_past_it(tc: httpx.Client, url: str, name: str) -> None:
    ok(tc.get(url, params={name: str(limits.QUERY_INT_MAX)}))
    for past in (limits.QUERY_INT_MAX + 1, 2**63, 2**64 + 1):
        problem(tc.get(url, params={name: str(past)}), 400, name, str(limits.QUERY_INT_MAX),
                "QUERY_INT_MAX")  # fmt: skip
    for not_a_number in ("1_0", "١", "²", "+1", " 1", "1.0", "0x1", "1e3"):
        problem(tc.get(url, params={name: not_a_number}), 400, name, "not an integer")


def test_cursor_and_version_digits(tc: httpx.Client) -> None:
    for cursor in ("١", "²", str(limits.QUERY_INT_MAX + 1), "1_0"):
        assert tc.get("/v1/customers", params={"cursor": cursor}).status_code == 400
    for version in ("²", "١", str(2**63)):
        r = tc.get(f"/v1/plans/{unique('p')}/versions/{version}")
        assert r.status_code in (400, 404), r.text


@pytest.mark.parametrize("url", ["/api/v1/grants", "/api/v1/subjects/s/entitlements",
                                 "/api/v1/meters", "/api/v1/customers"])  # fmt: skip
def test_include_deleted_must_be_a_boolean(tc: httpx.Client, url: str) -> None:
    for value in ("true", "false", "1", "0"):
        ok(tc.get(url, params={"includeDeleted": value}))
    problem(tc.get(url, params={"includeDeleted": "null"}), 400, "includeDeleted", "boolean")


def test_intervals_at_the_limit_and_past_it(tc: httpx.Client) -> None:
    feature = create_feature(tc, create_meter(tc)["slug"])
    url = f"/api/v1/subjects/{unique('s')}/entitlements"
    for past in ("P101Y", "P9999Y", "P99999999999999999999Y"):
        body = {"type": "metered", "featureKey": feature["key"], "usagePeriod": {"interval": past}}
        problem(tc.post(url, json=body), 400, "INTERVAL_YEARS_MAX")
    body = {"type": "metered", "featureKey": feature["key"], "usagePeriod": {"interval": "P100Y"}}
    e = ok(tc.post(url, json=body), 201)
    base = f"{url}/{e['id']}"
    grant = {"amount": 1, "effectiveAt": "2024-01-01T00:00:00Z",
             "expiration": {"duration": "YEAR", "count": 1000}}  # fmt: skip
    for past in ("P101Y", "P99999999999999999999D"):
        r = tc.post(base + "/grants", json={**grant, "recurrence": {"interval": past}})
        problem(r, 400, "INTERVAL_YEARS_MAX")
    ok(tc.post(base + "/grants", json={**grant, "recurrence": {"interval": "P100Y"}}), 201)
    ok(tc.get(base + "/value"))
    ok(tc.get(base + "/grants"))
    ok(tc.get(base + "/value", params={"time": "8999-12-31T00:00:00Z"}))
