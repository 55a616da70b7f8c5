"""POST /v1/customers/{ref}/authorize and /v1/reservations over HTTP against a real server
(every backend): problems with code and field, 404s. The full contract with plans and
subscriptions is in tests/api/test_v1_enforcement.py."""

from __future__ import annotations

import httpx
import pytest

from tests.support import unique


def test_unknown_customer_is_404_with_code(client: httpx.Client) -> None:
    r = client.post(f"/v1/customers/{unique('c')}/authorize", json={"checks": []})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"consume": [{"feature_reference": "a", "amount": 0}]}, "consume[0].amount"),
        ({"reserve": [{"feature_reference": "a"}]}, "reserve[0].amount"),
        ({"reserve": [{"feature_reference": "a", "amount": "x"}]}, "reserve[0].amount"),
        ({"idempotency_key": 5}, "idempotency_key"),
        ({"extra": True}, "extra"),
        ([], "body"),
    ],
)
def test_bad_input_is_400_naming_the_field(client: httpx.Client, body: object, field: str) -> None:
    r = client.post(f"/v1/customers/{unique('c')}/authorize", json=body)
    assert r.status_code == 400, r.text
    problem = r.json()
    assert problem["code"] == "INVALID_INPUT"
    assert problem["field"] == field


def test_unknown_reservation_is_404(client: httpx.Client) -> None:
    for method, path in (
        ("GET", "/v1/reservations/nope"),
        ("POST", "/v1/reservations/nope/commit"),
        ("POST", "/v1/reservations/nope/release"),
    ):
        r = client.request(method, path)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["code"] == "NOT_FOUND"
