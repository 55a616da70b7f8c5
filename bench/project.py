"""Glue to the project under test: its config, its container, its ingest service, its API.

Everything the harness knows about Allotment's internals is in this module, so when a service
method is renamed only this file changes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import data as D
from bench.httpc import Conn, HttpError

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "src" / "allotment" / "storage" / "migrations"
LOADER_VERSION = "1"


def schema_fingerprint() -> str:
    """Changes whenever a migration is added or edited: cached databases are then rebuilt."""
    h = hashlib.sha256(LOADER_VERSION.encode())
    for p in sorted(MIGRATIONS.glob("*.sql")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:10]


def write_config(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "bench-meters.yaml"
    if not path.exists() or path.read_text() != D.METER_CONFIG:
        path.write_text(D.METER_CONFIG)
    return path


def clock_text() -> str:
    return D.rfc3339(D.T_END)


def build_container(db_url: str, config: Path) -> Any:
    """A started Container on ``db_url`` with the server's meters and the same frozen clock."""
    from allotment.config import load_file
    from allotment.container import build_container as build

    settings = replace(load_file(str(config)), db_url=db_url, test_clock=clock_text())
    container = build(settings)
    container.start()
    return container


# ------------------------------------------------------------------ loading


def _cloud_events(rows: list[D.Row], source: str) -> list[Any]:
    from allotment.domain.events import CloudEvent

    return [
        CloudEvent(
            id=r.id,
            source=source,
            type=D.EVENT_TYPE,
            subject=r.subject,
            time=D.EPOCH + timedelta(microseconds=r.time_us),
            data={"tokens": r.tokens, "model": r.model},
        )
        for r in rows
    ]


def load_events_service(
    container: Any, n_events: int, n_subjects: int, batch: int, progress: Callable[[str], None]
) -> tuple[int, float]:
    """Load the data set through the project's own ingest service (dedup + rollups, one
    transaction per batch), in process. Returns (events stored, seconds)."""
    stored = 0
    spent = 0.0
    last = time.monotonic()
    for rows in D.generate(n_events, batch=batch, n_subjects=n_subjects):
        events = _cloud_events(rows, D.SOURCE)
        t = time.perf_counter()
        stored += container.events.ingest(events)
        spent += time.perf_counter() - t
        if time.monotonic() - last > 10:
            last = time.monotonic()
            progress(f"  loaded {stored:,} / {n_events:,} events ({stored / spent:,.0f}/s)")
    return stored, spent


def setup_entitlements(base_url: str, subjects: list[str], concurrency: int = 8) -> dict[str, Any]:
    """Create the feature, one metered entitlement per subject and five grants on each, over
    the public API (``concurrency`` keep-alive clients). Returns the answers' status counts."""
    from bench.httpc import blast, build_request

    conn = Conn(base_url)
    out: dict[str, Any] = {}
    try:
        # subjects may need to exist first (HEAD OpenMeter); an upsert is harmless otherwise
        status, _ = conn.request(
            "POST", "/api/v1/subjects", json.dumps([{"key": s} for s in subjects]).encode()
        )
        out["subjects"] = status
        status, body = conn.request(
            "POST",
            "/api/v1/features",
            json.dumps(
                {"key": D.FEATURE_KEY, "name": "Benchmark tokens", "meterSlug": D.METER_SLUG}
            ).encode(),
        )
        if status not in (200, 201):
            raise HttpError(f"POST /api/v1/features -> {status}: {body[:300]!r}")
        out["feature"] = status
    finally:
        conn.close()

    def post_all(paths_bodies: list[tuple[str, bytes]], what: str) -> dict[int, int]:
        reqs = [build_request(base_url, "POST", p, b) for p, b in paths_bodies]
        res = blast(base_url, reqs, concurrency)
        bad = {k: v for k, v in res.statuses.items() if k not in (200, 201)}
        if bad:
            c = Conn(base_url)
            try:  # replay the first request to show the error body
                status, body = c.request("POST", paths_bodies[0][0], paths_bodies[0][1])
            finally:
                c.close()
            raise HttpError(f"creating {what}: {bad}; e.g. {status}: {body[:300]!r}")
        return res.statuses

    ent = json.dumps(D.entitlement_body()).encode()
    out["entitlements"] = post_all(
        [(f"/api/v1/subjects/{s}/entitlements", ent) for s in subjects], "entitlements"
    )
    grants = [json.dumps(g).encode() for g in D.grant_bodies()]
    out["grants"] = post_all(
        [
            (f"/api/v1/subjects/{s}/entitlements/{D.FEATURE_KEY}/grants", g)
            for g in grants
            for s in subjects
        ],
        "grants",
    )
    return out


def value_path(subject: str) -> str:
    return f"/api/v1/subjects/{subject}/entitlements/{D.FEATURE_KEY}/value"


# ------------------------------------------------------------------ in-process value


VALUE_METHOD_NAMES = (
    "value",
    "get_value",
    "entitlement_value",
    "get_entitlement_value",
    "current_value",
    "check",
    "value_of",
)


def value_function(container: Any) -> tuple[Callable[[str], Any], str]:
    """The service call behind GET …/entitlements/{featureKey}/value, as ``f(subject)``.

    Found by name on ``container.entitlements``; the signature is matched by keyword so the
    harness does not break when optional parameters are added.
    """
    import inspect

    svc = container.entitlements
    for name in VALUE_METHOD_NAMES:
        fn = getattr(svc, name, None)
        if fn is None or not callable(fn):
            continue
        params = list(inspect.signature(fn).parameters.values())
        names = [p.name for p in params]
        required = [
            p
            for p in params
            if p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(required) >= 2:
            # (subject, entitlement id or feature key[, at])
            if len(required) == 2:
                return (lambda s, fn=fn: fn(s, D.FEATURE_KEY)), f"entitlements.{name}"
            if len(required) == 3 and ("at" in names or "time" in names or "when" in names):
                now = container.clock.now()
                return (lambda s, fn=fn: fn(s, D.FEATURE_KEY, None)), f"entitlements.{name}"
                _ = now
    raise LookupError(
        "no entitlement value method found on container.entitlements "
        f"(looked for {', '.join(VALUE_METHOD_NAMES)}); update bench/project.py value_function()"
    )
