"""Solvimon's guide "Configuring entitlements for AI products", replayed call by call.

Every curl command of the guide (``guide/solvimon_guide_commands.sh``, verbatim) runs through
the real ``curl`` against a real server, its host swapped; every answer is checked against
what the guide shows. What the guide leaves to "Desk or the API" (plans, their versions, the
customer and its subscription, usage events) is done through our API between the commands,
as docs/catalog.md describes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.api.v1_helpers import ok
from tests.support import ServerProcess

GUIDE = Path(__file__).parent / "guide" / "solvimon_guide_commands.sh"
HOST = "https://test.api.solvimon.com"
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "claude-3-5-haiku"]


def commands() -> list[str]:
    text = GUIDE.read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in text.split("\n\n")]
    return [p for p in paragraphs if p.startswith("curl ")]


def run(command: str, url: str, **swaps: str) -> tuple[int, str, Any]:
    """The guide's command with its host swapped (and placeholders filled): status,
    content type, JSON body."""
    cmd = command.replace(HOST, url)
    for name, value in swaps.items():
        cmd = cmd.replace(f"<{name}>", value)
    done = subprocess.run(
        ["bash", "-c", cmd + " -s -w '\\n%{http_code} %{content_type}'"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    body, _, tail = done.stdout.rpartition("\n")
    status, _, ctype = tail.partition(" ")
    return int(status), ctype, json.loads(body) if body else None


def entitled(body: Any) -> dict[str, dict[str, Any]]:
    assert set(body) == {"entitlements"}
    return {e["feature_reference"]: e for e in body["entitlements"]}


def shows(got: dict[str, Any], guide_json: dict[str, Any]) -> None:
    """Every field the guide shows is there with the guide's value."""
    for key, value in guide_json.items():
        assert got.get(key) == value, (key, got)


def admin_key(db_url: str, scope: str = "admin") -> str:
    """A key made with the CLI as docs/security.md says (the secret: last line)."""
    done = subprocess.run(
        [sys.executable, "-m", "allotment", "api-keys", "create", "--name", scope,
         "--scope", scope, "--db", db_url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1].strip()


@pytest.fixture(params=[False, True], ids=["open", "api-key"])
def guide_server(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    new_db_url: Callable[[], str],
    make_server: Callable[..., ServerProcess],
) -> tuple[ServerProcess, str]:
    """A server for the guide: without keys (loopback), or with one, which then replaces the
    guide's ``<apiKey>`` and authenticates our own calls."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    config = tmp_path / "guide.yaml"
    meters = [{"slug": "completion_tokens", "eventType": "completion", "aggregation": "SUM",
               "valueProperty": "$.tokens"}]  # fmt: skip
    config.write_text(yaml.safe_dump({"meters": meters}), encoding="utf-8")
    db = new_db_url()
    key = admin_key(db) if request.param else "<apiKey>"
    return make_server(db, config=config), key


def test_the_guide_replays(guide_server: tuple[ServerProcess, str]) -> None:
    server, key = guide_server
    url = server.url
    cmds = iter(commands())
    assert len(commands()) == 9
    with httpx.Client(base_url=url, timeout=30, headers={"X-API-KEY": key}) as api:

        def plan_version(ref: str, values: list[dict[str, Any]]) -> int:
            r = api.post(f"/v1/pricing-plans/{ref}/versions", json={"entitlements": values})
            version: int = ok(r, 201)["version"]
            return version

        # -- Rate limits: define the feature
        status, ctype, body = run(next(cmds), url, apiKey=key)
        assert (status, ctype) == (201, "application/json")
        assert (body["reference"], body["type"], body["name"]) == (
            "requests_per_minute", "NUMBER", "Requests Per Minute")  # fmt: skip
        # Assign different values per plan (Desk or API): Starter 60, Pro 600, Enterprise 6000
        rpm = {"starter": "60", "pro": "600", "enterprise": "6000"}
        for ref, n in rpm.items():
            ok(api.post("/v1/pricing-plans", json={"reference": ref, "name": ref.title(),
               "entitlements": [{"feature_reference": "requests_per_minute", "number": n}]}),
               201)  # fmt: skip
        ok(api.post("/v1/customers", json={"reference": "acme-corp", "name": "Acme Corp"}), 201)
        sub = ok(api.post("/v1/pricing-plan-subscriptions", json={
            "customer_reference": "acme-corp", "pricing_plan_reference": "pro"}), 201)  # fmt: skip
        assert (sub["status"], sub["pricing_plan_version"], sub["end_at"]) == ("ACTIVE", 1, None)
        # -- Enforce at runtime: the guide's answer
        status, ctype, body = run(next(cmds), url, apiKey=key)
        assert (status, ctype) == (200, "application/json")
        shows(entitled(body)["requests_per_minute"],
              {"feature_reference": "requests_per_minute", "number": "600"})  # fmt: skip

        # -- Monthly token budgets: define the feature
        status, ctype, body = run(next(cmds), url, apiKey=key)
        assert (status, body["reference"], body["type"]) == (201, "monthly_token_budget", "NUMBER")
        budget = {"starter": "1000000", "pro": "10000000"}
        for ref, n in budget.items():
            plan_version(ref, [
                {"feature_reference": "requests_per_minute", "number": rpm[ref]},
                {"feature_reference": "monthly_token_budget", "number": n},
            ])  # fmt: skip
        moved = ok(api.patch(f"/v1/pricing-plan-subscriptions/{sub['id']}", json={
            "pricing_plan_reference": "pro", "pricing_plan_version": 2}))  # fmt: skip
        assert (moved["id"], moved["pricing_plan_version"]) == (sub["id"], 2)
        # usage the application reports (1 250 completion tokens)
        events = [{"specversion": "1.0", "id": f"e{i}", "source": "guide", "type": "completion",
                   "subject": "acme-corp", "data": {"tokens": t}}
                  for i, t in enumerate((1000, 250))]  # fmt: skip
        r = api.post(
            "/api/v1/events",
            json=events,
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        assert r.status_code == 204, r.text
        # -- Check usage and budget before each request: the entitlement value ...
        status, ctype, body = run(next(cmds), url, apiKey=key)
        assert (status, ctype) == (200, "application/json")
        got = entitled(body)
        shows(got["monthly_token_budget"], {"number": "10000000", "source": "PLAN"})
        shows(got["requests_per_minute"], {"number": "600"})
        # ... and the current period's usage
        status, ctype, body = run(next(cmds), url, apiKey=key)
        assert (status, ctype) == (200, "application/json")
        (row,) = body["data"]
        shows(row, {"meter_reference": "completion_tokens", "customer_reference": "acme-corp",
                    "value": "1250"})  # fmt: skip
        assert set(row["period"]) == {"from", "to"}

        # -- Model access tiers: define the feature
        status, ctype, body = run(next(cmds), url, apiKey=key)
        assert (status, body["type"], body["enum_values"]) == (201, "ENUM", MODELS)
        tiers = {"starter": ["gpt-4o-mini", "claude-3-5-haiku"], "pro": MODELS}
        for ref in tiers:
            plan_version(ref, [
                {"feature_reference": "requests_per_minute", "number": rpm[ref]},
                {"feature_reference": "monthly_token_budget", "number": budget[ref]},
                {"feature_reference": "available_models", "enums": tiers[ref]},
            ])  # fmt: skip
        # the guide's answer is a Starter customer's: move acme-corp to Starter's newest version
        ok(api.patch(f"/v1/pricing-plan-subscriptions/{sub['id']}",
                     json={"pricing_plan_reference": "starter"}))  # fmt: skip
        status, ctype, body = run(next(cmds), url, apiKey=key)
        assert (status, ctype) == (200, "application/json")
        got = entitled(body)
        shows(got["available_models"], {"feature_reference": "available_models",
                                        "enums": ["gpt-4o-mini", "claude-3-5-haiku"]})  # fmt: skip
        shows(got["requests_per_minute"], {"number": "60", "pricing_plan_reference": "starter"})

        # -- Feature flags (SWITCH): Starter false, Pro true
        status, ctype, body = run(next(cmds), url, apiKey=key)
        assert (status, body["type"]) == (201, "SWITCH")
        for ref, on in (("starter", False), ("pro", True)):
            plan_version(ref, [
                {"feature_reference": "requests_per_minute", "number": rpm[ref]},
                {"feature_reference": "monthly_token_budget", "number": budget[ref]},
                {"feature_reference": "available_models", "enums": tiers[ref]},
                {"feature_reference": "priority_queue", "switch": on},
            ])  # fmt: skip
        ok(api.patch(f"/v1/pricing-plan-subscriptions/{sub['id']}",
                     json={"pricing_plan_reference": "pro"}))  # fmt: skip
        got = entitled(ok(api.get("/v1/customers/acme-corp/entitlements")))
        shows(got["priority_queue"], {"feature_reference": "priority_queue", "switch": True})

        # -- Overriding entitlements per customer
        status, ctype, body = run(next(cmds), url, apiKey=key, subscription_id=sub["id"])
        assert (status, ctype) == (200, "application/json")
        assert (body["id"], body["pricing_plan_reference"], body["status"]) == (
            sub["id"], "pro", "ACTIVE")  # the customer stays on its plan  # fmt: skip
        got = entitled(ok(api.get("/v1/customers/acme-corp/entitlements")))
        shows(got["monthly_token_budget"], {"number": "100000000", "source": "OVERRIDE",
                                            "pricing_plan_reference": "pro"})  # fmt: skip
        shows(got["requests_per_minute"], {"number": "600", "source": "PLAN"})
        assert got["available_models"]["enums"] == MODELS
        assert next(cmds, None) is None
    if key != "<apiKey>":  # an application's key reads the one call, and changes nothing
        runtime = {"X-API-KEY": admin_key(server.db_url, "runtime")}
        r = httpx.get(f"{url}/v1/customers/acme-corp/entitlements", headers=runtime)
        assert r.status_code == 200, r.text
        body = {"reference": "other_feature", "name": "O", "type": "SWITCH"}
        r = httpx.post(f"{url}/v1/features", json=body, headers=runtime)
        assert r.status_code == 403, r.text
