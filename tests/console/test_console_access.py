"""Who may open the console: open on loopback without keys, else an admin key (a session from
the login form, or a header); read and runtime keys refused; forms need the CSRF token."""

from __future__ import annotations

import re

from allotment.domain.api_keys import AuthMode
from allotment.domain.owners import Owner
from tests.console.support import catalog, console, csrf, text_of


def test_open_on_loopback_without_keys_and_refused_on_other_names(db_url: str) -> None:
    with console(db_url) as (_, client):
        r = client.get("/console/customers")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "Customers" in r.text
        # the login form has nothing to do: back to the console
        r = client.get("/console/login")
        assert r.status_code == 303
        r = client.get("/console/customers", headers={"host": "console.example.com"})
        assert r.status_code == 403
        assert "not a loopback name" in text_of(r.text)
        # the static files are public
        r = client.get("/console/static/console.css")
        assert r.status_code == 200
        assert "sidebar" in r.text


def test_an_unknown_console_path_is_a_404_page_even_with_a_newline(db_url: str) -> None:
    with console(db_url) as (_, client):
        for path in ("/console/nowhere", "/console/a/b/c", "/console/x%0Ay", "/console/x%0A%0Ay"):
            r = client.get(path)
            assert r.status_code == 404, path
            assert r.headers["content-type"].startswith("text/html"), path
            assert "no console page at" in text_of(r.text), path


def test_login_with_an_admin_key_and_refusals(db_url: str) -> None:
    with console(db_url) as (c, client):
        _, admin = c.api_keys.create("root", "admin")
        _, reader = c.api_keys.create("dash", "read")
        _, runtime = c.api_keys.create("app", "runtime")
        # no credential: a page redirects to the login form, a form post is refused
        r = client.get("/console/customers?by=name")
        assert r.status_code == 303
        assert r.headers["location"] == "/console/login?next=/console/customers%3Fby%3Dname"
        token = csrf(client, "/console/login")
        assert client.post("/console/logout", data={"csrf": token}).status_code == 401
        # read and runtime keys are refused at the form and as headers
        for secret, scope in ((reader, "read"), (runtime, "runtime")):
            r = client.post("/console/login", data={"csrf": token, "key": secret, "next": "/"})
            assert r.status_code == 403
            assert f"has scope {scope}" in text_of(r.text)
            r = client.get("/console/customers", headers={"authorization": f"Bearer {secret}"})
            assert r.status_code == 403
            assert "needs scope admin" in text_of(r.text)
        r = client.post("/console/login", data={"csrf": token, "key": "alm_" + "x" * 43})
        assert r.status_code == 401
        assert "Unknown or revoked" in r.text
        # an admin key as a header opens a page
        r = client.get("/console/customers", headers={"X-API-KEY": admin})
        assert r.status_code == 200
        # the login form: the CSRF token is required
        r = client.post("/console/login", data={"csrf": "wrong", "key": admin})
        assert r.status_code == 403
        assert "CSRF" in r.text
        r = client.post(
            "/console/login", data={"csrf": token, "key": admin, "next": "/console/customers"}
        )
        assert r.status_code == 303
        assert r.headers["location"] == "/console/customers"
        cookie = r.headers["set-cookie"]
        assert "allotment_console=" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
        assert "Secure" not in cookie  # plain http on loopback
        page = client.get("/console/customers")
        assert page.status_code == 200
        assert "root" in page.text
        assert "Log out" in page.text
        # a cross-site origin is refused even with the token
        r = client.post("/console/logout", data={"csrf": token},
                        headers={"origin": "http://evil.example"})  # fmt: skip
        assert r.status_code == 403
        # revoking the key ends the session
        c.api_keys.revoke("root")
        assert client.get("/console/customers").status_code == 303


def test_logout_ends_the_session(db_url: str) -> None:
    with console(db_url) as (c, client):
        _, admin = c.api_keys.create("root", "admin")
        token = csrf(client, "/console/login")
        r = client.post("/console/login", data={"csrf": token, "key": admin})
        assert r.status_code == 303
        secret = client.cookies["allotment_console"]
        assert client.get("/console/customers").status_code == 200
        r = client.post("/console/logout", data={"csrf": token})
        assert r.status_code == 303
        assert r.headers["location"] == "/console/login"
        assert c.console_sessions.key_of(secret) is None
        client.cookies.set("allotment_console", secret)  # the old cookie, replayed
        assert client.get("/console/customers").status_code == 303


def test_auth_required_and_off(db_url: str) -> None:
    with console(db_url, auth_mode=AuthMode.REQUIRED) as (_, client):
        assert client.get("/console/customers").status_code == 303
    with console(db_url, auth_mode=AuthMode.OFF) as (c, client):
        c.api_keys.create("root", "admin")
        r = client.get("/console/customers", headers={"host": "console.example.com"})
        assert r.status_code == 200


def _console_routes() -> list[tuple[str, str]]:
    from starlette.routing import Route

    from allotment.http.console import console_routes

    out = []
    for route in console_routes():
        assert isinstance(route, Route)
        out += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


def test_every_console_route_needs_an_admin_once_keys_exist(db_url: str) -> None:
    """No key: a page redirects to the login form, a post is a 401 page; a read or runtime key
    is a 403 page; an admin key opens every page (or gets the page's own answer)."""
    with console(db_url) as (c, client):
        catalog(client)
        eid = c.entitlements.list_for_owner(Owner.customer(c.customers.get("acme").id),
                                            False)[0].record.id  # fmt: skip
        _, admin = c.api_keys.create("root", "admin")
        _, reader = c.api_keys.create("dash", "read")
        _, runtime = c.api_keys.create("app", "runtime")
        values = {"ref": "acme", "plan": "pro", "slug": "tokens", "id": eid, "path": "nowhere"}
        open_routes = {"/console/login", "/console/static/console.css",
                       "/console/static/console.js"}  # fmt: skip
        checked = 0
        for method, template in _console_routes():
            # the usage page takes a portal token, no key (tests/console/test_console_portal.py)
            if template in open_routes or template.startswith(
                ("/console/static/", "/console/portal")
            ):
                continue
            path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values[m.group(1)], template)
            form = {"data": {"feature_reference": "tokens"}} if method == "POST" else {}
            r = client.request(method, path, **form)
            if method == "GET":
                assert r.status_code == 303, (path, r.status_code)
                assert r.headers["location"].startswith("/console/login?next=")
            else:
                assert r.status_code == 401, (path, r.status_code)
            for secret in (reader, runtime):
                r = client.request(method, path, headers={"authorization": f"Bearer {secret}"},
                                   **form)  # fmt: skip
                assert r.status_code == 403, (path, r.status_code)
            r = client.request(method, path, headers={"X-API-KEY": admin}, **form)
            if template == "/console/{path:rest}":
                assert r.status_code == 404
                assert "no console page at /console/nowhere" in text_of(r.text)
            elif method == "GET":
                assert r.status_code in (200, 303), (path, r.status_code, r.text[:300])
            else:  # admitted; the form itself is refused: no CSRF token
                assert r.status_code == 403, (path, r.status_code)
                assert "CSRF" in r.text
            checked += 1
        assert checked >= 12


def test_every_console_route_is_in_the_openapi_document() -> None:
    from allotment.http.openapi_doc import openapi_document

    paths = openapi_document()["paths"]
    documented = {(m.upper(), p) for p, ops in paths.items() if p.startswith("/console")
                  for m in ops if m in ("get", "post")}  # fmt: skip
    served = {(m, re.sub(r":\w+\}", "}", p)) for m, p in _console_routes()}
    assert documented == served
