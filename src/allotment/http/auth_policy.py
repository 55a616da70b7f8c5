"""The ONE table of who may call what: (method, path) → the requirement of the route.

Rules are matched in order against the path's segments, either a route's template
(``/api/v1/features/{featureId}``) or a request's concrete path (``/api/v1/features/f1``): a
rule segment ``*`` matches any one segment, a trailing ``**`` any number (zero included), and
anything else matches itself only (a template's ``{param}`` never equals a literal). The first
matching rule wins. The rules are written by prefix and method, so routes that other branches
add under ``/api/v1``, ``/api/v2`` and ``/v1`` get a scope when they land: GET reads, other
methods admin, except the hot-path routes named here. A path no rule covers needs an admin key
(:data:`DEFAULT_RULE`); the route table test fails for any served route that falls through to it.

    public        /healthz, /readyz, the OpenAPI document: no key
    portal        the portal meter query: a portal token, checked by the route itself
    console       the operator console's pages and forms (/console): an admin key, as a
                  session cookie from its login form or a header, and a CSRF token on forms,
                  checked by the console itself (its stylesheet and script are public)
    ingest        POST /api/v1/events: keys with scope ingest or runtime
    runtime-read  entitlement values and a customer's entitlements: runtime or read
    runtime       authorize, reservations: runtime
    read          every other GET (and the meter query sent as POST): read
    admin         everything else, and the keys, the audit trail and notification channels
                  (their signing secrets) whatever the method
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from allotment.domain.api_keys import (
    ADMIN,
    CONSOLE,
    INGEST,
    PORTAL,
    PUBLIC,
    READ,
    RUNTIME,
    RUNTIME_READ,
    Requirement,
)

GET = frozenset({"GET", "HEAD"})
CHANGE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANY: frozenset[str] = frozenset()
"""A rule for every method."""


@dataclass(frozen=True)
class Rule:
    methods: frozenset[str]
    pattern: tuple[str, ...]
    requirement: Requirement

    def matches(self, method: str, segments: list[str]) -> bool:
        if self.methods and method not in self.methods:
            return False
        pattern = self.pattern
        if pattern and pattern[-1] == "**":
            head = pattern[:-1]
            if len(segments) < len(head):
                return False
        elif len(segments) != len(pattern):
            return False
        else:
            head = pattern
        return all(p == "*" or p == s for p, s in zip(head, segments, strict=False))

    @property
    def text(self) -> str:
        methods = ",".join(sorted(self.methods)) if self.methods else "*"
        return f"{methods} /{'/'.join(self.pattern)} → {self.requirement.name}"


def _rule(methods: frozenset[str], path: str, requirement: Requirement) -> Rule:
    return Rule(methods, tuple(path.strip("/").split("/")), requirement)


RULES: tuple[Rule, ...] = (
    # no key: liveness, readiness and the served OpenAPI document (no data in any of them)
    _rule(GET, "/healthz", PUBLIC),
    _rule(GET, "/readyz", PUBLIC),
    _rule(GET, "/openapi.json", PUBLIC),
    _rule(GET, "/api/v1/openapi.json", PUBLIC),
    # the operator console: its static files carry no data; its pages check a session
    _rule(GET, "/console/static/**", PUBLIC),
    _rule(ANY, "/console/**", CONSOLE),
    # portal tokens open the portal meter query and nothing else (the route checks them)
    _rule(frozenset({"GET", "HEAD", "OPTIONS"}), "/api/v1/portal/meters/*/query", PORTAL),
    # the keys, the audit trail and the test clock: admin, reads included
    _rule(ANY, "/v1/api-keys/**", ADMIN),
    _rule(ANY, "/v1/audit-events/**", ADMIN),
    _rule(ANY, "/api/_testing/**", ADMIN),
    # an application's hot path
    _rule(frozenset({"POST"}), "/api/v1/events", INGEST),
    _rule(GET, "/api/v1/subjects/*/entitlements/*/value", RUNTIME_READ),
    _rule(GET, "/api/v1/customers/*/entitlements/*/value", RUNTIME_READ),
    _rule(GET, "/api/v1/customers/*/access", RUNTIME_READ),
    _rule(GET, "/api/v2/customers/*/entitlements/*/value", RUNTIME_READ),
    _rule(GET, "/v1/customers/*/entitlements", RUNTIME_READ),
    _rule(GET, "/v1/ingest/meter-data", RUNTIME_READ),
    _rule(GET, "/v1/reservations/**", RUNTIME_READ),
    _rule(frozenset({"POST"}), "/v1/customers/*/authorize", RUNTIME),
    _rule(CHANGE, "/v1/reservations/**", RUNTIME),
    # notifications: managing channels, rules and events (test, resend) is admin; reading
    # rules and events is read, but a channel's answer carries its webhook signing secret
    # (whoever holds it can forge deliveries to the receiver), so channel reads are admin
    _rule(GET, "/api/v1/notification/channels/**", ADMIN),
    _rule(GET, "/api/v1/notification/rules/**", READ),
    _rule(GET, "/api/v1/notification/events/**", READ),
    _rule(CHANGE, "/api/v1/notification/**", ADMIN),
    # a read sent as POST (OpenMeter's meter query with a body)
    _rule(frozenset({"POST"}), "/api/v1/meters/*/query", READ),
    # everything else under the three APIs: GET reads, other methods change things
    _rule(GET, "/api/v1/**", READ),
    _rule(GET, "/api/v2/**", READ),
    _rule(GET, "/v1/**", READ),
    _rule(CHANGE, "/api/v1/**", ADMIN),
    _rule(CHANGE, "/api/v2/**", ADMIN),
    _rule(CHANGE, "/v1/**", ADMIN),
)

DEFAULT_RULE = Rule(ANY, ("**",), ADMIN)
"""What no rule covers (another method, another prefix) needs an admin key."""


@functools.lru_cache(maxsize=4096)
def rule_for(method: str, path: str) -> Rule:
    """The first rule that covers ``method`` on ``path`` (a template or a concrete path)."""
    segments = path.strip("/").split("/")
    for rule in RULES:
        if rule.matches(method, segments):
            return rule
    return DEFAULT_RULE


def requirement(method: str, path: str) -> Requirement:
    return rule_for(method, path).requirement
