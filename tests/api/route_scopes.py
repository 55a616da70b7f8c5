"""THE route table the auth tests hold the app to: every served (method, route template) → what
it needs. One line per route; a branch that adds a route adds its line here.

    public        no key (liveness, readiness, the OpenAPI document)
    portal        a portal token, checked by the route itself (the guard lets it through)
    console       the operator console: its own session cookie, key and CSRF token, checked by
                  the console itself (the guard lets it through)
    admin         an admin key
    read          admin or read
    ingest        admin, runtime or ingest
    runtime       admin or runtime
    runtime-read  admin, runtime or read

This table is written by hand and independent of ``http/auth_policy.py``: the unit test
(tests/unit/test_auth_policy.py) proves the policy gives each route exactly this, and the HTTP
test (tests/api/test_auth_routes.py) proves a real server on each engine answers every route ×
every scope × every bad credential accordingly. Both fail naming the method and route that
lacks a line here (or a line no route serves any more). HEAD is GET's, never listed.
"""

from __future__ import annotations

from allotment.domain.api_keys import Scope

S = "/api/v1/subjects/{subjectIdOrKey}/entitlements"
C1 = "/api/v1/customers/{customerIdOrKey}"
C2 = "/api/v2/customers/{customerIdOrKey}/entitlements"
E2 = C2 + "/{entitlementIdOrFeatureKey}"
N = "/api/v1/notification"

ROUTE_SCOPES: dict[tuple[str, str], str] = {
    # no key
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/api/v1/openapi.json"): "public",
    ("GET", "/openapi.json"): "public",
    # the test clock
    ("GET", "/api/_testing/clock"): "admin",
    ("PUT", "/api/_testing/clock"): "admin",
    # events and meters
    ("POST", "/api/v1/events"): "ingest",
    ("GET", "/api/v1/events"): "read",
    ("GET", "/api/v1/meters"): "read",
    ("POST", "/api/v1/meters"): "admin",
    ("GET", "/api/v1/meters/{meterIdOrSlug}"): "read",
    ("PUT", "/api/v1/meters/{meterIdOrSlug}"): "admin",
    ("DELETE", "/api/v1/meters/{meterIdOrSlug}"): "admin",
    ("GET", "/api/v1/meters/{meterIdOrSlug}/query"): "read",
    ("POST", "/api/v1/meters/{meterIdOrSlug}/query"): "read",  # a read sent as POST
    ("GET", "/api/v1/meters/{meterIdOrSlug}/subjects"): "read",
    ("GET", "/api/v1/meters/{meterIdOrSlug}/group-by/{groupByKey}/values"): "read",
    # subjects, features, subject entitlements and grants
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
    ("POST", S + "/{entitlementIdOrFeatureKey}/grants"): "admin",
    ("GET", S + "/{entitlementIdOrFeatureKey}/grants"): "read",
    ("GET", "/api/v1/entitlements"): "read",
    ("GET", "/api/v1/entitlements/{entitlementId}"): "read",
    ("GET", "/api/v1/grants"): "read",
    ("DELETE", "/api/v1/grants/{grantId}"): "admin",
    # portal
    ("POST", "/api/v1/portal/tokens"): "admin",
    ("GET", "/api/v1/portal/tokens"): "read",
    ("POST", "/api/v1/portal/tokens/invalidate"): "admin",
    ("GET", "/api/v1/portal/meters/{meterSlug}/query"): "portal",
    ("OPTIONS", "/api/v1/portal/meters/{meterSlug}/query"): "portal",
    # OpenMeter customers (v1) and customer entitlements (v2)
    ("POST", "/api/v1/customers"): "admin",
    ("GET", "/api/v1/customers"): "read",
    ("GET", C1): "read",
    ("PUT", C1): "admin",
    ("DELETE", C1): "admin",
    ("GET", C1 + "/access"): "runtime-read",
    ("GET", C1 + "/entitlements/{featureKey}/value"): "runtime-read",
    ("POST", C2): "admin",
    ("GET", C2): "read",
    ("GET", E2): "read",
    ("DELETE", E2): "admin",
    ("PUT", E2 + "/override"): "admin",
    ("POST", E2 + "/grants"): "admin",
    ("GET", E2 + "/grants"): "read",
    ("GET", E2 + "/value"): "runtime-read",
    ("GET", E2 + "/history"): "read",
    ("POST", E2 + "/reset"): "admin",
    ("GET", "/api/v2/entitlements"): "read",
    ("GET", "/api/v2/entitlements/{entitlementId}"): "read",
    ("GET", "/api/v2/grants"): "read",
    # notifications: a channel's answer carries its webhook signing secret, so reads are admin
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
    # the /v1 catalog
    ("POST", "/v1/features"): "admin",
    ("GET", "/v1/features"): "read",
    ("GET", "/v1/features/{ref}"): "read",
    ("DELETE", "/v1/features/{ref}"): "admin",
    ("POST", "/v1/pricing-plans"): "admin",
    ("GET", "/v1/pricing-plans"): "read",
    ("GET", "/v1/pricing-plans/{ref}"): "read",
    ("DELETE", "/v1/pricing-plans/{ref}"): "admin",
    ("POST", "/v1/pricing-plans/{ref}/versions"): "admin",
    ("GET", "/v1/pricing-plans/{ref}/versions/{version}"): "read",
    ("POST", "/v1/pricing-plan-subscriptions"): "admin",
    ("GET", "/v1/pricing-plan-subscriptions"): "read",
    ("GET", "/v1/pricing-plan-subscriptions/{id}"): "read",
    ("PATCH", "/v1/pricing-plan-subscriptions/{id}"): "admin",
    ("DELETE", "/v1/pricing-plan-subscriptions/{id}"): "admin",
    ("POST", "/v1/customers"): "admin",
    ("GET", "/v1/customers"): "read",
    ("GET", "/v1/customers/{ref}"): "read",
    ("PATCH", "/v1/customers/{ref}"): "admin",
    ("DELETE", "/v1/customers/{ref}"): "admin",
    ("GET", "/v1/customers/{ref}/entitlements"): "runtime-read",  # the one call
    ("GET", "/v1/ingest/meter-data"): "runtime-read",
    # enforcement: an application's hot path
    ("POST", "/v1/customers/{ref}/authorize"): "runtime",
    ("GET", "/v1/reservations/{id}"): "runtime-read",
    ("POST", "/v1/reservations/{id}/commit"): "runtime",
    ("POST", "/v1/reservations/{id}/release"): "runtime",
    # the operator console: pages and forms check its session and CSRF token themselves
    ("GET", "/console/static/console.css"): "public",
    ("GET", "/console/static/console.js"): "public",
    ("GET", "/console"): "console",
    ("GET", "/console/"): "console",
    ("GET", "/console/login"): "console",
    ("POST", "/console/login"): "console",
    ("POST", "/console/logout"): "console",
    ("GET", "/console/customers"): "console",
    ("GET", "/console/customers/{ref}"): "console",
    ("POST", "/console/customers/{ref}/overrides"): "console",
    ("POST", "/console/customers/{ref}/overrides/remove"): "console",
    ("GET", "/console/plans"): "console",
    ("GET", "/console/plans/{plan}"): "console",
    ("GET", "/console/meters"): "console",
    ("GET", "/console/meters/{slug}"): "console",
    ("GET", "/console/entitlements/{id}"): "console",
    ("POST", "/console/entitlements/{id}/grants"): "console",
    ("POST", "/console/entitlements/{id}/void"): "console",
    ("POST", "/console/entitlements/{id}/reset"): "console",
    ("GET", "/console/notifications"): "console",
    ("GET", "/console/ingest"): "console",
    ("GET", "/console/static/portal.css"): "public",
    ("GET", "/console/static/portal.js"): "public",
    # the customer's usage page: a portal token, checked by the console
    ("GET", "/console/portal"): "console",
    ("POST", "/console/portal"): "console",
    ("POST", "/console/portal/forget"): "console",
    ("GET", "/console/{path:rest}"): "console",
    # keys and the audit trail: admin, reads included
    ("POST", "/v1/api-keys"): "admin",
    ("GET", "/v1/api-keys"): "admin",
    ("GET", "/v1/api-keys/{name}"): "admin",
    ("DELETE", "/v1/api-keys/{name}"): "admin",
    ("GET", "/v1/audit-events"): "admin",
}

OPENED_BY: dict[str, frozenset[Scope]] = {
    "public": frozenset(Scope),
    "portal": frozenset(),  # no API key opens it: the route checks a portal token
    "console": frozenset(),  # the console checks its session (or key) itself
    "admin": frozenset({Scope.ADMIN}),
    "read": frozenset({Scope.ADMIN, Scope.READ}),
    "ingest": frozenset({Scope.ADMIN, Scope.RUNTIME, Scope.INGEST}),
    "runtime": frozenset({Scope.ADMIN, Scope.RUNTIME}),
    "runtime-read": frozenset({Scope.ADMIN, Scope.RUNTIME, Scope.READ}),
}
"""Which scopes' keys each kind of route lets through."""


def served() -> list[tuple[str, str]]:
    """Every (method, template) the app serves (HEAD is GET's, answered by the same rule)."""
    from starlette.routing import Route

    from allotment.http.app import all_routes

    out = []
    for route in all_routes():
        assert isinstance(route, Route), f"{route!r}: the auth tests know Starlette Routes only"
        out += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


def table_gaps() -> list[str]:
    """What keeps the table from listing exactly the served routes, one line per route."""
    routes = served()
    gaps = [
        f"{method} {path}: served but has no line in tests/api/route_scopes.py ROUTE_SCOPES "
        f'(add ("{method}", "{path}"): "<kind>", a kind of {sorted(OPENED_BY)})'
        for method, path in routes
        if (method, path) not in ROUTE_SCOPES
    ]
    gaps += [
        f"{method} {path}: listed in tests/api/route_scopes.py ROUTE_SCOPES but not served "
        "(a renamed template or a removed route)"
        for method, path in ROUTE_SCOPES
        if (method, path) not in set(routes)
    ]
    gaps += [
        f"{method} {path}: unknown kind {kind!r} in ROUTE_SCOPES (one of {sorted(OPENED_BY)})"
        for (method, path), kind in ROUTE_SCOPES.items()
        if kind not in OPENED_BY
    ]
    return gaps
