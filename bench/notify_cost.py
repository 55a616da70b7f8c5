"""What evaluating notification rules costs ingest (issue 19: ≤ 10 % with 1 000 rules): the
``notify.ingest`` cell of ``python -m bench`` (docs/benchmarks.md, "Notification cost").

In one process, on a fresh database of the backend: 1000-event batches over ``subjects``
subjects (each with a metered entitlement on the bench meter) go through
``EventService.write_batches`` — the group-commit writer's own call — while the serve
process's background workers run (the evaluator and the webhook sender), first with **no
rule** (the same-process baseline), then with ``rules`` balance-threshold rules (a tenth on
the entitlements' feature, the rest on nine other features of the same meter; thresholds
never reached, so every evaluation runs in full and fires nothing), alternating ``rounds``
times. A phase's throughput is on the wall clock from its first write until every event counts
(``EventService.settle``: on SQLite the deferred fold folds the tail, which an evaluation
pass would otherwise do inside the rules phase only, moving work between the two); the
writes alone are kept as ``write_rate``. Its CPU per 1000 events includes the evaluator's
catch-up after the last batch (a fixed pause; sleeping costs no CPU). The cell's answer is
the ratio of the medians: events/s with rules ÷ events/s without (issue 19's target: ≥ 0.9),
and the same for the writes alone and for CPU per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC
from pathlib import Path
from statistics import median
from typing import Any

from bench import data as D

CATCH_UP_S = 2.0
"""Pause after a phase's last batch: the evaluator finishes its passes (counted in CPU)."""
FEATURES = 10


def _container(db_url: str, config: Path) -> Any:
    from allotment.config import load_file
    from allotment.container import build_container
    from allotment.http.routes.notifications import render_payload

    settings = replace(
        load_file(str(config)), db_url=db_url, webhook_allow_private=True,
        notifications_tick_seconds=0.2,
    )  # fmt: skip
    c = build_container(settings)
    c.start()
    c.notifications.render = render_payload
    c.start_background()
    return c


def measure(
    db_url: str,
    config: Path,
    log: Callable[[str], None],
    *,
    batches: int,
    rounds: int,
    subjects: int,
    rules: int,
) -> dict[str, Any]:
    """Ingest with and without ``rules`` rules, alternating; returns the cell's figures."""
    from allotment.domain.entitlement_inputs import parse_entitlement_create, parse_feature_create
    from allotment.domain.events import validate_event
    from allotment.domain.notifications import parse_channel, parse_rule
    from allotment.services.events import prepare

    c = _container(db_url, config)
    try:
        keys = []
        for i in range(FEATURES):
            f = c.features.create(parse_feature_create(
                {"key": f"notify_f{i}", "name": f"f{i}", "meterSlug": D.METER_SLUG}))  # fmt: skip
            keys.append(f.key)
        for s in range(subjects):
            c.entitlements.create(f"notify-s{s}", parse_entitlement_create(
                {"type": "metered", "featureKey": keys[0], "usagePeriod": {"interval": "MONTH"},
                 "issueAfterReset": 10**12}))  # fmt: skip
        channel = c.notifications.create_channel(
            parse_channel({"type": "WEBHOOK", "name": "bench", "url": "http://127.0.0.1:9/"})
        )
        now = c.clock.now().astimezone(UTC)
        seq = [0]

        def batch() -> list[Any]:
            out = []
            for _ in range(1000):
                seq[0] += 1
                raw = {"specversion": "1.0", "id": f"n{seq[0]}", "source": "bench-notify",
                       "type": D.EVENT_TYPE, "subject": f"notify-s{seq[0] % subjects}",
                       "data": {"tokens": 1, "model": D.MODELS[0]}}  # fmt: skip
                out.append(prepare(validate_event(raw, "event", now)))
            return out

        def phase() -> tuple[float, float, float]:
            """(events/s until every event counts, events/s of the writes alone, process CPU
            ms per 1000 events with the catch-up)."""
            todo = [batch() for _ in range(batches)]
            cpu = time.process_time()
            started = time.perf_counter()
            for b in todo:
                c.events.write_batches([b])
            written = time.perf_counter() - started
            c.events.settle()  # SQLite's deferred fold: every event counts in the rollups
            folded = time.perf_counter() - started
            time.sleep(CATCH_UP_S)
            cpu = time.process_time() - cpu
            n = batches * 1000
            return n / folded, n / written, cpu * 1000 / batches

        def make_rules() -> list[str]:
            ids = []
            for i in range(rules):
                r = c.notifications.create_rule(parse_rule(
                    {"type": "entitlements.balance.threshold", "name": f"r{i}",
                     "channels": [channel.id], "features": [keys[i % FEATURES]],
                     "thresholds": [{"value": 10**13, "type": "usage_value"},
                                    {"value": 99, "type": "usage_percentage"}]}))  # fmt: skip
                ids.append(r.id)
            return ids

        phase()  # warm-up
        base: list[tuple[float, float, float]] = []
        ruled: list[tuple[float, float, float]] = []
        evaluator = c.notify_evaluator
        assert evaluator is not None  # start_background made it
        for n in range(rounds):
            base.append(phase())
            ids = make_rules()
            evaluator.refresh()
            ruled.append(phase())
            for rid in ids:
                c.notifications.delete_rule(rid)
            evaluator.refresh()
            log(f"    round {n + 1}: {base[-1][0]:,.0f} ev/s without, {ruled[-1][0]:,.0f} with "
                f"(writes alone {base[-1][1]:,.0f} / {ruled[-1][1]:,.0f})")  # fmt: skip
        evaluations = evaluator.evaluations
    finally:
        c.close()

    def stats(rows: list[tuple[float, float, float]], **extra: Any) -> dict[str, Any]:
        return {
            "rate": median(r for r, _, _ in rows),
            "write_rate": median(w for _, w, _ in rows),
            "cpu_ms_per_1000": median(m for _, _, m in rows),
            "phases": [{"rate": r, "write_rate": w, "cpu_ms_per_1000": m} for r, w, m in rows],
            "events": batches * 1000 * len(rows),
            **extra,
        }

    ours = stats(ruled, rules=rules, evaluations=evaluations)
    baseline = stats(base, rules=0)
    return {
        "ours": ours,
        "baseline": baseline,
        "ratio": ours["rate"] / baseline["rate"],
        "write_ratio": ours["write_rate"] / baseline["write_rate"],
        "cpu_ratio": ours["cpu_ms_per_1000"] / baseline["cpu_ms_per_1000"],
        "setup": {
            "subjects": subjects,
            "batches": batches,
            "rounds": rounds,
            "features": FEATURES,
            "catch_up_s": CATCH_UP_S,
        },
    }
