"""The interleaved authorize latency (bench/authorize.py ``interleaved``): both sides are
measured in alternating rounds (A B, B A, ...), each round of the asked size, the warm-up not
kept, and a non-200 answer counted. Two small real HTTP servers stand in for the data sets'
servers; no timing assertions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from bench.authorize import Side, interleaved

SEEN: list[tuple[str, str]] = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        SEEN.append((self.server.name, self.path))  # type: ignore[attr-defined]
        status = 429 if self.path.endswith("/refused") else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def two_servers() -> Iterator[list[str]]:
    servers = []
    for name in ("small", "large"):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.name = name  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    try:
        yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def test_rounds_alternate_between_the_sides(two_servers: list[str]) -> None:
    SEEN.clear()
    # the servers run in this process: its CPU time stands for a server's clock
    reads: list[float] = []

    def clock() -> float:
        reads.append(time.process_time())
        return reads[-1]

    a = Side(two_servers[0], ["/a/1", "/a/2", "/a/3"], b"{}", clocks={"cpu": clock})
    b = Side(two_servers[1], ["/b/1", "/b/2"], b"{}")
    interleaved([a, b], rounds=4, per_round=3, warm=2)
    assert len(reads) == 8  # before and after each of a's rounds, not around the warm-up
    assert a.spent["cpu"] == pytest.approx(sum(reads[1::2]) - sum(reads[0::2]))
    assert b.spent == {}
    assert [len(r) for r in a.rounds_us] == [3, 3, 3, 3]
    assert [len(r) for r in b.rounds_us] == [3, 3, 3, 3]
    assert all(v > 0 for r in a.rounds_us + b.rounds_us for v in r)
    assert a.bad == b.bad == 0
    # the warm-up first (2 calls each), then A B, B A, A B, B A — 3 calls a round
    names = [n for n, _ in SEEN]
    assert names[:4] == ["small", "small", "large", "large"]
    runs = [names[i] for i in range(4, len(names), 3)]
    assert runs == ["small", "large", "large", "small", "small", "large", "large", "small"]
    # each side cycles over its own paths, the warm-up included
    a_paths = [p for n, p in SEEN if n == "small"]
    assert a_paths[:5] == ["/a/1", "/a/2", "/a/3", "/a/1", "/a/2"]


def test_non_200_answers_are_counted_after_the_warm_up(two_servers: list[str]) -> None:
    a = Side(two_servers[0], ["/a/ok", "/a/refused"], b"{}")
    b = Side(two_servers[1], ["/b/ok"], b"{}")
    interleaved([a, b], rounds=2, per_round=2, warm=2)
    assert a.bad == 2  # one refused call in each round of two (the warm-up's not counted)
    assert b.bad == 0
