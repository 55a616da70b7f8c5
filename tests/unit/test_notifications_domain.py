"""Pure notification rules: threshold crossing (against a naive model), wire validation at
N and N+1, retry schedule, and Standard Webhooks signatures (checked with the PyPI library)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from allotment.domain import limits
from allotment.domain import notifications as n
from allotment.domain.errors import InvalidInput

ULID = "01J2KNP1YTXQRXHTDJ4KPR7PZ0"


def _naive_crossed(kind: str, value: Decimal, usage: Decimal, balance: Decimal,
                   overage: Decimal) -> bool:  # fmt: skip
    """The definitions of docs/notifications.md, written out with exact fractions."""
    total = Fraction(balance) + Fraction(usage) - Fraction(overage)
    if kind in ("usage_value", "NUMBER"):
        return usage >= value
    if kind == "balance_value":
        return balance <= value
    if total <= 0:
        return usage > 0 or value <= 0
    return Fraction(usage) / total * 100 >= Fraction(value)


amounts = st.decimals(min_value=0, max_value=10_000, places=2, allow_nan=False)
kinds = st.sampled_from([t.value for t in n.ThresholdType])


@given(
    thresholds=st.lists(st.tuples(kinds, st.integers(1, 200)), min_size=1, max_size=10,
                        unique_by=lambda t: (n.ThresholdType(t[0]).canonical, t[1])),
    grants=amounts,
    steps=st.lists(amounts, min_size=1, max_size=12),
)  # fmt: skip
def test_each_threshold_fires_once_per_period_like_the_naive_model(
    thresholds: list[tuple[str, int]], grants: Decimal, steps: list[Decimal]
) -> None:
    ts = [n.Threshold(Decimal(v), n.ThresholdType(k)) for k, v in thresholds]
    marked: list[str] = []
    usage = Decimal(0)
    expected: set[str] = set()
    for step in steps:  # many small events, evaluated after each one
        usage += step
        balance = max(grants - usage, Decimal(0))
        overage = max(usage - grants, Decimal(0))
        snap = n.ValueSnapshot(usage, balance, overage)
        fired = n.newly_crossed(ts, snap, marked)
        assert all(t.key not in marked for t in fired)
        marked.extend(t.key for t in fired)
        expected |= {t.key for t in ts if _naive_crossed(t.type.value, t.value, usage, balance,
                                                         overage)}  # fmt: skip
    assert set(marked) == expected
    assert len(marked) == len(set(marked))  # never twice in the period
    # one big batch with the same total crosses the same thresholds (usage only grows)
    big = n.newly_crossed(ts, snap, [])
    assert {t.key for t in big} == set(marked)


def test_voiding_a_grant_crosses_balance_and_percentage_thresholds() -> None:
    ts = [n.Threshold(Decimal(80), n.ThresholdType.USAGE_PERCENTAGE),
          n.Threshold(Decimal(10), n.ThresholdType.BALANCE_VALUE)]  # fmt: skip
    before = n.ValueSnapshot(Decimal(50), Decimal(150), Decimal(0))  # grants 200
    assert n.newly_crossed(ts, before, []) == []
    after = n.ValueSnapshot(Decimal(50), Decimal(0), Decimal(0))  # a 150 grant voided: 50/50
    assert [t.key for t in n.newly_crossed(ts, after, [])] == [
        "usage_percentage:80", "balance_value:10"
    ]  # fmt: skip


def test_deprecated_types_share_keys_with_their_replacements() -> None:
    assert n.Threshold(Decimal("80.0"), n.ThresholdType.PERCENT).key == "usage_percentage:80"
    assert n.Threshold(Decimal(5), n.ThresholdType.NUMBER).key == "usage_value:5"


def _rule(**over: Any) -> dict[str, Any]:
    body = {"type": "entitlements.balance.threshold", "name": "r", "channels": [ULID],
            "thresholds": [{"value": 80, "type": "PERCENT"}]}  # fmt: skip
    body.update(over)
    return body


def test_thresholds_limit_at_n_and_n_plus_one() -> None:
    most = limits.NOTIFICATION_THRESHOLDS_MAX
    ok = [{"value": i + 1, "type": "usage_value"} for i in range(most)]
    assert len(n.parse_rule(_rule(thresholds=ok)).thresholds) == most
    with pytest.raises(InvalidInput) as err:
        n.parse_rule(_rule(thresholds=[*ok, {"value": 999, "type": "usage_value"}]))
    assert err.value.field == "thresholds"


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"type": "invoice.created"}, "type"),
        ({"name": ""}, "name"),
        ({"channels": []}, "channels"),
        ({"channels": ["nope"]}, "channels"),
        ({"features": []}, "features"),
        ({"thresholds": [{"value": 0, "type": "usage_value"}]}, "thresholds[0].value"),
        ({"thresholds": [{"value": 5, "type": "WHAT"}]}, "thresholds[0].type"),
        ({"thresholds": [{"value": 5, "type": "NUMBER"}, {"value": 5, "type": "usage_value"}]},
         "thresholds[1]"),
    ],
)  # fmt: skip
def test_bad_rules_name_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        n.parse_rule(_rule(**over))
    assert err.value.field == field


@pytest.mark.parametrize(
    ("url", "ok"),
    [("https://example.com/hook", True), ("http://example.com:8080/x?y=1", True),
     ("ftp://example.com/", False), ("file:///etc/passwd", False), ("https://", False),
     ("http://user:pw@example.com/", False), ("example.com", False)],
)  # fmt: skip
def test_only_http_urls(url: str, ok: bool) -> None:
    if ok:
        assert n.validate_url(url) == url
    else:
        with pytest.raises(InvalidInput) as err:
            n.validate_url(url)
        assert err.value.field == "url"


@pytest.mark.parametrize(
    ("ip", "why"),
    [("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.1", "private"),
     ("169.254.169.254", "private"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
     ("0.0.0.0", "private"), ("93.184.216.34", None), ("2606:4700::1111", None)],
)  # fmt: skip
def test_refused_addresses(ip: str, why: str | None) -> None:
    assert n.refused_address(ip) == why


def test_custom_headers_limit_and_reserved_names() -> None:
    base = {"type": "WEBHOOK", "name": "c", "url": "https://example.com/h"}
    most = {f"x-h{i}": "v" for i in range(limits.WEBHOOK_CUSTOM_HEADERS_MAX)}
    assert len(n.parse_channel({**base, "customHeaders": most}).custom_headers) == len(most)
    for headers in ({**most, "x-one-more": "v"}, {"webhook-signature": "x"}, {"x-a": "b\r\nc"}):
        with pytest.raises(InvalidInput) as err:
            n.parse_channel({**base, "customHeaders": headers})
        assert err.value.field == "customHeaders"
    with pytest.raises(InvalidInput) as err:
        n.parse_channel({**base, "signingSecret": "short"})
    assert err.value.field == "signingSecret"


def test_signature_verifies_with_the_standardwebhooks_library() -> None:
    secret = n.encode_secret(b"0123456789abcdef01234567")
    assert n.SECRET_PATTERN.match(secret)
    body = b'{"id":"x","type":"entitlements.reset"}'
    import time

    ts = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts),
               "webhook-signature": n.sign(secret, "msg_1", ts, body)}  # fmt: skip
    assert Webhook(secret).verify(body, headers) == {"id": "x", "type": "entitlements.reset"}
    # a secret given without the whsec_ prefix signs the same way
    assert n.sign(secret.removeprefix("whsec_"), "msg_1", ts, body) == headers["webhook-signature"]


def test_retry_schedule_covers_a_day_and_starts_within_ten_seconds() -> None:
    s = n.DEFAULT_RETRY_SCHEDULE
    assert s[0] * 1.1 <= 10
    assert sum(s) >= 24 * 3600
    assert n.retry_delay(s, 1, 1.0) == pytest.approx(5.5)
    assert n.retry_delay(s, 2, -1.0) == pytest.approx(27.0)
    assert n.retry_delay(s, len(s), 0.0) == 3600.0
    assert n.retry_delay(s, len(s) + 1, 0.0) is None
    assert n.parse_schedule("0.2s, 1m,2h", "x") == (0.2, 60.0, 7200.0)
    with pytest.raises(InvalidInput):
        n.parse_schedule("5 parsecs", "x")


def test_rule_channel_and_feature_limits_at_n_and_n_plus_one() -> None:
    def ulid(i: int) -> str:
        return "01J2KNP1YTXQRXHTDJ4KP" + f"{i:05d}"

    most = limits.NOTIFICATION_RULE_CHANNELS_MAX
    assert len(n.parse_rule(_rule(channels=[ulid(i) for i in range(most)])).channels) == most
    with pytest.raises(InvalidInput) as err:
        n.parse_rule(_rule(channels=[ulid(i) for i in range(most + 1)]))
    assert err.value.field == "channels"
    most = limits.NOTIFICATION_RULE_FEATURES_MAX
    keys = [f"f{i}" for i in range(most + 1)]
    assert len(n.parse_rule(_rule(features=keys[:most])).features or ()) == most
    with pytest.raises(InvalidInput) as err:
        n.parse_rule(_rule(features=keys))
    assert err.value.field == "features"


def test_url_length_at_n_and_n_plus_one() -> None:
    head = "https://example.com/"
    at_most = head + "a" * (limits.WEBHOOK_URL_LENGTH_MAX - len(head))
    assert n.validate_url(at_most) == at_most
    with pytest.raises(InvalidInput) as err:
        n.validate_url(at_most + "a")
    assert err.value.field == "url"


def test_every_notification_route_is_in_the_served_openapi_document() -> None:
    from starlette.routing import Route

    from allotment.http.openapi_doc import openapi_document
    from allotment.http.routes import notifications

    paths = openapi_document()["paths"]
    for route in notifications.ROUTES:
        assert isinstance(route, Route)
        assert route.path in paths, route.path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in paths[route.path], (method, route.path)
