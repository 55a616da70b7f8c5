"""Array parameters reach PostgreSQL exactly (``storage.database.to_postgres_sql`` sends
``?::text[]``, ``?::bigint[]`` and ``?::numeric[]`` in binary): empty arrays, NULL elements,
quotes, backslashes, braces and commas in text, 64-bit integers, 60-digit decimals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from allotment.storage.database import open_database, to_postgres_sql
from tests.support import create_pg_database

TEXTS = [
    "",
    "plain",
    'a "quoted" word',
    "back\\slash",
    "{braces},commas",
    "NULL",
    "ünïcødé ✓",
    '{"model":"gpt-4o","tokens":12}',
    None,
]
BIGINTS = [0, -1, 2**31, -(2**63), 2**63 - 1, None]
NUMERICS: list[Any] = [
    Decimal(0),
    Decimal("0.1"),
    Decimal("-12345678901234567890.123456789012345678901234567890"),
    Decimal(2**62),
    None,
    Decimal("1E+30"),
    Decimal("-0.000000000000000000000000000001"),
]


def test_the_placeholder_of_an_array_is_binary() -> None:
    sql = "SELECT ?, a FROM unnest(?::text[], ?::bigint[], ?::numeric[]) AS r(a, b, c) WHERE a > ?"
    assert to_postgres_sql(sql) == (
        "SELECT %s, a FROM unnest(%b::text[], %b::bigint[], %b::numeric[]) AS r(a, b, c) "
        "WHERE a > %s"
    )
    assert to_postgres_sql("SELECT 1 WHERE 'a' LIKE '%'", with_params=False).endswith("'%'")


@pytest.mark.parametrize(
    ("cast", "values"),
    [
        ("text", TEXTS),
        ("bigint", BIGINTS),
        ("numeric", NUMERICS),
        ("text", []),
        ("bigint", []),
        ("numeric", []),
        ("numeric", [None]),
        ("numeric", [1, 2**70]),  # ints alone are fine too
    ],
)
def test_array_parameters_round_trip(pg_admin_url: str, cast: str, values: list[Any]) -> None:
    db = open_database(create_pg_database(pg_admin_url))  # PostgreSQL only: SQLite has no arrays
    try:
        with db.read() as tx:
            rows = tx.execute(
                f"SELECT v FROM unnest(?::{cast}[]) WITH ORDINALITY AS r(v, n) ORDER BY n",
                [values],
            )
        got = [r[0] for r in rows]
        assert got == values
        assert [type(g) for g in got if g is not None] == [
            str if cast == "text" else int if cast == "bigint" else Decimal
            for v in values
            if v is not None
        ]
    finally:
        db.close()
