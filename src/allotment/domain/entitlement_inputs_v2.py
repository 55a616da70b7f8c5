"""The ``/api/v2`` request bodies (``customers-contract.md`` §1.3) as the v1 inputs they mean.

* ``EntitlementV2CreateInputs``: v1's entitlement create, plus ``issue: {amount, priority?}``
  (preferred over the deprecated ``issueAfterReset``/``issueAfterResetPriority``) and
  ``grants: [EntitlementGrantCreateInputV2]`` created with the entitlement (metered only).
* ``EntitlementGrantCreateInputV2``: v1's grant create, except that ``expiration`` is
  optional (none: the grant never expires) and ``maxRolloverAmount`` defaults to the amount.

A rejection inside ``grants`` names its element (``grants[1].amount``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from allotment.domain.entitlement_inputs import (
    EntitlementCreate,
    GrantCreate,
    parse_entitlement_create,
    parse_grant_create,
)
from allotment.domain.errors import InvalidInput

_PLACEHOLDER_EXPIRATION = {"duration": "YEAR", "count": 1}


def parse_grant_create_v2(payload: Any) -> GrantCreate:
    if not isinstance(payload, dict):
        raise InvalidInput("request body must be a JSON object", field="body")
    body = dict(payload)
    never = body.get("expiration") is None
    if never:
        body["expiration"] = _PLACEHOLDER_EXPIRATION
    if body.get("maxRolloverAmount") is None and body.get("amount") is not None:
        body["maxRolloverAmount"] = body["amount"]
    grant = parse_grant_create(body)
    if never:
        grant = replace(grant, expiration_unit=None, expiration_count=None)
    return grant


def parse_entitlement_create_v2(payload: Any) -> tuple[EntitlementCreate, list[GrantCreate]]:
    if not isinstance(payload, dict):
        raise InvalidInput("request body must be a JSON object", field="body")
    body = dict(payload)
    issue = body.pop("issue", None)
    if issue is not None:
        if not isinstance(issue, dict):
            raise InvalidInput("issue: must be an object {amount, priority?}", field="issue")
        if issue.get("amount") is None:
            raise InvalidInput("issue.amount: required", field="issue.amount")
        body["issueAfterReset"] = issue["amount"]
        body["issueAfterResetPriority"] = issue.get("priority")
    raw_grants = body.pop("grants", None)
    inp = parse_entitlement_create(body if raw_grants is None else {**body, "grants": raw_grants})
    grants: list[GrantCreate] = []
    if raw_grants is not None:
        if not isinstance(raw_grants, list):
            raise InvalidInput("grants: must be an array of grants", field="grants")
        for index, raw in enumerate(raw_grants):
            try:
                grants.append(parse_grant_create_v2(raw))
            except InvalidInput as exc:
                where = f"grants[{index}]"
                name = f"{where}.{exc.field}" if exc.field and exc.field != "body" else where
                raise InvalidInput(f"{where}: {exc.detail}", field=name) from exc
    return inp, grants
