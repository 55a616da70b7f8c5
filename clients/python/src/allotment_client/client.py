"""``Allotment`` (sync) and ``AsyncAllotment`` (async): two thin drivers over the one set of
flows in :mod:`allotment_client._core`.

Longer than ~500 lines on purpose: every public call exists twice (sync and async) with its
signature and docstring, side by side so the two surfaces cannot drift apart.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import queue
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar

import httpx

from allotment_client._core import (
    Authorization,
    Call,
    ConnectionFailed,
    Core,
    Entitlements,
    Flow,
    LeaseSettings,
    Reply,
    Sleep,
    normalize_event,
)

T = TypeVar("T")
log = logging.getLogger("allotment_client")
Amount = Decimal | int | str


def _headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-KEY": api_key} if api_key else {}


def _reserve_items(
    feature: str | None,
    amount: Amount | None,
    ttl_seconds: int,
    reserve: Sequence[Mapping[str, Any]] | None,
) -> list[Mapping[str, Any]]:
    items = list(reserve or ())
    if feature is not None:
        if amount is None:
            raise ValueError("reserve(feature, amount): amount is required")
        items.append(
            {"feature_reference": feature, "amount": str(amount), "ttl_seconds": ttl_seconds}
        )
    if not items:
        raise ValueError("reserve(): name a feature and an amount")
    return items


class Reservation:
    """A held reservation inside ``with client.reserve(...)``: report what was used with
    :meth:`use`; on a clean exit the used amounts are committed, on an error released."""

    def __init__(self, auth: Authorization, features: Sequence[str]) -> None:
        self.authorization = auth
        self.id: str = auth.reservation_id or ""
        self.features = tuple(features)
        self.used: dict[str, Decimal] = {}
        self.result: dict[str, Any] | None = None

    def use(self, amount: Amount, feature: str | None = None) -> None:
        """Add ``amount`` to what this reservation used (of its only feature by default)."""
        if feature is None:
            if len(self.features) != 1:
                raise ValueError("use(amount, feature): name the feature of this reservation")
            feature = self.features[0]
        self.used[feature] = self.used.get(feature, Decimal(0)) + Decimal(str(amount))


# ---------------------------------------------------------------- sync


def _close_at_exit(ref: weakref.ref[Allotment]) -> None:
    client = ref()
    if client is not None:
        client.close()


class Allotment:
    """Blocking client. ``cache_ttl`` (seconds) caches entitlement values per customer;
    ``lease`` enables :meth:`spend` (local budget leases). Use as a context manager, or call
    :meth:`close`, so queued events are flushed and leases settled (also done at exit)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        cache_ttl: float | None = None,
        lease: LeaseSettings | None = None,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        retries: int = 5,
        source: str = "allotment-client",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.core = Core(cache_ttl=cache_ttl, lease=lease, retries=retries)
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self._source = source
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._closed = False
        self._keeper: threading.Thread | None = None
        self._stop = threading.Event()
        self.failed_events: list[dict[str, Any]] = []
        """Events whose batch failed after every retry (or was refused with a 4xx)."""
        atexit.register(_close_at_exit, weakref.ref(self))

    def run(self, flow: Flow[T]) -> T:
        try:
            step = next(flow)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = flow.send(None)
                    continue
                try:
                    r = self._send(step)
                except httpx.TransportError as exc:
                    step = flow.throw(ConnectionFailed(str(exc)))
                else:
                    step = flow.send(r)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _send(self, call: Call) -> Reply:
        r = self._http.request(
            call.method, call.path, content=call.body, headers={"content-type": call.content_type}
        )
        return Reply(r.status_code, r.headers, r.content)

    # values and decisions

    def entitlements(self, customer: str, *, fresh: bool = False) -> Entitlements:
        return self.run(self.core.entitlements(customer, fresh=fresh))

    def authorize(
        self,
        customer: str,
        *,
        checks: Sequence[Mapping[str, Any]] = (),
        consume: Sequence[Mapping[str, Any]] = (),
        reserve: Sequence[Mapping[str, Any]] = (),
        idempotency_key: str | None = None,
    ) -> Authorization:
        return self.run(
            self.core.authorize(
                customer,
                checks=checks,
                consume=consume,
                reserve=reserve,
                idempotency_key=idempotency_key,
            )
        )

    def commit(
        self,
        reservation_id: str,
        amounts: Mapping[str, Amount],
        *,
        subject: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return self.run(self.core.commit(reservation_id, amounts, subject=subject, data=data))

    def release(self, reservation_id: str) -> dict[str, Any]:
        return self.run(self.core.release(reservation_id))

    def reserve(
        self,
        customer: str,
        feature: str | None = None,
        amount: Amount | None = None,
        *,
        ttl_seconds: int = 300,
        reserve: Sequence[Mapping[str, Any]] | None = None,
        checks: Sequence[Mapping[str, Any]] = (),
        consume: Sequence[Mapping[str, Any]] = (),
        subject: str | None = None,
    ) -> _SyncReservation:
        return _SyncReservation(
            self,
            customer,
            _reserve_items(feature, amount, ttl_seconds, reserve),
            checks,
            consume,
            subject,
        )

    def spend(self, customer: str, feature: str, amount: Amount) -> bool:
        """Spend from a local budget lease (see :class:`LeaseSettings`)."""
        local = self.run(self.core.spend(customer, feature, amount))
        if self._keeper is None:
            with self._worker_lock:
                if self._keeper is None:
                    self._keeper = threading.Thread(
                        target=self._keep, name="allotment-leases", daemon=True
                    )
                    self._keeper.start()
        return local

    def _keep(self) -> None:
        """Settle leases at their use-by time even when nothing else calls the client."""
        while not self._stop.is_set():
            try:
                nxt = self.run(self.core.settle_due_leases())
            except Exception as exc:  # the keeper survives any failure; the next spend retries
                log.warning("allotment leases: settling failed: %s", exc)
                nxt = None
            wait = 1.0 if nxt is None else max(0.01, nxt - time.monotonic())
            self._stop.wait(min(wait, 1.0))

    # ingest

    def ingest(self, events: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Queue events; a background thread sends them in batches with retries."""
        if self._closed:
            raise RuntimeError("client is closed")
        items = [events] if isinstance(events, Mapping) else list(events)
        normalized = [normalize_event(e, self._source) for e in items]
        self._start_worker()
        for e in normalized:
            self._queue.put(e)

    def flush(self) -> None:
        """Block until every queued event was sent (or given up on)."""
        if self._worker is not None:
            self._queue.join()

    def _start_worker(self) -> None:
        with self._worker_lock:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="allotment-ingest", daemon=True
                )
                self._worker.start()

    def _work(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            batch = [first]
            deadline = time.monotonic() + self._flush_interval
            while len(batch) < self._batch_size:
                try:
                    e = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if e is None:
                    stop = True
                    self._queue.task_done()
                    break
                batch.append(e)
            try:
                self.run(self.core.ingest_batch(batch))
            except Exception as exc:  # the worker survives any failure
                log.warning("allotment ingest: %d events not sent: %s", len(batch), exc)
                self.failed_events.extend(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join()
        try:
            self.run(self.core.settle_leases())
        finally:
            self._http.close()

    def __enter__(self) -> Allotment:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _ReservationBlock:
    """What ``reserve()`` returns: the request to send on entry, the reservation once held."""

    def __init__(
        self,
        customer: str,
        items: list[Mapping[str, Any]],
        checks: Sequence[Mapping[str, Any]],
        consume: Sequence[Mapping[str, Any]],
        subject: str | None,
    ) -> None:
        self.customer = customer
        self.items = items
        self.checks = checks
        self.consume = consume
        self.subject = subject
        self.reservation: Reservation | None = None

    def _held(self, auth: Authorization) -> Reservation:
        self.reservation = Reservation(auth, [str(i["feature_reference"]) for i in self.items])
        return self.reservation


class _SyncReservation(_ReservationBlock):
    def __init__(self, client: Allotment, *args: Any) -> None:
        super().__init__(*args)
        self._c = client

    def __enter__(self) -> Reservation:
        return self._held(
            self._c.authorize(
                self.customer, checks=self.checks, consume=self.consume, reserve=self.items
            )
        )

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        r = self.reservation
        assert r is not None
        if e is None:
            r.result = self._c.commit(r.id, r.used, subject=self.subject)
        else:
            r.result = self._c.release(r.id)


# ---------------------------------------------------------------- async


class AsyncAllotment:
    """The same client for asyncio: every method is a coroutine; ``async with`` flushes."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        cache_ttl: float | None = None,
        lease: LeaseSettings | None = None,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        retries: int = 5,
        source: str = "allotment-client",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.core = Core(cache_ttl=cache_ttl, lease=lease, retries=retries)
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self._source = source
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue: asyncio.Queue[dict[str, Any] | None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False
        self.failed_events: list[dict[str, Any]] = []

    async def run(self, flow: Flow[T]) -> T:
        try:
            step = next(flow)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = flow.send(None)
                    continue
                try:
                    r = await self._http.request(
                        step.method,
                        step.path,
                        content=step.body,
                        headers={"content-type": step.content_type},
                    )
                except httpx.TransportError as exc:
                    step = flow.throw(ConnectionFailed(str(exc)))
                else:
                    step = flow.send(Reply(r.status_code, r.headers, r.content))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def entitlements(self, customer: str, *, fresh: bool = False) -> Entitlements:
        return await self.run(self.core.entitlements(customer, fresh=fresh))

    async def authorize(
        self,
        customer: str,
        *,
        checks: Sequence[Mapping[str, Any]] = (),
        consume: Sequence[Mapping[str, Any]] = (),
        reserve: Sequence[Mapping[str, Any]] = (),
        idempotency_key: str | None = None,
    ) -> Authorization:
        return await self.run(
            self.core.authorize(
                customer,
                checks=checks,
                consume=consume,
                reserve=reserve,
                idempotency_key=idempotency_key,
            )
        )

    async def commit(
        self,
        reservation_id: str,
        amounts: Mapping[str, Amount],
        *,
        subject: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return await self.run(self.core.commit(reservation_id, amounts, subject=subject, data=data))

    async def release(self, reservation_id: str) -> dict[str, Any]:
        return await self.run(self.core.release(reservation_id))

    def reserve(
        self,
        customer: str,
        feature: str | None = None,
        amount: Amount | None = None,
        *,
        ttl_seconds: int = 300,
        reserve: Sequence[Mapping[str, Any]] | None = None,
        checks: Sequence[Mapping[str, Any]] = (),
        consume: Sequence[Mapping[str, Any]] = (),
        subject: str | None = None,
    ) -> _AsyncReservation:
        return _AsyncReservation(
            self,
            customer,
            _reserve_items(feature, amount, ttl_seconds, reserve),
            checks,
            consume,
            subject,
        )

    async def spend(self, customer: str, feature: str, amount: Amount) -> bool:
        local = await self.run(self.core.spend(customer, feature, amount))
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep())
        return local

    async def _keep(self) -> None:
        while True:
            try:
                nxt = await self.run(self.core.settle_due_leases())
            except Exception as exc:  # the keeper survives any failure; the next spend retries
                log.warning("allotment leases: settling failed: %s", exc)
                nxt = None
            wait = 1.0 if nxt is None else max(0.01, nxt - time.monotonic())
            await asyncio.sleep(min(wait, 1.0))

    async def ingest(self, events: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        if self._closed:
            raise RuntimeError("client is closed")
        items = [events] if isinstance(events, Mapping) else list(events)
        normalized = [normalize_event(e, self._source) for e in items]
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._work(self._queue))
        for e in normalized:
            self._queue.put_nowait(e)

    async def flush(self) -> None:
        if self._queue is not None:
            await self._queue.join()

    async def _work(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        stop = False
        while not stop:
            first = await q.get()
            if first is None:
                q.task_done()
                return
            batch = [first]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._flush_interval
            while len(batch) < self._batch_size:
                try:
                    e = await asyncio.wait_for(q.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
                if e is None:
                    stop = True
                    q.task_done()
                    break
                batch.append(e)
            try:
                await self.run(self.core.ingest_batch(batch))
            except Exception as exc:  # the worker survives any failure
                log.warning("allotment ingest: %d events not sent: %s", len(batch), exc)
                self.failed_events.extend(batch)
            finally:
                for _ in batch:
                    q.task_done()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._queue is not None and self._worker is not None:
            self._queue.put_nowait(None)
            await self._worker
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        try:
            await self.run(self.core.settle_leases())
        finally:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncAllotment:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class _AsyncReservation(_ReservationBlock):
    def __init__(self, client: AsyncAllotment, *args: Any) -> None:
        super().__init__(*args)
        self._c = client

    async def __aenter__(self) -> Reservation:
        return self._held(
            await self._c.authorize(
                self.customer, checks=self.checks, consume=self.consume, reserve=self.items
            )
        )

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        r = self.reservation
        assert r is not None
        if e is None:
            r.result = await self._c.commit(r.id, r.used, subject=self.subject)
        else:
            r.result = await self._c.release(r.id)
