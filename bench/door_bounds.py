"""What the door's number, depth and key bounds (issue 12, docs/limits.md) cost the ingest hot
path: ``decode_events`` of a batch with the bounds as served, against the same code with them
turned off (the plain ``Decimal`` number hook, no ``violation`` walk of ``data``), in one
process, same bodies, alternating round by round.

    .venv/bin/python -m bench.door_bounds [--events 1000] [--batches 20] [--rounds 7]

Two bodies: ``typical`` (a few short numbers and strings per event, one nested object) and
``numeric`` (twelve numbers per event, half of them 20 characters or longer). The report
gives each variant's median and minimum µs per event and the ratios bounded / unbounded (the
machine is shared: rounds scatter). The turned-off variant is only a baseline, never served.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

import msgspec

from allotment.clock import FrozenClock
from allotment.container import Container
from allotment.domain.json_bounds import exact_decimal
from allotment.http.routes import events as door

NOW = datetime(2025, 5, 1, 12, tzinfo=UTC)


def _typical(i: int) -> str:
    return (f'{{"tokens": {1234 + i}, "cost": "0.0042", "model": "gpt-4o-mini", "latency": 0.25,'
            ' "meta": {"region": "eu-west-1", "retries": 0, "cached": false}}')  # fmt: skip


def _numeric(i: int) -> str:
    """Six short numbers and six of 20+ characters (each examined by the range check)."""
    short = ", ".join(f'"n{k}": {i * 7 + k}' for k in range(6))
    long = ", ".join(f'"d{k}": {i}.{k:0>17}1' for k in range(6))
    return "{" + short + ", " + long + "}"


def _batch(n: int, data: Callable[[int], str], seed: int) -> bytes:
    """A JSON array of ``n`` events whose ``data`` is the given JSON text."""
    events = [f'{{"specversion": "1.0", "id": "e{seed}-{i}", "source": "bench", "type": "t",'
              f' "subject": "s{i % 50}", "time": "2025-05-01T11:59:00Z", "data": {data(i)}}}'
              for i in range(n)]  # fmt: skip
    return ("[" + ", ".join(events) + "]").encode()


def _unbounded() -> Callable[[], None]:
    """Turn the bounds off in ``routes.events``; the returned function turns them back on."""
    typed, check = door._typed, door.violation
    door._typed = msgspec.json.Decoder(  # type: ignore[misc]
        list[door._EventIn] | door._EventIn, float_hook=exact_decimal
    )
    door.violation = lambda *a, **k: None  # type: ignore[assignment]

    def restore() -> None:
        door._typed, door.violation = typed, check  # type: ignore[misc]

    return restore


def _time(bodies: list[bytes], c: Container) -> float:
    start = time.perf_counter()
    count = 0
    for body in bodies:
        count += len(door.decode_events(body, "batch", c))
    return (time.perf_counter() - start) / count * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000, help="events per batch")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    c = cast(Container, SimpleNamespace(clock=FrozenClock(NOW)))
    for label, data in (("typical", _typical), ("numeric", _numeric)):
        bodies = [_batch(args.events, data, b) for b in range(args.batches)]
        json.loads(bodies[0])  # valid JSON
        samples: dict[str, list[float]] = {"bounded": [], "unbounded": []}
        for _ in range(args.rounds):
            samples["bounded"].append(_time(bodies, c))
            restore = _unbounded()
            try:
                samples["unbounded"].append(_time(bodies, c))
            finally:
                restore()
        med = {name: statistics.median(s) for name, s in samples.items()}
        low = {name: min(s) for name, s in samples.items()}
        for name, s in samples.items():
            print(f"{label:>8} {name:>9}: median {med[name]:6.2f}, min {low[name]:6.2f} µs/event"
                  "  (rounds: " + ", ".join(f"{x:.2f}" for x in s) + ")")  # fmt: skip
        print(f"{label:>8} bounded / unbounded = {med['bounded'] / med['unbounded']:.3f} (median),"
              f" {low['bounded'] / low['unbounded']:.3f} (min)")  # fmt: skip


if __name__ == "__main__":
    main()
