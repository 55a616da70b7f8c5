"""Run the compatibility scenarios (tests/compat/scenarios/*.mjs) with the real
``@openmeter/sdk@1.0.0-beta.185`` under Node, and read back the one JSON document they print."""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

COMPAT = Path(__file__).resolve().parent
SCENARIOS = COMPAT / "scenarios"
SDK_DIR = COMPAT / "node_modules" / "@openmeter" / "sdk"
SDK_VERSION = "1.0.0-beta.185"

UNDEFINED = "<undefined>"  # what the scenarios print for an SDK call that returned `undefined`
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

STATUS_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
}


class ScenarioFailed(AssertionError):
    pass


def node_binary() -> str | None:
    return shutil.which("node")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_sdk_installed() -> None:
    """``npm ci`` in tests/compat unless the pinned SDK is already there (xdist-safe)."""
    with _locked(Path(tempfile.gettempdir()) / "allotment-compat-npm.lock"):
        manifest = SDK_DIR / "package.json"
        if manifest.exists() and json.loads(manifest.read_text())["version"] == SDK_VERSION:
            return
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(
                "npm not found: install Node.js (>= 18.17) to run the SDK compatibility tests"
            )
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=COMPAT,
            check=True,
            timeout=300,
        )


def run_scenario(
    script: str,
    base_url: str,
    params: dict[str, Any] | None = None,
    step: str = "main",
    timeout: float = 60.0,
) -> dict[str, Any]:
    """``node scenarios/<script>.mjs <base_url> <params> <step>`` → the printed JSON document."""
    node = node_binary()
    assert node is not None
    args = [node, str(SCENARIOS / f"{script}.mjs"), base_url, json.dumps(params or {}), step]
    proc = subprocess.run(
        args, cwd=COMPAT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise ScenarioFailed(
            f"scenario {script}:{step} failed (exit {proc.returncode})\n"
            f"stderr:\n{proc.stderr}\nstdout:\n{proc.stdout}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON document, got:\n{proc.stdout}"
    result: dict[str, Any] = json.loads(lines[0])
    return result


def set_clock(base_url: str, now: str) -> None:
    """Move the test clock of a server started with ALLOTMENT_TEST_CLOCK."""
    r = httpx.put(f"{base_url}/api/_testing/clock", json={"now": now}, timeout=10.0)
    assert r.status_code == 200, r.text
    assert r.json() == {"now": now}


def assert_ulid(value: object) -> str:
    assert isinstance(value, str), f"not a ULID: {value!r}"
    assert ULID.match(value), f"not a ULID: {value!r}"
    return value


def assert_time(value: object) -> str:
    assert isinstance(value, str), f"not an RFC 3339 time: {value!r}"
    assert RFC3339_Z.match(value), f"not an RFC 3339 UTC (Z) time: {value!r}"
    return value


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(assert_time(value).replace("Z", "+00:00"))


def floor_minute(value: str) -> str:
    """RFC 3339 (Z) of the instant floored to the minute."""
    return parse_time(value).replace(second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def assert_problem(
    err: dict[str, Any], status: int, detail_contains: str | None = None
) -> dict[str, Any]:
    """The SDK raised HttpError with the parsed problem+json body (§1.3 of the contract)."""
    assert "unexpectedSuccess" not in err, f"expected HTTP {status}, the call succeeded: {err}"
    assert err["name"] == "HttpError", err
    assert err["statusCode"] == status, err
    problem = err["problem"]
    assert isinstance(problem, dict), (
        f"problem not parsed (content type not application/problem+json?): {err}"
    )
    # HttpError's message is problem.type (SDK behaviour)
    assert err["message"] == "about:blank", err
    assert problem["type"] == "about:blank", problem
    assert problem["status"] == status, problem
    assert problem["title"] == STATUS_TITLES[status], problem
    assert isinstance(problem["detail"], str), problem
    assert problem["detail"], problem
    if detail_contains is not None:
        assert detail_contains.lower() in problem["detail"].lower(), problem
    assert set(problem) <= {"type", "title", "status", "detail", "instance", "extensions"}, problem
    if "extensions" in problem:
        assert isinstance(problem["extensions"], dict), problem
        assert problem["extensions"], problem
    return problem


def assert_raw_problem(resp: dict[str, Any], status: int) -> dict[str, Any]:
    """A plain-fetch answer that must be a problem+json error."""
    assert resp["status"] == status, resp
    assert resp["contentType"] == "application/problem+json", resp
    body = resp["body"]
    assert isinstance(body, dict), resp
    assert body["status"] == status, body
    assert body["type"] == "about:blank", body
    assert body["title"] == STATUS_TITLES[status], body
    return body
