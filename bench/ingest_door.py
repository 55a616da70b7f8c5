"""Event-loop cost of one small ``POST /api/v1/events``: the routed Starlette app against the
ASGI fast path in front of it (``http/routes/events.py``), in one process, same data.

    .venv/bin/python -m bench.ingest_door [--requests 3000] [--rounds 5]

Each request is one valid event (≈ 200 bytes) sent straight to the ASGI callable (no socket,
no server). The group commit is replaced by an already-resolved future, so what is timed is
only what runs on the event loop: routing, the request object, decoding and validation.
The two apps alternate round by round on one machine; the report gives each one's median
µs per request and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.http.app import create_app
from allotment.storage.database import open_database

NOW = datetime(2025, 5, 1, 12, tzinfo=UTC)


def _body(i: int) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": f"e{i}",
            "source": "bench",
            "type": "tokens",
            "subject": "s1",
            "time": "2025-05-01T11:59:00Z",
            "data": {"tokens": i, "model": "m"},
        }
    ).encode()


async def _run(app: Any, bodies: Sequence[bytes]) -> float:
    sent: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    start = time.perf_counter()
    for body in bodies:
        headers = [
            (b"content-type", b"application/cloudevents+json"),
            (b"content-length", str(len(body)).encode()),
        ]
        scope = {
            "type": "http", "method": "POST", "path": "/api/v1/events", "raw_path": b"",
            "root_path": "", "query_string": b"", "headers": headers, "scheme": "http",
            "server": ("bench", 80), "client": ("bench", 1), "http_version": "1.1",
            "asgi": {"version": "3.0"},
        }  # fmt: skip
        done = False

        async def receive(body: bytes = body) -> dict[str, Any]:
            nonlocal done
            if done:
                return {"type": "http.disconnect"}
            done = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, receive, send)
    elapsed = time.perf_counter() - start
    if set(sent) != {204}:
        raise SystemExit(f"unexpected statuses: {sorted(set(sent))}")
    return elapsed / len(bodies) * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'door.db'}"
        c = Container(Settings(db_url=url), open_database(url), FrozenClock(NOW))
        c.start()
        resolved: Future[int] = Future()
        resolved.set_result(1)
        c.events.submit = lambda events: resolved  # type: ignore[method-assign]
        apps = {"routed": create_app(c, fast_paths=False), "fast path": create_app(c)}
        bodies = [_body(i) for i in range(args.requests)]
        samples: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(args.rounds):
            for name, app in apps.items():
                samples[name].append(asyncio.run(_run(app, bodies)))
        c.close()
    med = {name: statistics.median(s) for name, s in samples.items()}
    for name, s in samples.items():
        print(f"{name:>10}: median {med[name]:6.1f} µs/request  (rounds: "
              + ", ".join(f"{x:.1f}" for x in s) + ")")  # fmt: skip
    print(f"routed / fast path = {med['routed'] / med['fast path']:.2f}")


if __name__ == "__main__":
    main()
