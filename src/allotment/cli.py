"""The ``allotment`` command: serve, migrate, check-config, api-keys, events import."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
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
from allotment.domain import limits
from allotment.domain.api_keys import AuthMode, Scope
from allotment.domain.errors import DomainError
from allotment.domain.timeutil import format_rfc3339

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
    if getattr(args, "insecure_no_auth", False):
        overrides["auth_mode"] = AuthMode.OFF
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
    from allotment.http.server_protocol import ClientLimits, GuardedHttpToolsProtocol

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
        refused = _auth_refusal(settings, container.api_keys.keys_exist())
    except BaseException:
        container.close()
        raise
    if refused:
        container.close()
        print(refused, file=sys.stderr)
        return 2
    log.info(
        "serving on http://%s:%d (database: %s)", settings.host, settings.port, container.db.dialect
    )
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": args.log_level,
        "access_log": args.access_log,
        # X-Forwarded-For/-Proto are read only when the access log, the one place a client's
        # address is shown, is on: uvicorn's proxy-headers middleware otherwise costs ≈ 7 % of
        # the event loop per request for nothing (docs/operations.md "Behind a proxy")
        "proxy_headers": args.access_log,
        "server_header": False,
        "timeout_keep_alive": 30,
        "timeout_graceful_shutdown": 20,
        # headers, bodies and connections per client bounded (docs/limits.md "Connections")
        "http": GuardedHttpToolsProtocol,
        "limit_concurrency": limits.HTTP_SERVER_CONNECTIONS_MAX,
    }
    GuardedHttpToolsProtocol.limits = ClientLimits.of(settings)
    if args.workers > 1:
        # Migrated once above (fail fast); each worker builds its own app and pool from the
        # environment, which carries what the flags and the config file said.
        container.close()
        os.environ["ALLOTMENT_DB_URL"] = settings.db_url
        os.environ["ALLOTMENT_AUTH"] = settings.auth_mode.value
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


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _auth_refusal(settings: Settings, keys_exist: bool) -> str | None:
    """Why the server must not start (None: it may), logging the warnings on the way."""
    create = "create a key first: allotment api-keys create --name admin --scope admin" + (
        f" --db {settings.db_url}" if settings.db_url != DEFAULT_DB_URL else ""
    )
    if settings.auth_mode is AuthMode.OFF:
        log.warning(
            "authentication is OFF (--insecure-no-auth / ALLOTMENT_AUTH=off): anyone who can "
            "reach %s:%d can read and change everything; only do this behind a gateway that "
            "authenticates",
            settings.host,
            settings.port,
        )
        return None
    if keys_exist:
        return None
    if settings.auth_mode is AuthMode.REQUIRED:
        log.warning(
            "ALLOTMENT_AUTH=required and no API key exists: every request is refused; %s", create
        )
        return None
    if not is_loopback(settings.host):
        return (
            f"error: refusing to listen on {settings.host} without API keys: anyone on the "
            f"network could read and change everything. {create}, then start again (or pass "
            "--insecure-no-auth to run without authentication, behind a gateway that has it)"
        )
    log.warning("no API key exists: authentication is off (loopback only); %s", create)
    return None


def _api_keys(args: argparse.Namespace) -> int:
    from allotment.container import build_container
    from allotment.http.routes.v1_api_keys import key_json
    from allotment.services.audit import Change, snapshot
    from allotment.storage import migrate

    settings = _settings(args)
    container = build_container(settings)
    try:
        migrate.migrate(container.db, container.now_us())
        keys = container.api_keys
        if args.keys_command == "list":
            rows = keys.list(limit=1_000_000)
            print(f"{'NAME':24} {'SCOPE':8} {'PREFIX':13} {'CREATED':21} {'LAST USED':21} REVOKED")
            for k in rows:
                print(
                    f"{k.name:24} {k.scope.value:8} {k.prefix:13} "
                    f"{_when(k.created_at):21} {_when(k.last_used_at):21} {_when(k.revoked_at)}"
                )
            return 0
        if args.keys_command == "create":
            key, secret = keys.create(args.name, args.scope)
            route, before, after = "api-keys create", None, key_json(key)
        else:
            before = key_json(keys.get(args.name))
            key = keys.revoke(args.name)
            route, after = "api-keys revoke", key_json(key)
        container.audit.record(
            Change(
                actor="cli",
                key_id=None,
                method="CLI",
                route=route,
                resource=f"/v1/api-keys/{key.name}",
                status=0,
                before=None if before is None else snapshot(json.dumps(before).encode()),
                after=snapshot(json.dumps(after).encode()),
            )
        )
    finally:
        container.close()
    if args.keys_command == "create":
        print(f"created API key {key.name!r} (scope {key.scope.value}, prefix {key.prefix})")
        print("the secret follows; it is shown only this once and cannot be recovered:")
        print(secret)
    else:
        print(f"revoked API key {key.name!r} (prefix {key.prefix})")
    return 0


def _when(at: datetime | None) -> str:
    return "-" if at is None else format_rfc3339(at.replace(microsecond=0))


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


def _events_import(args: argparse.Namespace) -> int:

    from allotment.container import build_container
    from allotment.event_import import ImportSourceError, Source, run_import
    from allotment.gc_tuning import tune_gc
    from allotment.import_jobs import default_jobs, plan, run_jobs

    settings = _settings(args)
    if args.jobs is not None and args.jobs < 1:
        print("error: --jobs: must be at least 1", file=sys.stderr)
        return 2
    try:
        source = Source(args.file)
    except ImportSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    jobs = args.jobs if args.jobs is not None else default_jobs()
    spans = plan(source, args.file, jobs, explicit=args.jobs is not None)
    container = build_container(settings)
    progress = None if args.no_progress else sys.stderr
    closed = False
    try:
        container.start()
        tune_gc()  # as serve does: large batches build many objects
        if len(spans) > 1:  # the workers fork with no thread of ours running
            source.close()
            container.close()
            closed = True
            assert source.total is not None
            result = run_jobs(
                settings,
                args.file,
                spans,
                total=source.total,
                batch_size=args.batch_size,
                progress_out=progress,
            )
        else:
            result = run_import(
                container, source, batch_size=args.batch_size, progress_out=progress
            )
    except ImportSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        source.close()
        if not closed:
            container.close()
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        print(result.summary())
    if result.interrupted:
        return 130
    return 1 if result.rejected else 0


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
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (with the client address from X-Forwarded-For when the peer "
        "is trusted: uvicorn's FORWARDED_ALLOW_IPS, default 127.0.0.1)",
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without API keys on any address (only behind a gateway that authenticates)",
    )
    serve.set_defaults(handler=_serve)

    mig = sub.add_parser("migrate", help="apply pending database migrations and exit")
    mig.add_argument("--config", help="config file")
    mig.add_argument("--db", help=db_help)
    mig.set_defaults(handler=_migrate)

    keys = sub.add_parser("api-keys", help="create, list and revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="issue a key; prints its secret once, last")
    create.add_argument("--name", required=True, help="a unique name, e.g. billing-backend")
    create.add_argument(
        "--scope",
        required=True,
        choices=[s.value for s in Scope],
        help="admin: everything; runtime: ingest, values, authorize, reservations; "
        "read: GET only; ingest: events only",
    )
    list_ = keys_sub.add_parser("list", help="name, scope, prefix, created, last used")
    revoke = keys_sub.add_parser("revoke", help="revoke a key (refused at once)")
    revoke.add_argument("name", help="the key's name")
    for p in (create, list_, revoke):
        p.add_argument("--config", help="config file")
        p.add_argument("--db", help=db_help)
        p.set_defaults(handler=_api_keys)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", help="config file to check")
    check.set_defaults(handler=_check_config)

    events = sub.add_parser("events", help="work with usage events")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    imp = events_sub.add_parser(
        "import",
        help="import CloudEvents from a file (NDJSON or a JSON array, optionally gzipped)",
        description="Import historical usage: the same validation and exactly-once rules as "
        "POST /api/v1/events. Invalid events are rejected (the first ones named) and the rest "
        "stored; an event already stored is a duplicate, so rerunning an interrupted import "
        "resumes it. Exit status: 0 all stored or duplicate, 1 some rejected, 2 unreadable "
        "input or bad settings, 130 interrupted.",
    )
    imp.add_argument("file", help="NDJSON or JSON-array file, gzipped or not; - for stdin")
    imp.add_argument("--config", help="config file (meters to load first, like serve)")
    imp.add_argument("--db", help=db_help)
    imp.add_argument(
        "--batch-size",
        type=int,
        default=limits.EVENTS_PER_BATCH_MAX,
        help=f"events per transaction (1–{limits.EVENTS_PER_BATCH_MAX}; default %(default)s)",
    )
    imp.add_argument(
        "--jobs",
        type=int,
        help="worker processes for a plain NDJSON file, each importing a part of it (default: "
        "2 on a machine with two cores or more, for a file of at least 16 MiB; gzip, JSON "
        "arrays and stdin: one)",
    )
    imp.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    imp.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    imp.set_defaults(handler=_events_import)
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
