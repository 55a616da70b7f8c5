"""What another web page open in an operator's browser can do to a local server.

A page may send, without a preflight, a POST whose body is ``text/plain``, form-encoded or
multipart; every such body is refused (415, naming Content-Type) and changes nothing. JSON
needs a preflight, and no route but the portal query answers one with CORS headers, so the
browser never sends it. Tested on the shared server, which has no keys (loopback, auth off:
the case where these rules are the only defence), and on a server with keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.api.auth_support import bearer, start_with_keys
from tests.api.route_scopes import ROUTE_SCOPES
from tests.api.route_scopes import served as served_routes
from tests.support import ServerProcess, unique

ORIGIN = {"origin": "https://evil.example"}
SIMPLE_BODIES = {
    "text/plain": ("text/plain", b'{"key": "%s", "name": "x"}'),
    "text/plain; charset=utf-8": ("text/plain; charset=utf-8", b'{"key": "%s", "name": "x"}'),
    "form": ("application/x-www-form-urlencoded", b"key=%s&name=x"),
    "multipart": (
        "multipart/form-data; boundary=b",
        b'--b\r\nContent-Disposition: form-data; name="key"\r\n\r\n%s\r\n--b--\r\n',
    ),
    "no content type": (None, b'{"key": "%s", "name": "x"}'),
}


def _refused_415(r: httpx.Response, shown: str) -> None:
    assert r.status_code == 415, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 415
    assert f"Content-Type: {shown}" in body["detail"]
    assert "application/json" in body["detail"]
    assert body["extensions"]["field"] == "Content-Type"
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("kind", sorted(SIMPLE_BODIES))
def test_simple_cross_site_posts_are_415_and_change_nothing(
    client: httpx.Client, kind: str
) -> None:
    ctype, template = SIMPLE_BODIES[kind]
    key = unique("f")
    headers = {**ORIGIN, **({"content-type": ctype} if ctype else {})}
    r = client.post("/api/v1/features", content=template.replace(b"%s", key.encode()),
                    headers=headers)  # fmt: skip
    _refused_415(r, ctype or "(none)")
    assert client.get(f"/api/v1/features/{key}").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/portal/tokens/invalidate"),  # an empty body would invalidate all
        ("POST", "/api/v1/subjects"),
        ("PUT", "/api/v1/meters/tokens_total"),
        ("DELETE", "/api/v1/features/x"),
        ("POST", "/api/v1/subjects/s/entitlements/e/reset"),
        ("POST", "/v1/api-keys"),
    ],
)
def test_a_simple_content_type_is_refused_even_without_a_body(
    client: httpx.Client, method: str, path: str
) -> None:
    r = client.request(method, path, headers={**ORIGIN, "content-type": "text/plain"})
    _refused_415(r, "text/plain")


def test_ingest_takes_json_and_cloudevents_only(client: httpx.Client) -> None:
    event = {"specversion": "1.0", "id": unique("e"), "source": "t", "type": "request",
             "subject": unique("s")}  # fmt: skip
    body = json.dumps(event)
    r = client.post("/api/v1/events", content=body, headers={"content-type": "text/plain"})
    _refused_415(r, "text/plain")
    for ctype in (
        "application/cloudevents+json",
        "application/cloudevents+json; charset=utf-8",
        "application/json",
    ):
        event["id"] = unique("e")
        r = client.post(
            "/api/v1/events", content=json.dumps(event), headers={"content-type": ctype}
        )
        assert r.status_code == 204, r.text
    # the CloudEvents types open /events only
    r = client.post("/api/v1/features", content=json.dumps({"key": unique("f"), "name": "x"}),
                    headers={"content-type": "application/cloudevents+json"})  # fmt: skip
    _refused_415(r, "application/cloudevents+json")


def test_json_with_parameters_and_bodiless_requests_are_accepted(client: httpx.Client) -> None:
    key = unique("f")
    r = client.post("/api/v1/features", content=json.dumps({"key": key, "name": "x"}),
                    headers={"content-type": "application/json; charset=utf-8"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert client.delete(f"/api/v1/features/{key}").status_code == 204  # no body, no type


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/meters"),
        ("GET", "/api/v1/subjects/s/entitlements/f/value"),
        ("POST", "/api/v1/features"),
        ("GET", "/v1/api-keys"),
        ("GET", "/healthz"),
    ],
)
def test_no_cors_headers_outside_the_portal(client: httpx.Client, method: str, path: str) -> None:
    r = client.request(method, path, headers=ORIGIN, json={} if method == "POST" else None)
    assert not [h for h in r.headers if h.startswith("access-control-")], r.headers


@pytest.mark.parametrize("path", ["/api/v1/features", "/api/v1/events", "/v1/api-keys"])
def test_preflights_outside_the_portal_are_not_granted(client: httpx.Client, path: str) -> None:
    preflight = {"access-control-request-method": "POST",
                 "access-control-request-headers": "content-type"}  # fmt: skip
    r = client.options(path, headers={**ORIGIN, **preflight})
    assert r.status_code >= 400
    assert not [h for h in r.headers if h.startswith("access-control-")], r.headers


def test_the_portal_query_still_answers_preflights(client: httpx.Client) -> None:
    r = client.options("/api/v1/portal/meters/tokens_total/query",
                       headers={**ORIGIN, "access-control-request-method": "GET"})  # fmt: skip
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: unique("p"), template)


def _cors(r: httpx.Response) -> list[str]:
    return [h for h in r.headers if h.startswith("access-control-")]


PORTAL_QUERY = "/api/v1/portal/meters/{meterSlug}/query"


def test_every_route_taking_a_body_refuses_the_simple_ones(client: httpx.Client) -> None:
    """Every served POST, PUT, PATCH and DELETE (tests/api/route_scopes.py's routes, from the
    app) answers each body a browser sends cross-site without a preflight with a 415, before
    any route runs, and grants nothing to the other origin.

    The console's forms take url-encoded bodies by design (they are HTML forms); another
    origin's post to them is refused by the console's Origin check instead (a 403 page,
    before any form is read: docs/security.md), and grants nothing either."""
    wrong = []
    changes = [(m, p) for m, p in served_routes() if m in ("POST", "PUT", "PATCH", "DELETE")]
    assert len(changes) > 40
    console = [c for c in changes if ROUTE_SCOPES[c] == "console"]
    assert len(console) >= 8
    for method, template in changes:
        expected = 403 if (method, template) in console else 415
        for kind in ("text/plain", "form", "multipart"):
            ctype, body = SIMPLE_BODIES[kind]
            assert ctype is not None
            r = client.request(method, _concrete(template), content=body.replace(b"%s", b"x"),
                               headers={**ORIGIN, "content-type": ctype})  # fmt: skip
            if r.status_code != expected or _cors(r):
                wrong.append(f"{method} {template} ({kind}): {r.status_code} {_cors(r)}")
    assert not wrong, "\n".join(wrong)


def test_no_route_but_the_portal_query_grants_another_origin_anything(
    client: httpx.Client,
) -> None:
    """Every served route, asked from another origin (the request itself and its preflight),
    answers without a single CORS header; the portal query alone grants one."""
    wrong = []
    preflight = {"access-control-request-method": "POST",
                 "access-control-request-headers": "content-type, authorization"}  # fmt: skip
    for method, template in served_routes():
        path = _concrete(template)
        if template == PORTAL_QUERY:
            continue
        body = {"json": {}} if method in ("POST", "PUT", "PATCH", "DELETE") else {}
        r = client.request(method, path, headers=ORIGIN, **body)
        if _cors(r):
            wrong.append(f"{method} {template}: {_cors(r)}")
        r = client.options(path, headers={**ORIGIN, **preflight,
                                          "access-control-request-method": method})  # fmt: skip
        if _cors(r) or r.status_code < 400:
            wrong.append(f"OPTIONS {template} (preflight for {method}): {r.status_code} {_cors(r)}")
    assert not wrong, "\n".join(wrong)  # the portal's own: test_the_portal_query_still_…


@pytest.fixture(scope="module")
def keyed(new_db_url: Callable[[], str]) -> Iterator[tuple[ServerProcess, str]]:
    server, keys = start_with_keys(new_db_url(), {"root": "admin"})
    try:
        yield server, keys["root"]
    finally:
        server.stop()


def test_with_keys_a_preflight_is_401_and_grants_nothing(
    keyed: tuple[ServerProcess, str],
) -> None:
    server, admin = keyed
    with server.client() as c:
        r = c.options("/api/v1/features", headers={**ORIGIN, "access-control-request-method":
                                                   "POST"})  # fmt: skip
        assert r.status_code == 401
        assert "access-control-allow-origin" not in r.headers
        r = c.options("/api/v1/portal/meters/tokens_total/query",
                      headers={**ORIGIN, "access-control-request-method": "GET"})  # fmt: skip
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "*"
        # even with the admin key, a simple body is refused
        form = {"content-type": "application/x-www-form-urlencoded"}
        r = c.post("/api/v1/features", content=b"key=x&name=y", headers={**bearer(admin), **form})
        _refused_415(r, "application/x-www-form-urlencoded")


@pytest.mark.parametrize(
    ("host", "served"),
    [
        ("localhost", True),
        ("localhost:8888", True),
        ("127.0.0.1:8888", True),
        ("127.1.2.3", True),
        ("[::1]:8888", True),
        ("app.localhost", True),
        ("evil.example", False),
        ("evil.example:8888", False),
        ("127.0.0.1.evil.example", False),
        ("10.0.0.1:8888", False),
        ("[2001:db8::1]:8888", False),
    ],
)
def test_without_keys_only_loopback_host_names_are_served(
    client: httpx.Client, host: str, served: bool
) -> None:
    """DNS rebinding: a page on evil.example that re-resolves its name to 127.0.0.1 sends
    same-origin requests (any content type, responses readable) with its own Host."""
    r = client.get("/api/v1/meters", headers={"host": host})
    if served:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 403, r.text
    assert f"Host {host} is not a loopback name" in r.json()["detail"]
    assert client.get("/healthz", headers={"host": host}).status_code == 200  # public


def test_with_keys_any_host_name_is_served(keyed: tuple[ServerProcess, str]) -> None:
    server, admin = keyed
    with server.client() as c:
        r = c.get("/api/v1/meters", headers={**bearer(admin), "host": "allotment.internal"})
        assert r.status_code == 200, r.text
