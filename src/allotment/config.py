"""Settings: read once at start-up from defaults < config file < environment < CLI flags.

The config file is OpenMeter's format (a ``meters:`` list, see ``examples/config.yaml``); other
OpenMeter sections (kafka, clickhouse, …) are ignored so the same file works for both.
Allotment's own sections: ``database`` (``url``, ``pool``), ``server`` (``host``, ``port``),
``portal`` (``tokenSecret``, ``tokenExpiration``), ``notifications`` (``allowPrivateAddresses``,
``retrySchedule``, ``timeout``, ``lease``, ``sweepInterval``, ``tickInterval``; see
docs/notifications.md), ``catalog`` (``features``, ``plans``: the `/v1` catalog as code,
docs/catalog.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from allotment.domain import limits
from allotment.domain.api_keys import AuthMode, parse_auth_mode
from allotment.domain.errors import InvalidInput
from allotment.storage.database import PoolSettings

_N = TypeVar("_N", int, float)

DEFAULT_DATA_DIR = Path("allotment-data")
DEFAULT_DB_URL = f"sqlite:///{DEFAULT_DATA_DIR / 'allotment.db'}"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8888


class ConfigError(Exception):
    """The configuration is invalid; the message names the section, item and field."""


@dataclass(frozen=True)
class Settings:
    db_url: str = DEFAULT_DB_URL
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    meters: tuple[Mapping[str, Any], ...] = ()
    pool: PoolSettings = field(default_factory=PoolSettings)
    sqlite_synchronous: str = "FULL"
    portal_token_secret: str | None = None
    portal_token_expiration_seconds: int = 3600
    test_clock: str | None = None
    """When set (an RFC 3339 instant), the server runs on a settable clock: tests only."""
    config_path: str | None = None
    # --- ingest (metering): request body limit, lowered by tests to exercise N / N+1
    max_body_bytes: int = limits.REQUEST_BODY_BYTES_MAX
    fold_max_lag: int = limits.FOLD_MAX_LAG_DEFAULT
    """Unfolded events past which ingest waits for the fold (``services/events.py``)."""
    catalog: Mapping[str, Any] | None = None
    """The ``catalog:`` section (features and plans as code, docs/catalog.md), as written."""
    # --- slow and greedy HTTP clients (docs/limits.md "Connections"), lowered by tests
    http_header_timeout_seconds: float = limits.HTTP_HEADER_TIMEOUT_SECONDS
    http_body_idle_seconds: float = limits.HTTP_BODY_IDLE_SECONDS
    http_body_timeout_seconds: float = limits.HTTP_BODY_TIMEOUT_SECONDS
    http_client_connections_max: int = limits.HTTP_CLIENT_CONNECTIONS_MAX
    # --- API keys (docs/security.md)
    auth_mode: AuthMode = AuthMode.AUTO
    auth_cache_seconds: float = limits.AUTH_CACHE_SECONDS_DEFAULT
    # --- notifications (docs/notifications.md)
    webhook_allow_private: bool = False
    """Let webhook URLs resolve to loopback/private ranges (self-hosted receivers, tests)."""
    webhook_retry_schedule: str | None = None
    """Delays before each retry, e.g. ``"5s,30s,2m,10m,1h"`` (default: 5 s … hourly, 24 h+)."""
    webhook_timeout_seconds: float = 10.0
    webhook_lease_seconds: float = 60.0
    webhook_poll_seconds: float = 1.0
    notifications_sweep_seconds: float = 60.0
    notifications_tick_seconds: float = 1.0


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config section {name!r} must be a mapping")
    return value


def load_file(path: str) -> Settings:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    meters = raw.get("meters") or []
    if not isinstance(meters, list):
        raise ConfigError("config: 'meters' must be a list")
    catalog = raw.get("catalog")
    settings = Settings(meters=tuple(meters), config_path=path, catalog=catalog)
    database = _section(raw, "database")
    server = _section(raw, "server")
    portal = _section(raw, "portal")
    notes = _section(raw, "notifications")
    pool = _section(database, "pool")
    try:
        settings = replace(
            settings,
            db_url=str(database.get("url", settings.db_url)),
            host=str(server.get("host", settings.host)),
            port=int(server.get("port", settings.port)),
            portal_token_secret=portal.get("tokenSecret"),
            webhook_allow_private=_flag(notes.get("allowPrivateAddresses", False)),
            webhook_retry_schedule=_schedule(notes.get("retrySchedule")),
            webhook_timeout_seconds=float(notes.get("timeout", settings.webhook_timeout_seconds)),
            webhook_lease_seconds=float(notes.get("lease", settings.webhook_lease_seconds)),
            notifications_sweep_seconds=float(
                notes.get("sweepInterval", settings.notifications_sweep_seconds)
            ),
            notifications_tick_seconds=float(
                notes.get("tickInterval", settings.notifications_tick_seconds)
            ),
            pool=PoolSettings(
                min_size=int(pool.get("minSize", PoolSettings.min_size)),
                max_size=int(pool.get("maxSize", PoolSettings.max_size)),
                timeout_seconds=float(pool.get("timeout", PoolSettings.timeout_seconds)),
                connect_timeout_seconds=float(
                    pool.get("connectTimeout", PoolSettings.connect_timeout_seconds)
                ),
                statement_timeout_ms=round(
                    1000
                    * float(pool.get("statementTimeout", PoolSettings.statement_timeout_ms / 1000))
                ),
            ),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    return settings


def _real(env: Mapping[str, str], name: str, default: float) -> float:
    """The number of ``env[name]`` (``default`` when unset); the error names ``name``."""
    return _number(env, name, default, float, "a number")


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    """The whole number of ``env[name]`` (``default`` when unset); the error names ``name``."""
    return _number(env, name, default, int, "a whole number")


def _number(
    env: Mapping[str, str], name: str, default: _N, parse: Callable[[str], _N], kind: str
) -> _N:
    text = env.get(name)
    if text is None:
        return default
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"{name} must be {kind}, got {text!r}") from None


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean")


def _schedule(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


ENV_VARS = {
    "ALLOTMENT_DB_URL": "database URL (sqlite:///path or postgresql://…)",
    "ALLOTMENT_HOST": "listen address",
    "ALLOTMENT_PORT": "listen port",
    "ALLOTMENT_DB_POOL_MIN_SIZE": "PostgreSQL pool: connections kept open",
    "ALLOTMENT_DB_POOL_MAX_SIZE": "PostgreSQL pool: most connections",
    "ALLOTMENT_DB_POOL_TIMEOUT": "PostgreSQL pool: seconds a request waits for a connection (5)",
    "ALLOTMENT_DB_POOL_CONNECT_TIMEOUT": "PostgreSQL: seconds one connection attempt may take (5)",
    "ALLOTMENT_DB_POOL_STATEMENT_TIMEOUT": "PostgreSQL: seconds one SQL statement may take (30)",
    "ALLOTMENT_CONFIG": "config file (what --config sets; used by --workers processes)",
    "ALLOTMENT_SQLITE_SYNCHRONOUS": "SQLite synchronous pragma: FULL (default, power-loss safe)"
    " or NORMAL",
    "ALLOTMENT_PORTAL_TOKEN_SECRET": "HS256 secret for portal tokens"
    " (default: generated once, kept in the database)",
    "ALLOTMENT_TEST_CLOCK": "tests only: start on a settable clock at this RFC 3339 instant",
    "ALLOTMENT_MAX_BODY_BYTES": "largest request body in bytes (default 16 MiB); 413 above it",
    "ALLOTMENT_FOLD_MAX_LAG": "unfolded events past which ingest waits for the fold (200000,"
    " 0..1000000000): a longer burst is acknowledged at the fold's rate, and a read after a"
    " burst folds at most about this many events first (docs/api/events.md)",
    "ALLOTMENT_HTTP_HEADER_TIMEOUT": "seconds a request's headers may take (10); then 408",
    "ALLOTMENT_HTTP_BODY_IDLE_TIMEOUT": "seconds a request body may pause (10); then 408",
    "ALLOTMENT_HTTP_BODY_TIMEOUT": "seconds a request body may take in all (60); then 408",
    "ALLOTMENT_HTTP_CLIENT_CONNECTIONS": "open connections per client address and process (64);"
    " then 503",
    "ALLOTMENT_AUTH": "auto (default: API keys required once one exists), required, or off"
    " (what --insecure-no-auth sets)",
    "ALLOTMENT_AUTH_CACHE_SECONDS": "how long a process reuses an API key lookup, or a 'no key"
    " exists' answer (default 1, 0..60; 0: every request reads the key, a revoke is effective"
    " everywhere at once)",
    "ALLOTMENT_WEBHOOK_ALLOW_PRIVATE": "1: webhook URLs may resolve to loopback/private addresses",
    "ALLOTMENT_WEBHOOK_RETRY_SCHEDULE": "delays before each webhook retry, e.g. 5s,30s,2m,10m,1h",
    "ALLOTMENT_WEBHOOK_TIMEOUT": "seconds one webhook request may take (10)",
    "ALLOTMENT_WEBHOOK_LEASE": "seconds a replica holds a delivery it is sending (60)",
    "ALLOTMENT_NOTIFICATIONS_SWEEP_INTERVAL": "seconds between full notification sweeps (60)",
}


def apply_env(settings: Settings, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    try:
        pool = settings.pool
        pool = replace(
            pool,
            min_size=_whole(env, "ALLOTMENT_DB_POOL_MIN_SIZE", pool.min_size),
            max_size=_whole(env, "ALLOTMENT_DB_POOL_MAX_SIZE", pool.max_size),
            timeout_seconds=_real(env, "ALLOTMENT_DB_POOL_TIMEOUT", pool.timeout_seconds),
            connect_timeout_seconds=_real(
                env, "ALLOTMENT_DB_POOL_CONNECT_TIMEOUT", pool.connect_timeout_seconds
            ),
            statement_timeout_ms=round(
                1000
                * _real(
                    env, "ALLOTMENT_DB_POOL_STATEMENT_TIMEOUT", pool.statement_timeout_ms / 1000
                )
            ),
        )
        return replace(
            settings,
            db_url=env.get("ALLOTMENT_DB_URL", settings.db_url),
            host=env.get("ALLOTMENT_HOST", settings.host),
            port=_whole(env, "ALLOTMENT_PORT", settings.port),
            pool=pool,
            sqlite_synchronous=env.get("ALLOTMENT_SQLITE_SYNCHRONOUS", settings.sqlite_synchronous),
            portal_token_secret=env.get(
                "ALLOTMENT_PORTAL_TOKEN_SECRET", settings.portal_token_secret
            ),
            test_clock=env.get("ALLOTMENT_TEST_CLOCK", settings.test_clock),
            max_body_bytes=_whole(env, "ALLOTMENT_MAX_BODY_BYTES", settings.max_body_bytes),
            fold_max_lag=_whole(env, "ALLOTMENT_FOLD_MAX_LAG", settings.fold_max_lag),
            http_header_timeout_seconds=_real(
                env, "ALLOTMENT_HTTP_HEADER_TIMEOUT", settings.http_header_timeout_seconds
            ),
            http_body_idle_seconds=_real(
                env, "ALLOTMENT_HTTP_BODY_IDLE_TIMEOUT", settings.http_body_idle_seconds
            ),
            http_body_timeout_seconds=_real(
                env, "ALLOTMENT_HTTP_BODY_TIMEOUT", settings.http_body_timeout_seconds
            ),
            http_client_connections_max=_whole(
                env, "ALLOTMENT_HTTP_CLIENT_CONNECTIONS", settings.http_client_connections_max
            ),
            auth_mode=parse_auth_mode(env.get("ALLOTMENT_AUTH", settings.auth_mode.value)),
            auth_cache_seconds=_real(
                env, "ALLOTMENT_AUTH_CACHE_SECONDS", settings.auth_cache_seconds
            ),
            webhook_allow_private=_flag(
                env.get("ALLOTMENT_WEBHOOK_ALLOW_PRIVATE", settings.webhook_allow_private)
            ),
            webhook_retry_schedule=env.get(
                "ALLOTMENT_WEBHOOK_RETRY_SCHEDULE", settings.webhook_retry_schedule
            ),
            webhook_timeout_seconds=_real(
                env, "ALLOTMENT_WEBHOOK_TIMEOUT", settings.webhook_timeout_seconds
            ),
            webhook_lease_seconds=_real(
                env, "ALLOTMENT_WEBHOOK_LEASE", settings.webhook_lease_seconds
            ),
            notifications_sweep_seconds=_real(
                env, "ALLOTMENT_NOTIFICATIONS_SWEEP_INTERVAL", settings.notifications_sweep_seconds
            ),
        )
    except InvalidInput as exc:
        raise ConfigError(f"environment: {exc.detail}") from exc
    except ValueError as exc:
        raise ConfigError(f"environment: {exc}") from exc


def validate(settings: Settings) -> None:
    """Check everything that can be checked without a database; raise ConfigError."""
    from allotment.domain.meters import parse_meter_definition

    if settings.sqlite_synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
        raise ConfigError("ALLOTMENT_SQLITE_SYNCHRONOUS must be FULL, NORMAL or EXTRA")
    if settings.pool.min_size < 0 or settings.pool.max_size < max(1, settings.pool.min_size):
        raise ConfigError("database pool: need 0 <= minSize <= maxSize and maxSize >= 1")
    if settings.pool.timeout_seconds <= 0 or settings.pool.connect_timeout_seconds <= 0:
        raise ConfigError("database pool: timeout and connectTimeout must be > 0 seconds")
    if not 0 <= settings.auth_cache_seconds <= limits.AUTH_CACHE_SECONDS_MAX:
        raise ConfigError(
            f"ALLOTMENT_AUTH_CACHE_SECONDS must be between 0 and "
            f"{limits.AUTH_CACHE_SECONDS_MAX:g} seconds"
        )
    if not 0 <= settings.fold_max_lag <= limits.FOLD_MAX_LAG_MAX:
        raise ConfigError(
            f"ALLOTMENT_FOLD_MAX_LAG must be between 0 and {limits.FOLD_MAX_LAG_MAX} events"
        )
    if settings.pool.statement_timeout_ms < 1:
        raise ConfigError("database pool: statementTimeout must be > 0 seconds")
    if settings.webhook_retry_schedule is not None:
        from allotment.domain.notifications import parse_schedule

        try:
            parse_schedule(settings.webhook_retry_schedule, "notifications.retrySchedule")
        except InvalidInput as exc:
            raise ConfigError(f"config: {exc.detail}") from exc
    for name, value in (
        ("ALLOTMENT_HTTP_HEADER_TIMEOUT", settings.http_header_timeout_seconds),
        ("ALLOTMENT_HTTP_BODY_IDLE_TIMEOUT", settings.http_body_idle_seconds),
        ("ALLOTMENT_HTTP_BODY_TIMEOUT", settings.http_body_timeout_seconds),
        ("notifications.timeout", settings.webhook_timeout_seconds),
        ("notifications.lease", settings.webhook_lease_seconds),
        ("notifications.sweepInterval", settings.notifications_sweep_seconds),
        ("notifications.tickInterval", settings.notifications_tick_seconds),
    ):
        if not value > 0:
            raise ConfigError(f"config: {name} must be > 0 seconds")
    if settings.http_client_connections_max < 1:
        raise ConfigError("ALLOTMENT_HTTP_CLIENT_CONNECTIONS must be at least 1")
    if settings.webhook_lease_seconds <= settings.webhook_timeout_seconds:
        raise ConfigError("config: notifications.lease must be longer than notifications.timeout")
    seen: set[str] = set()
    for index, raw in enumerate(settings.meters):
        label = raw.get("slug") if isinstance(raw, Mapping) else None
        where = f"meters[{index}]" + (f" ({label})" if label else "")
        if not isinstance(raw, Mapping):
            raise ConfigError(f"config: {where} must be a mapping")
        try:
            meter = parse_meter_definition(raw)
        except InvalidInput as exc:
            raise ConfigError(f"config: {where}: {exc.detail}") from exc
        if meter.slug in seen:
            raise ConfigError(f"config: {where}: duplicate meter slug {meter.slug!r}")
        seen.add(meter.slug)
    _validate_catalog(settings, seen)


def _validate_catalog(settings: Settings, meter_slugs: set[str]) -> None:
    from allotment.domain.catalog_config import check_catalog, parse_catalog

    try:
        check_catalog(parse_catalog(settings.catalog), meter_slugs)
    except InvalidInput as exc:
        raise ConfigError(f"config: {exc.detail}") from exc
