"""Reads that every client depends on never fail after any accepted input (issue 12).

The served document decides what is read: **every GET operation** it lists (the API, the
``/v1`` catalog, the portal, the console's pages), with the path parameters of
:mod:`tests.api.fuzz_seed`'s real resources — so a route added to the document is read here
without anyone touching this file. Between reads, Hypothesis writes what an attacker would,
within the bounds of docs/limits.md, into exactly the resources those reads look at: event
batches for the seeded meter (extreme numbers and numeric strings as the meter value, odd
group-by values, JSON nested to the allowed depth, times at the range edges in any offset)
for the seeded subject and the seeded customer's subject key, grants of extreme amounts and
recurrences on the seeded ``/api/v1`` and ``/api/v2`` entitlements, and ``/v1`` authorize
consumes and reservations of extreme amounts. A write may be refused (4xx); none may be a 5xx,
and after each example every read answers what it answers with no hostile data at all
(``EXPECTED``, else 200).

A second test sends every ``date-time`` query parameter of every GET operation the range
edges of docs/limits.md (issue 12, finding 5): past them a 400 naming the parameter, at them
never a 5xx.

One server per backend for the module (auth on: an admin key made with the CLI), about
20–40 s per backend on 2 cores, hence ``slow``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.domain import limits
from tests.api.auth_support import create_key
from tests.api.fuzz_seed import Seeded, seed
from tests.api.test_limits_door import EDGES_OK, EDGES_PAST
from tests.api.test_limits_property import (
    MAX_INT,
    _encode,
    deep,
    grant_amounts,
    json_values,
    numbers,
    scalars,
    time_text,
)
from tests.support import ServerProcess, unique

pytestmark = pytest.mark.slow

SKIP = {
    "/api/_testing/clock": "served only on the test clock (ALLOTMENT_TEST_CLOCK)",
    "/console/{path}": "the console's 404 page for any unknown path, by design",
}
"""GET operations of the document not read here, and why."""
EXPECTED = {
    "/console": 303,  # to /console/customers
    "/console/": 303,
    "/api/v1/notification/events/{eventId}": 404,  # no notification was ever sent (rules off)
}
"""Answers other than 200 that a read gives with the seeded resources and no hostile data."""
UNSEEDED = {"eventId": "01JAAAAAAAAAAAAAAAAAAAAAAA"}
"""Path parameters the seed has no resource for (a notification event needs a delivery)."""
REQUIRED_QUERY = {
    "/api/v1/subjects/{subjectIdOrKey}/entitlements/{entitlementId}/history": {"windowSize": "DAY"},
    "/api/v2/customers/{customerIdOrKey}/entitlements/{entitlementIdOrFeatureKey}/history": {
        "windowSize": "DAY"
    },
}
"""Query parameters an operation requires (beyond what :func:`_required` derives)."""
VARIANTS = {
    "/api/v1/meters/{meterIdOrSlug}/query": [
        {"groupBy": "model"},
        {"windowSize": "DAY", "windowTimeZone": "America/New_York",
         "from": "2024-01-01T00:00:00Z", "to": "2024-03-01T00:00:00Z"},
        {"windowSize": "MONTH", "windowTimeZone": "Pacific/Kiritimati",
         "from": "1970-01-01T00:00:00Z", "to": "8999-12-01T00:00:00Z"},
        {"windowSize": "MONTH", "from": "8990-01-01T00:00:00Z", "groupBy": "model"},
    ],
    "/api/v1/events": [{"limit": "100", "hasError": "true"}],
}  # fmt: skip
"""More reads of one operation (each must answer 200 too): windows over the stored range."""


@dataclass
class World:
    server: ServerProcess
    admin: str
    seeded: Seeded
    portal_token: str
    customer_subject: str
    v1_period_from: str
    v2_period_from: str
    v1_customer: str
    v1_feature: str
    doc: dict[str, Any]


@pytest.fixture(scope="module")
def world(new_db_url: Callable[[], str]) -> Iterator[World]:
    db_url = new_db_url()
    admin = create_key(db_url, "reads-admin", "admin")
    server = ServerProcess(db_url).start()
    try:
        with _client(server, admin) as c:
            seeded = seed(c)
            e = seeded.everywhere
            customer = _ok(c.get(f"/api/v1/customers/{e['customerIdOrKey']}"))
            v1 = _ok(c.get(f"/api/v1/entitlements/{e['entitlementId']}"))
            v2 = _ok(
                c.get(f"/api/v2/customers/{e['customerIdOrKey']}/entitlements/{e['featureKey']}")
            )
            token = _ok(c.post("/api/v1/portal/tokens", json={"subject": e["subjectIdOrKey"]}))
            authorize = ("POST", "/v1/customers/{ref}/authorize")
            yield World(
                server=server,
                admin=admin,
                seeded=seeded,
                portal_token=str(token["token"]),
                customer_subject=customer["usageAttribution"]["subjectKeys"][0],
                v1_period_from=v1["currentUsagePeriod"]["from"],
                v2_period_from=v2["currentUsagePeriod"]["from"],
                v1_customer=seeded.by_operation[authorize]["ref"],
                v1_feature=seeded.by_operation[("GET", "/v1/features/{ref}")]["ref"],
                doc=_ok(c.get("/api/v1/openapi.json")),
            )
    finally:
        server.stop()


def _client(server: ServerProcess, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, timeout=60.0, headers={"authorization": f"Bearer {key}"}
    )


def _ok(r: httpx.Response) -> Any:
    assert r.status_code in (200, 201), f"{r.request.url}: {r.status_code} {r.text}"
    return r.json()


# ---------------------------------------------------------------- what the document lists


def _parameters(doc: dict[str, Any], item: dict[str, Any], op: dict[str, Any]) -> list[Any]:
    out = []
    for p in [*item.get("parameters", []), *op.get("parameters", [])]:
        if "$ref" in p:
            p = doc["components"]["parameters"][p["$ref"].rsplit("/", 1)[-1]]
        out.append(p)
    return out


def _reads(w: World) -> list[tuple[str, str, dict[str, str]]]:
    """(document path, URL, query) of every read: each GET operation, then its variants."""
    out = []
    for path, item in w.doc["paths"].items():
        op = item.get("get")
        if not isinstance(op, dict) or path in SKIP:
            continue
        values = {**UNSEEDED, **w.seeded.everywhere, **w.seeded.by_operation.get(("GET", path), {})}
        url = path
        for p in _parameters(w.doc, item, op):
            if p["in"] == "path":
                url = url.replace("{" + p["name"] + "}", values[p["name"]])
        query = {**_required(w, path), **REQUIRED_QUERY.get(path, {})}
        out.append((path, url, query))
        out += [(path, url, {**query, **v}) for v in VARIANTS.get(path, [])]
    return out


def _required(w: World, path: str) -> dict[str, str]:
    if path == "/v1/ingest/meter-data":
        meter = w.seeded.everywhere["meterSlug"]
        return {"customer_reference": w.v1_customer, "meter_reference": meter}
    return {}


def _headers(w: World, path: str) -> dict[str, str]:
    portal = path.startswith("/api/v1/portal/meters/") or path == "/console/portal"
    return {"authorization": f"Bearer {w.portal_token}"} if portal else {}


def read_everything(c: httpx.Client, w: World) -> None:
    wrong = []
    for path, url, query in _reads(w):
        r = c.get(url, params=query, headers=_headers(w, path))
        if r.status_code != EXPECTED.get(path, 200):
            wrong.append(f"GET {url} {query}: {r.status_code} {r.text[:300]}")
    assert wrong == [], "\n".join(wrong)


def test_every_get_operation_of_the_document_is_read(world: World) -> None:
    """The reads come from the served document, minus SKIP: none is silently left out, and
    the tables above name only operations that exist."""
    read = {path for path, _, _ in _reads(world)}
    listed = {p for p, item in world.doc["paths"].items() if isinstance(item.get("get"), dict)}
    assert listed - read == set(SKIP)
    assert len(read) >= 70  # the document as of issue 12: 76 GET operations
    for table in (EXPECTED, REQUIRED_QUERY, VARIANTS):
        assert set(table) <= read, set(table) - read


# ---------------------------------------------------------------- what an attacker writes


@st.composite
def hostile_events(draw: st.DrawFn, event_type: str, subjects: list[str]) -> list[Any]:
    events = []
    for _ in range(draw(st.integers(1, 5))):
        data: dict[str, Any] = {
            "tokens": draw(st.one_of(numbers, numbers.map(str), scalars)),
            "model": draw(scalars),
            "x": draw(json_values(2)),
        }
        if draw(st.booleans()):  # data is level 3 of a batch: 29 levels more are allowed
            data["deep"] = deep(limits.JSON_DEPTH_MAX - 4, draw(numbers))
        e: dict[str, Any] = {"specversion": "1.0", "id": unique("e"), "source": "hostile",
                             "type": event_type, "subject": draw(st.sampled_from(subjects)),
                             "data": data}  # fmt: skip
        t = draw(st.one_of(time_text(), st.sampled_from(EDGES_OK)))
        if t is not None:
            e["time"] = t
        events.append(e)
    return events


@st.composite
def hostile_grant(draw: st.DrawFn, effective_at: str) -> dict[str, Any]:
    g: dict[str, Any] = {
        "amount": draw(grant_amounts),
        "effectiveAt": effective_at,
        "expiration": {"duration": draw(st.sampled_from(["HOUR", "DAY", "YEAR"])),
                       "count": draw(st.sampled_from([1, 1000]))},
    }  # fmt: skip
    if draw(st.booleans()):
        g["recurrence"] = {"interval": draw(st.sampled_from(["PT1H", "DAY", "MONTH", "P100Y"]))}
    if draw(st.booleans()):
        g["maxRolloverAmount"] = draw(grant_amounts)
    if draw(st.booleans()):
        g["priority"] = draw(st.integers(0, 255))
    return g


amounts = st.one_of(
    st.sampled_from([Decimal(MAX_INT), Decimal("1e-18"), Decimal(1)]),
    st.decimals(min_value=Decimal("1e-18"), max_value=Decimal(MAX_INT),
                places=limits.NUMBER_FRACTION_DIGITS_MAX),
)  # fmt: skip

JSON = {"content-type": "application/json"}


def _write(c: httpx.Client, url: str, body: Any, headers: dict[str, str] = JSON) -> int:
    r = c.post(url, content=_encode(body), headers=headers)
    assert r.status_code < 500, f"POST {url}: {r.status_code} {r.text}\n{_encode(body)[:2000]}"
    return r.status_code


def test_no_read_fails_after_hostile_writes(world: World) -> None:
    w = world
    e = w.seeded.everywhere
    v1_grants = f"/api/v1/subjects/{e['subjectIdOrKey']}/entitlements/{e['entitlementId']}/grants"
    v2_grants = f"/api/v2/customers/{e['customerIdOrKey']}/entitlements/{e['featureKey']}/grants"
    subjects = [e["subjectIdOrKey"], w.customer_subject]
    accepted: list[int] = []
    with _client(w.server, w.admin) as c:
        read_everything(c, w)  # the baseline: EXPECTED holds before any hostile data

        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, derandomize=True)  # fmt: skip
        @given(st.data())
        def check(data: st.DataObject) -> None:
            events = data.draw(hostile_events(e["meterSlug"], subjects))
            batch = {"content-type": "application/cloudevents-batch+json"}
            accepted.append(_write(c, "/api/v1/events", events, batch))
            for url, start in ((v1_grants, w.v1_period_from), (v2_grants, w.v2_period_from)):
                if data.draw(st.booleans()):
                    accepted.append(_write(c, url, data.draw(hostile_grant(start))))
            item = {"feature_reference": w.v1_feature, "amount": data.draw(amounts)}
            kind = data.draw(st.sampled_from(["consume", "reserve", "checks"]))
            authorize = f"/v1/customers/{w.v1_customer}/authorize"
            accepted.append(_write(c, authorize, {kind: [item]}))
            read_everything(c, w)

        check()
    assert 204 in accepted, accepted  # hostile events did get in
    assert 201 in accepted, accepted  # and hostile grants


# ---------------------------------------------------------------- every time parameter


def test_every_date_time_parameter_at_the_range_edges(world: World) -> None:
    w = world
    sent, seen = 0, set()
    with _client(w.server, w.admin) as c:
        for path, url, query in _reads(w):
            if path in seen:  # a variant: its parameters are those of the first read
                continue
            seen.add(path)
            item = w.doc["paths"][path]
            for p in _parameters(w.doc, item, item["get"]):
                if p["in"] != "query" or p.get("schema", {}).get("format") != "date-time":
                    continue
                name = p["name"]
                for at in ("1970-01-01T00:00:00Z", "8999-12-31T23:59:59Z"):
                    r = c.get(url, params={**query, name: at}, headers=_headers(w, path))
                    assert r.status_code < 500, f"{url} {name}={at}: {r.status_code} {r.text}"
                for past in EDGES_PAST:
                    r = c.get(url, params={**query, name: past}, headers=_headers(w, path))
                    assert r.status_code == 400, f"{url} {name}={past}: {r.status_code} {r.text}"
                    detail = r.json()["detail"]
                    assert name in detail, detail
                    assert "TIME_MAX_YEAR" in detail, detail
                    sent += 1
    assert sent >= 20 * len(EDGES_PAST), sent  # 21 parameters on 11 operations (issue 12)
