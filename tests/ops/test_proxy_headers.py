"""The access log names the client a trusted proxy forwarded (``X-Forwarded-For``): ``serve
--access-log`` reads the proxy headers; without it they are not read at all (nothing else shows
a client's address; docs/operations.md "Load balancer examples")."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support import ServerProcess


def _wait_for(server: ServerProcess, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = server.logs()
        if text in logs:
            return logs
        time.sleep(0.05)
    return server.logs()


def test_access_log_names_the_forwarded_client(tmp_path: Path) -> None:
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'a.db'}", extra_args=["--access-log", "--log-level", "info"]
    ).start()
    try:
        r = httpx.get(
            server.url + "/healthz", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=10
        )
        assert r.status_code == 200
        logs = _wait_for(server, "203.0.113.7")
        assert "203.0.113.7" in logs, logs
        assert "/healthz" in logs, logs
    finally:
        server.stop()


def test_without_access_log_no_request_is_logged(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path / 'b.db'}", extra_args=["--log-level", "info"])
    server.start()
    try:
        r = httpx.get(
            server.url + "/healthz", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10
        )
        assert r.status_code == 200
    finally:
        server.stop()
    assert "203.0.113.9" not in server.logs()
    assert "GET /healthz" not in server.logs()
