"""The notification evaluator: a background thread of the serve process that decides which
rules fire, and fires them through :meth:`NotificationService.fire` (mark + event + outbox in
one transaction).

What it looks at (docs/notifications.md, "When rules fire"):

* after every ingest commit, the (meter, subject) pairs the commit touched — handed over in
  memory by :meth:`touched`, which only adds the pairs whose meter some rule watches to a set
  (the ingest hot path pays a set lookup per pair, nothing when no rule exists). A pair
  reaches the subject's own entitlements and those of the customer whose usage the subject
  is (its key, else one of its subject keys: ``customers_repo.usage_owners``);
* after grant create/void, entitlement create/override and reset, the (owner, feature key)
  scope that changed (:meth:`scope_changed`; the owner is a subject or a customer);
* at each watched entitlement's next usage-period boundary (for reset rules) and next grant
  start, expiry or void instant (for threshold rules: the balance moves with no usage), kept
  in an in-memory schedule checked every ``tick_seconds``: that is how an automatic reset or
  an expiring grant is noticed without a scheduler loop per entitlement;
* at start and when rules change, every metered entitlement some rule applies to; then every
  ``sweep_seconds`` the ones whose usage or definitions changed since the previous sweep, by
  any process (the version counters of ``usage_marks`` and ``value_versions``): what a crash
  between a commit and its evaluation, or another replica's writes, left unevaluated.

Evaluating an entitlement reads its value now (through the value cache), computes the
thresholds newly crossed in the current usage period and the resets (manual ones and the
current period's start) not yet marked, and fires them. Marks make every firing at most once
per period per threshold, across passes, restarts and replicas.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from allotment.clock import Clock
from allotment.domain.features import Feature
from allotment.domain.notifications import ValueSnapshot, crossed_keys
from allotment.domain.owners import Owner
from allotment.domain.periods import Period
from allotment.services.notification_index import Firing, RuleIndex
from allotment.services.notifications import NotificationService
from allotment.storage import (
    customers_repo,
    entitlements_repo,
    features_repo,
    grants_repo,
    usage_marks,
)
from allotment.storage import notifications_repo as repo
from allotment.storage.database import Database
from allotment.storage.entitlements_repo import EntitlementRecord

log = logging.getLogger("allotment.notifications")

_ALL: frozenset[str] = frozenset({"*"})


class Entitlements(Protocol):
    """The entitlement reads the evaluator needs (``EntitlementService`` provides them)."""

    def value(self, owner_ref: Owner, id_or_feature_key: str, at: datetime | None) -> Any: ...

    def view(self, tx: Any, record: EntitlementRecord, now: datetime) -> Any: ...


def _scope_order(scope: tuple[Owner, str]) -> tuple[str, str, str]:
    return (scope[0].subject_key, scope[0].customer_id, scope[1])


class NotificationEvaluator:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        notifications: NotificationService,
        entitlements: Entitlements,
        *,
        tick_seconds: float = 1.0,
        sweep_seconds: float = 60.0,
        min_pass_seconds: float = 0.2,
        duty: float = 0.1,
    ) -> None:
        """``duty``: the largest share of wall time evaluation passes take under a steady
        ingest stream (after a pass of T seconds the thread rests ``T * (1/duty - 1)``), so
        the evaluator's cost to ingest stays bounded whatever the number of rules; the price
        is notification latency under heavy load (a few seconds), never a lost firing."""
        self._db = db
        self._clock = clock
        self._n = notifications
        self._ents = entitlements
        self.tick_seconds = tick_seconds
        self.sweep_seconds = sweep_seconds
        self.min_pass_seconds = min_pass_seconds
        self.duty = duty
        self._lock = threading.Lock()
        self._usage: set[tuple[str, str]] = set()
        self._scopes: set[tuple[Owner, str]] = set()
        self._watched_meters: frozenset[str] = frozenset()
        self._index_version: tuple[int, int] = (-1, -1)
        self._boundaries: dict[str, tuple[EntitlementRecord, datetime]] = {}
        """Entitlements under a reset rule → (record, end of their current usage period)."""
        self._features: dict[str, Feature] = {}
        self._grant_instants: dict[str, list[datetime]] = {}
        """Per entitlement under a threshold rule: when a grant starts, expires or is voided
        (the balance moves without any usage); dropped when its scope changes."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sweep = 0.0
        self._full_sweep = True
        self._seen_usage: dict[tuple[str, str], int] = {}
        self._seen_scopes: dict[tuple[str, str], int] = {}
        self.evaluations = 0
        self.refresh()

    # ------------------------------------------------------------ hand-over (hot path)

    def touched(self, keys: Iterable[tuple[str, str]]) -> None:
        """Called after an ingest commit with the (meter id, subject) pairs it folded."""
        watched = self._watched_meters
        if not watched:
            return
        picked = [k for k in keys if k[0] in watched] if watched is not _ALL else list(keys)
        if picked:
            with self._lock:
                self._usage.update(picked)
            self._wake.set()

    def scope_changed(self, owner: Owner, feature_key: str) -> None:
        """Called after a grant or entitlement write for this owner and feature key."""
        if not self._watched_meters:
            return
        with self._lock:
            self._scopes.add((owner, feature_key))
        self._wake.set()

    # ------------------------------------------------------------ thread

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="allotment-notify-evaluator", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.tick_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            started = time.monotonic()
            try:
                self.run_pass()
            except Exception:  # the loop must survive; the next pass retries
                log.exception("notification evaluation pass failed")
            # bound the evaluator's share of the machine under a steady ingest stream
            took = time.monotonic() - started
            rest = max(self.min_pass_seconds - took, took * (1.0 / self.duty - 1.0))
            if rest > 0:
                self._stop.wait(rest)

    # ------------------------------------------------------------ passes

    def refresh(self) -> RuleIndex:
        """Re-read the rule index when rules changed, and which meters it watches."""
        index = self._n.index(refresh=True)
        if index.version != self._index_version:
            if index.empty:
                watched: frozenset[str] = frozenset()
            else:
                features = index.watched_features()
                if features is None:
                    watched = _ALL
                else:
                    with self._db.read() as tx:
                        watched = frozenset(
                            entitlements_repo.meter_ids_of_features(tx, sorted(features))
                        )
            self._watched_meters = watched
            self._index_version = index.version
            self._full_sweep = True  # new rules: look at every entitlement they apply to
        return index

    def run_pass(self) -> int:
        """One evaluation pass (what the thread does each wake-up); returns events written."""
        index = self.refresh()
        with self._lock:
            usage, self._usage = self._usage, set()
            scopes, self._scopes = self._scopes, set()
        if index.empty:
            self._boundaries.clear()
            return 0
        records: dict[str, EntitlementRecord] = {}
        features = index.watched_features()
        narrowed = sorted(features) if features is not None else None
        full = self._full_sweep
        sweep = full or time.monotonic() - self._last_sweep >= self.sweep_seconds
        seen_usage: dict[tuple[str, str], int] = {}
        seen_scopes: dict[tuple[str, str], int] = {}
        try:
            with self._db.read() as tx:
                if sweep:  # what changed since the last sweep, by any process
                    watched = None if self._watched_meters is _ALL else self._watched_meters
                    seen_usage = usage_marks.usage_versions(tx, watched)
                    seen_scopes = usage_marks.scope_versions(tx)
                    if full:
                        for r in entitlements_repo.live_metered(tx, narrowed):
                            records[r.id] = r
                    else:
                        usage |= {k for k, v in seen_usage.items() if self._seen_usage.get(k) != v}
                        scopes |= {  # a customer's subject changes bump its scopes too
                            (owner, k[1])
                            for k, v in seen_scopes.items()
                            if self._seen_scopes.get(k) != v
                            for owner in Owner.of_scope(k[0])
                        }
                customer_of = customers_repo.usage_owners(tx, [s for _, s in usage])
                for meter_id, subject in sorted(usage):
                    owners = [Owner.subject(subject)]
                    if subject in customer_of:
                        owners.append(Owner.customer(customer_of[subject]))
                    for owner in owners:
                        for r in entitlements_repo.live_metered_for_meter_owner(
                            tx, meter_id, owner, narrowed
                        ):
                            records[r.id] = r
                for owner, feature_key in sorted(scopes, key=_scope_order):
                    found = entitlements_repo.live_for(tx, owner, feature_key)
                    if found is not None and found.type == "metered":
                        records[found.id] = found
        except Exception:
            with self._lock:  # keep the work for the next pass
                self._usage |= usage
                self._scopes |= scopes
            raise
        if sweep:
            self._last_sweep = time.monotonic()
            self._seen_usage, self._seen_scopes = seen_usage, seen_scopes
            if full:
                self._full_sweep = False
                self._boundaries.clear()
                self._grant_instants.clear()
        for r in records.values():  # their grants or resets may have changed
            if (r.owner, r.feature_key) in scopes:
                self._grant_instants.pop(r.id, None)
        now = self._clock.now().astimezone(UTC)
        for eid, (rec, end) in list(self._boundaries.items()):
            if end <= now:
                records.setdefault(eid, rec)
        written = 0
        for rec in records.values():
            written += self.evaluate(index, rec, now)
        return written

    def _feature(self, feature_id: str) -> Feature | None:
        found = self._features.get(feature_id)
        if found is None:
            with self._db.read() as tx:
                found = features_repo.by_id(tx, feature_id)
            if found is not None:
                self._features[feature_id] = found
        return found

    def _wake_at(self, record: EntitlementRecord, at: datetime | None) -> None:
        """Evaluate this entitlement again at ``at`` (None: only when something touches it)."""
        if at is None:
            self._boundaries.pop(record.id, None)
        else:
            self._boundaries[record.id] = (record, at)

    def _next_grant_instant(self, record: EntitlementRecord, now: datetime) -> datetime | None:
        instants = self._grant_instants.get(record.id)
        if instants is None:
            with self._db.read() as tx:
                grants = grants_repo.of_entitlement(tx, record.id, include_deleted=False)
            instants = sorted(
                {t for g in grants for t in (g.effective_at, g.expires_at, g.voided_at) if t}
            )
            self._grant_instants[record.id] = instants
        return next((t for t in instants if t > now), None)

    def evaluate(self, index: RuleIndex, record: EntitlementRecord, now: datetime) -> int:
        """Fire what this entitlement's value now calls for. The common case (thresholds only,
        none reached) costs one value check (the value cache) and a set lookup."""
        threshold_rules, reset_rules = index.for_feature(record.feature_id)
        if not (threshold_rules or reset_rules) or not record.active_at(now):
            self._boundaries.pop(record.id, None)
            return 0
        self.evaluations += 1
        feature = self._feature(record.feature_id)
        if feature is None:
            return 0
        value = self._ents.value(record.owner, record.id, now)
        metered = getattr(value, "metered", None)
        if metered is None:  # deleted or no longer active
            self._boundaries.pop(record.id, None)
            return 0
        snapshot = ValueSnapshot(metered.usage, metered.balance, metered.overage)
        past = crossed_keys(index.thresholds_for(record.feature_id), snapshot)
        if threshold_rules and not reset_rules:
            self._wake_at(record, self._next_grant_instant(record, now))
        if not past and not reset_rules:
            return 0
        period_start: datetime = metered.start_of_period
        with self._db.read() as tx:
            view = self._ents.view(tx, record, now)
            period: Period | None = view.current_usage_period
            resets = entitlements_repo.resets_of(tx, record.id) if reset_rules else []
            marks = repo.marks_of_entitlement(tx, record.id, period_start)
        firings: list[Firing] = []
        for rule in threshold_rules if past else ():
            done = marks.get((rule.id, period_start), set())
            for t in rule.thresholds:
                if t.key in past and t.key not in done:
                    firings.append(Firing(rule, t.key, period_start, t))
        if reset_rules and period is not None:
            nxt = self._next_grant_instant(record, now) if threshold_rules else None
            self._wake_at(record, min(period.end, nxt) if nxt else period.end)
            measured = record.measure_usage_from or record.created_at
            for rule in reset_rules:
                floor = max(rule.created_at, record.created_at)
                starts = {r.at for r in resets if measured < r.at <= now and r.at >= floor}
                if measured < period.start and period.start >= floor:
                    starts.add(period.start)
                done_resets = {
                    s for (rid, s), ms in marks.items() if rid == rule.id and "reset" in ms
                }
                for start in sorted(starts - done_resets):
                    firings.append(Firing(rule, "reset", start))
        return self._n.fire(view, feature, value, firings)
