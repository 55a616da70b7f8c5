"""The ASGI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from allotment.http.console import console_routes
from allotment.http.guard import guard
from allotment.http.problems import EXCEPTION_HANDLERS
from allotment.http.routes import (
    customers,
    entitlements,
    events,
    features,
    grants,
    meter_queries,
    meters,
    notifications,
    portal,
    subjects,
    system,
    v1_api_keys,
    v1_audit_events,
    v1_authorize,
    v1_customers,
    v1_features,
    v1_pricing_plans,
    v1_subscriptions,
    v2_entitlements,
)

if TYPE_CHECKING:
    from allotment.container import Container


def all_routes() -> list[BaseRoute]:
    return [
        # first: Starlette tries routes in order, and authorize is the hot path without a fast
        # path of its own (about 100 route matches saved per call); no other route matches its
        # paths, so the order changes no answer
        *v1_authorize.ROUTES,
        *system.ROUTES,
        *events.ROUTES,
        *meter_queries.ROUTES,
        *meters.ROUTES,
        *subjects.ROUTES,
        *features.ROUTES,
        *entitlements.ROUTES,
        *grants.ROUTES,
        *portal.ROUTES,
        *customers.ROUTES,
        *v2_entitlements.ROUTES,
        *v1_features.ROUTES,
        *v1_pricing_plans.ROUTES,
        *v1_subscriptions.ROUTES,
        *v1_customers.ROUTES,
        *v1_api_keys.ROUTES,
        *v1_audit_events.ROUTES,
        *notifications.ROUTES,
        *console_routes(),
    ]


def create_app(container: Container, *, fast_paths: bool = True) -> ASGIApp:
    """Build the app around an already-started container (migrated, config synced).
    ``fast_paths=False`` gives the plain routed Starlette app, without the fast paths and the
    guard in front of them (the reference the fast paths are tested against; never served)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        container.start_background()  # notification evaluator and webhook delivery
        yield
        container.close()

    app = Starlette(
        routes=all_routes(),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.container = container
    container.notifications.render = notifications.render_payload  # the webhook wire forms
    # cache hits of the value check, small valid event batches and (SQLite) well-formed
    # authorize calls are answered before Starlette's routing (same answers; everything else
    # goes through the routes)
    if not fast_paths:
        return app
    inner = entitlements.value_fast_path(app, container.entitlements)
    inner = events.ingest_fast_path(inner, container)
    inner = v1_authorize.authorize_fast_path(inner, container.enforcement)
    # outermost, in front of the fast paths too: API keys and scopes, content types, audit
    return guard(
        inner,
        keys=container.api_keys,
        audit=container.audit,
        mode=container.settings.auth_mode,
        routes=app.routes,
    )
