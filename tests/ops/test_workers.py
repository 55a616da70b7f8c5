"""``allotment serve --workers N``: several worker processes on PostgreSQL; refused on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support import EXAMPLE_CONFIG, ServerProcess, unique

pytestmark = pytest.mark.slow


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def test_workers_serve_one_postgres_database(pg_db_url: str) -> None:
    server = ServerProcess(pg_db_url, extra_args=["--workers", "3"]).start()
    try:
        assert server.proc is not None
        workers = {p for p in _children(server.proc.pid) if _alive(p)}
        # uvicorn's supervisor forks its workers (plus, possibly, a multiprocessing helper).
        assert len(workers) >= 3
        subject = unique("workers")

        def ingest(i: int) -> int:
            batch = [
                {
                    "specversion": "1.0",
                    "id": f"w-{i}-{j}",
                    "source": "workers-test",
                    "type": "prompt",
                    "subject": subject,
                    "data": {"tokens": 1, "model": "m"},
                }
                for j in range(5)
            ]
            with httpx.Client(base_url=server.url, timeout=30.0) as c:  # new connection each
                r = c.post(
                    "/api/v1/events",
                    json=batch,
                    headers={"content-type": "application/cloudevents-batch+json"},
                )
                return r.status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(ingest, [i % 20 for i in range(40)]))  # each batch twice
        assert set(statuses) == {204}
        with server.client() as c:
            r = c.get("/api/v1/meters/tokens_total/query", params={"subject": subject})
            assert r.status_code == 200, r.text
            assert [row["value"] for row in r.json()["data"]] == [100]
            assert c.get("/readyz").status_code == 200
    finally:
        server.stop()
    deadline = time.monotonic() + 10  # the resource tracker exits when its pipe closes
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {p: _cmdline(p) for p in workers if _alive(p)}
    assert not left, f"processes outlived the supervisor's SIGTERM: {left}"


def test_workers_refused_on_sqlite(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'w.db'}"
    args = [sys.executable, "-m", "allotment", "serve", "--db", db, "--workers", "2"]
    args += ["--config", str(EXAMPLE_CONFIG), "--port", "1"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, env=os.environ)
    assert proc.returncode == 2
    assert "--workers > 1 needs PostgreSQL" in proc.stderr
    assert "one writer per process" in proc.stderr
    assert not (tmp_path / "w.db").exists()  # refused before touching the database


def test_workers_zero_refused() -> None:
    db = f"sqlite:///{Path('/nonexistent') / uuid.uuid4().hex / 'x.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "allotment", "serve", "--db", db, "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--workers must be at least 1" in proc.stderr
