"""ASGI entry point for ``allotment serve --workers N`` (and any ASGI server).

``uvicorn --factory allotment.http.asgi:create_app_from_env`` builds one application per worker
process from the environment: ``ALLOTMENT_CONFIG`` (config file), ``ALLOTMENT_DB_URL`` and the
other ``ALLOTMENT_*`` variables (``allotment --help``). Each worker migrates (a no-op once the
schema is current; concurrent starts are serialised by an advisory lock) and opens its own
connection pool.
"""

from __future__ import annotations

import os

from starlette.types import ASGIApp

from allotment.config import Settings, apply_env, load_file, validate


def settings_from_env() -> Settings:
    path = os.environ.get("ALLOTMENT_CONFIG")
    settings = apply_env(load_file(path) if path else Settings())
    validate(settings)
    return settings


def create_app_from_env() -> ASGIApp:
    from allotment.container import build_container
    from allotment.gc_tuning import tune_gc
    from allotment.http.app import create_app
    from allotment.http.server_protocol import ClientLimits, GuardedHttpToolsProtocol

    settings = settings_from_env()
    GuardedHttpToolsProtocol.limits = ClientLimits.of(settings)  # this worker's connections
    container = build_container(settings)
    try:
        container.start()
    except BaseException:
        container.close()
        raise
    app = create_app(container)
    tune_gc()
    return app
