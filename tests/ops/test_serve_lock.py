"""One ``allotment serve`` per SQLite file (storage/serve_lock.py): a second server on the same
file stops with an error naming the first, changing nothing; after the first ends — even by
SIGKILL — a new one serves; ``events import`` beside a running server still works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import ServerProcess


def _second_serve(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "allotment", "serve", "--db", f"sqlite:///{db}", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_server_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "one.db"
    first = ServerProcess(f"sqlite:///{db}").start()
    try:
        second = _second_serve(db)
        assert second.returncode == 2, second.stderr
        assert "another `allotment serve`" in second.stderr
        assert first.proc is not None
        assert f"pid {first.proc.pid}" in second.stderr
        assert httpx.get(first.url + "/readyz", timeout=10).status_code == 200
    finally:
        first.kill()  # SIGKILL: the kernel releases the lock all the same
    again = ServerProcess(f"sqlite:///{db}").start()
    try:
        assert httpx.get(again.url + "/readyz", timeout=10).status_code == 200
    finally:
        again.stop()


def test_two_files_two_servers(tmp_path: Path) -> None:
    servers = [ServerProcess(f"sqlite:///{tmp_path / f}").start() for f in ("a.db", "b.db")]
    try:
        for s in servers:
            assert httpx.get(s.url + "/readyz", timeout=10).status_code == 200
    finally:
        for s in servers:
            s.stop()


def test_import_beside_a_running_server(tmp_path: Path) -> None:
    db = tmp_path / "import.db"
    server = ServerProcess(f"sqlite:///{db}", config=None).start()
    events = tmp_path / "events.ndjson"
    events.write_text(
        json.dumps(
            {
                "specversion": "1.0",
                "id": "e-1",
                "source": "test",
                "type": "request",
                "subject": "customer-1",
                "time": "2026-01-01T00:00:00Z",
            }
        )
        + "\n"
    )
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "allotment",
                "events",
                "import",
                str(events),
                "--db",
                f"sqlite:///{db}",
                "--no-progress",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["accepted"] == 1
    finally:
        server.stop()
