"""An entitlement's page: value, grants, resets, usage per window and the burn-down segments
as charts; the top-up, void and reset forms through the API, errors in words."""

from __future__ import annotations

import re
from datetime import timedelta

from allotment.domain.owners import Owner
from tests.console.support import START, Client, catalog, console, csrf, ingest, ok, text_of


def _subject_entitlement(client: Client) -> str:
    ok(client.post("/api/v1/features", json={"key": "gen", "name": "Generation",
                                             "meterSlug": "tokens"}), 201)  # fmt: skip
    made = ok(client.post("/api/v1/subjects/s-1/entitlements", json={
        "type": "metered", "featureKey": "gen", "usagePeriod": {"interval": "DAY"},
        "issueAfterReset": 100}), 201)  # fmt: skip
    return str(made["id"])


def _points(html: str, series: str) -> list[str]:
    return re.findall(rf'data-series="{series}" data-label="[^"]*" data-value="([^"]*)"', html)


def test_value_grants_and_charts(db_url: str) -> None:
    with console(db_url) as (c, client):
        eid = _subject_entitlement(client)
        c.clock.set(START + timedelta(hours=3))  # type: ignore[attr-defined]
        ingest(client, "tokens", "s-1", START + timedelta(minutes=30), n=30, model="a")
        ingest(client, "tokens", "s-1", START + timedelta(hours=2, minutes=5), n="12.5", model="b")
        page = f"/console/entitlements/{eid}"
        r = client.get(page)
        assert r.status_code == 200, r.text
        words = text_of(r.text)
        assert "Usage this period 42.5" in words
        assert "Balance 57.5" in words
        assert 'data-used="42.5" data-limit="100"' in r.text
        # usage per hour this period: 30 at 00:00, 0 at 01:00, 12.5 at 02:00
        assert _points(r.text, "")[:3] == ["30", "0", "12.5"]
        # the burn-down: one segment from the period's start, balance 100 → 57.5
        assert _points(r.text, "balance") == ["100", "57.5"]
        assert len(re.findall(r'<tr data-grant="', r.text)) == 1  # the issue-after-reset grant
        # a top-up: a second grant, the balance grows by it
        token = csrf(client, page)
        r = client.post(page + "/grants", data={"csrf": token, "amount": "250.25",
                                                "priority": "2", "expiration": "MONTH",
                                                "count": "1"})  # fmt: skip
        assert r.status_code == 303, r.text
        assert r.headers["location"] == page + "?done=granted%20250.25"
        r = client.get(page)
        assert "Balance 307.75" in text_of(r.text)
        assert "granted 250.25" not in text_of(r.text)  # the note is the redirect's only
        grants = re.findall(r'<tr data-grant="([^"]+)">', r.text)
        assert len(grants) == 2
        value = ok(client.get(f"/api/v1/subjects/s-1/entitlements/{eid}/value"))
        assert value["balance"] == 307.75
        # bad input: the API's words, nothing granted
        for amount, words in (("-5", "amount"), ("lots", "amount: must be a number")):
            r = client.post(page + "/grants", data={"csrf": token, "amount": amount,
                                                    "expiration": "MONTH"})  # fmt: skip
            assert r.status_code == 400
            assert words in text_of(r.text)
        r = client.post(page + "/grants", data={"csrf": token, "amount": "5", "expiration": ""})
        assert r.status_code == 400
        assert "expiration: required" in text_of(r.text)
        assert len(ok(client.get(f"/api/v1/subjects/s-1/entitlements/{eid}/grants"))) == 2


def test_void_and_reset(db_url: str) -> None:
    with console(db_url) as (c, client):
        eid = _subject_entitlement(client)
        c.clock.set(START + timedelta(hours=3))  # type: ignore[attr-defined]
        ingest(client, "tokens", "s-1", START + timedelta(minutes=30), n=30, model="a")
        page = f"/console/entitlements/{eid}"
        token = csrf(client, page)
        [grant] = ok(client.get(f"/api/v1/subjects/s-1/entitlements/{eid}/grants"))
        r = client.post(page + "/void", data={"csrf": token, "grant_id": grant["id"]})
        assert r.status_code == 303, r.text
        r = client.get(page)
        assert "voided" in text_of(r.text)
        assert "Balance 0" in text_of(r.text)
        unknown = "01NOPE0000000000000000000"
        r = client.post(page + "/void", data={"csrf": token, "grant_id": unknown})
        assert r.status_code == 404
        assert "404 Not Found" in text_of(r.text)
        # reset: a new period from now, usage back to 0 (the voided grant gives nothing)
        r = client.post(page + "/reset", data={"csrf": token, "preserve_overage": ""})
        assert r.status_code == 303, r.text
        r = client.get(page)
        words = text_of(r.text)
        assert "Usage this period 0" in words
        assert "This period 2024-01-01 03:00:00Z → 2024-01-02 03:00:00Z" in words
        assert "moved to the reset" in words  # the resets table
        # a second reset at the same instant: refused in words
        r = client.post(page + "/reset", data={"csrf": token})
        assert r.status_code == 400
        assert "400 Bad Request" in text_of(r.text)


def test_a_customer_budget_page_and_unknown_ids(db_url: str) -> None:
    with console(db_url) as (c, client):
        catalog(client)
        acme = c.customers.get("acme")
        owned = c.entitlements.list_for_owner(Owner.customer(acme.id), False)
        [eid] = [v.record.id for v in owned if v.record.feature_key == "tokens"]
        r = client.get(f"/console/entitlements/{eid}")
        assert r.status_code == 200, r.text
        assert f'href="/console/customers/{acme.id}"' in r.text
        assert "of 2,000" in text_of(r.text)
        token = csrf(client, f"/console/entitlements/{eid}")
        r = client.post(f"/console/entitlements/{eid}/grants",
                        data={"csrf": token, "amount": "500", "expiration": ""})  # fmt: skip
        assert r.status_code == 303, r.text  # customer grants may never expire (v2)
        assert "of 2,500" in text_of(client.get(f"/console/entitlements/{eid}").text)
        assert client.get("/console/entitlements/01NOPE0000000000000000000").status_code == 404
