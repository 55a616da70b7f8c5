"""Cost of the bounded HTTP protocol (``http/server_protocol.py``) against uvicorn's own
httptools protocol, on a trivial ASGI app, in one run on one machine.

    .venv/bin/python -m bench.http_protocol [--requests 3000] [--rounds 5]

Two uvicorn servers (one process each) serve the same 200 answer; one runs
``GuardedHttpToolsProtocol``, the other ``http="httptools"``. Round by round, alternating, one
client sends ``--requests`` GETs on one kept-alive connection, then opens ``--requests // 10``
new connections with one GET each (the per-connection work: timers and the per-client count).
The report gives each protocol's median µs per request in both modes and their ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import time
from collections.abc import Sequence
from typing import Any

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
CLOSE = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


def _serve(port: int, guarded: bool) -> None:
    import uvicorn

    from allotment.http.server_protocol import GuardedHttpToolsProtocol

    http: Any = GuardedHttpToolsProtocol if guarded else "httptools"
    uvicorn.run(_app, host="127.0.0.1", port=port, http=http, log_level="error",
                access_log=False, lifespan="off")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_answer(s: socket.socket) -> None:
    data = b""
    while not data.endswith(b"ok"):
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed")
        data += chunk


def _keep_alive(port: int, n: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as s:
        t0 = time.perf_counter()
        for _ in range(n):
            s.sendall(REQUEST)
            _read_answer(s)
        return (time.perf_counter() - t0) / n * 1e6


def _new_connections(port: int, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(CLOSE)
            _read_answer(s)
    return (time.perf_counter() - t0) / n * 1e6


def _wait(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    ports = {"httptools": _free_port(), "guarded": _free_port()}
    procs = [
        multiprocessing.Process(target=_serve, args=(port, name == "guarded"), daemon=True)
        for name, port in ports.items()
    ]
    for p in procs:
        p.start()
    try:
        for port in ports.values():
            _wait(port)
        results: dict[str, dict[str, list[float]]] = {n: {"keep": [], "new": []} for n in ports}
        for _ in range(args.rounds):
            for name, port in ports.items():
                results[name]["keep"].append(_keep_alive(port, args.requests))
                results[name]["new"].append(_new_connections(port, args.requests // 10))
        for mode, label in (("keep", "kept-alive GET"), ("new", "new connection + GET")):
            base = statistics.median(results["httptools"][mode])
            ours = statistics.median(results["guarded"][mode])
            print(f"{label:22} httptools {base:8.1f} µs  guarded {ours:8.1f} µs  "
                  f"ratio {ours / base:5.2f}")  # fmt: skip
    finally:
        for p in procs:
            p.terminate()
            p.join()


if __name__ == "__main__":
    main()
