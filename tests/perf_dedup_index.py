"""Raw SQLite cost of the dedup index at scale (not collected by pytest; no server, no rollups).

    .venv/bin/python tests/perf_dedup_index.py 1000000

Loads N random-id events (cached per N under $TMPDIR/allotment-perf), then times 200 000 more
in 10 000-row transactions (WAL, synchronous=FULL) with: the unique (source, id) index ingest
uses; a 64-bit hash key table (WITHOUT ROWID, (hash, seq)) probed with IN lists; no dedup index.
"""

# ruff: noqa: E501, UP031

import hashlib
import os
import sqlite3
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from bench import data as D

N = int(sys.argv[1])
M = 200_000
txn = 10000


def rows(n, seed):
    out = []
    for b in D.generate(n, seed=seed, source="w"):
        for r in b:
            out.append(
                (
                    "w",
                    r.id,
                    "bench_prompt",
                    r.subject,
                    r.time_us,
                    1,
                    '{"specversion":"1.0","id":"%s","source":"w","type":"bench_prompt","subject":"%s","time":"2026-10-01T00:00:00.123Z","data":{"tokens":%d,"model":"%s"}}'
                    % (r.id, r.subject, r.tokens, r.model),
                )
            )
    return out


pre = rows(N, 1)
new = rows(M, 2)


def h64(s, i):
    return int.from_bytes(
        hashlib.blake2b(f"{s}\0{i}".encode(), digest_size=8).digest(), "big", signed=True
    )


base = "CREATE TABLE events (seq INTEGER PRIMARY KEY, source TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, subject TEXT NOT NULL, time INTEGER NOT NULL, ingested_at INTEGER NOT NULL, event TEXT NOT NULL)"
ins = "INSERT INTO events (source,id,type,subject,time,ingested_at,event) VALUES (?,?,?,?,?,?,?)"
idx = ["CREATE INDEX a ON events(time)", "CREATE INDEX b ON events(type,time)"]


def db(name, ddl, load):
    p = f"/tmp/allotment-perf/sq-{name}-{N}.db"
    if not os.path.exists(p):
        c = sqlite3.connect(p + ".tmp", isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute(base)
        c.execute("BEGIN")
        load(c, pre)
        c.execute("COMMIT")
        for s in idx + ddl:
            c.execute(s)
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
        os.rename(p + ".tmp", p)
    for s in ("-wal", "-shm"):
        try:
            os.unlink("/tmp/allotment-perf/run.db" + s)
        except FileNotFoundError:
            pass
    os.system(f"cp {p} /tmp/allotment-perf/run.db")
    c = sqlite3.connect("/tmp/allotment-perf/run.db", isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=FULL")
    c.execute("PRAGMA cache_size=-65536")
    return c


def plain_load(c, rs):
    c.executemany(ins, rs)


def hash_load(c, rs):
    c.executemany(ins, rs)
    c.execute(
        "CREATE TABLE k (h INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (h, seq)) WITHOUT ROWID"
    )
    c.executemany(
        "INSERT INTO k VALUES (?,?)", sorted((h64(r[0], r[1]), j + 1) for j, r in enumerate(rs))
    )


def timed(name, c, step):
    t = time.perf_counter()
    ct = time.process_time()
    for i in range(0, M, txn):
        c.execute("BEGIN IMMEDIATE")
        step(c, new[i : i + txn])
        c.execute("COMMIT")
    w = time.perf_counter() - t
    cpu = time.process_time() - ct
    print(f"N={N:,} {name:34s} {M / w:9,.0f} rows/s  cpu {cpu / M * 1e6:.2f} us/row", flush=True)


c = db("plain", ["CREATE UNIQUE INDEX u ON events(source,id)"], plain_load)
timed(
    "unique(source,id)",
    c,
    lambda c, ch: c.executemany(ins + " ON CONFLICT (source,id) DO NOTHING", ch),
)


def hstep(c, chunk):
    hs = [h64(r[0], r[1]) for r in chunk]
    for j in range(0, len(hs), 500):
        part = hs[j : j + 500]
        c.execute(
            "SELECT h, seq FROM k WHERE h IN (%s)" % ",".join("?" * len(part)), part
        ).fetchall()
    (mx,) = c.execute("SELECT coalesce(max(seq),0) FROM events").fetchone()
    c.executemany(ins, chunk)
    c.executemany(
        "INSERT INTO k (h, seq) VALUES (?,?)", [(h, mx + 1 + j) for j, h in enumerate(hs)]
    )


c = db("hash", [], hash_load)
timed("hash key table", c, hstep)
c = db("none", [], plain_load)
timed("no dedup index (floor)", c, lambda c, ch: c.executemany(ins, ch))
