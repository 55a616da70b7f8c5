"""Portal API against a real server, on every backend: tokens, invalidation, the portal query."""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from allotment.domain.errors import Unauthorized
from allotment.domain.portal_tokens import (
    PortalClaims,
    b64url_decode,
    b64url_encode,
    encode_token,
    verify_token,
)
from allotment.domain.timeutil import format_rfc3339, parse_rfc3339
from tests.support import ServerProcess, unique

METER = "tokens_total"
OTHER_METER = "api_requests_total"
CLOCK_START = "2024-01-01T00:00:00Z"


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    return body


def _create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/portal/tokens", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    out: dict[str, Any] = r.json()
    return out


def _query(
    client: httpx.Client, token: str | None, meter: str = METER, **params: Any
) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return client.get(f"/api/v1/portal/meters/{meter}/query", params=params, headers=headers)


def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["access-control-allow-origin"] == "*"
    body: dict[str, Any] = r.json()
    return body


def _unauthorized(r: httpx.Response, detail: str | None = None) -> None:
    body = _problem(r, 401)
    assert r.headers["access-control-allow-origin"] == "*"
    if detail is not None:
        assert detail in body["detail"]


def _ingest(client: httpx.Client, subject: str, tokens: int, model: str, time: str) -> None:
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "portal-test",
        "type": "prompt",
        "subject": subject,
        "time": time,
        "data": {"tokens": tokens, "model": model, "type": "input"},
    }
    r = client.post(
        "/api/v1/events",
        json=[event],
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert r.status_code == 204, r.text


# ---------------------------------------------------------------- create


def test_create_minimal_token(client: httpx.Client) -> None:
    subject = unique("cust")
    t = _create(client, subject=subject)
    assert set(t) == {"id", "subject", "expiresAt", "token", "createdAt", "expired"}
    assert t["subject"] == subject
    assert t["expired"] is False
    created = parse_rfc3339(t["createdAt"], "createdAt")
    expires = parse_rfc3339(t["expiresAt"], "expiresAt")
    assert expires - created == timedelta(hours=1)
    header, payload, _ = t["token"].split(".")
    assert json.loads(b64url_decode(header))["alg"] == "HS256"
    claims = json.loads(b64url_decode(payload))
    assert claims["sub"] == subject
    assert claims["id"] == t["id"]
    assert "allowedMeterSlugs" not in claims


def test_create_with_slugs_and_expiry(client: httpx.Client) -> None:
    subject = unique("cust")
    expires = format_rfc3339(datetime.now(UTC).replace(microsecond=0) + timedelta(days=2))
    t = _create(client, subject=subject, allowedMeterSlugs=[METER, METER], expiresAt=expires)
    assert t["allowedMeterSlugs"] == [METER]
    assert t["expiresAt"] == expires


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "subject"),
        ({"subject": ""}, "subject"),
        ({"subject": 5}, "subject"),
        ({"subject": "s", "allowedMeterSlugs": []}, "allowedMeterSlugs"),
        ({"subject": "s", "allowedMeterSlugs": METER}, "allowedMeterSlugs"),
        ({"subject": "s", "allowedMeterSlugs": [METER, 3]}, "allowedMeterSlugs[1]"),
        ({"subject": "s", "expiresAt": "tomorrow"}, "expiresAt"),
        ({"subject": "s", "expiresAt": 1700000000}, "expiresAt"),
        ({"subject": "s", "expiresAt": "2020-01-01T00:00:00Z"}, "expiresAt"),
        ([{"subject": "s"}], "body"),
    ],
)
def test_create_invalid_is_400_naming_field(client: httpx.Client, body: Any, field: str) -> None:
    detail = _problem(client.post("/api/v1/portal/tokens", json=body), 400).get("detail", "")
    assert field in detail


def test_create_with_unknown_meter_is_404_naming_slug(client: httpx.Client) -> None:
    missing = unique("no_meter")
    r = client.post(
        "/api/v1/portal/tokens", json={"subject": "s", "allowedMeterSlugs": [METER, missing]}
    )
    assert missing in _problem(r, 404)["detail"]


def test_create_with_malformed_json_is_400(client: httpx.Client) -> None:
    r = client.post(
        "/api/v1/portal/tokens", content=b"{", headers={"content-type": "application/json"}
    )
    _problem(r, 400)


def test_configured_secret_signs_tokens_and_foreign_tokens_fail(
    client: httpx.Client, make_server: Callable[..., ServerProcess]
) -> None:
    other = make_server(env={"ALLOTMENT_PORTAL_TOKEN_SECRET": "configured-secret"})
    now = int(datetime.now(UTC).timestamp())
    with other.client() as c:
        t = _create(c, subject=unique("s"))
        claims = verify_token(t["token"], b"configured-secret", now)
        assert claims.token_id == t["id"]
        with pytest.raises(Unauthorized):
            verify_token(t["token"], b"another", now)
        _ok(_query(c, t["token"]))
        # a token signed by another server (other secret) is refused, both ways
        _unauthorized(_query(client, t["token"]), "signature")
        mine = _create(client, subject=unique("s"))["token"]
        _unauthorized(_query(c, mine), "signature")
        # correctly signed, but the database row is the authority
        secret = b"configured-secret"
        restricted = _create(c, subject=unique("r"), allowedMeterSlugs=[METER])
        later = now + 3600

        def forge(sub: str, token_id: str, slugs: tuple[str, ...] | None) -> str:
            return encode_token(PortalClaims(sub, token_id, now, later, slugs), secret)

        _ok(_query(c, forge(restricted["subject"], restricted["id"], (METER,))))
        _unauthorized(_query(c, forge("s", "01ARZ3NDEKTSV4RRFFQ69G5FAV", None)), "unknown")
        _unauthorized(_query(c, forge("someone-else", restricted["id"], None)), "unknown")
        widened = forge(restricted["subject"], restricted["id"], None)
        _unauthorized(_query(c, widened, meter=OTHER_METER), OTHER_METER)


# ---------------------------------------------------------------- list


def test_list_newest_first_without_token_string(client: httpx.Client) -> None:
    subject = unique("list")
    ids = [_create(client, subject=subject)["id"] for _ in range(3)]
    r = client.get("/api/v1/portal/tokens", params={"limit": 3})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    listed = r.json()
    assert [t["id"] for t in listed] == ids[::-1]
    for t in listed:
        assert "token" not in t
        assert t["expired"] is False
        assert t["subject"] == subject


def test_list_limit_bounds(client: httpx.Client) -> None:
    subject = unique("lim")
    for _ in range(2):
        _create(client, subject=subject)
    assert len(client.get("/api/v1/portal/tokens", params={"limit": 1}).json()) == 1
    assert len(client.get("/api/v1/portal/tokens").json()) <= 25
    assert client.get("/api/v1/portal/tokens", params={"limit": 100}).status_code == 200
    for bad in ("0", "101", "abc", "-1"):
        body = _problem(client.get("/api/v1/portal/tokens", params={"limit": bad}), 400)
        assert "limit" in body["detail"]


# ---------------------------------------------------------------- invalidate and the query


def test_query_returns_only_the_token_subject(client: httpx.Client) -> None:
    mine, other = unique("mine"), unique("other")
    _ingest(client, mine, 10, "gpt-4", "2024-03-01T10:00:00Z")
    _ingest(client, mine, 5, "gpt-3", "2024-03-01T10:30:00Z")
    _ingest(client, other, 1000, "gpt-4", "2024-03-01T10:00:00Z")
    token = _create(client, subject=mine)["token"]
    body = _ok(_query(client, token, subject=other, **{"from": "2024-03-01T00:00:00Z"}))
    assert len(body["data"]) == 1
    row = body["data"][0]
    assert row["subject"] == mine
    assert row["value"] == 15
    grouped = _ok(_query(client, token, groupBy="model", windowSize="HOUR"))
    values = {r["groupBy"]["model"]: r["value"] for r in grouped["data"]}
    assert values == {"gpt-4": 10, "gpt-3": 5}
    assert {r["subject"] for r in grouped["data"]} == {mine}


def test_query_csv(client: httpx.Client) -> None:
    mine = unique("csv")
    _ingest(client, mine, 7, "gpt-4", "2024-03-01T10:00:00Z")
    token = _create(client, subject=mine)["token"]
    r = client.get(
        f"/api/v1/portal/meters/{METER}/query",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/csv"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv"
    assert r.headers["access-control-allow-origin"] == "*"
    assert mine in r.text


def test_query_bad_params_are_400_after_auth(client: httpx.Client) -> None:
    token = _create(client, subject=unique("s"))["token"]
    r = _query(client, token, windowSize="FORTNIGHT")
    assert "windowSize" in _problem(r, 400)["detail"]
    assert r.headers["access-control-allow-origin"] == "*"
    _unauthorized(_query(client, None, windowSize="FORTNIGHT"))


def test_query_unknown_meter_is_404(client: httpx.Client) -> None:
    token = _create(client, subject=unique("s"))["token"]
    r = _query(client, token, meter=unique("nope"))
    _problem(r, 404)
    assert r.headers["access-control-allow-origin"] == "*"


def test_query_401_variants(client: httpx.Client) -> None:
    subject = unique("auth")
    token = _create(client, subject=subject, allowedMeterSlugs=[METER])["token"]
    _ok(_query(client, token))
    path = f"/api/v1/portal/meters/{METER}/query"
    _unauthorized(client.get(path), "missing")
    _unauthorized(client.get(path, headers={"Authorization": ""}), "missing")
    _unauthorized(client.get(path, headers={"Authorization": f"Basic {token}"}), "malformed")
    _unauthorized(client.get(path, headers={"Authorization": "Bearer"}), "malformed")
    _unauthorized(_query(client, "not-a-jwt"), "malformed")
    _unauthorized(_query(client, "a.b.c"))
    head, payload, sig = token.split(".")
    forged_claims = json.loads(b64url_decode(payload))
    forged_claims["sub"] = unique("victim")
    forged = b64url_encode(json.dumps(forged_claims).encode())
    _unauthorized(_query(client, f"{head}.{forged}.{sig}"), "signature")
    _unauthorized(_query(client, f"{head}.{payload}.{sig[:-2]}AA"), "signature")
    none_head = b64url_encode(b'{"alg":"none","typ":"JWT"}')
    _unauthorized(_query(client, f"{none_head}.{payload}."), "algorithm")
    _unauthorized(_query(client, token, meter=OTHER_METER), OTHER_METER)
    # the scheme is case-insensitive
    _ok(client.get(path, headers={"Authorization": f"bearer {token}"}))


def test_invalidate_by_id_is_immediate(client: httpx.Client) -> None:
    subject = unique("inv")
    first = _create(client, subject=subject)
    second = _create(client, subject=subject)
    _ok(_query(client, first["token"]))
    r = client.post("/api/v1/portal/tokens/invalidate", json={"id": first["id"]})
    assert r.status_code == 204
    assert r.content == b""
    _unauthorized(_query(client, first["token"]), "invalidated")
    _ok(_query(client, second["token"]))
    listed = {t["id"]: t for t in client.get("/api/v1/portal/tokens", params={"limit": 100}).json()}
    assert listed[first["id"]]["expired"] is True
    assert "invalidatedAt" in listed[first["id"]]
    assert listed[second["id"]]["expired"] is False


def test_invalidate_by_subject(client: httpx.Client) -> None:
    a, b = unique("a"), unique("b")
    a1, a2, b1 = _create(client, subject=a), _create(client, subject=a), _create(client, subject=b)
    r = client.post("/api/v1/portal/tokens/invalidate", json={"subject": a})
    assert r.status_code == 204
    _unauthorized(_query(client, a1["token"]))
    _unauthorized(_query(client, a2["token"]))
    _ok(_query(client, b1["token"]))


def test_invalidate_id_and_subject_must_both_match(client: httpx.Client) -> None:
    a = _create(client, subject=unique("a"))
    r = client.post("/api/v1/portal/tokens/invalidate", json={"id": a["id"], "subject": "other"})
    assert r.status_code == 204
    _ok(_query(client, a["token"]))


def test_invalidate_unknown_id_is_204(client: httpx.Client) -> None:
    r = client.post("/api/v1/portal/tokens/invalidate", json={"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"})
    assert r.status_code == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [({"id": 5}, "id"), ({"subject": ""}, "subject"), ([1], "body"), ("x", "body")],
)
def test_invalidate_invalid_is_400(client: httpx.Client, body: Any, field: str) -> None:
    r = client.post("/api/v1/portal/tokens/invalidate", json=body)
    assert field in _problem(r, 400)["detail"]


def test_fresh_server_default_list_limit_and_invalidate_all(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server()
    with server.client() as c:
        for _ in range(24):
            _create(c, subject="filler")
        tokens = [_create(c, subject=s)["token"] for s in ("x", "y")]
        for t in tokens:
            _ok(_query(c, t))
        assert c.post("/api/v1/portal/tokens/invalidate", json={}).status_code == 204
        for t in tokens:
            _unauthorized(_query(c, t), "invalidated")
        fresh = _create(c, subject="x")["token"]
        _ok(_query(c, fresh))
        listed = c.get("/api/v1/portal/tokens").json()
        assert len(listed) == 25
        assert listed[0]["subject"] == "x"
        assert listed[0]["expired"] is False
        assert all(t["expired"] for t in listed[1:])
        assert len(c.get("/api/v1/portal/tokens", params={"limit": 100}).json()) == 27
        # an empty body means {} too (the Node SDK sends {} by default)
        assert c.post("/api/v1/portal/tokens/invalidate").status_code == 204
        _unauthorized(_query(c, fresh))


def test_two_processes_share_secret_and_invalidation(
    make_server: Callable[..., ServerProcess], db_url: str
) -> None:
    one, two = make_server(db_url=db_url), make_server(db_url=db_url)
    with one.client() as c1, two.client() as c2:
        # the first tokens on a fresh database, created at once: both processes race to
        # generate the secret, and must end up with the same one
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            f1 = pool.submit(_create, c1, subject=unique("s"))
            f2 = pool.submit(_create, c2, subject=unique("s"))
            t1, t2 = f1.result(), f2.result()
        for c in (c1, c2):
            _ok(_query(c, t1["token"]))
            _ok(_query(c, t2["token"]))
        assert c1.post("/api/v1/portal/tokens/invalidate", json={"id": t2["id"]}).status_code == 204
        _unauthorized(_query(c2, t2["token"]), "invalidated")
        _unauthorized(_query(c1, t2["token"]), "invalidated")
        _ok(_query(c2, t1["token"]))


# ---------------------------------------------------------------- expiry (settable clock)


def test_expiry_on_the_test_clock(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(env={"ALLOTMENT_TEST_CLOCK": CLOCK_START})
    with server.client() as c:
        default = _create(c, subject="s")
        assert default["createdAt"] == CLOCK_START
        assert default["expiresAt"] == "2024-01-01T01:00:00Z"
        short = _create(c, subject="s", expiresAt="2024-01-01T00:00:30.5Z")
        _problem(
            c.post("/api/v1/portal/tokens", json={"subject": "s", "expiresAt": CLOCK_START}), 400
        )
        _ok(_query(c, short["token"]))
        c.put("/api/_testing/clock", json={"now": "2024-01-01T00:00:30.4Z"}).raise_for_status()
        _ok(_query(c, short["token"]))
        c.put("/api/_testing/clock", json={"now": "2024-01-01T00:00:30.5Z"}).raise_for_status()
        _unauthorized(_query(c, short["token"]), "expired")
        _ok(_query(c, default["token"]))
        listed = {t["id"]: t["expired"] for t in c.get("/api/v1/portal/tokens").json()}
        assert listed == {short["id"]: True, default["id"]: False}
        c.put("/api/_testing/clock", json={"now": "2024-01-01T01:00:00Z"}).raise_for_status()
        _unauthorized(_query(c, default["token"]), "expired")


# ---------------------------------------------------------------- CORS


def test_cors_preflight(client: httpx.Client) -> None:
    r = client.options(
        f"/api/v1/portal/meters/{METER}/query",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert r.status_code == 204
    assert r.content == b""
    assert r.headers["access-control-allow-origin"] == "*"
    assert "GET" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()


def test_management_routes_have_no_cors(client: httpx.Client) -> None:
    r = client.get("/api/v1/portal/tokens", params={"limit": 1})
    assert "access-control-allow-origin" not in r.headers
