"""server_protocol.JoinedHead: an answer's head and first body piece in one write, same bytes
in the same order."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from allotment.http.server_protocol import JoinedHead


class Recording:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return f"extra:{name}"


def joined(loop: asyncio.AbstractEventLoop) -> tuple[JoinedHead, Recording]:
    t = Recording()
    return JoinedHead(cast(asyncio.Transport, t), loop), t


def test_head_and_body_go_out_in_one_write_later_writes_straight() -> None:
    async def run() -> list[bytes]:
        j, t = joined(asyncio.get_running_loop())
        j.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert t.writes == []
        j.write(b"body")
        j.write(b"more")
        await asyncio.sleep(0)
        return t.writes

    assert asyncio.run(run()) == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"]


def test_a_head_alone_is_written_at_the_end_of_the_loop_turn() -> None:
    async def run() -> list[bytes]:
        j, t = joined(asyncio.get_running_loop())
        j.write(b"head")
        j.write(b"")  # an empty body joins
        await asyncio.sleep(0)
        k, u = joined(asyncio.get_running_loop())
        k.write(b"alone")
        await asyncio.sleep(0)
        return t.writes + u.writes

    assert asyncio.run(run()) == [b"head", b"alone"]


def test_close_writes_the_held_head_first_and_other_calls_pass_through() -> None:
    async def run() -> tuple[list[bytes], bool, Any]:
        j, t = joined(asyncio.get_running_loop())
        j.write(b"head")
        j.close()
        await asyncio.sleep(0)  # the pending flush writes nothing more
        return t.writes, t.closed, j.get_extra_info("peername")

    assert asyncio.run(run()) == ([b"head"], True, "extra:peername")
