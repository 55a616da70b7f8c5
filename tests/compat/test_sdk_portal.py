"""@openmeter/sdk@1.0.0-beta.185: portal.createToken / portal.invalidateTokens, and what the
tokens can (and, once invalidated, cannot) do on GET /api/v1/portal/meters/{slug}/query."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.compat.sdk import UNDEFINED, assert_raw_problem, run_scenario, set_clock
from tests.support import ServerProcess, unique

NOW = "2024-01-01T00:00:00Z"
IN_ONE_HOUR = "2024-01-01T01:00:00Z"  # default portal.tokenExpiration = 1h


def _token(
    got: dict[str, Any], subject: str, expires_at: str, slugs: list[str] | None = None
) -> None:
    expected: dict[str, Any] = {
        "id": got["id"],
        "subject": subject,
        "expiresAt": expires_at,
        "token": got["token"],
    }
    if slugs is not None:
        expected["allowedMeterSlugs"] = slugs
    # optional extras (contract §8): createdAt, expired
    if "createdAt" in got:
        expected["createdAt"] = NOW
    if "expired" in got:
        expected["expired"] = False
    assert got == expected
    assert isinstance(got["id"], str)
    assert got["id"]
    assert isinstance(got["token"], str)
    assert len(got["token"]) > 20


def _ok(resp: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    assert resp["status"] == 200, resp
    assert resp["contentType"] == "application/json", resp
    body = resp["body"]
    assert set(body) == {"data"}, body
    got = sorted(body["data"], key=lambda r: sorted(r["groupBy"].items()))
    assert got == rows


def _row(
    value: int, start: str, end: str, subject: str, group_by: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "value": value,
        "windowStart": start,
        "windowEnd": end,
        "subject": subject,
        "groupBy": group_by or {},
    }


def test_sdk_portal_tokens(sdk: None, clock_server: Callable[[str], ServerProcess]) -> None:
    server = clock_server(NOW)
    s, o = unique("customer"), unique("customer")
    out = run_scenario("portal", server.url, {"s": s, "o": o})
    assert out["ingest"] == UNDEFINED

    _token(out["tokenA1"], s, IN_ONE_HOUR, ["tokens_total"])
    _token(out["tokenA2"], s, IN_ONE_HOUR)
    _token(out["tokenO1"], o, "2024-01-02T00:00:00Z")
    _token(out["tokenO2"], o, IN_ONE_HOUR)
    assert len({out[k]["id"] for k in ("tokenA1", "tokenA2", "tokenO1", "tokenO2")}) == 4

    # the query is forced to the token's subject; no from/to -> event span (minute floor .. +1m)
    _ok(
        out["queryA1"],
        [
            _row(50, "2023-12-31T10:00:00Z", "2023-12-31T11:01:00Z", s, {"model": "gpt-3.5"}),
            _row(100, "2023-12-31T10:00:00Z", "2023-12-31T11:01:00Z", s, {"model": "gpt-4"}),
        ],
    )
    assert_raw_problem(out["queryA1Forbidden"], 401)  # meter not in allowedMeterSlugs
    _ok(out["queryA2"], [_row(150, "2023-12-31T10:00:00Z", "2023-12-31T11:01:00Z", s)])
    assert_raw_problem(out["queryNoToken"], 401)
    # ?subject=<other> is ignored or refused, never honoured
    other = out["queryA2OtherSubject"]
    if other["status"] == 400:
        assert_raw_problem(other, 400)
    else:
        _ok(other, [_row(150, "2023-12-31T10:00:00Z", "2023-12-31T11:01:00Z", s)])
    _ok(
        out["queryA2GroupBySubject"], [_row(150, "2023-12-31T10:00:00Z", "2023-12-31T11:01:00Z", s)]
    )
    o_rows = [_row(999, "2023-12-31T10:30:00Z", "2023-12-31T10:31:00Z", o)]
    _ok(out["queryO2"], o_rows)

    # invalidate one token by id: only that one stops working
    assert out["invalidateById"] == UNDEFINED
    assert_raw_problem(out["queryO2AfterId"], 401)
    _ok(out["queryO1AfterId"], o_rows)
    # invalidate by subject: every token of s
    assert out["invalidateSubject"] == UNDEFINED
    assert_raw_problem(out["queryA1AfterSubject"], 401)
    assert_raw_problem(out["queryA2AfterSubject"], 401)
    _ok(out["queryO1AfterSubject"], o_rows)
    # README: invalidateTokens() with no argument sends {} -> every token
    assert out["invalidateAll"] == UNDEFINED
    assert_raw_problem(out["queryO1AfterAll"], 401)
    # a new token after the invalidation works
    _token(out["tokenO3"], o, IN_ONE_HOUR)
    _ok(out["queryO3"], o_rows)

    # expiry (default 1h): valid one second before expiresAt, refused from expiresAt on
    token = out["tokenO3"]["token"]
    set_clock(server.url, "2024-01-01T00:59:59Z")
    _ok(run_scenario("portal", server.url, {"token": token}, "query"), o_rows)
    set_clock(server.url, IN_ONE_HOUR)
    assert_raw_problem(run_scenario("portal", server.url, {"token": token}, "query"), 401)
