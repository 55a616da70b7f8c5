"""The route policy (http/auth_policy.py) against the one route table (tests/api/route_scopes.py):
the table lists exactly the served routes, every served route is classified by an explicit
rule and gets what the table says, and a concrete path is classified exactly as its route's
template (the guard sees concrete paths, the policy is written for templates)."""

from __future__ import annotations

import re

import pytest

from allotment.domain.api_keys import Scope
from allotment.http.auth_policy import DEFAULT_RULE, RULES, requirement, rule_for
from tests.api.route_scopes import OPENED_BY, ROUTE_SCOPES, N, served, table_gaps


def test_the_route_table_lists_exactly_the_served_routes() -> None:
    gaps = table_gaps()
    assert not gaps, "\n".join(gaps)


@pytest.mark.parametrize(("method", "path"), served())
def test_every_served_route_has_an_explicit_rule(method: str, path: str) -> None:
    rule = rule_for(method, path)
    assert rule is not DEFAULT_RULE, f"{method} {path}: no rule in http/auth_policy.py covers it"
    assert rule in RULES


@pytest.mark.parametrize(("method", "path"), served())
def test_the_policy_gives_each_route_what_the_table_says(method: str, path: str) -> None:
    expected = ROUTE_SCOPES.get((method, path))
    assert expected is not None, f"{method} {path}: no line in tests/api/route_scopes.py"
    req = requirement(method, path)
    assert req.name == expected, (
        f"{method} {path}: the policy says {req.name}, the table {expected}"
    )
    for scope in Scope:
        if req.public or req.portal or req.console:  # no key / the route checks it itself
            continue
        assert req.allows(scope) == (scope in OPENED_BY[expected]), (method, path, scope)


@pytest.mark.parametrize(("method", "path"), sorted(set(served()) | set(ROUTE_SCOPES)))
def test_a_concrete_path_is_classified_as_its_template(method: str, path: str) -> None:
    for value in ("x1", "value", "entitlements", "query", "api-keys", "01ABC"):
        concrete = re.sub(r"\{[^}]+\}", value, path)
        assert rule_for(method, concrete) is rule_for(method, path), (concrete, value)


def test_every_notification_route_is_classified_by_a_notification_rule() -> None:
    routes = {(m, p) for m, p in served() if p.startswith(N)}
    assert routes
    for method, path in routes:
        assert rule_for(method, path).pattern[:3] == ("api", "v1", "notification"), path


def test_unlisted_methods_and_prefixes_need_an_admin_key() -> None:
    for method, path in [
        ("OPTIONS", "/api/v1/features"),
        ("TRACE", "/api/v1/features"),
        ("PUT", "/consoles"),
        ("POST", "/somewhere/else"),
        ("GET", "/"),
    ]:
        assert rule_for(method, path) is DEFAULT_RULE
        assert requirement(method, path).name == "admin"
