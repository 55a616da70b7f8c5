"""The customer usage page (/console/portal): a portal token shows its owner's budgets and
usage and nothing of anyone else; a wrong, expired or invalidated token is a 401 page; a token
opens no operator page. In process, through the whole app, on both engines."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from allotment.container import Container
from tests.console.support import START, Client, console, csrf, text_of

DAY2 = "2024-01-02T10:00:00Z"
DAY3 = "2024-01-03T10:00:00Z"


def _ok(r: Any, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json() if r.content else None


def _events(client: Client, *rows: tuple[str, str, int, str]) -> None:
    batch = [
        {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "portal-page",
         "type": kind, "subject": subject, "time": at, "data": {"n": n, "model": "m1"}}
        for subject, kind, n, at in rows
    ]  # fmt: skip
    r = client.post(
        "/api/v1/events", json=batch, headers={"content-type": "application/cloudevents-batch+json"}
    )
    _ok(r, 204)


@dataclass
class World:
    c: Container
    client: Client
    acme_id: str

    def token(self, subject: str, **extra: Any) -> str:
        return self.c.portal.create({"subject": subject, **extra}).token

    def page(self, token: str, path: str = "/console/portal") -> Any:
        return self.client.get(path, headers={"authorization": f"Bearer {token}"})


@contextmanager
def world(db_url: str) -> Iterator[World]:
    """Two customers with budgets and usage, and a subject that is no customer."""
    with console(db_url) as (c, client):
        for key, meter in (("acme_tokens", "tokens"), ("acme_calls", "calls"),
                           ("globex_secret_tokens", "tokens")):  # fmt: skip
            _ok(client.post("/api/v1/features", json={"key": key, "name": key.replace("_", " "),
                                                      "meterSlug": meter}), 201)  # fmt: skip
        acme = _ok(client.post("/api/v1/customers", json={
            "name": "Acme Corp", "key": "acme", "usageAttribution": {"subjectKeys": ["acme-1"]}}),
            201)  # fmt: skip
        globex = _ok(client.post("/api/v1/customers", json={"name": "Globex Hidden",
                                                            "key": "globex"}), 201)  # fmt: skip
        period = {"interval": "MONTH", "anchor": "2024-01-01T00:00:00Z"}
        for cid, feature, amount in ((acme["id"], "acme_tokens", 5000),
                                     (acme["id"], "acme_calls", 10),
                                     (globex["id"], "globex_secret_tokens", 999000)):  # fmt: skip
            body = {"type": "metered", "featureKey": feature, "usagePeriod": period,
                    "issue": {"amount": amount}}  # fmt: skip
            _ok(client.post(f"/api/v2/customers/{cid}/entitlements", json=body), 201)
        trial = {"type": "metered", "featureKey": "acme_tokens", "usagePeriod": period,
                 "issueAfterReset": 700}  # fmt: skip
        _ok(client.post("/api/v1/subjects/trial-9/entitlements", json=trial), 201)
        c.clock.set(START + timedelta(days=3))  # type: ignore[attr-defined]
        _events(
            client,
            ("acme", "tokens", 300, DAY2),
            ("acme-1", "tokens", 1200, DAY3),
            ("acme-1", "call", 1, DAY3),
            ("globex", "tokens", 7777, DAY2),
            ("trial-9", "tokens", 45, DAY2),
        )
        yield World(c, client, acme["id"])


def _bars(html: str) -> dict[str, dict[str, str]]:
    """meter slug → {bar label: value} of the page's charts."""
    out: dict[str, dict[str, str]] = {}
    for section in re.findall(r'<section class="portal-meter" data-meter="([^"]+)">(.*?)</section>',
                              html, re.S):  # fmt: skip
        slug, body = section
        bars = re.findall(r'data-series="[^"]*" data-label="([^"]+)" data-value="([^"]+)"', body)
        out[slug] = dict(bars)
    return out


def test_a_customer_token_shows_the_customer_and_nobody_else(db_url: str) -> None:
    with world(db_url) as w:
        r = w.page(w.token("acme"))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        words = text_of(r.text)
        assert "Acme Corp" in words
        # both budgets, usage over the customer's key and subject keys
        assert re.search(r'data-feature="acme_tokens">.*?class="num usage">1,500<', r.text, re.S)
        assert "30% of 5,000" in words
        assert "10% of 10" in words
        bars = _bars(r.text)
        assert set(bars) == {"calls", "tokens"}
        assert bars["tokens"]["Jan 2"] == "300"
        assert bars["tokens"]["Jan 3"] == "1200"
        assert bars["tokens"]["Jan 1"] == "0"
        assert "Jan 5" not in bars["tokens"]  # days still to come have no bar
        assert bars["calls"]["Jan 3"] == "1"
        assert 'data-total="1500"' in r.text
        # nothing of the other customer, nor the operator's navigation
        for other in ("Globex", "globex", "7777", "7,777", "999", "trial-9"):
            assert other not in r.text, other
        assert "/console/customers" not in r.text
        # no parameter names another owner
        r = w.client.get(
            "/console/portal?subject=globex&customer=globex",
            headers={"authorization": f"Bearer {w.token('acme')}"},
        )
        assert "Globex" not in r.text
        assert "Acme Corp" in r.text


def test_a_subject_token_shows_that_subject_only(db_url: str) -> None:
    with world(db_url) as w:
        # a customer's subject key: its own events, not the customer's budgets
        r = w.page(w.token("acme-1"))
        assert r.status_code == 200
        bars = _bars(r.text)
        assert bars["tokens"]["Jan 3"] == "1200"
        assert bars["tokens"]["Jan 2"] == "0"  # the key's 300 are a sibling's
        assert "Acme Corp" not in r.text
        assert "acme_tokens" not in r.text
        assert "No budgets or entitlements." in text_of(r.text)
        # a subject that is no customer: its own entitlement
        r = w.page(w.token("trial-9"))
        words = text_of(r.text)
        assert "trial-9" in words
        assert "45" in _bars(r.text)["tokens"].values()
        assert "6% of 700" in words
        assert "Acme Corp" not in words


def test_allowed_meters_limit_the_charts_and_budgets(db_url: str) -> None:
    with world(db_url) as w:
        r = w.page(w.token("acme", allowedMeterSlugs=["tokens"]))
        assert set(_bars(r.text)) == {"tokens"}
        assert 'data-feature="acme_tokens"' in r.text
        assert 'data-feature="acme_calls"' not in r.text


def test_wrong_expired_and_invalidated_tokens_are_401_pages(db_url: str) -> None:
    with world(db_url) as w:
        r = w.page("not-a-token")
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("text/html")
        assert "This usage link does not open: portal token: malformed token" in text_of(r.text)
        good = w.token("acme")
        tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
        assert "bad signature" in text_of(w.page(tampered).text)
        r = w.client.get("/console/portal", headers={"authorization": "Basic abc"})
        assert r.status_code == 401
        assert "malformed Authorization header" in text_of(r.text)
        short = w.token("acme", expiresAt="2024-01-04T01:00:00Z")
        assert w.page(short).status_code == 200
        w.c.clock.advance(timedelta(hours=2))  # type: ignore[attr-defined]
        r = w.page(short)
        assert r.status_code == 401
        assert "expired" in text_of(r.text)
        issued = w.c.portal.create({"subject": "acme"})
        w.c.portal.invalidate({"id": issued.record.id})
        r = w.page(issued.token)
        assert r.status_code == 401
        assert "invalidated" in text_of(r.text)
        assert "Acme Corp" not in r.text


def test_the_form_keeps_the_token_in_a_strict_cookie(db_url: str) -> None:
    with world(db_url) as w:
        r = w.client.get("/console/portal")
        assert r.status_code == 200
        assert 'id="portal-open"' in r.text
        assert "Acme Corp" not in r.text
        token = csrf(w.client, "/console/portal")
        r = w.client.post("/console/portal", data={"csrf": token, "token": "nope"})
        assert r.status_code == 401
        assert "does not open" in text_of(r.text)
        r = w.client.post("/console/portal", data={"csrf": "wrong", "token": w.token("acme")})
        assert r.status_code == 403
        r = w.client.post("/console/portal", data={"csrf": token, "token": ""})
        assert r.status_code == 400
        assert "token: required" in text_of(r.text)
        r = w.client.post("/console/portal", data={"csrf": token, "token": w.token("acme")})
        assert r.status_code == 303
        assert r.headers["location"] == "/console/portal"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("allotment_portal=")
        for attribute in ("HttpOnly", "Path=/console/portal", "SameSite=strict", "Max-Age=3600"):
            assert attribute.lower() in cookie.lower(), cookie
        r = w.client.get("/console/portal")
        assert r.status_code == 200
        assert "Acme Corp" in r.text
        # the cookie is only sent to the portal's path: the operator pages do not see it
        r = w.client.post("/console/portal/forget", data={"csrf": token})
        assert r.status_code == 303
        assert 'id="portal-open"' in w.client.get("/console/portal").text
        # an expired kept token: 401, and the cookie is dropped
        w.client.post("/console/portal", data={"csrf": token, "token": w.token("acme")})
        w.c.clock.advance(timedelta(hours=2))  # type: ignore[attr-defined]
        r = w.client.get("/console/portal")
        assert r.status_code == 401
        assert 'allotment_portal=""' in r.headers["set-cookie"]


def test_a_portal_token_opens_no_operator_page(db_url: str) -> None:
    with world(db_url) as w:
        w.c.api_keys.create("root", "admin")  # the console now needs a key
        token = w.token("acme")
        for path in ("/console/customers", f"/console/customers/{w.acme_id}"):
            r = w.client.get(path, headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 401, path
            assert "unknown or revoked API key" in text_of(r.text)
            r = w.client.get(path)  # with the portal cookie only: the login form
            assert r.status_code == 303
        r = w.page(token)
        assert r.status_code == 200
        assert "Acme Corp" in r.text
