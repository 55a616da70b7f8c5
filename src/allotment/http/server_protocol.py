"""The HTTP/1.1 protocol ``allotment serve`` runs: uvicorn's httptools protocol with the bounds
uvicorn leaves out (docs/limits.md "Connections"; issue 12).

uvicorn (0.55) times out only an idle keep-alive connection: a client that connects and sends
nothing, sends its headers a byte at a time, or stops half-way through a body holds its
connection (and a request task waiting in ``receive()``) for ever, and one address may open as
many connections as the process has file descriptors. This subclass adds, per connection:

* **headers**: the request line and headers must be complete within
  ``header_timeout`` seconds of the accept (or of the first byte of the next request on a
  kept-alive connection), and within ``limits.HTTP_HEADER_BYTES_MAX`` bytes: 408 / 431, closed;
* **body**: no pause longer than ``body_idle`` seconds between pieces, and the whole body within
  ``body_timeout`` seconds of the headers: 408 (if no answer has started), closed — the route
  waiting for it sees a disconnect;
* **per client**: at most ``client_connections`` open connections from one address to this
  process; the next is answered 503 (``Retry-After: 1``) and closed.

It also writes an answer's head and the first piece of its body in one ``send`` (uvicorn
writes each ASGI message on its own: two system calls per plain answer, ≈ 15 % of an
authorize's server CPU; :class:`JoinedHead`).

The process-wide cap is uvicorn's own ``limit_concurrency`` (``limits.HTTP_SERVER_CONNECTIONS_MAX``,
set by ``cli.py``). The answers are written straight to the socket as ``application/problem+json``
(no request reached the app).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from allotment.config import Settings
from allotment.domain import limits

_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}  # fmt: skip


@dataclass(frozen=True)
class ClientLimits:
    header_timeout: float = limits.HTTP_HEADER_TIMEOUT_SECONDS
    body_idle: float = limits.HTTP_BODY_IDLE_SECONDS
    body_timeout: float = limits.HTTP_BODY_TIMEOUT_SECONDS
    client_connections: int = limits.HTTP_CLIENT_CONNECTIONS_MAX

    @classmethod
    def of(cls, settings: Settings) -> ClientLimits:
        return cls(
            header_timeout=settings.http_header_timeout_seconds,
            body_idle=settings.http_body_idle_seconds,
            body_timeout=settings.http_body_timeout_seconds,
            client_connections=settings.http_client_connections_max,
        )


def problem_bytes(status: int, detail: str, extra: tuple[bytes, ...] = ()) -> bytes:
    body = json.dumps(
        {"type": "about:blank", "title": _REASONS[status], "status": status, "detail": detail}
    ).encode()
    head = [
        f"HTTP/1.1 {status} {_REASONS[status]}".encode(),
        b"content-type: application/problem+json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class JoinedHead:
    """The transport one request's response cycle writes through: its first write (the
    answer's head) is held and written together with the next one (the body's first piece),
    or at the end of this turn of the event loop, or before a close — the same bytes in the
    same order, one ``send`` instead of two. Later writes go straight through."""

    __slots__ = ("_first", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
        elif self._first and data:
            self._first = False
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[ClientLimits] = ClientLimits()
    """Set once per process before serving (``cli.py``, ``asgi.py``)."""
    open_by_client: ClassVar[Counter[str]] = Counter()
    """Open connections per client address, in this process (one event loop)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._address: str | None = None
        # One watchdog timer per connection, due at the earliest deadline; moving a deadline
        # is a float assignment (a timer per request cost ~13 µs: bench/http_protocol.py).
        self._timer: asyncio.TimerHandle | None = None
        self._header_deadline: float | None = None
        self._body_deadline: float | None = None
        self._body_idle_deadline: float | None = None
        self._in_headers = False
        self._header_bytes = 0
        self._tail = b""

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else None
        if address is not None:
            if self.open_by_client[address] >= self.limits.client_connections:
                self._refuse(
                    503,
                    f"too many open connections from {address} (more than "
                    f"{self.limits.client_connections}: HTTP_CLIENT_CONNECTIONS_MAX); "
                    "close some or retry",
                    (b"retry-after: 1",),
                )
                return
            self.open_by_client[address] += 1
            self._address = address
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        if self._address is not None:
            self.open_by_client[self._address] -= 1
            if self.open_by_client[self._address] <= 0:
                del self.open_by_client[self._address]
            self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if not self._in_headers and (self.cycle is None or self.cycle.response_complete):
            self._await_headers()  # the first bytes of the next request on a kept-alive one
        if self._in_headers:
            before = self._header_bytes
            self._header_bytes += len(data)
            if self._header_bytes > limits.HTTP_HEADER_BYTES_MAX and not self._ends_in_time(
                data, before
            ):
                self._refuse(
                    431,
                    f"request line and headers exceed "
                    f"{limits.HTTP_HEADER_BYTES_MAX} bytes (HTTP_HEADER_BYTES_MAX)",
                )
                return
        self._tail = data[-3:]
        super().data_received(data)

    def _ends_in_time(self, data: bytes, before: int) -> bool:
        """Whether the headers end within the bound in this piece (which may carry the start
        of the body too): the blank line is found within the first bytes allowed."""
        seen = self._tail + data
        end = seen.find(b"\r\n\r\n")
        return end >= 0 and before - len(self._tail) + end + 4 <= limits.HTTP_HEADER_BYTES_MAX

    # ------------------------------------------------------------------ parser callbacks

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_deadline = None
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.transport is self.transport:
            self.cycle.transport = cast(asyncio.Transport, JoinedHead(self.transport, self.loop))
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            now = self.loop.time()
            self._body_deadline = now + self.limits.body_timeout
            self._body_idle_deadline = now + self.limits.body_idle
            self._watch()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self._body_deadline is not None:
            self._body_idle_deadline = self.loop.time() + self.limits.body_idle

    def on_message_complete(self) -> None:
        self._body_deadline = self._body_idle_deadline = None
        super().on_message_complete()

    # ------------------------------------------------------------------ the watchdog

    def _await_headers(self) -> None:
        self._in_headers = True
        self._header_bytes = 0
        self._tail = b""
        self._header_deadline = self.loop.time() + self.limits.header_timeout
        self._watch()

    def _watch(self) -> None:
        """Have the timer due no later than the earliest deadline."""
        due = min(
            (d for d in (self._header_deadline, self._body_deadline, self._body_idle_deadline)
             if d is not None),
            default=None,
        )  # fmt: skip
        if due is None:
            return
        if self._timer is not None:
            if self._timer.when() <= due:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(due, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._in_headers and self._header_deadline is not None and now >= self._header_deadline:
            self._refuse(
                408,
                f"request headers did not arrive within "
                f"{self.limits.header_timeout:g} s (HTTP_HEADER_TIMEOUT_SECONDS)",
            )
        elif self._body_deadline is not None and now >= self._body_deadline:
            self._body_late("took longer than", self.limits.body_timeout,
                            "HTTP_BODY_TIMEOUT_SECONDS")  # fmt: skip
        elif self._body_idle_deadline is not None and now >= self._body_idle_deadline:
            self._body_late("paused longer than", self.limits.body_idle, "HTTP_BODY_IDLE_SECONDS")
        else:
            self._watch()

    def _body_late(self, what: str, seconds: float, name: str) -> None:
        detail = f"request body {what} {seconds:g} s ({name})"
        cycle = self.cycle
        if cycle is not None:  # the route waiting in receive() sees a disconnect
            cycle.disconnected = True
            cycle.message_event.set()
        if cycle is not None and not cycle.response_started:
            self._refuse(408, detail)
        else:
            self._stop_watching()
            self.transport.close()

    def _stop_watching(self) -> None:
        self._header_deadline = self._body_deadline = self._body_idle_deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, status: int, detail: str, extra: tuple[bytes, ...] = ()) -> None:
        self._in_headers = False
        self._stop_watching()
        self.transport.write(problem_bytes(status, detail, extra))
        self.transport.close()
