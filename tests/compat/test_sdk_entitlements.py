"""@openmeter/sdk@1.0.0-beta.185 against a real server: features, entitlements, grants.

``test_sdk_seed_documents`` runs the code of the seed documents (launch post, Get Started
guide, SDK README) on the shared server with the system clock. ``test_sdk_entitlements_full``
runs every entitlement method on a server of its own with a test clock, so every returned
value (times included) is known exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from tests.compat.sdk import (
    UNDEFINED,
    assert_problem,
    assert_time,
    assert_ulid,
    floor_minute,
    parse_time,
    run_scenario,
    set_clock,
)
from tests.support import ServerProcess, unique

T0 = "2023-01-01T00:00:00Z"  # setup
D1 = "2023-01-02T00:00:00Z"  # day1 step
L = "2023-01-02T01:00:00Z"  # later step
CONFIG = json.dumps({"integrations": ["github"]}, separators=(",", ":"))


def _by(items: list[dict[str, Any]], key: str = "id") -> dict[str, dict[str, Any]]:
    out = {item[key]: item for item in items}
    assert len(out) == len(items), f"duplicate {key} in {items}"
    return out


def _value(
    balance: int, usage: int, overage: int, total: int, access: bool = True
) -> dict[str, Any]:
    return {
        "hasAccess": access,
        "balance": balance,
        "usage": usage,
        "overage": overage,
        "totalAvailableGrantAmount": total,
    }


def _grants(items: list[dict[str, Any]], subject: str) -> list[dict[str, Any]]:
    """Grants as the SDK returned them, minus ``subjectKey`` (not in the SDK's EntitlementGrant
    type; older OpenMeter versions sent it, HEAD does not) after checking it names the subject."""
    out = []
    for grant in items:
        grant = dict(grant)
        assert grant.pop("subjectKey", subject) == subject, grant
        out.append(grant)
    return out


def _grant(got: dict[str, Any], subject: str) -> dict[str, Any]:
    return _grants([got], subject)[0]


def _feature(got: dict[str, Any], **expected: Any) -> None:
    assert_ulid(got["id"])
    assert got == {"id": got["id"], **expected}


def test_sdk_seed_documents(sdk: None, server: ServerProcess) -> None:
    customer = unique("customer")
    ai_tokens, gpt4_tokens = unique("ai_tokens"), unique("gpt_4_tokens")
    out = run_scenario(
        "seeds",
        server.url,
        {"customer": customer, "aiTokens": ai_tokens, "gpt4Tokens": gpt4_tokens},
    )

    feature = out["feature"]
    created = assert_time(feature["createdAt"])
    _feature(
        feature,
        key=ai_tokens,
        name="AI Tokens",
        meterSlug="tokens_total",
        createdAt=created,
        updatedAt=created,
    )
    gpt4 = out["featureGpt4"]
    _feature(
        gpt4,
        key=gpt4_tokens,
        name="GTP-4 Tokens",
        meterSlug="tokens_total",
        meterGroupByFilters={"model": "gpt-4"},
        advancedMeterGroupByFilters={"model": {"$eq": "gpt-4"}},
        createdAt=gpt4["createdAt"],
        updatedAt=gpt4["createdAt"],
    )
    assert out["feature2"] == feature

    for ent, feat, amount in (
        (out["entitlement"], feature, 10_000_000),
        (out["entitlementGpt4"], gpt4, 1_000_000),
    ):
        assert_ulid(ent["id"])
        created = assert_time(ent["createdAt"])
        start = floor_minute(created)  # measureUsageFrom: creation time truncated to the minute
        assert ent == {
            "id": ent["id"],
            "type": "metered",
            "featureId": feat["id"],
            "featureKey": feat["key"],
            "subjectKey": customer,
            "isSoftLimit": False,
            "isUnlimited": False,
            "issueAfterReset": amount,
            "issueAfterResetPriority": 1,
            "preserveOverageAtReset": False,
            "usagePeriod": {
                "interval": "MONTH",
                "intervalISO": "P1M",
                "anchor": ent["usagePeriod"]["anchor"],
            },
            "currentUsagePeriod": {"from": start, "to": ent["currentUsagePeriod"]["to"]},
            "lastReset": start,
            "measureUsageFrom": start,
            "activeFrom": ent["activeFrom"],
            "createdAt": created,
            "updatedAt": created,
        }
        assert ent["usagePeriod"]["anchor"] in (created, start)
        assert ent["activeFrom"] in (created, start)
        end = parse_time(ent["currentUsagePeriod"]["to"])
        begin = parse_time(start)
        assert (end.year * 12 + end.month) - (begin.year * 12 + begin.month) == 1  # one MONTH later

    assert out["ingest"] == UNDEFINED
    # seed 000: 10 000 000 issued after reset, 1 500 tokens used (1000 gpt-4 + 500 gpt-3.5)
    assert out["value"] == _value(9_998_500, 1_500, 0, 10_000_000)
    assert out["destructured"] == {
        "hasAccess": True,
        "balance": 9_998_500,
        "usage": 1_500,
        "overage": 0,
    }
    # seed 001: the feature only counts model=gpt-4
    assert out["valueGpt4"] == _value(999_000, 1_000, 0, 1_000_000)
    assert_problem(out["seedTypo"], 404)

    # the history of an entitlement created a moment ago: today's usage is there
    for name, ent, issued, used in (
        ("historyDay", out["entitlement"], 10_000_000, 1_500),
        ("historyHour", out["entitlement"], 10_000_000, 1_500),
        ("historyGpt4", out["entitlementGpt4"], 1_000_000, 1_000),
    ):
        _assert_fresh_history(out[name], ent["measureUsageFrom"], issued, used)

    ent = out["entitlement"]
    (grant,) = _grants(out["grants"], customer)
    assert_ulid(grant["id"])
    _assert_default_grant(grant, ent, 10_000_000, 1)
    assert parse_time(grant["expiresAt"]).year - parse_time(ent["createdAt"]).year == 100
    assert _by(out["entitlements"]).keys() == {ent["id"], out["entitlementGpt4"]["id"]}
    assert _by(out["entitlements"])[ent["id"]] == ent
    assert out["getEntitlement"] == ent

    # README calls verbatim (see docs/compatibility.md "SDK quirks")
    assert out["readmeGetByKey"] == ent  # by feature key
    assert_problem(out["readmeHistory"], 400, "windowSize")  # required, the README omits it
    assert_problem(out["readmeReset"], 404)  # no entitlement id: path ".../[object%20Object]/reset"
    assert out["readmeDeleteByKey"] == UNDEFINED
    assert_problem(out["valueAfterDelete"], 404)


def _assert_fresh_history(h: dict[str, Any], start: str, issued: int, used: int) -> None:
    """History from ``lastReset`` (= ``measureUsageFrom``) to now of an entitlement created
    moments ago: the first window is clipped at ``measureUsageFrom`` (OpenMeter drops it), the
    windows and the burn-down segments are contiguous from there, and each list's usage adds up
    to what was ingested."""
    assert set(h) == {"windowedHistory", "burndownHistory"}
    windows, segments = h["windowedHistory"], h["burndownHistory"]
    assert windows, h
    assert segments, h
    for items in (windows, segments):
        assert parse_time(items[0]["period"]["from"]) == parse_time(start)
        for a, b in pairwise(items):
            assert a["period"]["to"] == b["period"]["from"]
        assert sum(item["usage"] for item in items) == used
    assert windows[0]["balanceAtStart"] == segments[0]["balanceAtStart"] == issued
    assert segments[-1]["balanceAtEnd"] == issued - used
    assert all(s["overage"] == 0 for s in segments)


def _assert_default_grant(
    grant: dict[str, Any],
    ent: dict[str, Any],
    amount: int,
    priority: int,
    expires_at: str | None = None,
) -> None:
    """The grant issued by issueAfterReset (contract §7, engine-semantics §7)."""
    expected = {
        "id": grant["id"],
        "entitlementId": ent["id"],
        "amount": amount,
        "priority": priority,
        "effectiveAt": ent["measureUsageFrom"],
        "minRolloverAmount": amount,
        "maxRolloverAmount": amount,
        "annotations": {"issueAfterReset": True},
        "createdAt": ent["createdAt"],
        "updatedAt": ent["createdAt"],
    }
    # No expiration: like OpenMeter HEAD's v1 mapping, Allotment shows expiresAt 100 years
    # ahead and expiration = {"duration": "YEAR", "count": 100}, because the SDK's
    # EntitlementGrant type declares `expiration` required.
    expected["expiresAt"] = expires_at or assert_time(grant["expiresAt"])
    expected["expiration"] = {"duration": "YEAR", "count": 100}
    assert grant == expected


def _entitlement(got: dict[str, Any], **expected: Any) -> None:
    assert_ulid(got["id"])
    assert got == {"id": got["id"], **expected}


def test_sdk_entitlements_full(sdk: None, clock_server: Callable[[str], ServerProcess]) -> None:
    server = clock_server(T0)
    s = unique("customer")
    names = {
        "s": s,
        "s2": unique("customer"),
        "s3": unique("customer") + " with space",
        "fp": unique("tokens"),
        "fg": unique("gpt4"),
        "fb": unique("sso"),
        "fs": unique("models"),
    }
    fp, fg, fb, fs = names["fp"], names["fg"], names["fb"], names["fs"]

    # ---------------------------------------------------------------- setup at T0
    out = run_scenario("entitlements", server.url, names, "setup")
    plain, gpt4, flag, models = (
        out["featurePlain"],
        out["featureGpt4"],
        out["featureBool"],
        out["featureStatic"],
    )
    stamps = {"createdAt": T0, "updatedAt": T0}
    _feature(
        plain,
        key=fp,
        name="Plain Tokens",
        meterSlug="tokens_total",
        metadata={"team": "ai"},
        **stamps,
    )
    _feature(
        gpt4,
        key=fg,
        name="GPT-4 Tokens",
        meterSlug="tokens_total",
        meterGroupByFilters={"model": "gpt-4"},
        advancedMeterGroupByFilters={"model": {"$eq": "gpt-4"}},
        **stamps,
    )
    _feature(flag, key=fb, name="SSO", **stamps)
    _feature(models, key=fs, name="Models", **stamps)
    assert out["featureGetByKey"] == plain
    assert out["featureGetById"] == gpt4
    # no page/pageSize: a bare array (contract §1.7)
    assert isinstance(out["featureList"], list)
    assert _by(out["featureList"]) == _by([plain, gpt4, flag, models])
    paged = out["featureListPaged"]
    assert {k: v for k, v in paged.items() if k != "items"} == {
        "page": 1,
        "pageSize": 10,
        "totalCount": 2,
    }
    assert _by(paged["items"]) == _by([plain, gpt4])

    metered = out["metered"]
    metered_common = {
        "type": "metered",
        "featureId": plain["id"],
        "featureKey": fp,
        "subjectKey": s,
        "metadata": {"plan": "pro"},
        "isSoftLimit": False,
        "isUnlimited": False,
        "preserveOverageAtReset": False,
        "usagePeriod": {"interval": "MONTH", "intervalISO": "P1M", "anchor": T0},
        "measureUsageFrom": T0,
        "activeFrom": T0,
        "createdAt": T0,
    }
    _entitlement(
        metered,
        **metered_common,
        currentUsagePeriod={"from": T0, "to": "2023-02-01T00:00:00Z"},
        lastReset=T0,
        updatedAt=T0,
    )
    gpt4_ent = out["meteredGpt4"]
    gpt4_common = {
        "type": "metered",
        "featureId": gpt4["id"],
        "featureKey": fg,
        "subjectKey": s,
        "isSoftLimit": True,
        "isUnlimited": False,
        "issueAfterReset": 100,
        "issueAfterResetPriority": 5,
        "preserveOverageAtReset": False,
        "usagePeriod": {"interval": "DAY", "intervalISO": "P1D", "anchor": T0},
        "lastReset": T0,
        "measureUsageFrom": T0,
        "activeFrom": T0,
        "createdAt": T0,
        "updatedAt": T0,
    }
    _entitlement(gpt4_ent, **gpt4_common, currentUsagePeriod={"from": T0, "to": D1})
    static = out["static"]
    _entitlement(
        static,
        type="static",
        featureId=models["id"],
        featureKey=fs,
        subjectKey=s,
        config=CONFIG,
        activeFrom=T0,
        **stamps,
    )
    boolean = out["boolean"]
    _entitlement(
        boolean,
        type="boolean",
        featureId=flag["id"],
        featureKey=fb,
        subjectKey=s,
        activeFrom=T0,
        **stamps,
    )

    # subjectIdOrKey resolution: the id of an upserted subject means that subject's key
    (upserted,) = out["upsertS2"]
    assert upserted["key"] == names["s2"]
    for key, subject, config in (
        ("staticBySubjectId", names["s2"], "{}"),
        ("staticSpaceKey", names["s3"], "[1]"),
    ):
        _entitlement(
            out[key],
            type="static",
            featureId=models["id"],
            featureKey=fs,
            subjectKey=subject,
            config=config,
            activeFrom=T0,
            **stamps,
        )
    assert out["valueSpaceKey"] == {"hasAccess": True, "config": "[1]"}
    assert out["valueBySubjectId"] == {"hasAccess": True, "config": "{}"}

    # The README grant: anchor and effectiveAt truncated to the minute (contract §1.6);
    # nextRecurrence = first recurrence instant >= now.
    readme = _grant(out["grantReadme"], s)
    readme_expected = {
        "id": assert_ulid(readme["id"]),
        "entitlementId": metered["id"],
        "amount": 100,
        "priority": 1,
        "effectiveAt": T0,
        "expiration": {"duration": "HOUR", "count": 12},
        "expiresAt": "2023-01-01T12:00:00Z",
        "minRolloverAmount": 100,
        "maxRolloverAmount": 100,
        "recurrence": {"interval": "MONTH", "intervalISO": "P1M", "anchor": "2024-06-28T18:29:00Z"},
        "nextRecurrence": "2023-01-28T18:29:00Z",
        **stamps,
    }
    assert readme == readme_expected
    promo = _grant(out["grantPromo"], s)
    promo_expected = {
        "id": assert_ulid(promo["id"]),
        "entitlementId": metered["id"],
        "amount": 1000,
        "priority": 2,
        "effectiveAt": T0,
        "expiration": {"duration": "YEAR", "count": 1},
        "expiresAt": "2024-01-01T00:00:00Z",
        "minRolloverAmount": 0,
        "maxRolloverAmount": 500,
        "metadata": {"reason": "promo"},
        **stamps,
    }
    assert promo == promo_expected
    assert out["ingest"] == UNDEFINED

    # ---------------------------------------------------------------- day1 at D1
    set_clock(server.url, D1)
    ids = {"metered": metered["id"]}
    out = run_scenario("entitlements", server.url, {**names, **ids}, "day1")
    # 30 tokens at 00:30 burn the README grant (priority 1) -> 70 left, which expires at 12:00;
    # 200 tokens at 13:00 burn the promo grant -> 800.
    assert out["valueByKey"] == _value(800, 230, 0, 1030)
    assert out["valueById"] == out["valueByKey"]
    assert out["valueAt"] == _value(1070, 30, 0, 1100)
    assert out["valueAtBeforeStart"] == {"hasAccess": False}
    # DAY periods, default grant of 100 refilled at every reset; soft limit
    assert out["valueGpt4"] == _value(100, 0, 0, 100)
    assert out["valueGpt4At"] == _value(70, 30, 0, 100)
    assert out["valueStatic"] == {"hasAccess": True, "config": CONFIG}
    assert out["valueBoolean"] == {"hasAccess": True}

    assert _by(_grants(out["grantsByKey"], s)) == _by([readme_expected, promo_expected])
    assert _by(_grants(out["grantsById"], s)) == _by([readme_expected, promo_expected])
    (default_grant,) = _grants(out["grantsGpt4"], s)
    _assert_default_grant(default_grant, gpt4_ent, 100, 5, "2123-01-02T00:00:00Z")  # D1 + 100y
    assert isinstance(out["grantsList"], list)
    assert _by(_grants(out["grantsList"], s)) == _by(
        [readme_expected, promo_expected, default_grant]
    )
    paged = out["grantsListPaged"]
    assert {k: v for k, v in paged.items() if k != "items"} == {
        "page": 1,
        "pageSize": 10,
        "totalCount": 2,
    }
    assert _by(_grants(paged["items"], s)) == _by([readme_expected, promo_expected])

    g1, g2 = readme["id"], promo["id"]
    assert out["history"] == {
        "windowedHistory": [
            {"period": {"from": T0, "to": D1}, "usage": 230, "balanceAtStart": 1100}
        ],
        "burndownHistory": [
            {
                "period": {"from": T0, "to": "2023-01-01T12:00:00Z"},
                "usage": 30,
                "overage": 0,
                "balanceAtStart": 1100,
                "grantBalancesAtStart": {g1: 100, g2: 1000},
                "balanceAtEnd": 1070,
                "grantBalancesAtEnd": {g1: 70, g2: 1000},
                "grantUsages": [{"grantId": g1, "usage": 30}, {"grantId": g2, "usage": 0}],
            },
            {
                "period": {"from": "2023-01-01T12:00:00Z", "to": D1},
                "usage": 200,
                "overage": 0,
                "balanceAtStart": 1000,
                # the README grant expired at 12:00: only active grants are listed
                "grantBalancesAtStart": {g2: 1000},
                "balanceAtEnd": 800,
                "grantBalancesAtEnd": {g2: 800},
                "grantUsages": [{"grantId": g2, "usage": 200}],
            },
        ],
    }

    # history by feature key, HOUR windows around the README grant's expiry at 12:00
    assert out["historyByKey"] == {
        "windowedHistory": [
            {
                "period": {"from": "2023-01-01T12:00:00Z", "to": "2023-01-01T13:00:00Z"},
                "usage": 0,
                "balanceAtStart": 1000,
            },
            {
                "period": {"from": "2023-01-01T13:00:00Z", "to": "2023-01-01T14:00:00Z"},
                "usage": 200,
                "balanceAtStart": 1000,
            },
        ],
        "burndownHistory": [
            {
                "period": {"from": "2023-01-01T12:00:00Z", "to": "2023-01-01T14:00:00Z"},
                "usage": 200,
                "overage": 0,
                "balanceAtStart": 1000,
                "grantBalancesAtStart": {g2: 1000},
                "balanceAtEnd": 800,
                "grantBalancesAtEnd": {g2: 800},
                "grantUsages": [{"grantId": g2, "usage": 200}],
            },
        ],
    }

    # resetEntitlementUsage: typed as Promise<Entitlement>, the server sends 204 -> undefined
    assert out["reset"] == UNDEFINED
    after_reset = out["afterReset"]
    assert after_reset["updatedAt"] in (T0, D1)
    _entitlement(
        after_reset,
        **metered_common,
        currentUsagePeriod={"from": D1, "to": "2023-02-01T00:00:00Z"},  # retainAnchor
        lastReset=D1,
        updatedAt=after_reset["updatedAt"],
    )
    assert after_reset["id"] == metered["id"]
    # rollover: README grant expired; promo min(500, max(0, 800)) = 500
    assert out["valueAfterReset"] == _value(500, 0, 0, 500)

    # ---------------------------------------------------------------- later at L
    set_clock(server.url, L)
    ids.update(
        meteredGpt4=gpt4_ent["id"], boolean=boolean["id"], staticId=static["id"], grantPromo=g2
    )
    out = run_scenario("entitlements", server.url, {**names, **ids}, "later")
    assert out["voidGrant"] == UNDEFINED
    assert out["valueAfterVoid"] == _value(0, 0, 0, 0, access=False)
    after_void = _by(_grants(out["grantsAfterVoid"], s))
    voided = after_void[g2]
    assert voided["updatedAt"] in (T0, L)
    assert voided == {**promo_expected, "voidedAt": L, "updatedAt": voided["updatedAt"]}
    assert after_void[g1] == readme_expected

    override = out["override"]
    assert override["id"] != metered["id"]
    _entitlement(
        override,
        type="metered",
        featureId=plain["id"],
        featureKey=fp,
        subjectKey=s,
        isSoftLimit=False,
        isUnlimited=False,
        issueAfterReset=500,
        issueAfterResetPriority=1,
        preserveOverageAtReset=False,
        usagePeriod={"interval": "WEEK", "intervalISO": "P1W", "anchor": L},
        currentUsagePeriod={"from": L, "to": "2023-01-09T01:00:00Z"},
        lastReset=L,
        measureUsageFrom=L,
        activeFrom=L,
        createdAt=L,
        updatedAt=L,
    )
    old = out["overridden"]
    assert old["deletedAt"] == L
    assert old.get("activeTo", L) == L
    assert old["updatedAt"] in (D1, T0, L)
    assert {
        k: v
        for k, v in old.items()
        if k not in {"deletedAt", "activeTo", "updatedAt", "currentUsagePeriod"}
    } == {k: v for k, v in after_reset.items() if k not in {"updatedAt", "currentUsagePeriod"}}
    assert out["valueAfterOverride"] == _value(500, 0, 0, 500)

    assert out["deleteBoolean"] == UNDEFINED
    assert_problem(out["valueDeleted"], 404)
    deleted = out["deletedBoolean"]
    assert deleted["updatedAt"] in (T0, L)
    assert deleted == {
        **boolean,
        "deletedAt": L,
        "updatedAt": deleted["updatedAt"],
        **({"activeTo": L} if "activeTo" in deleted else {}),
    }

    gpt4_now = {**gpt4_ent, "currentUsagePeriod": {"from": D1, "to": "2023-01-03T00:00:00Z"}}
    active = _by([override, gpt4_now, static])
    assert _by(out["listSubject"]) == active
    assert out["getSubjectEntitlement"] == static
    assert isinstance(out["list"], list)
    assert _by(out["list"]) == active
    assert out["listStaticPaged"] == {"page": 1, "pageSize": 10, "totalCount": 1, "items": [static]}
    assert out["getGpt4"] == gpt4_now

    assert out["deleteFeature"] == UNDEFINED
    assert_problem(out["getDeletedFeature"], 404)
    archived = _by(out["featuresWithArchived"])
    assert archived[flag["id"]]["updatedAt"] in (T0, L)
    assert archived == _by(
        [
            plain,
            gpt4,
            models,
            {**flag, "archivedAt": L, "updatedAt": archived[flag["id"]]["updatedAt"]},
        ]
    )
