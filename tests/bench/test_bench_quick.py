"""The benchmark harness keeps working (issue 5): quick mode produces every figure and the JSON,
and the bulk loader writes exactly what the ingest service writes. No timing assertions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

EXPECTED = [
    "ingest.batch",
    "ingest.single",
    "notify.ingest",
    "notify.ingest.ratio",
    "value.http.10000",
    "value.http.heavy.10000",
    "value.http.throughput.10000",
    "authorize.http.10000",
    "authorize.http.throughput.10000",
    "query.one.10000",
    "query.all.10000",
    "value.inproc.10000",
    "value.inproc.heavy.10000",
    "catalog.inproc.10000",
]


def _backends(config: pytest.Config) -> list[str]:
    return [b.strip() for b in str(config.getoption("--backends")).split(",") if b.strip()]


def _measured(kind: str, m: dict[str, Any] | None) -> bool:
    if not m or "error" in m:
        return False
    key = {"rate": "rate", "throughput": "checks_per_s"}.get(kind, "p50_ms")
    return isinstance(m.get(key), (int, float)) and m[key] > 0


def test_quick_mode_produces_every_figure(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    backends = _backends(request.config)
    out = tmp_path / "quick.json"
    args = [
        sys.executable,
        "-m",
        "bench",
        "--mode",
        "quick",
        "--backends",
        ",".join(backends),
        "--out",
        str(out),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    if "postgres" in backends:
        args += ["--pg-url", request.getfixturevalue("pg_admin_url")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # --prepare-only builds the data sets and measures nothing; the run then reuses them
    prep = subprocess.run(
        [*args, "--prepare-only"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert prep.returncode == 0, prep.stderr[-5000:]
    assert "data sets ready" in prep.stdout + prep.stderr
    assert not out.exists()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "vs naive" in proc.stdout
    assert "vs floor" in proc.stdout

    result = json.loads(out.read_text())
    assert result["meta"]["mode"] == "quick"
    assert set(result["backends"]) == set(backends)
    for name, b in result["backends"].items():
        figs = {f["id"]: f for f in b["figures"]}
        assert list(figs) == EXPECTED, name
        for fid, f in figs.items():
            if fid == "notify.ingest.ratio":  # with 1000 rules ÷ without, same process
                assert f["value"] > 0, (name, f)
                assert f["cpu_ratio"] > 0, (name, f)
                continue
            if fid == "notify.ingest":  # its reference is the same run without rules
                assert _measured("rate", f["ours"]), f
                assert _measured("rate", f["baseline"]), f
                assert f["ours"]["rules"] == 1000, f
                continue
            for side in ("ours", "naive", "floor"):
                assert _measured(f["kind"], f[side]), (name, fid, side, f[side])
            assert f["vs_naive"] is not None, (name, fid)
            assert f["vs_floor"] is not None, (name, fid)
        assert figs["value.inproc.10000"]["dataset"]["project"]["cached"] is True, name
        assert figs["ingest.batch"]["ours"]["events_stored"] == 10_000 + 1_000 + 100
        assert figs["value.inproc.10000"]["ours"]["method"].startswith("entitlements.")
        rss = b["server_max_rss_mib"]
        assert rss
        assert all(v > 0 for v in rss.values())


# ------------------------------------------------------------------ bulk loader == ingest


def _dump(url: str) -> dict[str, Any]:
    """Every table's row count, and the contents of events and the rollups (meter ids mapped
    to slugs, since each database gives its meters fresh ids)."""
    from bench.stores import Store

    st = Store(url)
    try:
        if st.pg:
            tables = [
                r[0]
                for r in st.q("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            ]
        else:
            tables = [
                r[0]
                for r in st.q(
                    "SELECT name FROM sqlite_master "
                    "WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                )
            ]
        slug = {str(i): str(s) for i, s in st.q("SELECT id, slug FROM meters")}
        out: dict[str, Any] = {t: st.q(f"SELECT count(*) FROM {t}")[0][0] for t in tables}
        out["events*"] = sorted(
            tuple(r)
            for r in st.q("SELECT source, id, type, subject, time, ingested_at, event FROM events")
        )
        rollups = st.q(
            "SELECT meter_id, subject, minute, group_key, count, sum, min, max, "
            "latest_time, latest_value FROM usage_minute"
        )
        out["usage_minute*"] = sorted(
            (
                slug[str(r[0])],
                *r[1:5],
                *(None if v is None else Decimal(str(v)) for v in r[5:8]),
                r[8],
                None if r[9] is None else Decimal(str(r[9])),
            )
            for r in rollups
        )
        return out
    finally:
        st.close()


def test_bulk_loader_writes_what_ingest_writes(
    new_db_url: Callable[[], str], tmp_path: Path
) -> None:
    from bench import bulk
    from bench import project as P

    config = P.write_config(tmp_path)
    n, subjects = 3_000, 50
    by_service, by_bulk = new_db_url(), new_db_url()
    c = P.build_container(by_service, config)
    try:
        P.load_events_service(c, n, subjects, 500, lambda _: None)
    finally:
        c.close()
    c = P.build_container(by_bulk, config)
    try:
        bulk.load(c, n, subjects, lambda _: None, chunk=700)
        verified = bulk.verify(c, ["customer-0000", "customer-0001", "customer-0049"])
    finally:
        c.close()
    assert verified["events"] == n
    a, b = _dump(by_service), _dump(by_bulk)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key


# ------------------------------------------------------------------ import against HTTP


def test_import_rate_reports_both_rates_and_cpu(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    backends = _backends(request.config)
    args = [sys.executable, "-m", "bench.import_rate", "--events", "2000", "--rounds", "1"]
    args += ["--backends", ",".join(backends), "--data-dir", str(tmp_path)]
    if "postgres" in backends:
        args += ["--pg-url", request.getfixturevalue("pg_admin_url")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result["backends"]) == set(backends)
    assert result["jobs"] == [1, 2]  # the default: one process and two workers, each round
    for b in result["backends"].values():
        for key in ("import_vs_http", "import_vs_http_paired", "http_cpu_vs_import_cpu"):
            ratios = b[key]
            assert set(ratios) == {"import-j1", "import-j2"}
            assert all(r > 0 for r in ratios.values())
        assert len(b["rates"]["http"]) == len(b["rates"]["import-j2"]) == 1
