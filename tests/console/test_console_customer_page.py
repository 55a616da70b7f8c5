"""A customer's page: subscription, the plan's values with usage against the limit, the API
entitlements; the override forms call the subscription PATCH and show its errors in words."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx

from allotment.domain.owners import Owner
from tests.console.support import START, Client, catalog, console, csrf, ingest, text_of


def _row(html: str, attribute: str, value: str) -> str:
    found = re.search(rf'<tr {attribute}="{re.escape(value)}">(.*?)</tr>', html, re.S)
    assert found is not None, f"no row {attribute}={value}"
    return text_of(found.group(1))


def _set(client: Client, page: str, token: str, feature: str, value: str) -> httpx.Response:
    form = {"csrf": token, "feature_reference": feature, "value": value}
    return client.post(page + "/overrides", data=form)


def test_the_page_shows_the_subscription_and_usage_against_the_limit(db_url: str) -> None:
    with console(db_url) as (c, client):
        catalog(client)
        c.clock.advance(timedelta(hours=2))  # type: ignore[attr-defined]
        ingest(client, "tokens", "acme", START + timedelta(minutes=5), n=150, model="a")
        ingest(client, "tokens", "acme-app", START + timedelta(minutes=6), n="100.5", model="b")
        ingest(client, "tokens", "someone-else", START + timedelta(minutes=7), n=999, model="a")
        acme = c.customers.get("acme")
        r = client.get(f"/console/customers/{acme.id}")
        assert r.status_code == 200, r.text
        words = text_of(r.text)
        assert "Acme Inc" in words
        assert "Pro" in words
        assert "version 2" in words  # a new subscription takes the plan's latest version
        tokens = _row(r.text, "data-feature", "tokens")
        assert "2,000" in tokens
        assert "250.5" in tokens  # usage of its key and its subject, nobody else's
        assert "12% of 2,000" in tokens
        assert "1,749.5" in tokens  # remaining
        assert 'data-used="250.5" data-limit="2000"' in r.text
        assert "on" in _row(r.text, "data-feature", "sso")
        # the synced API entitlement of the budget, linked to its page
        owned = c.entitlements.list_for_owner(Owner.customer(acme.id), False)
        [entitlement] = [v for v in owned if v.record.feature_key == "tokens"]
        row = _row(r.text, "data-entitlement", entitlement.record.id)
        assert "250.5 of 2,000" in row
        assert "1,749.5" in row
        assert f'href="/console/entitlements/{entitlement.record.id}"' in r.text
        # by key as well as by id; unknown: a 404 page in words
        assert client.get("/console/customers/acme").status_code == 200
        r = client.get("/console/customers/nobody")
        assert r.status_code == 404
        assert "not found" in text_of(r.text)


def test_override_forms_set_remove_and_explain_errors(db_url: str) -> None:
    with console(db_url) as (c, client):
        catalog(client)
        acme = c.customers.get("acme")
        page = f"/console/customers/{acme.id}"
        token = csrf(client, page)
        r = _set(client, page, token, "tokens", "500")
        assert r.status_code == 303, r.text
        assert r.headers["location"].startswith(page + "?done=override")
        shown = client.get(r.headers["location"])
        assert "override set: tokens" in text_of(shown.text)
        row = _row(shown.text, "data-feature", "tokens")
        assert "500" in row
        assert "override" in row
        # the customer's entitlement changed (the one call says so)
        one = client.get("/v1/customers/acme/entitlements").json()["entitlements"]
        assert {e["feature_reference"]: e.get("number") for e in one}["tokens"] == "500"
        # a bad value: the API's problem in words, nothing changed
        r = _set(client, page, token, "tokens", "-3")
        assert r.status_code == 400
        words = text_of(r.text)
        assert "400 Bad Request" in words
        assert "is negative" in words
        r = _set(client, page, token, "tier", "fax")
        assert r.status_code == 400
        assert "'fax' is not one of the enum_values" in text_of(r.text)
        r = _set(client, page, token, "nope", "1")
        assert r.status_code == 400
        assert "no live feature 'nope'" in text_of(r.text)
        # remove it: back to the plan's value
        r = client.post(page + "/overrides/remove",
                        data={"csrf": token, "feature_reference": "tokens"})  # fmt: skip
        assert r.status_code == 303
        row = _row(client.get(page).text, "data-feature", "tokens")
        assert "2,000" in row
        assert "plan" in row
        # no CSRF token: refused, nothing changed
        r = client.post(page + "/overrides", data={"feature_reference": "tokens", "value": "1"})
        assert r.status_code == 403
        # without keys nothing is audited (as on the API); with a key, under the key's name
        assert c.audit.list(10, None) == []
        _, admin = c.api_keys.create("root", "admin")
        r = client.post("/console/login", data={"csrf": token, "key": admin})
        assert r.status_code == 303
        r = _set(client, page, token, "sso", "off")
        assert r.status_code == 303, r.text
        [event] = c.audit.list(10, None)
        assert (event.actor, event.method, event.route) == (
            "root", "PATCH", "/v1/pricing-plan-subscriptions/{id}")  # fmt: skip
        assert event.before_json is not None
        assert '"switch":false' in (event.after_json or "")
