"""HTTP routes: notification channels, rules and events (api-contract §9,
docs/notifications.md), and the wire form of the webhook payloads."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain import limits
from allotment.domain.customers import Customer
from allotment.domain.entitlement_inputs import Paging
from allotment.domain.entitlement_value import ValueView
from allotment.domain.errors import InvalidInput
from allotment.domain.features import Feature
from allotment.domain.ids import is_ulid
from allotment.domain.notifications import Threshold, parse_channel, parse_rule
from allotment.domain.timeutil import format_rfc3339
from allotment.http.params import get_bool, get_list, get_time
from allotment.http.responses import json_response, no_content, num
from allotment.http.routes.customers import customer_json
from allotment.http.routes.entitlements import (
    compact,
    entitlement_json,
    paging_from,
    read_json,
    time_or_none,
    value_json,
)
from allotment.http.routes.features import feature_json
from allotment.http.routes.subjects import subject_json
from allotment.http.runtime import call, container
from allotment.services.entitlements import EntitlementView
from allotment.services.notifications import EventView
from allotment.storage.notifications_repo import ChannelRecord, EventFilter, RuleRecord
from allotment.storage.subjects_repo import SubjectRecord

ORDER_FIELDS = ("id", "type", "createdAt", "updatedAt")

# ---------------------------------------------------------------- wire forms


def channel_json(c: ChannelRecord) -> dict[str, Any]:
    return compact(
        {
            "id": c.id,
            "type": c.type,
            "name": c.name,
            "disabled": c.disabled,
            "url": c.url,
            "customHeaders": dict(c.custom_headers) if c.custom_headers else None,
            "signingSecret": c.signing_secret,
            "metadata": dict(c.metadata) if c.metadata else None,
            "createdAt": format_rfc3339(c.created_at),
            "updatedAt": format_rfc3339(c.updated_at),
            "deletedAt": time_or_none(c.deleted_at),
        }
    )


def _channel_meta(channel_id: str, c: ChannelRecord | None) -> dict[str, Any]:
    return compact({"id": channel_id, "type": "WEBHOOK", "name": c.name if c else None})


def threshold_json(t: Threshold) -> dict[str, Any]:
    return {"value": num(t.value), "type": t.type.value}


def rule_json(
    r: RuleRecord, channels: Mapping[str, ChannelRecord], features: Mapping[str, Feature]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "type": r.type.value,
        "name": r.name,
        "disabled": r.disabled,
        "channels": [_channel_meta(cid, channels.get(cid)) for cid in r.channel_ids],
        "metadata": dict(r.metadata) if r.metadata else None,
        "createdAt": format_rfc3339(r.created_at),
        "updatedAt": format_rfc3339(r.updated_at),
        "deletedAt": time_or_none(r.deleted_at),
    }
    if r.thresholds:
        out["thresholds"] = [threshold_json(t) for t in r.thresholds]
    if r.feature_ids is not None:
        out["features"] = [
            compact({"id": fid, "key": features[fid].key if fid in features else None})
            for fid in r.feature_ids
        ]
    return compact(out)


def event_json(
    v: EventView, channels: Mapping[str, ChannelRecord], features: Mapping[str, Feature]
) -> dict[str, Any]:
    status = []
    for d in v.deliveries:
        status.append(
            compact(
                {
                    "state": d.state.value,
                    "reason": d.reason,
                    "updatedAt": format_rfc3339(d.updated_at),
                    "channel": {"id": d.channel_id, "type": "WEBHOOK"},
                    "nextAttempt": time_or_none(d.next_attempt_at),
                    "attempts": [
                        {
                            "state": a.state.value,
                            "response": compact(
                                {
                                    "statusCode": a.status_code,
                                    "body": a.body,
                                    "durationMs": a.duration_ms,
                                    "url": a.url,
                                }
                            ),
                            "timestamp": format_rfc3339(a.at),
                        }
                        for a in d.attempts
                    ],
                }
            )
        )
    return compact(
        {
            "id": v.event.id,
            "type": v.event.type,
            "createdAt": format_rfc3339(v.event.created_at),
            "rule": rule_json(v.rule, channels, features),
            "deliveryStatus": status,
            "payload": json.loads(v.event.payload, parse_float=Decimal),
            "annotations": dict(v.event.annotations) if v.event.annotations else None,
        }
    )


def render_payload(
    *,
    event_id: str,
    type: str,
    timestamp: datetime,
    entitlement: EntitlementView,
    feature: Feature,
    subject: SubjectRecord | None,
    value: Any,
    threshold: Threshold | None,
    customer: Customer | None = None,
    subject_key: str | None = None,
) -> dict[str, Any]:
    """The webhook body (OpenMeter's ``NotificationEvent*Payload``), stored with the event.
    A customer-owned entitlement's payload carries ``customer`` (OpenMeter's optional
    field), and names the customer's usage subject ``subject_key`` as ``subject`` and as the
    entitlement's ``subjectKey`` (both required in OpenMeter's shape)."""
    if isinstance(value, ValueView):
        value_wire = value_json(value)
    else:
        value_wire = {k: num(x) if isinstance(x, Decimal) else x for k, x in dict(value).items()}
    key = subject_key if subject_key is not None else entitlement.record.subject_key
    entitlement_wire = entitlement_json(entitlement)
    if customer is not None:
        entitlement_wire["subjectKey"] = key
    data: dict[str, Any] = {
        "entitlement": entitlement_wire,
        "feature": feature_json(feature),
        "subject": subject_json(subject) if subject else {"key": key},
        "value": value_wire,
    }
    if customer is not None:
        data["customer"] = customer_json(customer)
    if threshold is not None:
        data["threshold"] = threshold_json(threshold)
    return {"id": event_id, "type": type, "timestamp": format_rfc3339(timestamp), "data": data}


def _envelope(items: list[Any], total: int, paging: Paging) -> Response:
    """Notification lists always answer OpenMeter's page envelope."""
    return json_response(
        {"totalCount": total, "page": paging.page, "pageSize": paging.page_size, "items": items}
    )


def _paging(request: Request, fields: tuple[str, ...], default: str) -> Paging:
    """OpenMeter's page/pageSize (default page 1 of 100); always answered as an envelope."""
    paging = paging_from(request.query_params, fields, default)
    if paging.envelope:
        return paging
    size = limits.PAGE_SIZE_DEFAULT
    return replace(paging, envelope=True, page=1, page_size=size, limit=size, offset=0)


def _id(request: Request, name: str) -> str:
    value = str(request.path_params[name])
    if not is_ulid(value):
        raise InvalidInput(f"{name}: {value!r} is not a ULID", field=name)
    return value


def _ulid_list(request: Request, name: str) -> list[str]:
    values = get_list(request.query_params, name)
    for v in values:
        if not is_ulid(v):
            raise InvalidInput(f"query parameter {name}: {v!r} is not a ULID", field=name)
    return values


# ---------------------------------------------------------------- channels


async def create_channel(request: Request) -> Response:
    inp = parse_channel(await read_json(request))
    c = await call(container(request).notifications.create_channel, inp)
    return json_response(channel_json(c), status=201)


async def list_channels(request: Request) -> Response:
    q = request.query_params
    paging = _paging(request, ORDER_FIELDS, "id")
    items, total = await call(
        container(request).notifications.list_channels,
        get_bool(q, "includeDeleted", False),
        get_bool(q, "includeDisabled", False),
        paging,
    )
    return _envelope([channel_json(c) for c in items], total, paging)


async def get_channel(request: Request) -> Response:
    c = await call(container(request).notifications.get_channel, _id(request, "channelId"))
    return json_response(channel_json(c))


async def update_channel(request: Request) -> Response:
    channel_id = _id(request, "channelId")
    inp = parse_channel(await read_json(request))
    c = await call(container(request).notifications.update_channel, channel_id, inp)
    return json_response(channel_json(c))


async def delete_channel(request: Request) -> Response:
    await call(container(request).notifications.delete_channel, _id(request, "channelId"))
    return no_content()


# ---------------------------------------------------------------- rules


async def _rules_json(request: Request, rules: list[RuleRecord]) -> list[dict[str, Any]]:
    channels, features = await call(container(request).notifications.refs, rules)
    return [rule_json(r, channels, features) for r in rules]


async def create_rule(request: Request) -> Response:
    inp = parse_rule(await read_json(request))
    r = await call(container(request).notifications.create_rule, inp)
    return json_response((await _rules_json(request, [r]))[0], status=201)


async def list_rules(request: Request) -> Response:
    q = request.query_params
    paging = _paging(request, ORDER_FIELDS, "id")
    items, total = await call(
        container(request).notifications.list_rules,
        get_bool(q, "includeDeleted", False),
        get_bool(q, "includeDisabled", False),
        get_list(q, "feature"),
        _ulid_list(request, "channel"),
        paging,
    )
    return _envelope(await _rules_json(request, items), total, paging)


async def get_rule(request: Request) -> Response:
    r = await call(container(request).notifications.get_rule, _id(request, "ruleId"))
    return json_response((await _rules_json(request, [r]))[0])


async def update_rule(request: Request) -> Response:
    rule_id = _id(request, "ruleId")
    inp = parse_rule(await read_json(request))
    r = await call(container(request).notifications.update_rule, rule_id, inp)
    return json_response((await _rules_json(request, [r]))[0])


async def delete_rule(request: Request) -> Response:
    await call(container(request).notifications.delete_rule, _id(request, "ruleId"))
    return no_content()


async def test_rule(request: Request) -> Response:
    v = await call(container(request).notifications.test_rule, _id(request, "ruleId"))
    return json_response((await _events_json(request, [v]))[0], status=201)


# ---------------------------------------------------------------- events


async def _events_json(request: Request, views: list[EventView]) -> list[dict[str, Any]]:
    channels, features = await call(container(request).notifications.refs, [v.rule for v in views])
    return [event_json(v, channels, features) for v in views]


async def list_events(request: Request) -> Response:
    q = request.query_params
    paging = _paging(request, ("id", "createdAt"), "createdAt")
    f = EventFilter(
        from_=get_time(q, "from"),
        to=get_time(q, "to"),
        features=tuple(get_list(q, "feature")),
        subjects=tuple(get_list(q, "subject")),
        rules=tuple(_ulid_list(request, "rule")),
        channels=tuple(_ulid_list(request, "channel")),
    )
    views, total = await call(container(request).notifications.list_events, f, paging)
    return _envelope(await _events_json(request, views), total, paging)


async def get_event(request: Request) -> Response:
    v = await call(container(request).notifications.get_event, str(request.path_params["eventId"]))
    return json_response((await _events_json(request, [v]))[0])


async def resend_event(request: Request) -> Response:
    event_id = _id(request, "eventId")
    body = await read_json(request, allow_empty=True)
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", field="body")
    channels = body.get("channels")
    if channels is not None and (
        not isinstance(channels, list)
        or not all(isinstance(c, str) and is_ulid(c) for c in channels)
    ):
        raise InvalidInput("channels: must be a list of channel ids (ULIDs)", field="channels")
    await call(container(request).notifications.resend, event_id, channels)
    return Response(status_code=202)


ROUTES: list[BaseRoute] = [
    Route("/api/v1/notification/channels", list_channels, methods=["GET"]),
    Route("/api/v1/notification/channels", create_channel, methods=["POST"]),
    Route("/api/v1/notification/channels/{channelId}", get_channel, methods=["GET"]),
    Route("/api/v1/notification/channels/{channelId}", update_channel, methods=["PUT"]),
    Route("/api/v1/notification/channels/{channelId}", delete_channel, methods=["DELETE"]),
    Route("/api/v1/notification/rules", list_rules, methods=["GET"]),
    Route("/api/v1/notification/rules", create_rule, methods=["POST"]),
    Route("/api/v1/notification/rules/{ruleId}", get_rule, methods=["GET"]),
    Route("/api/v1/notification/rules/{ruleId}", update_rule, methods=["PUT"]),
    Route("/api/v1/notification/rules/{ruleId}", delete_rule, methods=["DELETE"]),
    Route("/api/v1/notification/rules/{ruleId}/test", test_rule, methods=["POST"]),
    Route("/api/v1/notification/events", list_events, methods=["GET"]),
    Route("/api/v1/notification/events/{eventId}", get_event, methods=["GET"]),
    Route("/api/v1/notification/events/{eventId}/resend", resend_event, methods=["POST"]),
]
