"""The console in a real browser (Debian's Chromium through Playwright) against a real
``allotment serve`` with seeded data, on each backend: every page renders, charts carry the
right numbers, an override set through the form changes the customer's entitlement, and a
portal token opens its own usage page and nothing else."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from tests.browser.seed import NOW, PERIOD_START, REQUESTS, TOKENS
from tests.browser.site import Site

if TYPE_CHECKING:
    from playwright.sync_api import Page


def operator_pages(site: Site) -> list[tuple[str, str]]:
    """(path, a heading the page shows) of every operator page."""
    return [
        ("/console/customers", "Customers"),
        ("/console/customers?by=name&q=acme", "Customers"),
    ]


def _bars(page: Page, selector: str) -> dict[str, Decimal]:
    """label → value of the bars a chart drew (read from the SVG in the browser)."""
    found: list[list[str]] = page.eval_on_selector_all(
        f"{selector} svg.chart rect.bar",
        "bars => bars.map(b => [b.dataset.label, b.dataset.value, b.getBBox().height])",
    )
    out: dict[str, Decimal] = {}
    for label, value, height in found:
        assert (Decimal(value) == 0) == (float(height) == 0), (label, value, height)
        out[label] = Decimal(value)
    return out


def _expected_days(daily: dict[object, Decimal]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    day = PERIOD_START.date()
    while day <= NOW.date():
        out[f"{day:%b} {day.day}"] = daily.get(day, Decimal(0))
        day = day.fromordinal(day.toordinal() + 1)
    return out


def test_every_operator_page_renders(operator: Page, site: Site) -> None:
    for path, heading in operator_pages(site):
        response = operator.goto(path)
        assert response is not None, path
        assert response.status == 200, path
        assert operator.locator("h1").first.inner_text().strip().startswith(heading), path
        assert operator.locator("nav.sidebar").is_visible()
        assert not operator.locator(".notice.error").count(), path


def test_the_portal_link_opens_the_customers_own_page(page: Page, site: Site) -> None:
    page.goto(f"/console/portal#token={site.tokens['acme']}")
    page.wait_for_selector("#portal-owner")
    assert page.locator("#portal-owner").inner_text() == "Acme Corp"
    assert "#" not in page.url  # the token left the address bar
    html = page.content()
    assert site.tokens["acme"] not in html
    for other in ("Globex", "Initech", "Hooli", "trial-42"):
        assert other not in html, other
    # a chart per meter, with the customer's usage per day (its key and subject keys)
    seeded = site.seeded
    for meter in (TOKENS, REQUESTS):
        bars = _bars(page, f"section[data-meter='{meter}']")
        assert bars == _expected_days(seeded.daily[("acme", meter)]), meter
        total = page.locator(f"section[data-meter='{meter}'] .total").get_attribute("data-total")
        assert Decimal(total or "-1") == seeded.total("acme", meter)
    # the budget row agrees with the JSON API
    with site.api() as api:
        one_call = api.get("/v1/customers/acme/entitlements").json()["entitlements"]
    usage = {e["feature_reference"]: e.get("usage") for e in one_call}
    cell = page.locator("#portal-budgets tr[data-feature='monthly_tokens'] td.usage")
    assert Decimal(cell.inner_text().replace(",", "")) == Decimal(usage["monthly_tokens"])


def test_a_portal_token_opens_nothing_else(page: Page, site: Site) -> None:
    page.goto(f"/console/portal#token={site.tokens['initech']}")
    page.wait_for_selector("#portal-owner")
    assert page.locator("#portal-owner").inner_text() == "Initech"
    # its token allows one meter: one chart
    assert page.locator("section.portal-meter").count() == 1
    assert page.locator(f"section[data-meter='{TOKENS}']").count() == 1
    # the operator console and another customer's page ask for the admin key
    for path in ("/console/customers", "/console/customers?by=key&q=acme"):
        page.goto(path)
        assert "/console/login" in page.url, path
        assert "Acme" not in page.content()
    # the token as a header is no key
    page.set_extra_http_headers({"Authorization": f"Bearer {site.tokens['initech']}"})
    response = page.goto("/console/customers")
    assert response is not None
    assert response.status == 401
    assert "unknown or revoked API key" in page.locator(".notice.error").inner_text()


def test_a_wrong_link_is_a_401_page(page: Page, site: Site) -> None:
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.goto("/console/portal#token=eyJhbGciOiJIUzI1NiJ9.e30.bad")
    assert answer.value.status == 401
    page.wait_for_selector(".notice.error")
    assert "This usage link does not open" in page.locator(".notice.error").inner_text()
    assert page.locator("#portal-open").is_visible()
