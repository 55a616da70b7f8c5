"""What threshold evaluation costs ingest (not collected by pytest).

    .venv/bin/python tests/perf_notifications.py --batches 40 --rounds 2

In one process, on a fresh SQLite database: ingest 1000-event batches over 200 subjects
(each with a metered entitlement) through ``EventService.write_batches`` — the group-commit
writer's own call — while the serve process's background workers run, first with no rule,
then with 1000 balance-threshold rules (100 on the entitlements' feature, 900 on nine other
features of the same meter; thresholds never reached, so every evaluation runs in full and
fires nothing), alternating ``--rounds`` times. Prints events/s of each phase and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from allotment.config import load_file  # noqa: E402
from allotment.container import build_container  # noqa: E402
from allotment.domain.entitlement_inputs import parse_entitlement_create, parse_feature_create  # noqa: E402
from allotment.domain.events import validate_event  # noqa: E402
from allotment.domain.notifications import parse_channel, parse_rule  # noqa: E402
from allotment.http.routes.notifications import render_payload  # noqa: E402
from allotment.services.events import prepare  # noqa: E402
from tests.support import EXAMPLE_CONFIG  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--subjects", type=int, default=200)
    ap.add_argument("--rules", type=int, default=1000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="allotment-perf-notify-"))
    from dataclasses import replace

    settings = replace(
        load_file(str(EXAMPLE_CONFIG)), db_url=f"sqlite:///{tmp / 'db.sqlite'}",
        webhook_allow_private=True, notifications_tick_seconds=0.2,
    )  # fmt: skip
    c = build_container(settings)
    c.start()
    c.notifications.render = render_payload
    c.start_background()
    features = []
    for i in range(10):
        f = c.features.create(parse_feature_create(
            {"key": f"perf_f{i}", "name": f"f{i}", "meterSlug": "tokens_total"}))  # fmt: skip
        features.append(f.key)
    for s in range(args.subjects):
        c.entitlements.create(f"subj{s}", parse_entitlement_create(
            {"type": "metered", "featureKey": features[0], "usagePeriod": {"interval": "MONTH"},
             "issueAfterReset": 10**12}))  # fmt: skip
    channel = c.notifications.create_channel(
        parse_channel({"type": "WEBHOOK", "name": "perf", "url": "http://127.0.0.1:9/"})
    )
    now = c.clock.now().astimezone(UTC)
    seq = [0]

    def batch() -> list[tuple]:  # type: ignore[type-arg]
        out = []
        for _ in range(1000):
            seq[0] += 1
            raw = {"specversion": "1.0", "id": f"e{seq[0]}", "source": "perf", "type": "prompt",
                   "subject": f"subj{seq[0] % args.subjects}",
                   "data": {"tokens": 1, "model": "m", "type": "in"}}  # fmt: skip
            out.append(prepare(validate_event(raw, "event", now)))
        return out

    def phase() -> tuple[float, float]:
        """(events/s on the wall clock, process CPU ms per 1000 events, the evaluator's
        catch-up after the last batch included)."""
        batches = [batch() for _ in range(args.batches)]
        cpu = time.process_time()
        started = time.perf_counter()
        for b in batches:
            c.events.write_batches([b])
        elapsed = time.perf_counter() - started
        time.sleep(2.0)  # the evaluator catches up (sleeping costs no CPU)
        cpu = time.process_time() - cpu
        return args.batches * 1000 / elapsed, cpu * 1000 / args.batches

    def make_rules() -> list[str]:
        ids = []
        for i in range(args.rules):
            r = c.notifications.create_rule(parse_rule(
                {"type": "entitlements.balance.threshold", "name": f"r{i}",
                 "channels": [channel.id], "features": [features[i % 10]],
                 "thresholds": [{"value": 10**13, "type": "usage_value"},
                                {"value": 99, "type": "usage_percentage"}]}))  # fmt: skip
            ids.append(r.id)
        return ids

    phase()  # warm-up
    base: list[tuple[float, float]] = []
    ruled: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        base.append(phase())
        ids = make_rules()
        c.notify_evaluator.refresh()  # type: ignore[union-attr]
        ruled.append(phase())
        for rid in ids:
            c.notifications.delete_rule(rid)
        c.notify_evaluator.refresh()  # type: ignore[union-attr]
    ev = c.notify_evaluator.evaluations  # type: ignore[union-attr]
    c.close()
    for name, rows in (("no rules", base), (f"{args.rules} rules", ruled)):
        print(f"{name:>10}: {median(x for x, _ in rows):,.0f} events/s, "
              f"{median(y for _, y in rows):.1f} CPU ms per 1000 events  "
              f"({'; '.join(f'{x:,.0f}/s {y:.1f} ms' for x, y in rows)})")  # fmt: skip
    wall = median(x for x, _ in ruled) / median(x for x, _ in base)
    cpu_ratio = median(y for _, y in ruled) / median(y for _, y in base)
    print(
        f"throughput ratio (rules / none): {wall:.3f}; CPU per event ratio: {cpu_ratio:.3f}; "
        f"entitlement evaluations: {ev}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
