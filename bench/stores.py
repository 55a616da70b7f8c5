"""The references on the database side, on the same engine as the project:

* the **floor** of storing events: a raw ``executemany`` (SQLite) or ``COPY`` (PostgreSQL) of the
  same events into a table with no index, no dedup and no rollups, one commit per 1000 rows,
  with the project's durability settings (SQLite WAL + synchronous=FULL; PostgreSQL fsync on);
* the **naive** way a user would write it: keep the events (payload as JSON) in one table with an
  index on (subject, type, time), and answer every value check / meter query with one SQL
  aggregate over the raw events (its ingest is ``bench.refapp.NaiveIngest``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from bench import data as D

DAY_US = 86_400_000_000


def is_pg(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> str:
    assert url.startswith("sqlite:///"), url
    return url[len("sqlite:///") :]


def _data_json(r: D.Row) -> str:
    return f'{{"tokens":{r.tokens},"model":"{r.model}"}}'


def _tuples(rows: list[D.Row], source: str) -> list[tuple[Any, ...]]:
    return [(source, r.id, D.EVENT_TYPE, r.subject, r.time_us, _data_json(r)) for r in rows]


class Store:
    """One connection per thread to a reference database (SQLite file or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pg = is_pg(url)
        self._local = threading.local()

    # -- connections

    def conn(self) -> Any:
        c = getattr(self._local, "conn", None)
        if c is None:
            if self.pg:
                import psycopg

                c = psycopg.connect(self.url, autocommit=True)
            else:
                c = sqlite3.connect(
                    sqlite_path(self.url), isolation_level=None, check_same_thread=False, timeout=60
                )
                c.execute("PRAGMA journal_mode=WAL")
                c.execute("PRAGMA synchronous=FULL")
                c.execute("PRAGMA cache_size=-65536")
                c.execute("PRAGMA temp_store=MEMORY")
            self._local.conn = c
        return c

    def q(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        c = self.conn()
        if self.pg:
            sql = sql.replace("?", "%s")
            cur = c.execute(sql, params, prepare=True)
            return cur.fetchall() if cur.description else []
        return c.execute(sql, params).fetchall()

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    # -- schema

    def create_table(self, table: str, *, jsonb: bool, unique: bool, index: bool) -> None:
        data_type = "JSONB" if (self.pg and jsonb) else "TEXT"
        self.q(f"DROP TABLE IF EXISTS {table}")
        self.q(
            f"CREATE TABLE {table} (source TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, "
            f"subject TEXT NOT NULL, time BIGINT NOT NULL, data {data_type})"
        )
        if unique:
            self.q(f"CREATE UNIQUE INDEX {table}_dedup ON {table} (source, id)")
        if index:
            self.create_index(table)

    def create_index(self, table: str) -> None:
        self.q(
            f"CREATE INDEX IF NOT EXISTS {table}_subject_type_time ON {table} (subject, type, time)"
        )
        if self.pg:
            self.q(f"VACUUM ANALYZE {table}")
        else:
            self.q(f"ANALYZE {table}")

    # -- writes

    def insert_batches(
        self,
        table: str,
        batches: Iterable[list[D.Row]],
        source: str = D.SOURCE,
        on_conflict: bool = False,
    ) -> tuple[int, float]:
        """Raw insert, one transaction per batch; returns (rows, seconds of insert time).

        Row tuples are built before the clock starts for each batch, so the figure is the
        engine's (and its client library's) cost only.
        """
        c = self.conn()
        n = 0
        spent = 0.0
        for rows in batches:
            tuples = _tuples(rows, source)
            t = time.perf_counter()
            if self.pg:
                with c.transaction():
                    if on_conflict:
                        sql = (
                            f"INSERT INTO {table} VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING"
                        )
                        c.cursor().executemany(sql, tuples)
                    else:
                        with c.cursor().copy(
                            f"COPY {table} (source, id, type, subject, time, data) FROM STDIN"
                        ) as cp:
                            for tup in tuples:
                                cp.write_row(tup)
            else:
                c.execute("BEGIN IMMEDIATE")
                verb = "INSERT OR IGNORE" if on_conflict else "INSERT"
                c.executemany(f"{verb} INTO {table} VALUES (?,?,?,?,?,?)", tuples)
                c.execute("COMMIT")
            spent += time.perf_counter() - t
            n += len(rows)
        return n, spent

    # -- naive reads

    def _num(self, field: str) -> str:
        return f"(data->>'{field}')::numeric" if self.pg else f"json_extract(data, '$.{field}')"

    def _text(self, field: str) -> str:
        return f"data->>'{field}'" if self.pg else f"json_extract(data, '$.{field}')"

    def naive_usage(self, table: str, subject: str, from_us: int, to_us: int) -> Any:
        return self.q(
            f"SELECT coalesce(sum({self._num('tokens')}), 0) FROM {table} "
            "WHERE subject = ? AND type = ? AND time >= ? AND time < ?",
            (subject, D.EVENT_TYPE, from_us, to_us),
        )[0][0]

    def naive_query_one(self, table: str, subject: str, from_us: int, to_us: int) -> list[Any]:
        return self.q(
            f"SELECT time / {DAY_US} AS d, sum({self._num('tokens')}) FROM {table} "
            "WHERE subject = ? AND type = ? AND time >= ? AND time < ? GROUP BY d ORDER BY d",
            (subject, D.EVENT_TYPE, from_us, to_us),
        )

    def naive_query_all(self, table: str, from_us: int, to_us: int) -> list[Any]:
        return self.q(
            f"SELECT subject, {self._text('model')} AS m, time / {DAY_US} AS d, "
            f"sum({self._num('tokens')}) FROM {table} "
            "WHERE type = ? AND time >= ? AND time < ? GROUP BY subject, m, d ORDER BY d",
            (D.EVENT_TYPE, from_us, to_us),
        )

    # -- the smallest database round trip (the in-process floor)

    def ensure_point_table(self, keys: list[str]) -> None:
        self.q("CREATE TABLE IF NOT EXISTS bench_point (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        if not self.q("SELECT 1 FROM bench_point LIMIT 1"):
            c = self.conn()
            rows = [(s, '{"balance":1000}') for s in keys]
            if self.pg:
                c.cursor().executemany("INSERT INTO bench_point VALUES (%s, %s)", rows)
            else:
                c.executemany("INSERT INTO bench_point VALUES (?, ?)", rows)

    def point_read(self, key: str) -> Any:
        return self.q("SELECT v FROM bench_point WHERE k = ?", (key,))

    # -- naive authorize (bench/authorize.py)

    def create_authorize_tables(self) -> None:
        amount = "NUMERIC" if self.pg else "TEXT"
        self.q(
            "CREATE TABLE IF NOT EXISTS naive_requests (subject TEXT NOT NULL, at BIGINT NOT NULL)"
        )
        self.q("CREATE INDEX IF NOT EXISTS naive_requests_at ON naive_requests (subject, at)")
        self.q(
            "CREATE TABLE IF NOT EXISTS naive_holds (subject TEXT NOT NULL, "
            f"amount {amount} NOT NULL, expires BIGINT NOT NULL)"
        )
        self.q("CREATE INDEX IF NOT EXISTS naive_holds_expires ON naive_holds (subject, expires)")

    def naive_authorize(
        self,
        table: str,
        subject: str,
        from_us: int,
        to_us: int,
        limit: int = 600,
        budget: int = 10**12,
        amount: int = 1,
    ) -> tuple[int, bytes]:
        import time as _time

        now = int(_time.time() * 1_000_000)
        c = self.conn()
        statements = [
            (
                "SELECT count(*) FROM naive_requests WHERE subject = ? AND at > ?",
                (subject, now - 60_000_000),
            ),
            (
                f"SELECT coalesce(sum({self._num('tokens')}), 0) FROM {table} "
                "WHERE subject = ? AND type = ? AND time >= ? AND time < ?",
                (subject, D.EVENT_TYPE, from_us, to_us),
            ),
            (
                "SELECT coalesce(sum(amount), 0) FROM naive_holds"
                " WHERE subject = ? AND expires > ?",
                (subject, now),
            ),
        ]
        if self.pg:
            with c.transaction():
                c.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (subject,))
                counts = [c.execute(q.replace("?", "%s"), p).fetchone()[0] for q, p in statements]
                ok = counts[0] < limit and float(counts[1]) + float(counts[2]) + amount <= budget
                if ok:
                    c.execute("INSERT INTO naive_requests VALUES (%s, %s)", (subject, now))
                    c.execute(
                        "INSERT INTO naive_holds VALUES (%s, %s, %s)",
                        (subject, amount, now + 300_000_000),
                    )
        else:
            c.execute("BEGIN IMMEDIATE")
            try:
                counts = [c.execute(q, p).fetchone()[0] for q, p in statements]
                ok = counts[0] < limit and float(counts[1]) + float(counts[2]) + amount <= budget
                if ok:
                    c.execute("INSERT INTO naive_requests VALUES (?, ?)", (subject, now))
                    c.execute(
                        "INSERT INTO naive_holds VALUES (?, ?, ?)",
                        (subject, amount, now + 300_000_000),
                    )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        if not ok:
            return 429, b'{"allowed":false}'
        return 200, json.dumps({"allowed": True, "remaining": limit - counts[0] - 1}).encode()


def count_rows(store: Store, table: str) -> int:
    try:
        return int(store.q(f"SELECT count(*) FROM {table}")[0][0])
    except Exception:
        return -1


def chunks(it: Iterable[D.Row], n: int) -> Iterator[list[D.Row]]:
    out: list[D.Row] = []
    for r in it:
        out.append(r)
        if len(out) == n:
            yield out
            out = []
    if out:
        yield out
