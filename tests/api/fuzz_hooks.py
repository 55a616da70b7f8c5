"""Schemathesis hooks of the fuzz run (loaded with ``SCHEMATHESIS_HOOKS``; test_openapi_fuzz.py).

Two auth providers: the portal query and the usage page (``/console/portal``) get a portal
token minted for the seeded subject (and minted again after a 401, since the run's own
``POST /api/v1/portal/tokens/invalidate`` revokes every token), every other operation the
admin key. The test passes the server, the key
and the subject in ``FUZZ_BASE_URL``, ``FUZZ_ADMIN_KEY`` and ``FUZZ_PORTAL_SUBJECT``.
A ``before_call`` hook gives the console's forms the CSRF cookie that matches their field.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis

from allotment.http.console.access import CSRF_COOKIE, CSRF_FIELD

PORTAL_PATHS = ["/api/v1/portal/meters/{meterSlug}/query", "/console/portal"]
"""Operations a portal token opens: the portal query, and the usage page that shows it."""


def _bearer(case: Any, token: str) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


@schemathesis.auth(refresh_interval=None).skip_for(path=PORTAL_PATHS)
class AdminKey:
    def get(self, case: Any, context: Any) -> str:
        return os.environ["FUZZ_ADMIN_KEY"]

    def set(self, case: Any, data: str, context: Any) -> None:
        _bearer(case, data)


@schemathesis.auth(refresh_interval=300).apply_to(path=PORTAL_PATHS)
class PortalToken:
    def get(self, case: Any, context: Any) -> str:
        r = httpx.post(
            os.environ["FUZZ_BASE_URL"] + "/api/v1/portal/tokens",
            json={"subject": os.environ["FUZZ_PORTAL_SUBJECT"]},
            headers={"authorization": "Bearer " + os.environ["FUZZ_ADMIN_KEY"]},
            timeout=10.0,
        )
        r.raise_for_status()
        return str(r.json()["token"])

    def set(self, case: Any, data: str, context: Any) -> None:
        _bearer(case, data)


CSRF_TOKEN = "fuzz-csrf-token"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    """A console form that carries a ``csrf`` field gets the token its browser would hold, in
    the field and in the console's CSRF cookie: the form's own handling is then fuzzed, not
    only the CSRF refusal in front of it (tests/console covers that refusal; a body without
    the field still meets it). The generated values of every other field are sent as made."""
    body = case.body
    if case.method.upper() != "POST" or not case.path.startswith("/console/"):
        return
    if isinstance(body, dict) and CSRF_FIELD in body:
        body[CSRF_FIELD] = CSRF_TOKEN
        case.cookies = {**(case.cookies or {}), CSRF_COOKIE: CSRF_TOKEN}
