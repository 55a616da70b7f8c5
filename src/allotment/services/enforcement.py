"""Enforcement: authorize (checks, rate-limit consumption, budget reservations) in one
all-or-nothing call, reservation commit/release, idempotency (catalog.md §6).

The service receives only its ports: the enforcement store, a source of what a customer is
entitled to (the catalog satisfies :class:`EntitlementSource`), the ingest door for committed
usage (:class:`UsageRecorder`) and the clock.

Exactness (docs/api/enforcement.md): every authorize that consumes or reserves, and every
settlement, runs in one store session over its (customer, feature) keys. A reservation reads
the budget's balance *after* taking its keys; a commit records its usage event before it frees
its hold and while it holds the same keys, so a decision never sees the hold gone without the
usage counted.

Its ports (:class:`EntitlementSource`, :class:`UsageRecorder`) are declared in
:mod:`allotment.services.enforcement_ports`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from decimal import Decimal

import msgspec

from allotment.clock import Clock
from allotment.domain import enforcement as rules
from allotment.domain import limits
from allotment.domain.errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    PaymentRequired,
    TooManyRequests,
)
from allotment.domain.events import CloudEvent
from allotment.domain.ids import new_ulid
from allotment.domain.rate_limits import WINDOW_US
from allotment.domain.timeutil import from_micros, to_micros
from allotment.services.enforcement_ports import EntitlementSource, UsageRecorder
from allotment.services.enforcement_views import (
    AuthorizeResult,
    Busy,
    Inline,
    ReadChanged,
    ReservationView,
    reservation_view,
    settled,
    usage_data,
)
from allotment.storage import enforcement_repo as repo
from allotment.storage.enforcement_state import StateQuery, StateReads

COMMIT_SOURCE = "allotment.reservations"
"""The ``source`` of the usage events commits record (their ``id``: ``<reservation>-<feature>``)."""

SWEEP_EVERY = 64


class EnforcementService:
    def __init__(
        self,
        store: repo.EnforcementStore,
        source: EntitlementSource,
        usage: UsageRecorder,
        clock: Clock,
    ) -> None:
        self._store = store
        self._source = source
        self._usage = usage
        self._clock = clock
        self._calls = itertools.count(1)
        self._check_first = False
        """SQLite: since a decision's check failed at its commit (a tail to fold, a catalog
        write), inline decisions check on the loop first, until one holds there."""

    def _now(self) -> datetime:
        return self._clock.now().astimezone(UTC)

    # ------------------------------------------------------------ authorize

    def authorize(self, customer_ref: str, req: rules.AuthorizeRequest) -> AuthorizeResult:
        if not req.consume and not req.reserve and req.idempotency_key is None:
            return self._checks_only(
                self._source.customer_entitlements(customer_ref, features=req.named_features()),
                req,
            )
        outcome = self._authorize(customer_ref, req, ahead=self._store.reads_with_locks)
        if outcome is None:  # the cached customer was another one: the long way
            outcome = self._authorize(customer_ref, req, ahead=False)
        assert outcome is not None
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    def _authorize(
        self, customer_ref: str, req: rules.AuthorizeRequest, *, ahead: bool
    ) -> AuthorizeResult | DomainError | None:
        """:meth:`authorize` under its keys. ``ahead`` (PostgreSQL): from the cached customer
        and its memoised values, checked by one read sent with the keys (no read before);
        ``None`` (nothing done) when the check finds the reference names another customer."""
        read = who = None
        reserving, features = req.reserved_features(), req.named_features()
        if ahead and (who := self._source.identify_cached(customer_ref)) is not None:
            read = self._source.entitlements_ahead(
                customer_ref, customer=who, reserving=reserving, features=features
            )
        if read is None:
            who = self._source.identify(customer_ref)  # one point read: the keys' owner
        assert who is not None
        keys, once = _keys(who[0], req)
        now, state = None, None
        if self._store.reads_with_locks:
            # PostgreSQL reads the state with the keys (one round trip), so the decision's
            # instant is read before they are taken: exact (docs/api/enforcement.md)
            now = self._now()
            state = StateQuery.of(who[0], req, to_micros(now))
        sent = None if read is None else (read.sql, read.params)
        with self._store.session(keys, once=once, state=state, ahead=sent) as session:
            # read under the keys: a budget's balance is never older than the holds read next
            ents = None if read is None else read.answer(session.ahead)
            if ents is None and read is not None:  # the cache no longer holds
                fresh = self._source.identify(customer_ref)
                if fresh[0] != who[0]:
                    return None
                who = fresh
            if ents is None:
                ents = self._source.customer_entitlements(
                    customer_ref, customer=who, reserving=reserving, features=features
                )
            outcome, writes = self._under_keys(session.read, ents, req, now, state)
            if writes:
                session.apply(writes)
        return outcome

    @property
    def inline(self) -> bool:
        """Whether :meth:`authorize_inline` can decide (SQLite: local reads, group writer)."""
        return self._store.inline

    def authorize_inline(
        self,
        customer_ref: str,
        req: rules.AuthorizeRequest,
        token: object,
        written: Callable[[BaseException | None], None],
    ) -> Inline | Busy:
        """:meth:`authorize` without blocking a thread on the keys or the commit, for an event
        loop (SQLite only, :attr:`inline`). :class:`Busy` when a key is held (nothing done:
        wait for its holder's token, then call again; or, when the holder is a blocking
        session, call :meth:`authorize` on a thread), and ``Busy(None)`` too when the
        customer's values are not all cached (a budget's value would be computed, maybe
        folding usage: that runs on a thread). Otherwise the decision, with
        ``token`` named as the keys' holder until its writes have committed; when
        :attr:`Inline.pending`, ``written`` is called in the writer's thread after that (the
        keys already released) and the answer must wait for it: with
        :class:`~allotment.storage.decision_checks.ReadChanged` when the memo it was
        decided from no longer held at its commit (nothing written: decide it again with
        :meth:`authorize`). A denial of the pure steps raises, as :meth:`authorize` does."""
        if not req.consume and not req.reserve and req.idempotency_key is None:
            plain_ents = self._source.cached_customer_entitlements(
                customer_ref, features=req.named_features()
            )
            if plain_ents is None:
                return Busy(None)
            return Inline(self._checks_only(plain_ents, req), pending=False)
        # the cached view, checked against the catalog in the budgets' read below
        who = self._source.identify_cached(customer_ref) or self._source.identify(customer_ref)
        keys, once = _keys(who[0], req)
        held, holder = self._store.try_hold([*keys, *([once] if once else [])], token)
        if held is None:
            return Busy(holder)
        try:
            # the memo's answer now, its one check left to the group writer: run in the
            # decision's write transaction, it holds the decision back (ReadChanged) when the
            # catalog or a budget's versions have moved (docs/api/enforcement.md)
            ents, check = self._source.entitlements_unchecked(
                customer_ref,
                customer=who,
                reserving=req.reserved_features(),
                features=req.named_features(),
            )
            if ents is None:  # a budget's value must be computed: not on the event loop
                return Busy(None)
            if check is not None and self._check_first:  # no decision bound to be refused
                if not self._store.holds(check):
                    return Busy(None)
                self._check_first = False
            try:
                outcome, writes = self._under_keys(self._store.reads, ents, req)
            except DomainError:  # a denial of the pure steps, from the memo's view
                if check is not None and not self._store.holds(check):
                    return Busy(None)  # decided from what has changed: the long way
                raise
            if not writes:
                if check is not None and not self._store.holds(check):
                    return Busy(None)
                return Inline(outcome, pending=False)
            writes.check = check
            store, taken = self._store, held

            def done(exc: BaseException | None) -> None:
                store.give_back(taken, token)
                if isinstance(exc, ReadChanged):
                    self._check_first = True
                written(exc)

            self._store.submit(writes, done)
            held = None  # the writer gives the keys back
            return Inline(outcome, pending=True)
        finally:
            if held is not None:
                self._store.give_back(held, token)

    def _checks_only(
        self, ents: rules.CustomerEntitlements, req: rules.AuthorizeRequest
    ) -> AuthorizeResult:
        rules.decide(req, ents, logs={}, held={}, now_us=0, plans_including=self._plans)
        return AuthorizeResult(None, {}, {}, ())

    def _under_keys(
        self,
        read: Callable[[StateQuery], AbstractContextManager[StateReads]],
        ents: rules.CustomerEntitlements,
        req: rules.AuthorizeRequest,
        now: datetime | None = None,
        query: StateQuery | None = None,
    ) -> tuple[AuthorizeResult | DomainError, repo.DecisionWrites]:
        """The decision, its keys held and ``ents`` read under them, from the state
        ``read`` answers for the decision's :class:`StateQuery` (one statement:
        :mod:`allotment.storage.enforcement_state`) at ``now`` (else now; ``query``: that
        query when already made for ``now``); a denial of the pure steps without an
        idempotency key raises (nothing to keep)."""
        if req.idempotency_key is None:
            # a denial of the pure steps applies nothing and is not kept: answer it now
            rules.validate_kinds(req, ents)
            rules.run_checks(req, ents, self._plans)
        writes = repo.DecisionWrites()
        now = self._now() if now is None else now
        if query is None or query.customer_id != ents.customer_id:
            query = StateQuery.of(ents.customer_id, req, to_micros(now))
        with read(query) as reads:
            return self._decide(reads, ents, req, writes, now), writes

    def _decide(
        self,
        reads: StateReads,
        ents: rules.CustomerEntitlements,
        req: rules.AuthorizeRequest,
        writes: repo.DecisionWrites,
        now: datetime,
    ) -> AuthorizeResult | DomainError:
        """One decision at ``now`` from the state ``reads`` answers under the session's keys: a
        replay, or the decision, with its writes (and its idempotency record) put
        in ``writes``; a denial is returned, not raised, so that its record commits."""
        cid = ents.customer_id
        now_us = to_micros(now)
        if req.idempotency_key is not None:
            replay = self._replay(reads, cid, req, now_us)
            if replay is not None:
                return replay
        result: AuthorizeResult | DomainError
        try:
            result = self._apply(reads, ents, req, now, now_us, writes)
        except (Forbidden, PaymentRequired, TooManyRequests) as exc:
            result = exc  # nothing was written; the answer may still be kept
        if req.idempotency_key is not None:
            outcome = (
                rules.denial_to_json(result)
                if isinstance(result, DomainError)
                else result.to_json()
            )
            writes.idempotency = (
                cid,
                req.idempotency_key,
                req.fingerprint,
                msgspec.json.encode(outcome).decode(),
                now_us,
                now_us + limits.IDEMPOTENCY_TTL_SECONDS * 1_000_000,
            )
        if writes and next(self._calls) % SWEEP_EVERY == 0:
            writes.sweep_at_us = now_us
        return result

    def close(self) -> None:
        self._store.close()

    def _plans(self, feature_reference: str, value: str) -> Sequence[str]:
        return self._source.plans_including(feature_reference, value)

    def _replay(
        self, reads: StateReads, cid: str, req: rules.AuthorizeRequest, now_us: int
    ) -> AuthorizeResult | None:
        assert req.idempotency_key is not None
        found = reads.idempotency_record(cid, req.idempotency_key, now_us)
        if found is None:
            return None
        fingerprint, outcome = found
        if fingerprint != req.fingerprint:
            raise rules.IdempotencyKeyReused(
                f"idempotency_key {req.idempotency_key!r} was used within 24 h for a different"
                " request; use a new key",
                field="idempotency_key",
            )
        doc = msgspec.json.decode(outcome)
        if "denied" in doc:
            raise rules.denial_from_json(doc)
        return AuthorizeResult.from_json(doc, replayed=True)

    def _apply(
        self,
        reads: StateReads,
        ents: rules.CustomerEntitlements,
        req: rules.AuthorizeRequest,
        now: datetime,
        now_us: int,
        writes: repo.DecisionWrites,
    ) -> AuthorizeResult:
        cid = ents.customer_id
        logs = {}
        for c in req.consume:
            v = ents.values.get(c.feature_reference)
            if v is not None and v.is_rate_limit and v.rate_window is not None:
                window_us = WINDOW_US[v.rate_window]
                logs[c.feature_reference] = reads.rate_log(cid, c.feature_reference, window_us)
        held = {f: reads.held_amount(cid, f, now_us) for f in sorted(req.reserved_features())}
        allowed = rules.decide(
            req, ents, logs=logs, held=held, now_us=now_us, plans_including=self._plans,
            checked=req.idempotency_key is None,  # _under_keys ran the pure steps first
        )  # fmt: skip
        for feature, log in allowed.logs.items():
            writes.rate_logs.append((cid, feature, allowed.windows[feature], log, now_us))
        reservation_id = None
        expires = None
        if allowed.holds:
            reservation_id = new_ulid(now_us // 1000)
            items = tuple(
                repo.ItemRecord(
                    feature_key=h.feature_reference,
                    amount=h.amount,
                    expires_at_us=now_us + h.ttl_seconds * 1_000_000,
                    held=True,
                    event_type=h.budget.event_type if h.budget else "",
                    value_property=h.budget.value_property if h.budget else None,
                    committed=None,
                )
                for h in allowed.holds
            )
            expires_us = max(i.expires_at_us for i in items)
            expires = from_micros(expires_us)
            writes.reservation = repo.ReservationRecord(
                reservation_id,
                cid,
                ents.customer_reference,
                "held",
                now_us,
                expires_us,
                None,
                None,
                items,
            )
        return AuthorizeResult(
            reservation_id, allowed.remaining, allowed.overage, allowed.rate_limits, expires
        )

    # ------------------------------------------------------------ reservations

    def get(self, reservation_id: str) -> ReservationView:
        with self._store.db.read() as tx:
            r = repo.reservation(tx, reservation_id)
        if r is None:
            raise NotFound(f"reservation {reservation_id!r} not found")
        return reservation_view(r, to_micros(self._now()))

    def commit(self, reservation_id: str, req: rules.CommitRequest) -> ReservationView:
        """Record the actual usage (one event per feature with a positive amount, id derived
        from the reservation, so a retried commit counts once) and free the hold. A commit
        after the TTL still records the usage (it happened); a released reservation is 409."""
        first = self._settleable(reservation_id, "commit")
        if first.status == "committed":
            return reservation_view(first, to_micros(self._now()))
        features = {i.feature_key for i in first.items}
        for ref in req.amounts:
            if ref not in features:
                raise InvalidInput(
                    f"amounts.{ref}: reservation {reservation_id} holds no {ref!r}"
                    f" (it holds {', '.join(sorted(features))})",
                    field=f"amounts.{ref}",
                )
        keys = [_key(first.customer_id, f) for f in sorted(features)]
        with self._store.session(keys) as session:
            with session.write() as tx:
                r = repo.reservation(tx, reservation_id)
                assert r is not None
            if r.status == "committed":
                return reservation_view(r, to_micros(self._now()))
            if r.status == "released":
                raise settled(r)
            now = self._now()
            now_us = to_micros(now)
            events = []
            committed: dict[str, Decimal] = {}
            for item in r.items:
                amount = req.amounts.get(item.feature_key, Decimal(0))
                committed[item.feature_key] = amount
                if amount > 0 and item.event_type:
                    events.append(
                        CloudEvent(
                            id=f"{r.id}-{item.feature_key}",
                            source=COMMIT_SOURCE,
                            type=item.event_type,
                            subject=req.subject or r.customer_ref,
                            time=now,
                            data=usage_data(item.value_property, amount, req.data),
                        )
                    )
            if events:
                self._usage.ingest(events)  # durable before the hold is freed
            outcome = {"status": "committed", "event_ids": [e.id for e in events]}
            with session.write() as tx:
                repo.settle(
                    tx,
                    r.id,
                    "committed",
                    now_us,
                    msgspec.json.encode(outcome).decode(),
                    committed,
                    from_statuses=("held", "expired"),
                )
                done = repo.reservation(tx, r.id)
        assert done is not None
        return reservation_view(done, now_us)

    def release(self, reservation_id: str) -> ReservationView:
        """Free the whole hold; releasing again answers the same, a committed one is 409."""
        first = self._settleable(reservation_id, "release")
        if first.status == "released":
            return reservation_view(first, to_micros(self._now()))
        if first.status == "committed":
            raise settled(first)
        keys = [_key(first.customer_id, i.feature_key) for i in first.items]
        with self._store.session(keys) as session, session.write() as tx:
            now_us = to_micros(self._now())
            repo.settle(
                tx,
                reservation_id,
                "released",
                now_us,
                '{"status":"released"}',
                from_statuses=("held", "expired"),
            )
            r = repo.reservation(tx, reservation_id)
        assert r is not None
        if r.status == "committed":
            raise settled(r)
        return reservation_view(r, now_us)

    def _settleable(self, reservation_id: str, action: str) -> repo.ReservationRecord:
        with self._store.db.read() as tx:
            r = repo.reservation(tx, reservation_id)
        if r is None:
            raise NotFound(f"reservation {reservation_id!r} not found")
        if action == "commit" and r.status == "released":
            raise settled(r)
        return r

    # ------------------------------------------------------------ reads for other views

    def held_for_customer(self, customer_ref: str) -> dict[str, Decimal]:
        """:meth:`held` of the customer with this reference."""
        return self.held(self._source.identify(customer_ref)[0])

    def held_of(self, customer_id: str, feature_key: str) -> Decimal:
        """What the customer's held, unexpired reservations of one budget hold now (one
        point read: the kept total, less holds past their expiry not yet swept)."""
        now_us = to_micros(self._now())
        with self._store.db.read() as tx:
            return repo.held_amount(tx, customer_id, feature_key, now_us)

    def held(self, customer_id: str) -> dict[str, Decimal]:
        """Per budget feature: the amount the customer's held, unexpired reservations hold."""
        now_us = to_micros(self._now())
        with self._store.db.read() as tx:
            return repo.held_by_feature(tx, customer_id, now_us)


def _keys(customer_id: str, req: rules.AuthorizeRequest) -> tuple[list[str], str | None]:
    """The (customer, feature) keys a decision holds, and its idempotency key's."""
    keys = [_key(customer_id, f) for f in req.lock_features()]
    once = None
    if req.idempotency_key is not None:
        once = _key(customer_id, "idempotency", req.idempotency_key)
    return keys, once


def _key(customer_id: str, *parts: str) -> str:
    return "\x1f".join((customer_id, *parts))
