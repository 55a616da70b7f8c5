"""The operator console: server-rendered HTML pages at ``/console`` (docs/console.md).

Routes and view-models live here, templates in ``templates/``, the stylesheet and the few
lines of script in ``static/``; charts are SVG drawn on the server (:mod:`.charts`). Every
page reads through the services (never SQL), shows at most 50 rows, and is admitted by
:mod:`.access` (an admin key, as a session cookie or a header; open on loopback while no key
exists, as the API is).
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from allotment.http.console import (
    activity,
    customers,
    entitlements,
    meters,
    plans,
    portal,
    session,
)


def console_routes() -> list[BaseRoute]:
    return [
        *session.ROUTES,
        *customers.ROUTES,
        *plans.ROUTES,
        *meters.ROUTES,
        *entitlements.ROUTES,
        *activity.ROUTES,
        *portal.ROUTES,
        *session.LAST,
    ]
