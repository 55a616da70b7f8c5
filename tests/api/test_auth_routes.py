"""Every served route × every kind of credential → the status the route table says, against a
real server process with authentication on, on every backend.

The routes come from ``http.app.all_routes()``, so whatever other branches merge is covered;
what each needs comes from the hand-written table in tests/api/route_scopes.py (a served route
without a line there fails, named). A key the route accepts must reach the route (its answer is
not the guard's problem, and never a 5xx); a key it does not accept is 403 naming the scopes that
would; no key, an unknown, malformed, revoked or Basic credential, and a portal token are 401 —
except on the public routes (no key needed) and the portal query (which checks its portal
token itself).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from allotment.domain.api_keys import Scope
from tests.api.auth_support import auth_problem, bearer, cli, start_with_keys
from tests.api.route_scopes import OPENED_BY, ROUTE_SCOPES, served
from tests.support import ServerProcess, unique

SCOPES = [s.value for s in Scope]


@dataclass
class AuthServer:
    server: ServerProcess
    secrets: dict[str, str]


@pytest.fixture(scope="module")
def auth_server(new_db_url: Callable[[], str]) -> Iterator[AuthServer]:
    db_url = new_db_url()
    server, keys = start_with_keys(db_url, {**{s: s for s in SCOPES}, "gone": "admin"})
    done = cli("api-keys", "revoke", "gone", "--db", db_url)
    assert done.returncode == 0, done.stderr
    try:
        yield AuthServer(server, keys)
    finally:
        server.stop()


def _send(c: httpx.Client, method: str, template: str, headers: dict[str, str]) -> httpx.Response:
    path = re.sub(r"\{[^}]+\}", lambda _: unique("p"), template)
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        return c.request(method, path, json={}, headers=headers)
    return c.request(method, path, headers=headers)


def _needed(kind: str) -> list[str]:
    """The scopes a refusal names: admin first, then the others that open the route."""
    return ["admin", *sorted(s.value for s in OPENED_BY[kind] if s is not Scope.ADMIN)]


def _verdict(kind: str, scope: str | None, r: httpx.Response) -> str | None:
    """What is wrong with this answer (None: it is what the route table says)."""
    if r.status_code >= 500:
        return f"server error {r.status_code}: {r.text[:200]}"
    refused = auth_problem(r)
    if kind == "public":
        return None if refused is None and r.status_code < 400 else f"refused: {r.text[:200]}"
    if kind in (
        "portal",
        "console",
    ):  # the route's own check answers (token, session), not the guard
        return None if refused is None else f"the guard answered: {r.text[:200]}"
    if scope is not None and Scope(scope) in OPENED_BY[kind]:
        return None if refused is None else f"refused a {scope} key: {r.text[:200]}"
    status = 401 if scope is None else 403
    if refused is None or r.status_code != status:
        return f"expected the guard's {status} ({kind}), got {r.status_code}: {r.text[:200]}"
    if refused["extensions"]["requiredScopes"] != _needed(kind):
        return f"the {status} names {refused['extensions']['requiredScopes']}, not {_needed(kind)}"
    if status == 401 and "www-authenticate" not in r.headers:
        return "401 without WWW-Authenticate"
    return None


def _check_all(server: ServerProcess, headers: dict[str, str], scope: str | None) -> None:
    wrong = []
    with server.client() as c:
        for method, template in served():
            kind = ROUTE_SCOPES.get((method, template))
            if kind is None:
                wrong.append(f"{method} {template}: no line in tests/api/route_scopes.py")
                continue
            r = _send(c, method, template, headers)
            problem = _verdict(kind, scope, r)
            if problem is not None:
                wrong.append(f"{method} {template}: {problem}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
def test_every_route_with_a_key_of_each_scope(
    auth_server: AuthServer, scope: str, header: str
) -> None:
    secret = auth_server.secrets[scope]
    headers = bearer(secret) if header == "bearer" else {"X-API-KEY": secret}
    _check_all(auth_server.server, headers, scope)


BAD_CREDENTIALS: dict[str, Callable[[AuthServer], dict[str, str]]] = {
    "none": lambda s: {},
    "unknown key": lambda s: bearer("alm_" + secrets.token_urlsafe(32)),
    "unknown X-API-KEY": lambda s: {"X-API-KEY": "alm_" + secrets.token_urlsafe(32)},
    "malformed": lambda s: bearer("not-a-key"),
    "a key's prefix only": lambda s: bearer(s.secrets["admin"][:12]),
    "bearer without a key": lambda s: {"authorization": "Bearer"},
    "basic": lambda s: {"authorization": "Basic dXNlcjpwYXNz"},
    "revoked": lambda s: bearer(s.secrets["gone"]),
}


@pytest.mark.parametrize("credential", sorted(BAD_CREDENTIALS))
def test_every_route_without_a_valid_key(auth_server: AuthServer, credential: str) -> None:
    _check_all(auth_server.server, BAD_CREDENTIALS[credential](auth_server), None)


def test_a_portal_token_opens_the_portal_query_and_nothing_else(auth_server: AuthServer) -> None:
    with auth_server.server.client() as c:
        r = c.post(
            "/api/v1/portal/tokens",
            json={"subject": unique("s"), "allowedMeterSlugs": ["tokens_total"]},
            headers=bearer(auth_server.secrets["admin"]),
        )
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        r = c.get("/api/v1/portal/meters/tokens_total/query", headers=bearer(token))
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == "*"
    _check_all(auth_server.server, bearer(token), None)
    with auth_server.server.client() as c:  # still valid afterwards: refused for what it is
        r = c.get("/api/v1/portal/meters/tokens_total/query", headers=bearer(token))
        assert r.status_code == 200, r.text
