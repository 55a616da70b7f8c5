"""Slow and greedy clients against a real server process, over raw sockets (issue 12;
docs/limits.md "Connections"; http/server_protocol.py).

The server runs with the timeouts lowered through their environment variables (headers 1 s,
body pauses 1 s, whole body 2 s, 4 connections per client), so each bound is tested just
inside and just past it in about a second. The engine plays no part: SQLite only.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from allotment.domain import limits
from tests.support import ServerProcess

pytestmark = pytest.mark.slow  # ~20 s: each bound waited out once

HEADERS_S, IDLE_S, BODY_S, PER_CLIENT = 1.0, 1.0, 2.0, 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("slow") / "slow.sqlite"
    proc = ServerProcess(
        f"sqlite:///{db}",
        env={
            "ALLOTMENT_HTTP_HEADER_TIMEOUT": str(HEADERS_S),
            "ALLOTMENT_HTTP_BODY_IDLE_TIMEOUT": str(IDLE_S),
            "ALLOTMENT_HTTP_BODY_TIMEOUT": str(BODY_S),
            "ALLOTMENT_HTTP_CLIENT_CONNECTIONS": str(PER_CLIENT),
        },
    ).start()
    yield proc
    proc.stop()


def _connect(server: ServerProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port))
    s.settimeout(10)
    return s


def _answer(s: socket.socket) -> bytes:
    """Everything the server sends until it closes (or a 10 s guard)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


HEALTH = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
POST_HEAD = (
    b"POST /api/v1/meters HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    b"content-type: application/json\r\ncontent-length: %d\r\n\r\n"
)


def test_headers_within_the_timeout_are_served(server: ServerProcess) -> None:
    with _connect(server) as s:
        s.sendall(HEALTH[:20])
        time.sleep(HEADERS_S * 0.6)
        s.sendall(HEALTH[20:])
        assert _status(_answer(s)) == 200


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"])
def test_headers_late_are_408_and_closed(server: ServerProcess, sent: bytes) -> None:
    with _connect(server) as s:
        t0 = time.monotonic()
        s.sendall(sent)
        answer = _answer(s)
        took = time.monotonic() - t0
    assert _status(answer) == 408
    assert b"application/problem+json" in answer
    assert b"HTTP_HEADER_TIMEOUT_SECONDS" in answer
    assert HEADERS_S * 0.9 <= took < HEADERS_S + 2


def test_the_next_request_on_a_kept_alive_connection_has_the_same_header_timeout(
    server: ServerProcess,
) -> None:
    with _connect(server) as s:
        s.sendall(HEALTH.replace(b"Connection: close\r\n", b""))
        first = s.recv(65536)
        while not first.endswith(b'{"status":"ok"}'):
            first += s.recv(65536)
        assert _status(first) == 200
        t0 = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\n")  # and then nothing
        answer = _answer(s)
        assert _status(answer) == 408
        assert time.monotonic() - t0 < HEADERS_S + 2


def _headers_of(size: int) -> bytes:
    """A GET whose request line and headers are exactly ``size`` bytes."""
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Pad: "
    return head + b"a" * (size - len(head) - 4) + b"\r\n\r\n"


def test_header_bytes_at_the_limit_are_served_and_one_more_is_431(server: ServerProcess) -> None:
    for size, status in (
        (limits.HTTP_HEADER_BYTES_MAX, 200),
        (limits.HTTP_HEADER_BYTES_MAX + 1, 431),
    ):
        request = _headers_of(size)
        assert len(request) == size
        with _connect(server) as s:
            s.sendall(request)
            assert _status(_answer(s)) == status, size


def _trickle(s: socket.socket, body: bytes, pause: float) -> None:
    """Send ``body`` a byte at a time, ``pause`` apart, until the server answers."""
    for byte in body:
        answered, _, _ = select.select([s], [], [], pause)
        if answered:  # cut off (or answered early): stop writing, read the answer
            return
        s.sendall(bytes([byte]))


def test_a_body_with_short_pauses_within_the_deadline_reaches_the_route(
    server: ServerProcess,
) -> None:
    body = b'{"slug": 1}'  # a 400 from the route: the body arrived whole
    with _connect(server) as s:
        s.sendall(POST_HEAD % len(body))
        _trickle(s, body, IDLE_S * 0.1)  # 11 pieces, 1.1 s in all (< 2 s), pauses 0.1 s
        answer = _answer(s)
    assert _status(answer) == 400
    assert b"slug" in answer


def test_a_body_that_pauses_too_long_is_408(server: ServerProcess) -> None:
    with _connect(server) as s:
        t0 = time.monotonic()
        s.sendall(POST_HEAD % 20 + b'{"slug"')
        answer = _answer(s)
        took = time.monotonic() - t0
    assert _status(answer) == 408
    assert b"HTTP_BODY_IDLE_SECONDS" in answer
    assert IDLE_S * 0.9 <= took < IDLE_S + 2


def test_a_body_trickled_past_the_deadline_is_408(server: ServerProcess) -> None:
    body = b" " * 40
    with _connect(server) as s:
        t0 = time.monotonic()
        s.sendall(POST_HEAD % len(body))
        _trickle(s, body, IDLE_S * 0.3)  # never idle for long, but 12 s in all
        answer = _answer(s)
        took = time.monotonic() - t0
    assert _status(answer) == 408
    assert b"HTTP_BODY_TIMEOUT_SECONDS" in answer
    assert BODY_S * 0.9 <= took < BODY_S + 2


def test_a_large_body_sent_at_once_is_not_mistaken_for_large_headers(
    server: ServerProcess,
) -> None:
    body = b'{"slug": "' + b"x" * (1 << 20) + b'"}'
    with _connect(server) as s:
        s.sendall(POST_HEAD % len(body) + body)
        assert _status(_answer(s)) == 400  # the route's answer about the slug


def test_one_client_holds_at_most_the_connection_limit(server: ServerProcess) -> None:
    time.sleep(0.2)  # the other tests' connections are closed
    held = [_connect(server) for _ in range(PER_CLIENT)]
    try:
        with _connect(server) as extra:
            answer = _answer(extra)
        assert _status(answer) == 503
        assert b"retry-after: 1" in answer.lower()
        assert b"HTTP_CLIENT_CONNECTIONS_MAX" in answer
        held[0].sendall(HEALTH)  # the ones within the limit are served
        assert _status(_answer(held[0])) == 200
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    with _connect(server) as s:  # the slots are given back
        s.sendall(HEALTH)
        assert _status(_answer(s)) == 200


def test_the_server_logs_no_traceback_for_cut_off_clients(server: ServerProcess) -> None:
    assert "Traceback" not in Path(server.log_path).read_text(errors="replace")
