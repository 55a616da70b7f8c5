"""The route policy (http/auth_policy.py): every served route is classified by an explicit
rule, the known routes get the scope they must, and a concrete path is classified exactly as
its route's template (the guard sees concrete paths, this table is written for templates)."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Route

from allotment.domain.api_keys import Scope
from allotment.http.app import all_routes
from allotment.http.auth_policy import DEFAULT_RULE, RULES, requirement, rule_for

S = "/api/v1/subjects/{subjectIdOrKey}/entitlements"
EXPECTED: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/api/v1/openapi.json"): "public",
    ("GET", "/openapi.json"): "public",
    ("GET", "/api/_testing/clock"): "admin",
    ("PUT", "/api/_testing/clock"): "admin",
    ("POST", "/api/v1/events"): "ingest",
    ("GET", "/api/v1/events"): "read",
    ("GET", "/api/v1/meters/{meterIdOrSlug}/query"): "read",
    ("POST", "/api/v1/meters/{meterIdOrSlug}/query"): "read",
    ("GET", "/api/v1/meters/{meterIdOrSlug}/subjects"): "read",
    ("GET", "/api/v1/meters/{meterIdOrSlug}/group-by/{groupByKey}/values"): "read",
    ("GET", "/api/v1/meters"): "read",
    ("POST", "/api/v1/meters"): "admin",
    ("GET", "/api/v1/meters/{meterIdOrSlug}"): "read",
    ("PUT", "/api/v1/meters/{meterIdOrSlug}"): "admin",
    ("DELETE", "/api/v1/meters/{meterIdOrSlug}"): "admin",
    ("POST", "/api/v1/subjects"): "admin",
    ("GET", "/api/v1/subjects"): "read",
    ("GET", "/api/v1/subjects/{subjectIdOrKey}"): "read",
    ("DELETE", "/api/v1/subjects/{subjectIdOrKey}"): "admin",
    ("POST", "/api/v1/features"): "admin",
    ("GET", "/api/v1/features"): "read",
    ("GET", "/api/v1/features/{featureId}"): "read",
    ("DELETE", "/api/v1/features/{featureId}"): "admin",
    ("POST", S): "admin",
    ("GET", S): "read",
    ("GET", S + "/{entitlementId}"): "read",
    ("DELETE", S + "/{entitlementId}"): "admin",
    ("PUT", S + "/{entitlementIdOrFeatureKey}/override"): "admin",
    ("GET", S + "/{entitlementIdOrFeatureKey}/value"): "runtime-read",
    ("GET", S + "/{entitlementId}/history"): "read",
    ("POST", S + "/{entitlementId}/reset"): "admin",
    ("GET", "/api/v1/entitlements"): "read",
    ("GET", "/api/v1/entitlements/{entitlementId}"): "read",
    ("POST", S + "/{entitlementIdOrFeatureKey}/grants"): "admin",
    ("GET", S + "/{entitlementIdOrFeatureKey}/grants"): "read",
    ("GET", "/api/v1/grants"): "read",
    ("DELETE", "/api/v1/grants/{grantId}"): "admin",
    ("POST", "/api/v1/portal/tokens"): "admin",
    ("GET", "/api/v1/portal/tokens"): "read",
    ("POST", "/api/v1/portal/tokens/invalidate"): "admin",
    ("GET", "/api/v1/portal/meters/{meterSlug}/query"): "portal",
    ("OPTIONS", "/api/v1/portal/meters/{meterSlug}/query"): "portal",
    # the console checks its own session, key and CSRF token; its static files are public
    ("GET", "/console"): "console",
    ("GET", "/console/customers"): "console",
    ("POST", "/console/login"): "console",
    ("POST", "/console/logout"): "console",
    ("GET", "/console/static/console.css"): "public",
    ("GET", "/console/static/console.js"): "public",
    ("POST", "/v1/api-keys"): "admin",
    ("GET", "/v1/api-keys"): "admin",
    ("GET", "/v1/api-keys/{name}"): "admin",
    ("DELETE", "/v1/api-keys/{name}"): "admin",
    ("GET", "/v1/audit-events"): "admin",
    # routes other branches are adding: classified by rule before they land
    ("GET", "/v1/features"): "read",
    ("POST", "/v1/features"): "admin",
    ("DELETE", "/v1/features/{ref}"): "admin",
    ("POST", "/v1/pricing-plans"): "admin",
    ("POST", "/v1/pricing-plans/{ref}/versions"): "admin",
    ("GET", "/v1/pricing-plans/{ref}/versions/{n}"): "read",
    ("POST", "/v1/customers"): "admin",
    ("PATCH", "/v1/customers/{ref}"): "admin",
    ("GET", "/v1/customers/{ref}"): "read",
    ("GET", "/v1/customers/{ref}/entitlements"): "runtime-read",
    ("POST", "/v1/pricing-plan-subscriptions"): "admin",
    ("PATCH", "/v1/pricing-plan-subscriptions/{id}"): "admin",
    ("GET", "/v1/ingest/meter-data"): "runtime-read",
    ("POST", "/v1/customers/{ref}/authorize"): "runtime",
    ("POST", "/v1/reservations/{id}/commit"): "runtime",
    ("POST", "/v1/reservations/{id}/release"): "runtime",
    ("GET", "/v1/reservations/{id}"): "runtime-read",
    ("POST", "/api/v1/customers"): "admin",
    ("PUT", "/api/v1/customers/{customerIdOrKey}"): "admin",
    ("GET", "/api/v1/customers/{customerIdOrKey}/access"): "runtime-read",
    ("GET", "/api/v1/customers/{customerIdOrKey}/entitlements/{featureKey}/value"): "runtime-read",
    ("POST", "/api/v2/customers/{c}/entitlements"): "admin",
    ("GET", "/api/v2/customers/{c}/entitlements/{entitlementIdOrFeatureKey}/value"): (
        "runtime-read"
    ),
    ("GET", "/api/v2/entitlements"): "read",
    ("POST", "/api/v2/customers/{c}/entitlements/{e}/reset"): "admin",
}
N = "/api/v1/notification"
NOTIFICATION_ROUTES: dict[tuple[str, str], str] = {
    # channel reads answer the webhook signing secret: admin, like the keys
    ("GET", N + "/channels"): "admin",
    ("POST", N + "/channels"): "admin",
    ("GET", N + "/channels/{channelId}"): "admin",
    ("PUT", N + "/channels/{channelId}"): "admin",
    ("DELETE", N + "/channels/{channelId}"): "admin",
    ("GET", N + "/rules"): "read",
    ("POST", N + "/rules"): "admin",
    ("GET", N + "/rules/{ruleId}"): "read",
    ("PUT", N + "/rules/{ruleId}"): "admin",
    ("DELETE", N + "/rules/{ruleId}"): "admin",
    ("POST", N + "/rules/{ruleId}/test"): "admin",
    ("GET", N + "/events"): "read",
    ("GET", N + "/events/{eventId}"): "read",
    ("POST", N + "/events/{eventId}/resend"): "admin",
}
EXPECTED.update(NOTIFICATION_ROUTES)

ALLOWED = {
    "public": set(Scope),
    "portal": set(),
    "console": set(),
    "admin": {Scope.ADMIN},
    "read": {Scope.ADMIN, Scope.READ},
    "ingest": {Scope.ADMIN, Scope.RUNTIME, Scope.INGEST},
    "runtime": {Scope.ADMIN, Scope.RUNTIME},
    "runtime-read": {Scope.ADMIN, Scope.RUNTIME, Scope.READ},
}


def served() -> list[tuple[str, str]]:
    """Every (method, template) the app serves (HEAD is GET's, answered by the same rule)."""
    out = []
    for route in all_routes():
        assert isinstance(route, Route)
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                out.append((method, route.path))
    return out


@pytest.mark.parametrize(("method", "path"), served())
def test_every_served_route_has_an_explicit_rule(method: str, path: str) -> None:
    rule = rule_for(method, path)
    assert rule is not DEFAULT_RULE, f"{method} {path}: no rule in http/auth_policy.py covers it"
    assert rule in RULES


@pytest.mark.parametrize(("method", "path"), sorted(EXPECTED))
def test_known_routes_need_the_scope_they_must(method: str, path: str) -> None:
    req = requirement(method, path)
    assert req.name == EXPECTED[(method, path)]
    for scope in Scope:
        if req.public or req.portal or req.console:  # no key / the route checks it itself
            continue
        assert req.allows(scope) == (scope in ALLOWED[req.name]), (method, path, scope)


@pytest.mark.parametrize(("method", "path"), served() + sorted(EXPECTED))
def test_a_concrete_path_is_classified_as_its_template(method: str, path: str) -> None:
    for value in ("x1", "value", "entitlements", "query", "api-keys", "01ABC"):
        concrete = re.sub(r"\{[^}]+\}", value, path)
        assert rule_for(method, concrete) is rule_for(method, path), (concrete, value)


def test_every_notification_route_is_served_and_classified_by_a_notification_rule() -> None:
    routes = {(m, p) for m, p in served() if p.startswith(N)}
    assert routes == set(NOTIFICATION_ROUTES)  # a new notification route must be listed here
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
