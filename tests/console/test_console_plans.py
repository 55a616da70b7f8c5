"""Plans side by side (feature × plan, typed values) and a plan's versions side by side."""

from __future__ import annotations

import re

from tests.console.support import catalog, console, ok, text_of


def _cells(html: str, feature: str) -> list[str]:
    row = re.search(rf'<tr data-feature="{feature}">(.*?)</tr>', html, re.S)
    assert row is not None, feature
    return [text_of(td) for td in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)][1:]


def test_feature_by_plan_table(db_url: str) -> None:
    with console(db_url) as (_, client):
        catalog(client)
        ok(
            client.post(
                "/v1/features",
                json={"reference": "credit", "name": "Credit", "type": "AMOUNT", "currency": "EUR"},
            ),
            201,
        )
        ok(client.post("/v1/pricing-plans", json={"reference": "free", "name": "Free",
            "entitlements": [{"feature_reference": "tokens", "number": "unlimited"},
                             {"feature_reference": "credit", "amount": {"value": "25.5"}}]}),
           201)  # fmt: skip
        r = client.get("/console/plans")
        assert r.status_code == 200, r.text
        # columns by reference: free, pro (its active version 2)
        assert _cells(r.text, "tokens") == ["unlimited", "2,000"]
        assert _cells(r.text, "sso") == ["—", "on"]
        assert _cells(r.text, "credit") == ["25.5 EUR", "—"]
        assert "tier" not in r.text.split('id="plans-matrix"')[1]  # version 2 dropped it
        assert 'href="/console/plans/pro"' in r.text


def test_versions_side_by_side(db_url: str) -> None:
    with console(db_url) as (_, client):
        catalog(client)
        r = client.get("/console/plans/pro")
        assert r.status_code == 200, r.text
        assert _cells(r.text, "tokens") == ["1,000", "2,000"]
        assert _cells(r.text, "sso") == ["off", "on"]
        assert _cells(r.text, "tier") == ["email", "—"]
        assert r.text.count('class="changed"') == 3
        assert "Subscribed customers 1" in text_of(r.text)
        r = client.get("/console/plans/nope")
        assert r.status_code == 404
        assert "nope" in text_of(r.text)


def test_plans_are_paged(db_url: str) -> None:
    with console(db_url) as (_, client):
        ok(
            client.post(
                "/v1/features", json={"reference": "seats", "name": "Seats", "type": "NUMBER"}
            ),
            201,
        )
        for i in range(10):
            ok(client.post("/v1/pricing-plans", json={"reference": f"p{i}", "name": f"P{i}",
               "entitlements": [{"feature_reference": "seats", "number": i}]}), 201)  # fmt: skip
        r = client.get("/console/plans")
        assert _cells(r.text, "seats") == [str(i) for i in range(8)]
        assert 'href="?after=p7"' in r.text
        r = client.get("/console/plans?after=p7")
        assert _cells(r.text, "seats") == ["8", "9"]
