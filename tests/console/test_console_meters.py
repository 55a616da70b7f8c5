"""Meters: the list and a meter's usage chart; the chart's bars carry the meter query's
numbers, by window, group and time zone."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from decimal import Decimal

import pytest

from allotment.http.console import meters
from tests.console.support import START, console, ingest, text_of


def _points(html: str) -> dict[tuple[str, str], str]:
    """(series, label) → value of every bar or point the chart drew."""
    found = re.findall(r'data-series="([^"]*)" data-label="([^"]*)" data-value="([^"]*)"', html)
    return {(s, label): v for s, label, v in found}


def test_list_and_chart(db_url: str) -> None:
    with console(db_url) as (c, client):
        c.clock.set(START + timedelta(hours=3, minutes=30))  # type: ignore[attr-defined]
        ingest(client, "tokens", "a", START + timedelta(hours=1, minutes=1), n=10, model="x")
        ingest(client, "tokens", "a", START + timedelta(hours=1, minutes=59), n="2.5", model="y")
        ingest(client, "tokens", "b", START + timedelta(hours=3, minutes=10), n=7, model="x")
        r = client.get("/console/meters")
        assert r.status_code == 200
        assert 'href="/console/meters/tokens"' in r.text
        assert "SUM" in r.text
        r = client.get("/console/meters/tokens?window=HOUR&range=24h")
        assert r.status_code == 200, r.text
        assert 'data-chart="bars"' in r.text
        bars = _points(r.text)
        assert bars[("", "01:00")] == "12.5"
        assert bars[("", "03:00")] == "7"
        assert bars[("", "02:00")] == "0"
        assert "Total in this range 19.5" in text_of(r.text)
        # grouped by a dimension: a line per group, totals in the table
        r = client.get("/console/meters/tokens?window=HOUR&range=24h&group=model")
        lines = _points(r.text)
        assert 'data-chart="lines"' in r.text
        assert lines[("x", "01:00")] == "10"
        assert lines[("y", "01:00")] == "2.5"
        assert lines[("x", "03:00")] == "7"
        assert re.search(r'data-group="x"><td>x</td><td class="num">17</td>', r.text)
        r = client.get("/console/meters/tokens?window=HOUR&range=24h&group=subject")
        assert _points(r.text)[("b", "03:00")] == "7"
        # another time zone moves the windows: India's hours start at :30 UTC (UTC+05:30), so
        # 01:01 and 01:59 UTC fall in two local hours
        r = client.get("/console/meters/tokens?window=HOUR&range=24h&tz=Asia/Kolkata")
        bars = _points(r.text)
        assert (bars[("", "06:00")], bars[("", "07:00")], bars[("", "08:00")]) == ("10", "2.5", "7")
        # a day window, the count meter
        r = client.get("/console/meters/calls?window=DAY&range=7d")
        assert r.status_code == 200
        assert "Total in this range 0" in text_of(r.text)


def test_bad_choices_are_explained(db_url: str) -> None:
    with console(db_url) as (_, client):
        r = client.get("/console/meters/tokens?window=MINUTE&range=7d")
        assert r.status_code == 200
        assert "10081 MINUTE windows in 7d is more than one chart draws (400)" in text_of(r.text)
        assert client.get("/console/meters/tokens?window=DAY&range=365d").status_code == 200
        r = client.get("/console/meters/tokens?group=colour")
        assert r.status_code == 400
        assert "'colour' is not a groupBy key of meter tokens" in text_of(r.text)
        r = client.get("/console/meters/tokens?tz=Mars/Base")
        assert r.status_code == 400
        assert "unknown time zone 'Mars/Base'" in text_of(r.text)
        r = client.get("/console/meters/tokens?window=WEEK")
        assert r.status_code == 400
        assert "window: must be one of MINUTE, HOUR, DAY, MONTH" in text_of(r.text)
        r = client.get("/console/meters/nope")
        assert r.status_code == 404


def test_the_window_limit_at_n_and_n_plus_1(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with console(db_url) as (_, client):
        path = "/console/meters/tokens?window=HOUR&range=24h"  # 25 windows: the current hour too
        monkeypatch.setattr(meters, "CHART_WINDOWS_MAX", 25)
        assert 'data-chart="bars"' in client.get(path).text
        monkeypatch.setattr(meters, "CHART_WINDOWS_MAX", 24)
        assert "25 HOUR windows in 24h is more than one chart draws (24)" in text_of(
            client.get(path).text
        )


def _listed(page: str) -> list[tuple[str, str]]:
    return re.findall(r'data-group="([^"]+)"><td>[^<]*</td><td class="num">([^<]+)<', page)


def _next(page: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" id="next-page"', page)
    return None if found is None else html.unescape(found.group(1))


@pytest.mark.parametrize("n", [50, 51])
def test_by_subject_pages_in_key_order_at_n_and_n_plus_1(db_url: str, n: int) -> None:
    """The default: 50 subjects a page in key order, a next link only when there are more;
    the page after the last key lists the rest. A subject with usage that day but not in the
    range takes no place on a page."""
    with console(db_url) as (c, client):
        c.clock.set(START + timedelta(hours=3, minutes=30))  # type: ignore[attr-defined]
        at = START + timedelta(hours=3)
        for i in reversed(range(n)):  # ingested out of key order
            ingest(client, "tokens", f"s{i:03d}", at, n=1000 - i, model="x")
        ingest(client, "tokens", "s010a", START + timedelta(minutes=5), n=9, model="x")
        base = "/console/meters/tokens?window=MINUTE&range=1h&group=subject"
        r = client.get(base)
        assert r.status_code == 200, r.text
        first = _listed(r.text)
        assert first == [(f"s{i:03d}", f"{1000 - i:,}") for i in range(50)]
        # the chart draws the page's 8 largest: its first 8 keys here
        assert {series for series, _ in _points(r.text)} == {f"s{i:03d}" for i in range(8)}
        assert "Subjects in key order, 50 on this page; the chart draws the 8 largest" in (
            text_of(r.text)
        )
        nxt = _next(r.text)
        if n == 50:
            assert nxt is None
            assert 'id="first-page"' not in r.text
            return
        assert nxt is not None
        assert "after=s049" in nxt
        assert "order=subject" in nxt
        r = client.get("/console/meters/tokens" + nxt)
        assert r.status_code == 200, r.text
        assert _listed(r.text) == [("s050", "950")]
        assert _next(r.text) is None
        assert 'id="first-page"' in r.text
        assert "1 on this page" in text_of(r.text)
        # after a key that is not a subject: the next keys after it
        r = client.get(base + "&after=s0485")
        assert [s for s, _ in _listed(r.text)] == ["s049", "s050"]


def test_by_subject_ordering_and_its_bad_parameters(db_url: str) -> None:
    """``order=usage`` ranks by total (labelled slower at scale); ``order`` and ``after`` are
    checked (after: 1024 characters at N, 1025 at N+1) and explained in 400 pages."""
    with console(db_url) as (c, client):
        c.clock.set(START + timedelta(hours=3, minutes=30))  # type: ignore[attr-defined]
        for subject, amount in (("a", 1), ("b", 3), ("c", 2)):
            ingest(client, "tokens", subject, START + timedelta(hours=3), n=amount, model="x")
        base = "/console/meters/tokens?window=HOUR&range=24h&group=subject"
        assert [s for s, _ in _listed(client.get(base).text)] == ["a", "b", "c"]
        r = client.get(base + "&order=usage")
        assert [s for s, _ in _listed(r.text)] == ["b", "c", "a"]
        assert "Ranked by usage over the whole range" in text_of(r.text)
        assert "slower at scale" in text_of(r.text)
        assert _next(r.text) is None
        r = client.get(base + "&order=size")
        assert r.status_code == 400
        assert "order: must be one of subject, usage, got 'size'" in text_of(r.text)
        assert client.get(base + "&after=" + "z" * 1024).status_code == 200
        r = client.get(base + "&after=%C3%A9%F0%9F%98%80%FF%ED%A0%80")  # é😀, bad UTF-8
        assert r.status_code == 200, r.text
        r = client.get(base + "&after=" + "z" * 1025)
        assert r.status_code == 400
        assert "after: at most 1024 characters, got 1025" in text_of(r.text)
        r = client.get(base + "&order=usage&after=a")
        assert r.status_code == 400
        assert "after: pages the chart grouped by subject in key order only" in text_of(r.text)


@pytest.mark.parametrize("decimal", [False, True])
def test_by_subject_by_usage_lists_the_50_largest_of_many(db_url: str, decimal: bool) -> None:
    """``order=usage``, 51 subjects (the table lists 50 at N, one is left out at N+1): the
    database ranks them (or, on SQLite with a decimal sum, the plain path does); the same page
    either way."""
    with console(db_url) as (c, client):
        c.clock.set(START + timedelta(hours=3))  # type: ignore[attr-defined]
        at = START + timedelta(hours=1)
        for i in range(51):
            ingest(client, "tokens", f"u{i:02d}", at, n=100 + i % 10, model="x")  # ties
        ingest(client, "tokens", "u07", at + timedelta(hours=1), n="0.5" if decimal else 1)
        r = client.get("/console/meters/tokens?window=HOUR&range=24h&group=subject&order=usage")
        assert r.status_code == 200
        listed = _listed(r.text)
        totals = {f"u{i:02d}": Decimal(100 + i % 10) for i in range(51)}
        totals["u07"] += Decimal("0.5") if decimal else 1
        want = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:50]
        assert [(s, Decimal(v.replace(",", ""))) for s, v in listed] == want
        assert ("u50", "100") not in listed  # the 51st: 100 tokens, last by name
        drawn = {series for series, _ in _points(r.text)}
        assert drawn == {s for s, _ in want[:8]}
        note = text_of(r.text)
        assert (
            "The chart draws the 8 largest of 51 groups; "
            "the table lists the 50 largest (1 more not listed)." in note
        )
