"""HTTP routes: subjects (upsert, list, get, delete). See docs/api/subjects.md."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from allotment.domain.timeutil import format_rfc3339
from allotment.http.params import decode_json, read_body
from allotment.http.responses import json_response, no_content
from allotment.http.runtime import call, container
from allotment.storage.subjects_repo import SubjectRecord


def subject_json(s: SubjectRecord) -> dict[str, Any]:
    """The wire ``Subject``: unset optional fields (and empty metadata) are absent."""
    out: dict[str, Any] = {"id": s.id, "key": s.key}
    if s.display_name is not None:
        out["displayName"] = s.display_name
    if s.metadata:
        out["metadata"] = s.metadata
    if s.stripe_customer_id is not None:
        out["stripeCustomerId"] = s.stripe_customer_id
    if s.current_period_start is not None:
        out["currentPeriodStart"] = format_rfc3339(s.current_period_start)
    if s.current_period_end is not None:
        out["currentPeriodEnd"] = format_rfc3339(s.current_period_end)
    out["createdAt"] = format_rfc3339(s.created_at)
    out["updatedAt"] = format_rfc3339(s.updated_at)
    if s.deleted_at is not None:
        out["deletedAt"] = format_rfc3339(s.deleted_at)
    return out


async def upsert_subjects(request: Request) -> Response:
    payload = decode_json(await read_body(request))
    subjects = await call(container(request).subjects.upsert, payload)
    return json_response([subject_json(s) for s in subjects])


async def list_subjects(request: Request) -> Response:
    subjects = await call(container(request).subjects.list_all)
    return json_response([subject_json(s) for s in subjects])


async def get_subject(request: Request) -> Response:
    subject = await call(container(request).subjects.get, request.path_params["subjectIdOrKey"])
    return json_response(subject_json(subject))


async def delete_subject(request: Request) -> Response:
    await call(container(request).subjects.delete, request.path_params["subjectIdOrKey"])
    return no_content()


ROUTES: list[BaseRoute] = [
    Route("/api/v1/subjects", upsert_subjects, methods=["POST"]),
    Route("/api/v1/subjects", list_subjects, methods=["GET"]),
    Route("/api/v1/subjects/{subjectIdOrKey}", get_subject, methods=["GET"]),
    Route("/api/v1/subjects/{subjectIdOrKey}", delete_subject, methods=["DELETE"]),
]
