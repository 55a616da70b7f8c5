"""The ``allotment`` command: serve, migrate, check-config."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from allotment import __version__
from allotment.config import (
    DEFAULT_DB_URL,
    DEFAULT_PORT,
    ENV_VARS,
    ConfigError,
    Settings,
    apply_env,
    load_file,
    validate,
)
from allotment.domain.errors import DomainError

log = logging.getLogger("allotment")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_file(args.config) if getattr(args, "config", None) else Settings()
    settings = apply_env(settings)
    overrides = {}
    if getattr(args, "db", None):
        overrides["db_url"] = args.db
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    if overrides:
        from dataclasses import replace

        settings = replace(settings, **overrides)
    validate(settings)
    return settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from allotment.container import build_container
    from allotment.gc_tuning import tune_gc
    from allotment.http.app import create_app

    settings = _settings(args)
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers != 1 and settings.db_url.startswith("sqlite"):
        print(
            "error: --workers > 1 needs PostgreSQL. The embedded SQLite database has one writer "
            "per process; run one process (it uses threads), or use --db postgresql://…",
            file=sys.stderr,
        )
        return 2
    container = build_container(settings)
    try:
        container.start()
    except BaseException:
        container.close()
        raise
    log.info(
        "serving on http://%s:%d (database: %s)", settings.host, settings.port, container.db.dialect
    )
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": args.log_level,
        "access_log": args.access_log,
        "server_header": False,
        "timeout_keep_alive": 30,
        "timeout_graceful_shutdown": 20,
    }
    if args.workers > 1:
        # Migrated once above (fail fast); each worker builds its own app and pool from the
        # environment, which carries what the flags and the config file said.
        container.close()
        os.environ["ALLOTMENT_DB_URL"] = settings.db_url
        if settings.config_path:
            os.environ["ALLOTMENT_CONFIG"] = os.path.abspath(settings.config_path)
        uvicorn.run(
            "allotment.http.asgi:create_app_from_env", factory=True, workers=args.workers, **common
        )
        return 0
    app = create_app(container)
    tune_gc()
    uvicorn.run(app, **common)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from allotment.container import build_container
    from allotment.storage import migrate

    settings = _settings(args)
    container = build_container(settings)
    try:
        applied = migrate.migrate(container.db, container.now_us())
    finally:
        container.close()
    for m in applied:
        print(f"applied {m.version}_{m.name}")
    print("database schema is current" if not applied else f"{len(applied)} migration(s) applied")
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    catalog = settings.catalog or {}
    features, plans = len(catalog.get("features") or []), len(catalog.get("plans") or [])
    print(f"{args.config}: OK ({len(settings.meters)} meter(s), {features} catalog feature(s), "
          f"{plans} plan(s))")  # fmt: skip
    return 0


def build_parser() -> argparse.ArgumentParser:
    env_help = "\n".join(f"  {k:32} {v}" for k, v in ENV_VARS.items())
    parser = argparse.ArgumentParser(
        prog="allotment",
        description="Usage metering and entitlements, wire-compatible with OpenMeter's v1 API.",
        epilog=f"Environment variables (override the config file; flags override both):"
        f"\n{env_help}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"allotment {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    db_help = (
        f"database URL (default: {DEFAULT_DB_URL}, an embedded SQLite file under the current "
        "directory); also sqlite:///path/to/file.db or postgresql://user:pass@host:port/db"
    )

    serve = sub.add_parser("serve", help="run the HTTP server (migrates the database first)")
    serve.add_argument("--config", help="OpenMeter-style config file with a meters: list")
    serve.add_argument("--db", help=db_help)
    serve.add_argument("--host", help="listen address (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help=f"listen port (default: {DEFAULT_PORT})")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (PostgreSQL only; default 1)"
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(handler=_serve)

    mig = sub.add_parser("migrate", help="apply pending database migrations and exit")
    mig.add_argument("--config", help="config file")
    mig.add_argument("--db", help=db_help)
    mig.set_defaults(handler=_migrate)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", help="config file to check")
    check.set_defaults(handler=_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DomainError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
