"""The console in a real browser (Debian's Chromium through Playwright) against a real
``allotment serve`` with seeded data, on each backend: every page renders, charts carry the
right numbers, an override set through the form changes the customer's entitlement, and a
portal token opens its own usage page and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from tests.browser.browser import fresh_page, log_in
from tests.browser.seed import NOW, PERIOD_START, REQUESTS, TOKENS
from tests.browser.site import Site

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


def operator_pages(site: Site) -> list[tuple[str, str]]:
    """(path, a heading the page shows) of every operator page."""
    acme = site.seeded.customer_ids["acme"]
    return [
        ("/console/customers", "Customers"),
        ("/console/customers?by=name&q=acme", "Customers"),
        (f"/console/customers/{acme}", "Acme Corp"),
        ("/console/plans", "Plans"),
        ("/console/plans/pro", "Pro"),
        ("/console/meters", "Meters"),
        (f"/console/meters/{TOKENS}?window=DAY&range=30d", TOKENS),
        (f"/console/meters/{REQUESTS}?window=HOUR&range=24h&group=route", REQUESTS),
        (f"/console/entitlements/{site.seeded.acme_tokens_entitlement}", "monthly_tokens"),
        ("/console/notifications", "Notifications"),
        ("/console/ingest", "Ingest"),
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


def every_operator_page_renders(operator: Page, site: Site) -> None:
    for path, heading in operator_pages(site):
        response = operator.goto(path)
        assert response is not None, path
        assert response.status == 200, path
        assert operator.locator("h1").first.inner_text().strip().startswith(heading), path
        assert operator.locator("nav.sidebar").is_visible()
        assert not operator.locator(".notice.error").count(), path


def the_meter_chart_draws_the_days_usage(operator: Page, site: Site) -> None:
    operator.goto(f"/console/meters/{TOKENS}?window=DAY&range=30d&tz=UTC")
    bars = _bars(operator, "main")
    everyone: dict[str, Decimal] = {}
    for daily in [*site.seeded.daily_of(TOKENS), site.seeded.trial_daily[TOKENS]]:
        for day, value in daily.items():
            label = f"{day:%m-%d}"
            everyone[label] = everyone.get(label, Decimal(0)) + value
    november = {label: value for label, value in bars.items() if label.startswith("11-")}
    assert november == {label: everyone.get(label, Decimal(0)) for label in november}
    assert len(november) == NOW.day
    assert all(value == 0 for label, value in bars.items() if label.startswith("10-"))
    total = operator.locator("#range-total").inner_text().replace(",", "")
    assert Decimal(total) == sum(everyone.values(), Decimal(0))


def the_entitlement_page_draws_the_periods_days(operator: Page, site: Site) -> None:
    """Acme's token budget: a bar per day of the period so far, the customer's usage."""
    operator.goto(f"/console/entitlements/{site.seeded.acme_tokens_entitlement}")
    bars = _bars(operator, "main")
    daily = site.seeded.daily[("acme", TOKENS)]
    expected = {f"{day:%Y-%m-%d}": value for day, value in daily.items()}
    assert {k: v for k, v in bars.items() if v} == {k: v for k, v in expected.items() if v}
    usage = operator.locator("#usage").inner_text().replace(",", "")
    assert Decimal(usage) == site.seeded.total("acme", TOKENS)


def an_override_set_through_the_form_changes_the_entitlement(operator: Page, site: Site) -> None:
    wonka = site.seeded.customer_ids["wonka"]
    operator.goto(f"/console/customers/{wonka}")
    form = operator.locator("#override-form")
    # a bad value: the API's problem, in words, and nothing changes
    form.locator("select[name=feature_reference]").select_option("monthly_tokens")
    form.locator("input[name=value]").fill("lots")
    form.locator("button[type=submit]").click()
    assert "lots" in operator.locator(".notice.error").inner_text()
    # a good one
    form = operator.locator("#override-form")
    form.locator("select[name=feature_reference]").select_option("monthly_tokens")
    form.locator("input[name=value]").fill("2500000")
    form.locator("button[type=submit]").click()
    assert "override set: monthly_tokens" in operator.locator(".notice.ok").inner_text()
    row = operator.locator("#catalog-entitlements tr[data-feature='monthly_tokens']")
    assert row.locator("td.value").inner_text() == "2,500,000"
    assert "override" in row.inner_text()
    usage = site.seeded.total("wonka", TOKENS)
    with site.api() as api:
        items = api.get("/v1/customers/wonka/entitlements").json()["entitlements"]
        value = api.get(f"/api/v2/customers/{wonka}/entitlements/monthly_tokens/value").json()
    tokens = next(e for e in items if e["feature_reference"] == "monthly_tokens")
    assert (tokens["number"], tokens["source"]) == ("2500000", "OVERRIDE")
    assert Decimal(tokens["usage"]) == usage
    assert Decimal(tokens["remaining"]) == 2_500_000 - usage
    assert Decimal(value["balance"]) == 2_500_000 - usage
    assert value["hasAccess"] is True


def the_portal_link_opens_the_customers_own_page(page: Page, site: Site) -> None:
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


def a_portal_token_opens_nothing_else(page: Page, site: Site) -> None:
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


def a_wrong_link_is_a_401_page(page: Page, site: Site) -> None:
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.goto("/console/portal#token=eyJhbGciOiJIUzI1NiJ9.e30.bad")
    assert answer.value.status == 401
    page.wait_for_selector(".notice.error")
    assert "This usage link does not open" in page.locator(".notice.error").inner_text()
    assert page.locator("#portal-open").is_visible()


Check = Callable[["Page", Site], None]
AS_OPERATOR: tuple[Check, ...] = (
    every_operator_page_renders,
    the_meter_chart_draws_the_days_usage,
    the_entitlement_page_draws_the_periods_days,
    an_override_set_through_the_form_changes_the_entitlement,
)
"""Checks run after logging in through the form."""
AS_VISITOR: tuple[Check, ...] = (
    the_portal_link_opens_the_customers_own_page,
    a_portal_token_opens_nothing_else,
    a_wrong_link_is_a_401_page,
)
"""Checks run in a browser that never logged in (a customer's)."""


def test_the_console_in_chromium(browser: Browser, site: Site) -> None:
    """Every check, each in a fresh browser context (no cookie of another). One test per
    backend, not one per check: xdist would spread the checks over its workers, and each would
    start its own browser and seeded servers."""
    for check in (*AS_OPERATOR, *AS_VISITOR):
        with fresh_page(browser, site) as page:
            if check in AS_OPERATOR:
                log_in(page, site)
            check(page, site)
