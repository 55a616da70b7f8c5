"""Real resources for the schemathesis run (tests/api/test_openapi_fuzz.py), made over HTTP.

Schemathesis generates path parameters from their schemas; random ids only ever reach the 404
branch. :func:`seed` creates one of everything the document names — meter, subject, feature,
entitlement, grant, customer and its v2 entitlement, notification channel and rule, portal
token, the /v1 catalog (features, plans, a subscription, a reservation) — and answers the
values schemathesis is told to use: one set for every operation, and a second set of
resources of their own for the DELETE operations (and the console's void and reset forms),
so a delete early in the run does not turn the rest of the run into 404s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.enforcement.catalog_setup import build_guide
from tests.support import unique

_PUBLIC_URL = "https://93.184.216.34/hook"
"""A literal public address: the channel is disabled, so nothing is ever sent to it."""


def _ok(r: httpx.Response, *statuses: int) -> Any:
    assert r.status_code in (statuses or (200, 201)), f"{r.request.url}: {r.status_code} {r.text}"
    return r.json() if r.content else None


@dataclass
class Seeded:
    """Values by parameter name for all operations, and overrides by (method, path)."""

    everywhere: dict[str, str] = field(default_factory=dict)
    by_operation: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)


def _api_v1(c: httpx.Client) -> dict[str, str]:
    meter = unique("m")
    _ok(
        c.post(
            "/api/v1/meters",
            json={
                "slug": meter,
                "aggregation": "SUM",
                "eventType": meter,
                "valueProperty": "$.tokens",
                "groupBy": {"model": "$.model"},
            },
        )
    )
    subject = unique("s")
    _ok(c.post("/api/v1/subjects", json=[{"key": subject}]))
    events = [
        {
            "specversion": "1.0",
            "id": unique("e"),
            "source": "fuzz-seed",
            "type": meter,
            "subject": subject,
            "data": {"tokens": 5, "model": "m1"},
        }
    ]
    _ok(
        c.post(
            "/api/v1/events",
            json=events,
            headers={"content-type": "application/cloudevents-batch+json"},
        ),
        204,
    )
    feature = _ok(
        c.post("/api/v1/features", json={"key": unique("f"), "name": "F", "meterSlug": meter})
    )
    ent = _ok(
        c.post(
            f"/api/v1/subjects/{subject}/entitlements",
            json={
                "type": "metered",
                "featureKey": feature["key"],
                "usagePeriod": {"interval": "MONTH"},
            },
        )
    )
    base = f"/api/v1/subjects/{subject}/entitlements/{ent['id']}"
    grant = _ok(
        c.post(
            base + "/grants",
            json={
                "amount": 100,
                "effectiveAt": ent["currentUsagePeriod"]["from"],
                "expiration": {"duration": "YEAR", "count": 1},
            },
        )
    )
    customer = _ok(
        c.post(
            "/api/v1/customers",
            json={
                "key": unique("cust"),
                "name": "C",
                "usageAttribution": {"subjectKeys": [unique("cs")]},
            },
        )
    )
    v2 = _ok(
        c.post(
            f"/api/v2/customers/{customer['id']}/entitlements",
            json={
                "type": "metered",
                "featureKey": feature["key"],
                "usagePeriod": {"interval": "MONTH"},
            },
        )
    )
    channel = _ok(
        c.post(
            "/api/v1/notification/channels",
            json={"type": "WEBHOOK", "name": unique("ch"), "url": _PUBLIC_URL, "disabled": True},
        )
    )
    rule = _ok(
        c.post(
            "/api/v1/notification/rules",
            json={
                "type": "entitlements.balance.threshold",
                "name": unique("r"),
                "channels": [channel["id"]],
                "features": [feature["key"]],
                "thresholds": [{"value": 50, "type": "PERCENT"}],
                "disabled": True,
            },
        )
    )
    return {
        "meterIdOrSlug": meter,
        "meterSlug": meter,
        "groupByKey": "model",
        "subjectIdOrKey": subject,
        "featureId": feature["id"],
        "featureKey": feature["key"],
        "entitlementId": ent["id"],
        "entitlementIdOrFeatureKey": feature["key"],
        "grantId": grant["id"],
        "customerIdOrKey": customer["id"],
        "v2EntitlementId": v2["id"],
        "channelId": channel["id"],
        "ruleId": rule["id"],
    }


def _catalog(c: httpx.Client) -> dict[str, str]:
    g = build_guide(c)
    res = _ok(
        c.post(
            f"/v1/customers/{g.customer}/authorize",
            json={"reserve": [{"feature_reference": g.budget, "amount": "1"}]},
        )
    )
    key = _ok(c.post("/v1/api-keys", json={"name": unique("k"), "scope": "read"}))
    return {
        "customer": g.customer,
        "feature": g.budget,
        "plan": g.starter,
        "version": "1",
        "subscription": g.subscription_id,
        "reservation": str(res["reservation_id"]),
        "apiKey": str(key.get("name") or key["key"]["name"]),
    }


def seed(c: httpx.Client) -> Seeded:
    keep, victim = _api_v1(c), _api_v1(c)
    cat, cat_victim = _catalog(c), _catalog(c)
    out = Seeded(everywhere={k: v for k, v in keep.items() if k != "v2EntitlementId"})
    out.everywhere["name"] = cat["apiKey"]
    out.everywhere["version"] = cat["version"]
    v2_ent = "/api/v2/customers/{customerIdOrKey}/entitlements/{entitlementIdOrFeatureKey}"
    out.by_operation[("GET", "/api/v2/entitlements/{entitlementId}")] = {
        "entitlementId": keep["v2EntitlementId"]
    }
    refs = {
        "/v1/customers/{ref}": "customer",
        "/v1/features/{ref}": "feature",
        "/v1/pricing-plans/{ref}": "plan",
    }
    for path, kind in refs.items():
        out.by_operation[("GET", path)] = {"ref": cat[kind]}
        out.by_operation[("DELETE", path)] = {"ref": cat_victim[kind]}
    out.by_operation[("PATCH", "/v1/customers/{ref}")] = {"ref": cat["customer"]}
    for sub in ("/authorize", "/entitlements"):
        out.by_operation[
            ("POST" if sub == "/authorize" else "GET", "/v1/customers/{ref}" + sub)
        ] = {"ref": cat["customer"]}
    out.by_operation[("POST", "/v1/pricing-plans/{ref}/versions")] = {"ref": cat["plan"]}
    out.by_operation[("GET", "/v1/pricing-plans/{ref}/versions/{version}")] = {"ref": cat["plan"]}
    sub_path = "/v1/pricing-plan-subscriptions/{id}"
    out.by_operation[("GET", sub_path)] = {"id": cat["subscription"]}
    out.by_operation[("PATCH", sub_path)] = {"id": cat["subscription"]}
    out.by_operation[("DELETE", sub_path)] = {"id": cat_victim["subscription"]}
    out.by_operation[("GET", "/v1/reservations/{id}")] = {"id": cat["reservation"]}
    out.by_operation[("POST", "/v1/reservations/{id}/commit")] = {"id": cat["reservation"]}
    out.by_operation[("POST", "/v1/reservations/{id}/release")] = {"id": cat_victim["reservation"]}
    out.by_operation[("DELETE", "/v1/api-keys/{name}")] = {"name": cat_victim["apiKey"]}
    deletes = {
        "/api/v1/meters/{meterIdOrSlug}": ["meterIdOrSlug"],
        "/api/v1/features/{featureId}": ["featureId"],
        "/api/v1/subjects/{subjectIdOrKey}": ["subjectIdOrKey"],
        "/api/v1/customers/{customerIdOrKey}": ["customerIdOrKey"],
        "/api/v1/grants/{grantId}": ["grantId"],
        "/api/v1/notification/channels/{channelId}": ["channelId"],
        "/api/v1/notification/rules/{ruleId}": ["ruleId"],
        "/api/v1/subjects/{subjectIdOrKey}/entitlements/{entitlementId}": [
            "subjectIdOrKey",
            "entitlementId",
        ],
        v2_ent: ["customerIdOrKey", "entitlementIdOrFeatureKey"],
    }
    for path, names in deletes.items():
        out.by_operation[("DELETE", path)] = {n: victim[n] for n in names}
    console = {  # the console's pages and forms name their resources in words of their own
        ("GET", "/console/customers/{ref}"): {"ref": cat["customer"]},
        ("POST", "/console/customers/{ref}/overrides"): {"ref": cat["customer"]},
        ("POST", "/console/customers/{ref}/overrides/remove"): {"ref": cat["customer"]},
        ("GET", "/console/plans/{plan}"): {"plan": cat["plan"]},
        ("GET", "/console/meters/{slug}"): {"slug": keep["meterSlug"]},
        ("GET", "/console/entitlements/{id}"): {"id": keep["entitlementId"]},
        ("POST", "/console/entitlements/{id}/grants"): {"id": keep["entitlementId"]},
        ("POST", "/console/entitlements/{id}/void"): {"id": victim["entitlementId"]},
        ("POST", "/console/entitlements/{id}/reset"): {"id": victim["entitlementId"]},
    }
    out.by_operation.update(console)
    return out
