"""The one call's reads over HTTP (catalog.md §5), on every engine: what it answers right
after a write through another route — an ingest, a reservation, a release — includes that
write (read-your-writes), however warm its caches are."""

from __future__ import annotations

from typing import Any

import httpx

from allotment.domain.timeutil import format_rfc3339
from tests.api.v1_helpers import ok
from tests.enforcement.catalog_setup import Guide, build_guide
from tests.support import unique


def _budget(c: httpx.Client, g: Guide) -> dict[str, Any]:
    items = ok(c.get(f"/v1/customers/{g.customer}/entitlements"))["entitlements"]
    found: dict[str, Any] = next(i for i in items if i["feature_reference"] == g.budget)
    return found


def _ingest(c: httpx.Client, g: Guide, tokens: int) -> None:
    from datetime import UTC, datetime

    r = c.post("/api/v1/events", json=[{
        "specversion": "1.0", "id": unique("e"), "source": "one-call-reads", "type": g.meter,
        "subject": g.customer, "time": format_rfc3339(datetime.now(UTC)),
        "data": {"tokens": tokens}}],
        headers={"content-type": "application/cloudevents-batch+json"})  # fmt: skip
    assert r.status_code == 204, r.text


def test_the_one_call_reads_each_write_at_once(client: httpx.Client) -> None:
    c = client
    g = build_guide(c)
    for _ in range(3):  # warm: the view, the budget memo and the value cache all hold it
        item = _budget(c, g)
    assert (item["usage"], item["remaining"], "reserved" in item) == ("0", "1000", False)
    for n, tokens in enumerate((7, 30, 5), start=1):
        _ingest(c, g, tokens)
        item = _budget(c, g)
        assert item["usage"] == str((7, 37, 42)[n - 1]), (n, item)
    assert item["remaining"] == "958"
    reserve = {"reserve": [{"feature_reference": g.budget, "amount": "100"}]}
    res = ok(c.post(f"/v1/customers/{g.customer}/authorize", json=reserve))
    item = _budget(c, g)
    assert (item["usage"], item["remaining"], item["reserved"]) == ("42", "858", "100")
    ok(c.post(f"/v1/reservations/{res['reservation_id']}/release"))
    item = _budget(c, g)
    assert (item["usage"], item["remaining"], "reserved" in item) == ("42", "958", False)
