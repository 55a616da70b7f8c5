"""Plans as code: the config's ``catalog:`` section, applied at start-up idempotently and
checked by ``allotment check-config`` with the API's messages (docs/catalog.md)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.api.v1_helpers import ok, v1_problem
from tests.support import ServerProcess, unique

METERS = [{"slug": "completion_tokens", "eventType": "completion", "aggregation": "SUM",
           "valueProperty": "$.tokens"}]  # fmt: skip


def catalog(models: list[str], budget: str = "1000000") -> dict[str, Any]:
    return {
        "features": [
            {"reference": "available_models", "name": "Available Models", "type": "ENUM",
             "enum_values": ["gpt-4o", "gpt-4o-mini"]},
            {"reference": "token_budget", "name": "Tokens", "type": "NUMBER",
             "meter_reference": "completion_tokens"},
        ],
        "plans": [
            {"reference": "starter", "name": "Starter", "entitlements": [
                {"feature_reference": "available_models", "enums": models},
                {"feature_reference": "token_budget", "number": budget},
            ]},
        ],
    }  # fmt: skip


def write(tmp_path: Path, body: dict[str, Any]) -> Path:
    path = tmp_path / f"{unique('cfg')}.yaml"
    path.write_text(yaml.safe_dump({"meters": METERS, **body}), encoding="utf-8")
    return path


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "allotment", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_check_config_accepts_a_catalog(tmp_path: Path) -> None:
    done = check_config(write(tmp_path, {"catalog": catalog(["gpt-4o-mini"])}))
    assert done.returncode == 0, done.stderr
    assert "2 catalog feature(s), 1 plan(s)" in done.stdout


def test_check_config_says_what_the_api_says(client: httpx.Client, tmp_path: Path) -> None:
    enum = unique("f")
    body = {
        "reference": enum,
        "name": "M",
        "type": "ENUM",
        "enum_values": ["gpt-4o", "gpt-4o-mini"],
    }
    ok(client.post("/v1/features", json=body), 201)
    cases = [
        ({"enums": ["gpt-5"]}, "ENUM_VALUE_NOT_ALLOWED"),
        ({"enums": "gpt-4o"}, "ENUM_VALUE_NOT_ALLOWED"),
        ({"number": 5}, "VALUE_TYPE_MISMATCH"),
    ]
    for value, code in cases:
        body = {"reference": unique("p"), "name": "P",
                "entitlements": [{"feature_reference": enum, **value}]}  # fmt: skip
        detail = v1_problem(client.post("/v1/pricing-plans", json=body), 400, code)["detail"]
        cat = catalog(["gpt-4o"])
        cat["features"][0]["reference"] = enum
        cat["plans"][0]["entitlements"] = [{"feature_reference": enum, **value}]
        done = check_config(write(tmp_path, {"catalog": cat}))
        assert done.returncode == 2
        assert f"catalog.plans[0] (starter): {detail}" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda c: c["features"][0].pop("enum_values"), "enum_values: required"),
        (lambda c: c["features"][1].update(meter_reference="nope"), "meter 'nope' not found"),
        (lambda c: c["plans"][0]["entitlements"][1].update(number="-3"), "is negative"),
        (
            lambda c: c["plans"][0]["entitlements"][0].update(feature_reference="zz"),
            "feature 'zz' not found",
        ),
        (lambda c: c.update(extra=[]), "catalog.extra: unknown section"),
        (lambda c: c["features"].append(dict(c["features"][0])), "declared twice"),
    ],
)
def test_check_config_refuses(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], Any], words: str
) -> None:
    cat = catalog(["gpt-4o"])
    mutate(cat)
    done = check_config(write(tmp_path, {"catalog": cat}))
    assert done.returncode == 2
    assert words in done.stderr, done.stderr


def _plan(server: ServerProcess) -> dict[str, Any]:
    with server.client() as c:
        out: dict[str, Any] = ok(c.get("/v1/pricing-plans/starter"))
        return out


def test_start_up_applies_idempotently_and_versions_changes(
    tmp_path: Path, new_db_url: Callable[[], str], make_server: Callable[..., ServerProcess]
) -> None:
    db = new_db_url()
    first = write(tmp_path, {"catalog": catalog(["gpt-4o-mini"])})
    server = make_server(db, config=first)
    plan = _plan(server)
    assert plan["version"] == 1
    assert plan["entitlements"][0]["enums"] == ["gpt-4o-mini"]
    with server.client() as c:
        f = ok(c.get("/v1/features/token_budget"))
        assert f["meter_reference"] == "completion_tokens"
        assert ok(c.get("/api/v1/features/available_models"))["key"] == "available_models"
    server.stop()
    again = make_server(db, config=first)  # same file: nothing changes
    assert _plan(again)["versions"] == plan["versions"]
    again.stop()
    changed = write(tmp_path, {"catalog": catalog(["gpt-4o-mini", "gpt-4o"])})
    third = make_server(db, config=changed)  # changed values: a new version, v1 untouched
    plan3 = _plan(third)
    assert [v["version"] for v in plan3["versions"]] == [1, 2]
    assert plan3["entitlements"][0]["enums"] == ["gpt-4o-mini", "gpt-4o"]
    with third.client() as c:
        v1 = ok(c.get("/v1/pricing-plans/starter/versions/1"))
        assert v1["entitlements"][0]["enums"] == ["gpt-4o-mini"]
    third.stop()


def test_start_up_refuses_an_edited_feature(
    tmp_path: Path, new_db_url: Callable[[], str], make_server: Callable[..., ServerProcess]
) -> None:
    db = new_db_url()
    make_server(db, config=write(tmp_path, {"catalog": catalog(["gpt-4o"])})).stop()
    cat = catalog(["gpt-4o"])
    cat["features"][0]["enum_values"] = ["gpt-4o", "o1"]
    with pytest.raises(RuntimeError, match="exists with another definition"):
        make_server(db, config=write(tmp_path, {"catalog": cat}))
