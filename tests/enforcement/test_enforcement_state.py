"""The one statement that reads a decision's state (storage/enforcement_state.py) answers what
the one-part reads answer, on each engine; the pipelined write transaction it travels in
commits, rolls back, and raises a failed statement at the sync that carried it; the keys'
advisory locks are taken in one order and exclude each other across connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal

import pytest

from allotment.storage import enforcement_repo as repo
from allotment.storage.database import Database, DuplicateKey, PipelinedTx, Row
from allotment.storage.enforcement_state import (
    StateQuery,
    decision_state,
    send_state,
    send_state_with,
)
from allotment.storage.key_locks import ADVISORY_LOCKS, advisory_pairs

NOW = 1_800_000_000_000_000
WINDOW = 60_000_000


def _seed(db: Database) -> None:
    with db.write() as tx:
        repo.put_rate_log(tx, "c1", "rpm", WINDOW, [(NOW - 5, 2), (NOW - 1, 1)], NOW - 1)
        repo.put_rate_log(tx, "c1", "rph", 3_600_000_000, [(NOW - 9, 1)], NOW - 9)
        repo.put_rate_log(tx, "c2", "rpm", WINDOW, [(NOW - 3, 7)], NOW - 3)
        items = [
            ("r1", "c1", "tokens", "300.5", NOW + 60),  # held
            ("r2", "c1", "tokens", "20", NOW),  # expired at NOW, not swept
            ("r3", "c1", "credits", "4", NOW + 1),
            ("r4", "c2", "tokens", "1000", NOW + 60),
        ]
        repo.insert_reservations(
            tx,
            [
                repo.ReservationRecord(
                    rid, cid, cid, "held", NOW - 100, exp, None, None,
                    (repo.ItemRecord(f, Decimal(a), exp, True, "tok", None, None),),
                )
                for rid, cid, f, a, exp in items
            ],
        )  # fmt: skip
        repo.put_idempotency_record(tx, "c1", "k-live", "h1", '{"a":1}', NOW - 5, NOW + 1)
        repo.put_idempotency_record(tx, "c1", "k-gone", "h2", '{"a":2}', NOW - 9, NOW)


QUERIES = [
    StateQuery("c1", ["rpm", "rph", "none"], ["tokens", "credits", "nothing"], "k-live", NOW),
    StateQuery("c1", ["rpm"], [], None, NOW),
    StateQuery("c1", [], ["tokens"], "k-gone", NOW),
    StateQuery("c1", [], [], "k-live", NOW + 1),
    StateQuery("c2", ["rpm"], ["tokens"], "k-live", NOW),
    StateQuery("nobody", ["rpm"], ["tokens"], "k", NOW),
]


@pytest.mark.parametrize("q", QUERIES)
def test_one_statement_reads_what_the_parts_read(db: Database, q: StateQuery) -> None:
    _seed(db)
    with db.pipelined_write() as tx:
        sent = send_state(tx, q)
        tx.sync()
        state = decision_state(q, sent)
    with db.read() as rtx:
        parts = repo.TxReads(rtx)
        for f in q.logs:
            for window in (WINDOW, 3_600_000_000):
                assert state.rate_log(q.customer_id, f, window) == parts.rate_log(
                    q.customer_id, f, window
                ), (f, window)
        for f in q.holds:
            got = state.held_amount(q.customer_id, f, q.now_us)
            assert got == parts.held_amount(q.customer_id, f, q.now_us), f
        if q.idempotency_key is not None:
            key = q.idempotency_key
            got_once = state.idempotency_record(q.customer_id, key, q.now_us)
            assert got_once == parts.idempotency_record(q.customer_id, key, q.now_us)
    if q == QUERIES[0]:  # the figures themselves, once
        assert state.rate_log("c1", "rpm", WINDOW) == ((NOW - 5, 2), (NOW - 1, 1))
        assert state.rate_log("c1", "rph", WINDOW) == ()  # kept for another window
        assert state.held_amount("c1", "tokens", NOW) == Decimal("300.5")
        assert state.held_amount("c1", "credits", NOW) == Decimal(4)
        assert state.idempotency_record("c1", "k-live", NOW) == ("h1", '{"a":1}')
    with pytest.raises(AssertionError):  # a part the query did not name is a bug
        state.held_amount(q.customer_id, "unnamed", q.now_us)


@pytest.mark.parametrize("q", QUERIES)
def test_the_state_with_another_read_is_one_statement_of_both(db: Database, q: StateQuery) -> None:
    """``send_state_with``: the state read with another one-row read (PostgreSQL's read ahead)
    in one statement answers what each answers alone, that read's row or none included."""
    _seed(db)
    others: list[tuple[str, list[object], Row | None]] = [
        ("SELECT ?, 'x'", [41], (41, "x")),
        ("SELECT version FROM catalog_version WHERE id = ?", [-1], None),  # no row
    ]
    for sql, params, row in others:
        with db.pipelined_write() as tx:
            alone = send_state(tx, q)
            both = send_state_with(tx, q, (sql, params))
            tx.sync()
            want = decision_state(q, alone)
            got, got_row = both()
        assert got_row == row
        assert (got.logs, got.held, got.once) == (want.logs, want.held, want.once)


class _Undo(Exception):
    pass


def test_one_statement_writes_what_the_inserts_write(db: Database, backend: str) -> None:
    """PostgreSQL's one-statement decision writes the rows the per-table inserts write."""
    if backend != "postgres":
        pytest.skip("PostgreSQL's data-modifying WITH")
    _seed(db)  # c1 holds tokens and rpm already: the hold total and the log are updated
    items = (
        repo.ItemRecord("tokens", Decimal("12.5"), NOW + 60, True, "tok", "$.tokens", None),
        repo.ItemRecord("credits", Decimal(3), NOW + 30, True, "cr", None, None),
    )
    writes = repo.DecisionWrites(
        rate_logs=[("c1", "rpm", WINDOW, [(NOW, 1)], NOW), ("c1", "new", WINDOW, [(NOW, 2)], NOW)],
        reservation=repo.ReservationRecord(
            "r9", "c1", "acme", "held", NOW, NOW + 60, None, None, items
        ),
        idempotency=("c1", "k-new", "h9", '{"b":2}', NOW, NOW + 10),
    )
    tables = {
        "rate_limit_logs": "customer_id, feature_key, window_us, entries, updated_at",
        "reservations": "id, customer_id, customer_ref, status, created_at, expires_at",
        "reservation_items": "reservation_id, feature_key, customer_id, amount, expires_at,"
        " held, event_type, value_property",
        "reservation_hold_totals": "customer_id, feature_key, amount",
        "idempotency_records": "customer_id, idem_key, request_hash, outcome, expires_at",
    }

    def written(write: Callable[[PipelinedTx], object]) -> dict[str, list[Row]]:
        seen: dict[str, list[Row]] = {}

        def undone() -> None:
            with db.pipelined_write() as tx:
                write(tx)
                for t, cols in tables.items():
                    seen[t] = tx.execute(f"SELECT {cols} FROM {t} ORDER BY {cols}")
                raise _Undo  # rolled back: the other way writes on the same rows

        with pytest.raises(_Undo):
            undone()
        return seen

    one = written(lambda tx: tx.execute(*repo.decision_statement(writes)))
    per_table = written(lambda tx: repo.write_decisions(tx, [writes]))
    assert one == per_table
    assert ("c1", "tokens", Decimal("333.0")) in one["reservation_hold_totals"]  # 300.5+20+12.5


def test_a_pipelined_write_commits_and_rolls_back(db: Database) -> None:
    with db.write() as tx:
        tx.execute("CREATE TABLE pipe_probe (k TEXT PRIMARY KEY, v BIGINT NOT NULL)")
    with db.pipelined_write() as tx:
        tx.execute_many("INSERT INTO pipe_probe VALUES (?, ?)", [("a", 1), ("b", 2)])
        pending = tx.send("SELECT count(*) FROM pipe_probe")
        tx.sync()
        assert pending.rows() == [(2,)]
        assert tx.rowcount("UPDATE pipe_probe SET v = v + 1 WHERE k = ?", ("a",)) == 1
        assert tx.execute("SELECT v FROM pipe_probe WHERE k = ?", ("a",)) == [(2,)]
        late = tx.send("SELECT v FROM pipe_probe WHERE k = ?", ("b",))
        assert late.rows() == [(2,)]  # not synced yet: rows() syncs
        tx.execute_many("INSERT INTO pipe_probe VALUES (?, ?)", [("c", 3)])
    with db.read() as rtx:
        assert rtx.execute("SELECT k, v FROM pipe_probe ORDER BY k") == [
            ("a", 2), ("b", 2), ("c", 3)
        ]  # fmt: skip

    def fails(rows: list[tuple[str, int]], then: str) -> None:
        with db.pipelined_write() as tx:
            tx.execute_many("INSERT INTO pipe_probe VALUES (?, ?)", [("d", 4)])
            tx.execute_many("INSERT INTO pipe_probe VALUES (?, ?)", rows)
            if then != "commit":
                tx.sync()  # a duplicate raises here
            if then == "raise":
                raise ZeroDivisionError
        # otherwise a duplicate is raised with the COMMIT

    with pytest.raises(ZeroDivisionError):
        fails([("e", 5)], "raise")
    with pytest.raises(DuplicateKey):
        fails([("f", 6), ("a", 9)], "sync")
    with pytest.raises(DuplicateKey):
        fails([("g", 7), ("b", 9)], "commit")
    with db.read() as rtx:  # nothing of the three, and the connections serve on
        assert rtx.execute("SELECT count(*) FROM pipe_probe") == [(3,)]


def test_advisory_pairs_are_one_order() -> None:
    first, second = advisory_pairs(["c\x1fb", "c\x1fa", "c\x1fb", "c\x1fidempotency\x1fk"])
    pairs = list(zip(first, second, strict=True))
    assert len(pairs) == 3
    assert pairs == sorted(pairs)
    assert advisory_pairs(["c\x1fa"]) == advisory_pairs(["c\x1fa"])  # the same in every process
    assert all(-(2**31) <= n < 2**31 for n in first + second)


def test_advisory_locks_exclude_each_other(db: Database, backend: str) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL's advisory locks")
    keys = advisory_pairs(["cust\x1fa", "cust\x1fb"])
    other = advisory_pairs(["cust\x1fb"])
    taken = threading.Event()
    order: list[str] = []

    def second() -> None:
        taken.wait(10)
        with db.pipelined_write() as tx:
            tx.send(ADVISORY_LOCKS, [other[0], other[1]])
            tx.sync()
            order.append("second")

    t = threading.Thread(target=second)
    t.start()
    with db.pipelined_write() as tx:
        tx.send(ADVISORY_LOCKS, [keys[0], keys[1]])
        tx.sync()
        taken.set()
        time.sleep(0.3)  # the second session waits for the shared key meanwhile
        order.append("first")
    t.join(10)
    assert order == ["first", "second"]
    with db.pipelined_write() as tx:  # released with the COMMITs: free again
        free = tx.execute("SELECT pg_try_advisory_xact_lock(?, ?)", (keys[0][0], keys[1][0]))
        assert free == [(True,)]
