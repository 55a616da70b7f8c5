"""The customers list: search by key, name, email or subject; 50 rows a page."""

from __future__ import annotations

from tests.console.support import console, text_of


def test_list_search_and_pages(db_url: str) -> None:
    with console(db_url) as (c, client):
        for i in range(53):
            c.customers.create({"name": f"Customer {i:02d}", "key": f"cust-{i:02d}",
                                "usageAttribution": {"subjectKeys": [f"sub-{i:02d}"]},
                                "primaryEmail": f"c{i}@example.com"})  # fmt: skip
        r = client.get("/console/customers")
        assert r.status_code == 200
        words = text_of(r.text)
        assert "page 1 of 2 · 53 in all" in words
        assert r.text.count('href="/console/customers/') == 50
        assert "Customer 00" in words
        assert "Customer 49" in words
        assert "Customer 50" not in words
        r = client.get("/console/customers?page=2")
        assert "Customer 52" in r.text
        assert "Customer 49" not in r.text
        r = client.get("/console/customers?by=key&q=CUST-1")
        assert text_of(r.text).count("Customer 1") == 10  # 10..19, case-insensitive
        r = client.get("/console/customers?by=subject&q=sub-07")
        assert "Customer 07" in r.text
        assert "1 in all" in text_of(r.text)
        r = client.get("/console/customers?by=email&q=c52@")
        assert "Customer 52" in r.text
        r = client.get("/console/customers?by=name&q=nobody")
        assert "No customer's name contains “nobody”" in text_of(r.text)


def test_bad_parameters_are_400_pages(db_url: str) -> None:
    with console(db_url) as (_, client):
        r = client.get("/console/customers?page=0")
        assert r.status_code == 400
        assert "page: must be a whole number" in text_of(r.text)
        r = client.get("/console/customers?by=phone")
        assert r.status_code == 400
        assert "by: must be one of key, name, email, subject" in text_of(r.text)
        r = client.get("/console/customers?q=" + "x" * 201)
        assert r.status_code == 400
