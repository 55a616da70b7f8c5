"""The one implementation behind the sync and async clients.

Every operation is a *flow*: a generator that yields what it needs done — an HTTP
:class:`Call` or a :class:`Sleep` — and receives the :class:`Reply` (or ``None`` after a
sleep). ``Allotment`` runs flows with ``httpx.Client`` and ``time.sleep``; ``AsyncAllotment``
with ``httpx.AsyncClient`` and ``asyncio.sleep``. The rules (caching, leases, retries, parsing,
errors) are written once, here.

Longer than ~500 lines on purpose: that is the design — every flow beside the rules it shares
(leases, retries, errors), so the two drivers stay a few lines per call.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote

from allotment_client.errors import AllotmentError, ApiError, BudgetExhausted, error_for

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body, parse_float=Decimal) if self.body else None


class ConnectionFailed(AllotmentError):
    """The server could not be reached (a transport error); drivers throw it into flows."""


Step = Call | Sleep
Flow = Generator[Step, Reply | None, T]


def _encode(payload: Any) -> bytes:
    return json.dumps(payload, default=_default, separators=(",", ":")).encode()


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, datetime):
        return obj.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _dec(value: Any) -> Decimal | None:
    return None if value is None or value == "unlimited" else Decimal(str(value))


def _checked(reply: Reply | None) -> Reply:
    assert reply is not None
    if reply.status >= 400:
        try:
            problem = reply.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            problem = {"detail": reply.body.decode(errors="replace")[:500]}
        raise error_for(reply.status, problem, reply.headers)
    return reply


# ---------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Entitlement:
    """One effective value of a customer (GET /v1/customers/{ref}/entitlements)."""

    feature_reference: str
    type: str
    number: Decimal | None = None
    unlimited: bool = False
    rate_window: str | None = None
    enums: tuple[str, ...] = ()
    switch: bool | None = None
    usage: Decimal | None = None
    remaining: Decimal | None = None
    has_access: bool | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Entitlement:
        return cls(
            feature_reference=str(d["feature_reference"]),
            type=str(d.get("type", "")),
            number=_dec(d.get("number")),
            unlimited=d.get("number") == "unlimited",
            rate_window=d.get("rate_window"),
            enums=tuple(d.get("enums") or ()),
            switch=d.get("switch"),
            usage=_dec(d.get("usage")),
            remaining=_dec(d.get("remaining")),
            has_access=d.get("has_access"),
            raw=dict(d),
        )


class Entitlements(Mapping[str, Entitlement]):
    """A customer's values by feature reference, with the guide's three questions."""

    def __init__(self, items: Iterable[Entitlement]) -> None:
        self._by_ref = {e.feature_reference: e for e in items}

    def __getitem__(self, key: str) -> Entitlement:
        return self._by_ref[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_ref)

    def __len__(self) -> int:
        return len(self._by_ref)

    def allows(self, feature: str, value: str | None = None) -> bool:
        """ENUM: ``value`` is included; SWITCH: on; otherwise: the customer has it."""
        e = self._by_ref.get(feature)
        if e is None:
            return False
        if e.type == "ENUM":
            return value in e.enums
        if e.type == "SWITCH":
            return bool(e.switch)
        if e.remaining is not None:
            return e.remaining > 0
        return True


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    feature_reference: str
    limit: int
    window: str
    remaining: int
    reset_seconds: int


@dataclass(frozen=True, slots=True)
class Authorization:
    reservation_id: str | None
    remaining: Mapping[str, Decimal]
    rate_limits: tuple[RateLimitInfo, ...]
    headers: Mapping[str, str]
    replayed: bool = False

    @classmethod
    def from_reply(cls, reply: Reply) -> Authorization:
        d = reply.json()
        return cls(
            d.get("reservation_id"),
            {k: Decimal(str(v)) for k, v in d.get("remaining", {}).items()},
            tuple(
                RateLimitInfo(
                    str(r["feature_reference"]),
                    int(r["limit"]),
                    str(r["window"]),
                    int(r["remaining"]),
                    int(r["reset_seconds"]),
                )
                for r in d.get("rate_limits", ())
            ),
            {k: v for k, v in reply.headers.items() if k.lower().startswith("ratelimit")},
            reply.headers.get("idempotent-replayed") == "true",
        )


# ---------------------------------------------------------------- local value cache


class TTLCache:
    """Entitlement values per customer for ``ttl`` seconds (monotonic clock)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._items: dict[str, tuple[float, Entitlements]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Entitlements | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit[0] <= self._clock():
                return None
            return hit[1]

    def put(self, key: str, value: Entitlements, fetched_at: float) -> None:
        """``fetched_at``: the clock before the request was sent (so the TTL never
        overstates the value's age)."""
        with self._lock:
            self._items[key] = (fetched_at + self.ttl, value)

    def drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


# ---------------------------------------------------------------- budget leases


@dataclass(slots=True)
class Lease:
    reservation_id: str
    size: Decimal
    used: Decimal
    use_until: float


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """A local budget lease: reserve ``size`` on the server (a real reservation with TTL
    ``ttl_seconds``) and spend from it locally until it is used up or ``use_fraction`` of its
    TTL has passed (measured from before the reserve was sent); then commit what was used and
    take the next. See the README for the overspend bound."""

    size: Decimal
    ttl_seconds: int = 60
    use_fraction: float = 0.5


class Leases:
    def __init__(
        self, settings: LeaseSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._pools: dict[tuple[str, str], list[Lease]] = {}
        self._lock = threading.Lock()

    def take(self, key: tuple[str, str], amount: Decimal) -> tuple[bool, list[Lease]]:
        """Spend locally if a live lease has room. Returns (spent, leases to settle now)."""
        now = self._clock()
        with self._lock:
            pool = self._pools.setdefault(key, [])
            done = [x for x in pool if x.use_until <= now]
            for lease in pool:
                if lease.use_until > now and lease.size - lease.used >= amount:
                    lease.used += amount
                    spent = True
                    break
            else:
                spent = False
                done += [x for x in pool if x not in done]  # none has room: settle them all
            for x in done:
                pool.remove(x)
            return spent, done

    def add(self, key: tuple[str, str], lease: Lease) -> None:
        with self._lock:
            self._pools.setdefault(key, []).append(lease)

    def due(self) -> tuple[list[tuple[tuple[str, str], Lease]], float | None]:
        """Take the leases past their use-by time; also the next use-by time, if any."""
        now = self._clock()
        with self._lock:
            out = []
            nxt: float | None = None
            for key, pool in self._pools.items():
                for x in list(pool):
                    if x.use_until <= now:
                        pool.remove(x)
                        out.append((key, x))
                    elif nxt is None or x.use_until < nxt:
                        nxt = x.use_until
            return out, nxt

    def drain(self) -> list[tuple[tuple[str, str], Lease]]:
        with self._lock:
            out = [(k, x) for k, pool in self._pools.items() for x in pool]
            self._pools.clear()
            return out


# ---------------------------------------------------------------- events


def normalize_event(e: Mapping[str, Any], default_source: str) -> dict[str, Any]:
    """A CloudEvent with the attributes ingest needs; ``id`` is fixed here, once, so a retried
    batch is deduplicated by the server. Without ``time`` the server stamps its arrival."""
    out = dict(e)
    out.setdefault("specversion", "1.0")
    out.setdefault("id", uuid.uuid4().hex)
    out.setdefault("source", default_source)
    for required in ("type", "subject"):
        if not out.get(required):
            raise ValueError(f"event {out['id']}: {required} is required")
    return out


# ---------------------------------------------------------------- flows


class Core:
    """The rules shared by both clients; ``cache`` and ``leases`` are optional."""

    def __init__(
        self,
        *,
        cache_ttl: float | None = None,
        lease: LeaseSettings | None = None,
        retries: int = 5,
        backoff: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = TTLCache(cache_ttl, clock) if cache_ttl else None
        self.leases = Leases(lease, clock) if lease else None
        self.retries = retries
        self.backoff = backoff
        self._clock = clock

    # entitlements -------------------------------------------------

    def entitlements(self, customer: str, *, fresh: bool = False) -> Flow[Entitlements]:
        if self.cache is not None and not fresh:
            hit = self.cache.get(customer)
            if hit is not None:
                return hit
        sent_at = self._clock()
        reply = _checked(
            (yield Call("GET", f"/v1/customers/{quote(customer, safe='')}/entitlements"))
        )
        value = Entitlements(Entitlement.from_json(e) for e in reply.json()["entitlements"])
        if self.cache is not None:
            self.cache.put(customer, value, sent_at)
        return value

    # authorize ---------------------------------------------------

    def authorize(
        self,
        customer: str,
        *,
        checks: Sequence[Mapping[str, Any]] = (),
        consume: Sequence[Mapping[str, Any]] = (),
        reserve: Sequence[Mapping[str, Any]] = (),
        idempotency_key: str | None = None,
    ) -> Flow[Authorization]:
        body: dict[str, Any] = {}
        if checks:
            body["checks"] = list(checks)
        if consume:
            body["consume"] = list(consume)
        if reserve:
            body["reserve"] = list(reserve)
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        path = f"/v1/customers/{quote(customer, safe='')}/authorize"
        reply = _checked((yield Call("POST", path, _encode(body))))
        return Authorization.from_reply(reply)

    def commit(
        self,
        reservation_id: str,
        amounts: Mapping[str, Decimal | int | str],
        *,
        subject: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Flow[dict[str, Any]]:
        body: dict[str, Any] = {"amounts": {k: str(v) for k, v in amounts.items()}}
        if subject is not None:
            body["subject"] = subject
        if data is not None:
            body["data"] = dict(data)
        path = f"/v1/reservations/{quote(reservation_id, safe='')}/commit"
        reply = yield from self._retrying(Call("POST", path, _encode(body)))
        result: dict[str, Any] = _checked(reply).json()
        return result

    def release(self, reservation_id: str) -> Flow[dict[str, Any]]:
        path = f"/v1/reservations/{quote(reservation_id, safe='')}/release"
        reply = yield from self._retrying(Call("POST", path, b""))
        result: dict[str, Any] = _checked(reply).json()
        return result

    # leases ------------------------------------------------------

    def spend(self, customer: str, feature: str, amount: Decimal | int | str) -> Flow[bool]:
        """Spend ``amount`` of a budget from the local lease, taking a new lease when needed.
        Returns True when served locally; raises :class:`BudgetExhausted` when the server
        cannot lease even ``amount``."""
        if self.leases is None:
            raise AllotmentError("spend() needs a client made with lease=LeaseSettings(...)")
        need = Decimal(str(amount))
        key = (customer, feature)
        local = True
        while True:
            spent, done = self.leases.take(key, need)
            for lease in done:
                yield from self._settle_lease(feature, lease)
            if spent:
                return local
            local = False
            yield from self._new_lease(key, need)

    def _new_lease(self, key: tuple[str, str], need: Decimal) -> Flow[None]:
        assert self.leases is not None
        s = self.leases.settings
        size = max(s.size, need)
        while True:
            sent_at = self._clock()
            try:
                auth = yield from self.authorize(
                    key[0],
                    reserve=[
                        {
                            "feature_reference": key[1],
                            "amount": str(size),
                            "ttl_seconds": s.ttl_seconds,
                        }
                    ],
                )
            except BudgetExhausted as exc:
                ext = exc.extensions
                available = Decimal(str(ext.get("balance", 0))) - Decimal(
                    str(ext.get("reserved", 0))
                )
                if available < need or available >= size:
                    raise
                size = available  # lease what is left, if it covers this spend
                continue
            assert auth.reservation_id is not None
            until = sent_at + s.ttl_seconds * s.use_fraction
            self.leases.add(key, Lease(auth.reservation_id, size, Decimal(0), until))
            return

    def _settle_lease(self, feature: str, lease: Lease) -> Flow[None]:
        if lease.used > 0:
            yield from self.commit(lease.reservation_id, {feature: lease.used})
        else:
            yield from self.release(lease.reservation_id)

    def settle_due_leases(self) -> Flow[float | None]:
        """Settle the leases past their use-by time (the keeper runs this even while the
        process is idle, so a lease's commit lands before its server TTL); returns the
        monotonic time the next one is due, or None."""
        if self.leases is None:
            return None
        due, nxt = self.leases.due()
        for (_, feature), lease in due:
            yield from self._settle_lease(feature, lease)
        return nxt

    def settle_leases(self) -> Flow[None]:
        """Commit what every lease used and free the rest (on close)."""
        if self.leases is None:
            return
        for (_, feature), lease in self.leases.drain():
            yield from self._settle_lease(feature, lease)

    # ingest ------------------------------------------------------

    def ingest_batch(self, events: Sequence[Mapping[str, Any]]) -> Flow[None]:
        """Send one batch, retrying transport errors, 429 and 5xx with exponential backoff;
        the events' ids make a retried batch count once."""
        call = Call(
            "POST", "/api/v1/events", _encode(list(events)), "application/cloudevents-batch+json"
        )
        _checked((yield from self._retrying(call)))

    def _retrying(self, call: Call) -> Flow[Reply]:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                reply = yield call
            except ConnectionFailed:
                if last:
                    raise
            else:
                assert reply is not None
                if (reply.status < 500 and reply.status != 429) or last:
                    return reply
            yield Sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("not reached")


def result_of(exc: StopIteration) -> Any:
    return exc.value


__all__ = [
    "ApiError",
    "Authorization",
    "Call",
    "ConnectionFailed",
    "Core",
    "Entitlement",
    "Entitlements",
    "Flow",
    "LeaseSettings",
    "Reply",
    "Sleep",
    "normalize_event",
]
