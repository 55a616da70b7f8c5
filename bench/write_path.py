"""Where the ingest write transaction's time goes, in process (issue 18).

    .venv/bin/python -m bench.write_path [--events 20000] [--group 10] [--rounds 3]
        [--backend sqlite|postgres] [--pg-url URL] [--refold]

A fresh database per round (the bench's SUM meter, ``groupBy model``), the bench's events in
1000-event batches decoded and prefolded exactly as ``POST /api/v1/events`` does
(``decode_events``, ``EventService.prefold``), then written ``--group`` batches per call of
``EventService.write_batches`` (what the group commit forms under load). Every SQL statement
the write transaction runs is timed and attributed to the table it names; the rest of the call
(Python, ``BEGIN``/``COMMIT``) is reported apart. Prints µs per event, median over rounds.
``--refold`` then writes and folds the same events again under other ids, so every rollup
upsert takes its conflict path (what a fold does to the rows of minutes, hours and days that
earlier folds wrote).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import data as D
from bench import project as P

_TABLES = (
    "usage_marks",
    "usage_minute",
    "usage_hour",
    "usage_day",
    "usage_unique",
    "usage_pending",
    "event_keys",
    "events",
    "meters",
)


def _table_of(sql: str) -> str:
    head = sql[:160]
    for t in _TABLES:
        if t in head:
            return t
    return head.split()[0].lower() if head.split() else "?"


class _Timer:
    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, cls: Any) -> None:
        """Time every statement ``cls`` runs (``execute``, ``execute_many``, ``rowcount``),
        attributed to the table it names."""
        for name in ("execute", "execute_many", "rowcount"):
            setattr(cls, name, self._timed_statement(getattr(cls, name)))

    def _timed_statement(self, run: Callable[..., Any]) -> Callable[..., Any]:
        timer = self

        def timed(tx: Any, sql: str, *args: Any) -> Any:
            t = time.perf_counter()
            try:
                return run(tx, sql, *args)
            finally:
                key = "sql " + _table_of(sql)
                timer.spent[key] += time.perf_counter() - t
                timer.calls[key] += 1

        return timed

    def wrap_function(
        self,
        owner: Any,
        name: str,
        label: str,
        *,
        static: bool = False,
        only: tuple[str, ...] = (),
    ) -> Callable[[], None]:
        """Time every call of ``owner.name`` under ``label``; returns the undo."""
        original = owner.__dict__[name]
        fn = original.__func__ if static else original
        timer = self

        def timed(*a: Any, **k: Any) -> Any:
            what = label
            if only:
                head = next((w for w in only if str(a[1]).startswith(w)), None)
                if head is None:
                    return fn(*a, **k)
                what = label + head
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timer.spent[what] += time.perf_counter() - t
                timer.calls[what] += 1

        setattr(owner, name, classmethod(timed) if static else timed)

        def undo() -> None:
            setattr(owner, name, original)

        return undo


def _phase(run: Callable[[], object], n: int) -> dict[str, float]:
    """Run ``run`` with every statement, ``Folded.combine``, the rollup row builder and
    ``BEGIN``/``COMMIT`` timed; µs per event of ``n``."""
    from allotment.storage import sqlite_database, usage_write
    from allotment.storage.postgres_database import _PostgresTx
    from allotment.storage.sqlite_database import _SqliteTx

    timer = _Timer()
    saved = {cls: (cls.execute, cls.execute_many, cls.rowcount) for cls in (_SqliteTx, _PostgresTx)}
    for cls in saved:
        timer.wrap(cls)
    undo = [
        timer.wrap_function(usage_write.Folded, "combine", "python Folded.combine", static=True),
        timer.wrap_function(sqlite_database, "_sqlite_exec", "sqlite ", only=("BEGIN", "COMMIT")),
    ]
    # SQLite's rows are built by _text_columns (since issue 18's fold CPU work); a checkout
    # from before has only _columns (bench.ab_commits runs older commits with this bench)
    for builder in ("_columns", "_text_columns"):
        if builder in usage_write.__dict__:
            undo.append(timer.wrap_function(usage_write, builder, "python rollup row building"))
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        run()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        for cls, (e, m, r) in saved.items():
            cls.execute, cls.execute_many, cls.rowcount = e, m, r
        for u in undo:
            u()
    out = {f"{k} ({timer.calls[k]} calls)": v / n * 1e6 for k, v in timer.spent.items()}
    out["rest (python)"] = (wall - sum(timer.spent.values())) / n * 1e6
    out["total wall"] = wall / n * 1e6
    out["total cpu"] = cpu / n * 1e6
    return out


def one_round(
    url: str, config: Path, n: int, group: int, refold: bool = False
) -> dict[str, dict[str, float]]:
    from allotment.http.routes.events import decode_events

    c = P.build_container(url, config)
    try:

        def prepare(id_prefix: str) -> list[Any]:
            bodies = [
                D.batch_body(b, "bench-wp")
                for b in D.generate(n, seed=7, source="bench-wp", id_prefix=id_prefix)
            ]
            return [c.events.prefold(decode_events(b, "batch", c)) for b in bodies]

        prepared = prepare("")

        def write() -> None:
            for start in range(0, len(prepared), group):
                c.events.write_batches(prepared[start : start + group])

        phases = {"write transaction (until acknowledged)": _phase(write, n)}
        phases["fold of the tail (EventService.settle)"] = _phase(c.events.settle, n)
        if refold:
            # the same subjects, times and values under other ids: every upsert of this fold
            # meets its row (the rollups' conflict path)
            prepared = prepare("again-")
            write()
            phases["fold of the same cells again (every upsert a conflict)"] = _phase(
                c.events.settle, n
            )
    finally:
        c.close()
    return phases


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.write_path")
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--group", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--backend", default="sqlite")
    p.add_argument("--pg-url", help="postgres: an empty database (events are added to it)")
    p.add_argument(
        "--refold",
        action="store_true",
        help="then fold the same events again under other ids (every rollup upsert conflicts)",
    )
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="allotment-wp-"))
    config = P.write_config(work)
    results: list[dict[str, dict[str, float]]] = []
    for r in range(args.rounds):
        if args.backend == "sqlite":
            url = f"sqlite:///{work}/wp-{r}.db"
        else:
            assert args.pg_url, "--pg-url (a database this may fill) is needed for postgres"
            url = args.pg_url
        results.append(one_round(url, config, args.events, args.group, args.refold))
    print(f"{args.backend}: {args.events} events, {args.group} batches of 1000 per transaction")
    for phase in results[0]:
        print(f" {phase}")
        found = {k for r in results for k in r[phase]}
        for k in sorted(found, key=lambda k: (k.startswith("total"), k)):
            vals = [r[phase].get(k, 0.0) for r in results]
            med = statistics.median(vals)
            print(f"  {k:45s} {med:7.2f} µs/event  ({min(vals):.2f}–{max(vals):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
