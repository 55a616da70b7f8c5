"""Minimal HTTP/1.1 keep-alive clients over raw sockets, so the client costs little next to the
server it measures (httpx costs about 10x more per request than the server's floor).

* :class:`Conn`: one blocking keep-alive connection, for latency (one request at a time).
* :func:`blast`: ``concurrency`` asyncio connections sending a list of requests, for throughput.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


class HttpError(Exception):
    pass


def _request(
    method: str, host: str, path: str, body: bytes | None, content_type: str | None
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body is not None:
        head += (
            f"Content-Type: {content_type or 'application/json'}\r\nContent-Length: {len(body)}\r\n"
        )
    return (head + "\r\n").encode() + (body or b"")


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, chunked) from a response head."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value.strip())
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return status, length, chunked


class Conn:
    """One blocking keep-alive HTTP/1.1 connection."""

    def __init__(self, base_url: str, timeout: float = 900.0) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.hostport = f"{self.host}:{self.port}"
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = b""
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def prepare(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> bytes:
        return _request(method, self.hostport, path, body, content_type)

    def send_raw(self, request: bytes) -> tuple[int, bytes]:
        sock = self.sock or self._connect()
        sock.sendall(request)
        # a bytearray grows in place: `bytes +=` would copy the whole buffer per chunk,
        # quadratic in the body (≈ 0.1 s of client time on a 13 MB meter query answer)
        buf = bytearray(self.buf)
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            chunk = sock.recv(65536)
            if not chunk:
                self.close()
                raise HttpError("connection closed by the server")
            buf += chunk
        status, length, chunked = _parse_head(bytes(buf[:end]))
        if chunked:
            raise HttpError("chunked responses are not supported by the bench client")
        start = end + 4
        while len(buf) < start + length:
            chunk = sock.recv(65536)
            if not chunk:
                self.close()
                raise HttpError("connection closed by the server")
            buf += chunk
        body = bytes(buf[start : start + length])
        self.buf = bytes(buf[start + length :])
        return status, body

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, bytes]:
        return self.send_raw(self.prepare(method, path, body, content_type))

    def json(
        self,
        method: str,
        path: str,
        payload: object = None,
        expect: Sequence[int] = (200, 201, 204),
    ) -> object:
        import json

        body = None if payload is None else json.dumps(payload).encode()
        status, data = self.request(method, path, body)
        if status not in expect:
            raise HttpError(f"{method} {path} -> {status}: {data[:500]!r}")
        return json.loads(data) if data else None


@dataclass
class BlastResult:
    requests: int
    seconds: float
    statuses: dict[int, int]
    latencies_us: list[float]


async def _worker(
    host: str,
    port: int,
    requests: list[bytes],
    statuses: dict[int, int],
    latencies: list[float],
    deadline: float,
) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    clock = time.perf_counter
    try:
        for req in requests:
            t = clock()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length, chunked = _parse_head(head[:-4])
            if chunked:
                raise HttpError("chunked responses are not supported by the bench client")
            if length:
                await reader.readexactly(length)
            done = clock()
            latencies.append((done - t) * 1e6)
            statuses[status] = statuses.get(status, 0) + 1
            if done > deadline:
                break
    finally:
        writer.close()


def blast(
    base_url: str, requests: list[bytes], concurrency: int, budget_s: float | None = None
) -> BlastResult:
    """Send ``requests`` over ``concurrency`` keep-alive connections (round-robin split); with
    ``budget_s``, each connection stops after its first answer past the budget."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    shares = [requests[i::concurrency] for i in range(concurrency)]
    statuses: dict[int, int] = {}
    latencies: list[float] = []

    async def main() -> float:
        t = time.perf_counter()
        deadline = t + budget_s if budget_s is not None else float("inf")
        await asyncio.gather(
            *(_worker(host, port, s, statuses, latencies, deadline) for s in shares if s)
        )
        return time.perf_counter() - t

    try:
        import uvloop

        seconds = uvloop.run(main())
    except ImportError:  # pragma: no cover
        seconds = asyncio.run(main())
    return BlastResult(sum(statuses.values()), seconds, statuses, latencies)


def build_request(
    base_url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = None,
) -> bytes:
    parts = urlsplit(base_url)
    return _request(method, f"{parts.hostname}:{parts.port}", path, body, content_type)
