"""Notifications: channels and rules (CRUD), events (list, get, resend, test) and the one
place that turns "a rule fired" into an event plus its outbox rows (docs/notifications.md).

The service receives only its ports: the database, the clock, the entitlement reads it
renders payloads from, a payload renderer (the wire forms live in the HTTP layer), the
outbound address policy and a ``wake`` callback that nudges the delivery worker.

Firing (:meth:`NotificationService.fire`) writes, in ONE transaction, the mark that makes a
rule fire at most once (``notification_marks``), the event and one outbox row per enabled
channel; a mark another writer already holds means the event is not written. So an event is
never lost (the outbox row commits with the mark) and never doubled (the mark is unique).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import msgspec

from allotment.clock import Clock
from allotment.domain import notifications as rules
from allotment.domain.customers import Customer
from allotment.domain.entitlement_inputs import Paging
from allotment.domain.errors import InvalidInput, NotFound
from allotment.domain.features import Feature
from allotment.domain.ids import new_ulid
from allotment.domain.notifications import (
    ChannelIn,
    RuleIn,
    Threshold,
)
from allotment.domain.periods import Period
from allotment.domain.timeutil import to_micros
from allotment.services.entitlements import EntitlementView
from allotment.services.notification_index import Firing, RuleIndex
from allotment.services.outbound import OutboundPolicy
from allotment.storage import customers_repo, features_repo, subjects_repo
from allotment.storage import notification_outbox as outbox
from allotment.storage import notifications_repo as repo
from allotment.storage.database import Database, Tx
from allotment.storage.entitlements_repo import EntitlementRecord
from allotment.storage.notification_outbox import DeliveryRecord
from allotment.storage.notifications_repo import ChannelRecord, EventRecord, RuleRecord
from allotment.storage.subjects_repo import SubjectRecord

_encoder = msgspec.json.Encoder(decimal_format="number")


class Renderer(Protocol):
    """The wire payload of an entitlement notification (implemented by the HTTP layer)."""

    def __call__(
        self,
        *,
        event_id: str,
        type: str,
        timestamp: datetime,
        entitlement: EntitlementView,
        feature: Feature,
        subject: SubjectRecord | None,
        value: Any,
        threshold: Threshold | None,
        customer: Customer | None = None,
        subject_key: str | None = None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class EventView:
    event: EventRecord
    rule: RuleRecord
    deliveries: list[DeliveryRecord]
    channels: Mapping[str, ChannelRecord]


def generate_secret() -> str:
    return rules.encode_secret(os.urandom(24))


class NotificationService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        policy: OutboundPolicy,
        wake: Callable[[], None] = lambda: None,
        render: Renderer | None = None,
    ) -> None:
        """``render`` builds the webhook payloads; the HTTP layer, which owns the wire forms,
        installs it (``http.app.create_app``) before anything fires."""
        self._db = db
        self._clock = clock
        self.render = render
        self.policy = policy
        self.wake = wake
        self._index = RuleIndex()
        self._index_lock = threading.Lock()

    def _now(self) -> datetime:
        return self._clock.now().astimezone(UTC)

    def _renderer(self) -> Renderer:
        if self.render is None:
            raise RuntimeError("no notification payload renderer installed (http.app does it)")
        return self.render

    def _id(self, now: datetime) -> str:
        return new_ulid(to_micros(now) // 1000)

    # ------------------------------------------------------------ rule index

    def index(self, *, refresh: bool = False) -> RuleIndex:
        """The rule index; ``refresh`` re-reads it when any rule or channel changed (one
        small query), which is how a replica learns of another replica's writes."""
        if refresh or self._index.version == (-1, -1):
            with self._db.read() as tx:
                version = repo.rules_version(tx)
                if version != self._index.version:
                    live = repo.all_rules(tx, include_deleted=False)
                    self._index = RuleIndex.build(version, live)
        return self._index

    def _changed(self) -> None:
        with self._index_lock:
            self._index = RuleIndex()

    # ------------------------------------------------------------ channels

    def _check_url(self, url: str) -> None:
        why = self.policy.refusal(url)
        if why is not None:
            raise InvalidInput(f"url: {why}", field="url")

    def create_channel(self, inp: ChannelIn) -> ChannelRecord:
        self._check_url(inp.url)
        now = self._now()
        c = ChannelRecord(
            id=self._id(now), name=inp.name, disabled=inp.disabled, url=inp.url,
            custom_headers=dict(inp.custom_headers),
            signing_secret=inp.signing_secret or generate_secret(), metadata=inp.metadata,
            created_at=now, updated_at=now,
        )  # fmt: skip
        with self._db.write() as tx:
            repo.save_channel(tx, c)
        self._changed()
        return c

    def _live_channel(self, tx: Tx, channel_id: str) -> ChannelRecord:
        return _found(repo.channel(tx, channel_id), "channel", channel_id, live=True)

    def get_channel(self, channel_id: str) -> ChannelRecord:
        with self._db.read() as tx:
            return _found(repo.channel(tx, channel_id), "channel", channel_id, live=False)

    def update_channel(self, channel_id: str, inp: ChannelIn) -> ChannelRecord:
        self._check_url(inp.url)
        now = self._now()
        with self._db.write() as tx:
            old = self._live_channel(tx, channel_id)
            c = replace(
                old, name=inp.name, disabled=inp.disabled, url=inp.url,
                custom_headers=dict(inp.custom_headers),
                signing_secret=inp.signing_secret or old.signing_secret, metadata=inp.metadata,
                updated_at=now,
            )  # fmt: skip
            repo.save_channel(tx, c)
        self._changed()
        return c

    def delete_channel(self, channel_id: str) -> None:
        now = self._now()
        with self._db.write() as tx:
            old = self._live_channel(tx, channel_id)
            live = repo.all_rules(tx, include_deleted=False)
            in_use = [r.id for r in live if channel_id in r.channel_ids]
            if in_use:
                raise InvalidInput(
                    f"channel {channel_id} is used by notification rule(s) {', '.join(in_use)}; "
                    "delete them or remove the channel from them first",
                    field="channelId",
                )
            repo.save_channel(tx, replace(old, deleted_at=now, updated_at=now))
        self._changed()

    def list_channels(
        self, include_deleted: bool, include_disabled: bool, paging: Paging
    ) -> tuple[list[ChannelRecord], int]:
        with self._db.read() as tx:
            return repo.list_channels(
                tx, include_deleted=include_deleted, include_disabled=include_disabled,
                order_by=paging.order_by, descending=paging.descending, limit=paging.limit,
                offset=paging.offset,
            )  # fmt: skip

    # ------------------------------------------------------------ rules

    def _resolve_rule_refs(self, tx: Tx, inp: RuleIn) -> tuple[tuple[str, ...] | None]:
        """Check the channels exist and resolve the features to ids (a 1-tuple)."""
        found = repo.channels(tx, inp.channels)
        for cid in inp.channels:
            c = found.get(cid)
            if c is None or c.deleted_at is not None:
                raise InvalidInput(f"channels: notification channel {cid} not found",
                                   field="channels")  # fmt: skip
        if inp.features is None:
            return (None,)
        ids: list[str] = []
        for ref in inp.features:
            f = features_repo.live_by_id_or_key(tx, ref)
            if f is None:
                raise InvalidInput(f"features: feature {ref!r} not found", field="features")
            if f.id not in ids:
                ids.append(f.id)
        return (tuple(ids),)

    def create_rule(self, inp: RuleIn) -> RuleRecord:
        now = self._now()
        with self._db.write() as tx:
            (features,) = self._resolve_rule_refs(tx, inp)
            r = RuleRecord(
                id=self._id(now), type=inp.type, name=inp.name, disabled=inp.disabled,
                thresholds=inp.thresholds, feature_ids=features, channel_ids=inp.channels,
                metadata=inp.metadata, created_at=now, updated_at=now,
            )  # fmt: skip
            repo.save_rule(tx, r)
        self._changed()
        return r

    def _live_rule(self, tx: Tx, rule_id: str) -> RuleRecord:
        return _found(repo.rule(tx, rule_id), "rule", rule_id, live=True)

    def get_rule(self, rule_id: str) -> RuleRecord:
        with self._db.read() as tx:
            return _found(repo.rule(tx, rule_id), "rule", rule_id, live=False)

    def update_rule(self, rule_id: str, inp: RuleIn) -> RuleRecord:
        now = self._now()
        with self._db.write() as tx:
            old = self._live_rule(tx, rule_id)
            if old.type is not inp.type:
                raise InvalidInput(
                    f"type: a rule's type cannot change (this rule is {old.type.value})",
                    field="type",
                )
            (features,) = self._resolve_rule_refs(tx, inp)
            r = replace(
                old, name=inp.name, disabled=inp.disabled, thresholds=inp.thresholds,
                feature_ids=features, channel_ids=inp.channels, metadata=inp.metadata,
                updated_at=now,
            )  # fmt: skip
            repo.save_rule(tx, r)
        self._changed()
        return r

    def delete_rule(self, rule_id: str) -> None:
        now = self._now()
        with self._db.write() as tx:
            old = self._live_rule(tx, rule_id)
            repo.save_rule(tx, replace(old, deleted_at=now, updated_at=now))
        self._changed()

    def list_rules(
        self,
        include_deleted: bool,
        include_disabled: bool,
        features: Sequence[str],
        channels: Sequence[str],
        paging: Paging,
    ) -> tuple[list[RuleRecord], int]:
        with self._db.read() as tx:
            all_ = repo.all_rules(tx, include_deleted=include_deleted)
            feature_ids = set(features_repo.ids_for(tx, features)) if features else None
        picked = [
            r for r in all_
            if (include_disabled or not r.disabled)
            and (feature_ids is None or bool(feature_ids & set(r.feature_ids or ())))
            and (not channels or set(channels) & set(r.channel_ids))
        ]  # fmt: skip
        key = {
            "id": lambda r: r.id,
            "type": lambda r: (r.type.value, r.id),
            "createdAt": lambda r: (r.created_at, r.id),
            "updatedAt": lambda r: (r.updated_at, r.id),
        }[paging.order_by]
        picked.sort(key=key, reverse=paging.descending)
        return picked[paging.offset : paging.offset + paging.limit], len(picked)

    def refs(
        self, rules_: Sequence[RuleRecord]
    ) -> tuple[dict[str, ChannelRecord], dict[str, Feature]]:
        """The channels and features these rules name (for their wire form)."""
        channel_ids = sorted({c for r in rules_ for c in r.channel_ids})
        feature_ids = sorted({f for r in rules_ for f in (r.feature_ids or ())})
        with self._db.read() as tx:
            feats = {fid: f for fid in feature_ids if (f := features_repo.by_id(tx, fid))}
            return repo.channels(tx, channel_ids), feats

    # ------------------------------------------------------------ events

    def _views(self, tx: Tx, events: list[EventRecord]) -> list[EventView]:
        rules_ = repo.rules_by_id(tx, sorted({e.rule_id for e in events}))
        dels = outbox.deliveries(tx, [e.id for e in events])
        channel_ids = sorted({d.channel_id for ds in dels.values() for d in ds})
        chans = repo.channels(tx, channel_ids)
        return [EventView(e, rules_[e.rule_id], dels.get(e.id, []), chans) for e in events]

    def get_event(self, event_id: str) -> EventView:
        with self._db.read() as tx:
            e = repo.event(tx, event_id)
            if e is None:
                raise NotFound(f"notification event {event_id!r} not found")
            return self._views(tx, [e])[0]

    def list_events(self, f: repo.EventFilter, paging: Paging) -> tuple[list[EventView], int]:
        if f.from_ is not None and f.to is not None and f.to < f.from_:
            raise InvalidInput("to: must not be before from", field="to")
        with self._db.read() as tx:
            events, total = repo.list_events(
                tx, f, order_by=paging.order_by, descending=paging.descending,
                limit=paging.limit, offset=paging.offset,
            )  # fmt: skip
            return self._views(tx, events), total

    def resend(self, event_id: str, channels: Sequence[str] | None) -> None:
        now = self._now()
        with self._db.write() as tx:
            if repo.event(tx, event_id) is None:
                raise NotFound(f"notification event {event_id!r} not found")
            own = [d.channel_id for d in outbox.deliveries(tx, [event_id]).get(event_id, [])]
            wanted = list(channels) if channels else own
            unknown = [c for c in wanted if c not in own]
            if unknown:
                raise InvalidInput(
                    f"channels: the event was not sent to channel(s) {', '.join(unknown)}",
                    field="channels",
                )
            outbox.resend(tx, event_id, wanted, now)
        self.wake()

    def test_rule(self, rule_id: str) -> EventView:
        """A test event with sample data, delivered to the rule's enabled channels."""
        now = self._now()
        with self._db.read() as tx:
            r = self._live_rule(tx, rule_id)
            enabled = self._enabled_channels(tx, r)
        if not enabled:
            raise InvalidInput(
                f"notification rule {rule_id} has no enabled channel", field="ruleId"
            )
        eid = self._id(now)
        feature = Feature(
            id=new_ulid(to_micros(now) // 1000), key="test_feature", name="Test feature",
            meter_slug="test_meter", group_filters=None, metadata=None, created_at=now,
            updated_at=now,
        )  # fmt: skip
        ent = EntitlementView(
            _sample_entitlement(feature, now), Period(now, now + timedelta(days=30)), None
        )
        threshold = r.thresholds[0] if r.thresholds else None
        value = {"hasAccess": True, "balance": Decimal(20), "usage": Decimal(80),
                 "overage": Decimal(0), "totalAvailableGrantAmount": Decimal(100)}  # fmt: skip
        payload = self._renderer()(
            event_id=eid, type=r.type.value, timestamp=now, entitlement=ent, feature=feature,
            subject=None, value=value, threshold=threshold,
        )  # fmt: skip
        ev = EventRecord(
            id=eid, type=r.type.value, rule_id=r.id, subject_key=ent.record.subject_key,
            feature_id=None, feature_key=None, payload=_encoder.encode(payload).decode(),
            annotations={"notification.rule.test": True}, created_at=now,
        )  # fmt: skip
        with self._db.write() as tx:
            repo.insert_event(tx, ev, enabled)
            view = self._views(tx, [ev])[0]
        self.wake()
        return view

    @staticmethod
    def _enabled_channels(tx: Tx, r: RuleRecord) -> list[str]:
        chans = repo.channels(tx, r.channel_ids)
        return [
            cid for cid in r.channel_ids
            if cid in chans and not chans[cid].disabled and chans[cid].deleted_at is None
        ]  # fmt: skip

    # ------------------------------------------------------------ firing

    def fire(
        self,
        view: EntitlementView,
        feature: Feature,
        value: Any,
        firings: Sequence[Firing],
    ) -> int:
        """Write each firing's mark, event and outbox rows in one transaction; return how many
        events were written (a mark already taken, by this or another process, writes none)."""
        if not firings:
            return 0
        now = self._now()
        entitlement = view.record
        with self._db.read() as tx:
            customer, subject_key = self._owner_parts(tx, entitlement)
            subject = subjects_repo.get_live_by_key(tx, subject_key)
            prepared = []
            for f in firings:
                channels = self._enabled_channels(tx, f.rule)
                if not channels:
                    continue
                eid = self._id(now)
                payload = self._renderer()(
                    event_id=eid, type=f.rule.type.value, timestamp=now, entitlement=view,
                    feature=feature, subject=subject, value=value, threshold=f.threshold,
                    customer=customer, subject_key=subject_key,
                )  # fmt: skip
                ev = EventRecord(
                    id=eid, type=f.rule.type.value, rule_id=f.rule.id,
                    subject_key=subject_key, feature_id=feature.id,
                    feature_key=feature.key, payload=_encoder.encode(payload).decode(),
                    annotations=None, created_at=now,
                )  # fmt: skip
                prepared.append((f, ev, channels))
        written = 0
        with self._db.write() as tx:
            for f, ev, channels in prepared:
                if repo.insert_mark(tx, f.rule.id, entitlement.id, f.period_start, f.mark, ev.id):
                    repo.insert_event(tx, ev, channels)
                    written += 1
        if written:
            self.wake()
        return written

    @staticmethod
    def _owner_parts(tx: Tx, entitlement: EntitlementRecord) -> tuple[Customer | None, str]:
        """The customer owning the entitlement (None for a subject owner) and the subject key
        its events name: the subject's, or the customer's first usage subject (its key when
        that counts), falling back to its key or id when it has none now."""
        if not entitlement.customer_id:
            return None, entitlement.subject_key
        customer = customers_repo.by_id(tx, entitlement.customer_id)
        if customer is None:
            return None, entitlement.customer_id
        subjects = customers_repo.attributed_subjects(tx, customer)
        return customer, subjects[0] if subjects else (customer.key or customer.id)

    def marks(self, rule_id: str, entitlement_id: str, period_start: datetime) -> set[str]:
        with self._db.read() as tx:
            return repo.marks(tx, rule_id, entitlement_id, period_start)


_Rec = TypeVar("_Rec", ChannelRecord, RuleRecord)


def _found(record: _Rec | None, what: str, ident: str, *, live: bool) -> _Rec:
    """The record, or 404; ``live``: a deleted one is not found either (reads show it)."""
    if record is None or (live and record.deleted_at is not None):
        raise NotFound(f"notification {what} {ident!r} not found")
    return record


def _sample_entitlement(feature: Feature, now: datetime) -> EntitlementRecord:
    return EntitlementRecord(
        id=new_ulid(to_micros(now) // 1000), subject_key="test_subject", feature_id=feature.id,
        feature_key=feature.key, type="metered", metadata=None, annotations=None, config=None,
        usage_period_interval="P1M", usage_period_anchor=now, measure_usage_from=now,
        is_soft_limit=False, issue_after_reset=None, issue_after_reset_priority=None,
        preserve_overage_at_reset=False, active_from=now, active_to=None, created_at=now,
        updated_at=now,
    )  # fmt: skip


__all__ = ["EventView", "Firing", "NotificationService", "OutboundPolicy", "RuleIndex"]
