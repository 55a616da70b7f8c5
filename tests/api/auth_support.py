"""Helpers for the API key tests: keys made with the real CLI, servers with authentication on."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from typing import Any

import httpx

from tests.support import ServerProcess


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``allotment …`` in a child process."""
    import os

    return subprocess.run(
        [sys.executable, "-m", "allotment", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=tempfile.gettempdir(),
        timeout=60,
        check=False,
    )


def create_key(db_url: str, name: str, scope: str) -> str:
    """A new key's secret: the last line of ``allotment api-keys create``."""
    done = cli("api-keys", "create", "--name", name, "--scope", scope, "--db", db_url)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def auth_problem(r: httpx.Response) -> dict[str, Any] | None:
    """The guard's 401/403 problem (it names the scopes needed), or None for any other answer."""
    if r.status_code not in (401, 403):
        return None
    if r.headers.get("content-type") != "application/problem+json":
        return None
    body: dict[str, Any] = r.json()
    if "requiredScopes" not in (body.get("extensions") or {}):
        return None
    return body


def check_refused(r: httpx.Response, status: int, needed: list[str]) -> None:
    body = auth_problem(r)
    assert body is not None, (r.status_code, r.text)
    assert r.status_code == status, r.text
    assert body["status"] == status
    assert body["extensions"]["requiredScopes"] == needed
    for scope in needed:
        assert scope in body["detail"]
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer ")


def start_with_keys(
    db_url: str, scopes: dict[str, str], **kwargs: Any
) -> tuple[ServerProcess, dict[str, str]]:
    """Keys first (the CLI migrates the database), then the server: authentication is on."""
    secrets = {name: create_key(db_url, name, scope) for name, scope in scopes.items()}
    return ServerProcess(db_url, **kwargs).start(), secrets
