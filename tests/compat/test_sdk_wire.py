"""Wire conventions seen through @openmeter/sdk@1.0.0-beta.185: every error reaches the SDK user
as an HttpError with the parsed problem (exact ``application/problem+json``), ``problem.status``
equal to the HTTP status and a ``detail``; success bodies are exactly ``application/json``."""

from __future__ import annotations

from tests.compat.sdk import assert_problem, assert_raw_problem, run_scenario
from tests.support import ServerProcess, unique

EXPECTED_STATUS = {
    "meterGetUnknown": 404,
    "meterQueryUnknown": 404,
    "meterSubjectsUnknown": 404,
    "queryBadGroupBy": 400,
    "queryBadFilter": 400,
    "queryBadTimeZone": 400,
    "queryBadWindowSize": 400,
    "queryFromEqualsTo": 400,
    "queryFromAfterTo": 400,
    "ingestEmptySubject": 400,
    "ingestBatchOneBad": 400,
    "listLimitTooBig": 400,
    "listLimitZero": 400,
    "subjectGetUnknown": 404,
    "subjectDeleteUnknown": 404,
    "subjectBadStripe": 400,
    "featureGetUnknown": 404,
    "featureDeleteUnknown": 404,
    "featureUnknownMeter": 404,
    "featureBadKey": 400,
    "featureBadFilter": 400,
    "featureDuplicate": 409,
    "entitlementNoPeriod": 400,
    "entitlementUnknownFeature": 404,
    "entitlementMeteredOnFlag": 400,
    "entitlementStaticBadConfig": 400,
    "entitlementDuplicate": 409,
    "entitlementGetUnknown": 404,
    "subjectEntitlementGetUnknown": 404,
    "entitlementDeleteUnknown": 404,
    "entitlementListBadType": 400,
    "valueUnknownFeature": 404,
    "historyNoWindowSize": 400,
    "resetInFuture": 400,
    "overrideUnknown": 404,
    "grantZeroAmount": 400,
    "grantBadExpiration": 400,
    "grantUnknownEntitlement": 404,
    "grantDeleteUnknown": 404,
    "grantListBadPageSize": 400,
    "portalEmptySlugs": 400,
    "portalUnknownSlug": 404,
}

# the detail names the offending field or value (docs/contributing.md "Errors")
DETAIL_NAMES = {
    "meterGetUnknown": "no_such_meter",
    "queryBadGroupBy": "nope",
    "queryBadFilter": "nope",
    "queryBadTimeZone": "Mars/Olympus",
    "queryBadWindowSize": "windowSize",
    "queryFromEqualsTo": "from",
    "ingestEmptySubject": "subject",
    "ingestBatchOneBad": "type",
    "listLimitTooBig": "limit",
    "subjectBadStripe": "stripeCustomerId",
    "featureUnknownMeter": "no_such_meter",
    "featureBadKey": "key",
    "featureBadFilter": "nope",
    "entitlementNoPeriod": "usagePeriod",
    "entitlementStaticBadConfig": "config",
    "entitlementListBadType": "entitlementType",
    "historyNoWindowSize": "windowSize",
    "resetInFuture": "effectiveAt",
    "grantZeroAmount": "amount",
    "grantBadExpiration": "expiration",
    "grantListBadPageSize": "pageSize",
    "portalEmptySlugs": "allowedMeterSlugs",
    "portalUnknownSlug": "no_such_meter",
}


def test_sdk_errors_are_parsed_problems(sdk: None, server: ServerProcess) -> None:
    s, f, fb = unique("customer"), unique("tokens"), unique("flag")
    out = run_scenario("wire", server.url, {"s": s, "f": f, "fb": fb})

    failures = []
    for case, status in EXPECTED_STATUS.items():
        try:
            assert_problem(out[case], status, DETAIL_NAMES.get(case))
        except AssertionError as exc:
            failures.append(f"{case}: expected {status}: {exc}")
    assert not failures, "\n".join(failures)

    # 409 on an entitlement conflict names the existing entitlement (contract §6.1)
    conflict = out["entitlementDuplicate"]["problem"]
    assert conflict["extensions"] == {"conflictingEntityId": out["entitlementId"]}
    # the valid half of a rejected batch was not stored
    assert out["afterBadBatch"] == {"data": []}

    assert_raw_problem(out["portalBadToken"], 401)
    assert_raw_problem(out["unknownRoute"], 404)
    assert_raw_problem(out["wrongMethod"], 405)
    assert out["successContentType"] == "application/json"
