"""The fast path's parsed authorize bodies: the same bytes give the same request as parsing
them afresh, a refused body is never kept, and the store stays bounded."""

from __future__ import annotations

import json

from allotment.domain.enforcement import parse_authorize
from allotment.http.params import decode_json
from allotment.http.routes import v1_authorize as route


def body(i: int) -> bytes:
    return json.dumps(
        {"consume": [{"feature_reference": f"f{i}", "amount": 2}], "idempotency_key": f"k{i}"}
    ).encode()


def test_kept_requests_equal_fresh_parses_and_stay_bounded() -> None:
    route._parsed_bodies.clear()
    first = route._parsed(body(0))
    assert first is not None
    assert route._parsed(body(0)) is first
    assert first == parse_authorize(decode_json(body(0), exact=True))
    for i in range(1, route.PARSED_BODIES_MAX * 2 + 1):
        got = route._parsed(body(i))
        assert got == parse_authorize(decode_json(body(i), exact=True))
        assert len(route._parsed_bodies) <= route.PARSED_BODIES_MAX


def test_a_refused_body_is_not_kept() -> None:
    route._parsed_bodies.clear()
    bad = json.dumps({"consume": [{"feature_reference": "f", "amount": 0}]}).encode()
    assert route._parsed(bad) is None
    assert route._parsed(bad) is None
    assert bad not in route._parsed_bodies
