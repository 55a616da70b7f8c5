"""HTTP routes: grants (placeholder, to be implemented)."""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
