"""Composition root: settings → database → services. The only place that picks an engine.

Services receive the container and reach their collaborators through it (``self._c.meters``),
so construction order never matters and tests can build a container on any database.
"""

from __future__ import annotations

import logging

from allotment.clock import Clock, FrozenClock, SystemClock
from allotment.config import Settings
from allotment.domain.timeutil import parse_rfc3339, to_micros
from allotment.services.entitlements import EntitlementService
from allotment.services.events import EventService
from allotment.services.features import FeatureService
from allotment.services.grants import GrantService
from allotment.services.meter_queries import MeterQueryService
from allotment.services.meters import MeterService
from allotment.services.notification_evaluator import NotificationEvaluator
from allotment.services.notifications import NotificationService, OutboundPolicy
from allotment.services.portal import PortalService
from allotment.services.subjects import SubjectService
from allotment.services.webhooks import DeliverySettings, WebhookDelivery
from allotment.storage import migrate
from allotment.storage.database import Database, open_database

log = logging.getLogger("allotment")


class Container:
    def __init__(self, settings: Settings, db: Database, clock: Clock) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.meters = MeterService(self)
        self.meter_queries = MeterQueryService(self)
        self.events = EventService(self)
        self.subjects = SubjectService(self)
        self.features = FeatureService(self)
        self.entitlements = EntitlementService(self)
        self.grants = GrantService(self)
        self.portal = PortalService(self)
        self._wire_notifications()

    def _wire_notifications(self) -> None:
        from allotment.domain.notifications import DEFAULT_RETRY_SCHEDULE, parse_schedule
        from allotment.http.routes.notifications import render_payload

        s = self.settings
        policy = OutboundPolicy(allow_private=s.webhook_allow_private)
        schedule = (
            parse_schedule(s.webhook_retry_schedule, "ALLOTMENT_WEBHOOK_RETRY_SCHEDULE")
            if s.webhook_retry_schedule
            else DEFAULT_RETRY_SCHEDULE
        )
        self.webhooks = WebhookDelivery(
            self.db, self.clock, policy,
            DeliverySettings(
                retry_schedule=schedule, timeout_seconds=s.webhook_timeout_seconds,
                lease_seconds=s.webhook_lease_seconds, poll_seconds=s.webhook_poll_seconds,
            ),
        )  # fmt: skip
        self.notifications = NotificationService(
            self.db, self.clock, render_payload, policy, wake=self.webhooks.wake
        )
        self.notify_evaluator: NotificationEvaluator | None = None

    def start_background(self) -> None:
        """Start the serve process's background workers: the notification evaluator and
        webhook delivery (after :meth:`start`; stopped by :meth:`close`)."""
        s = self.settings
        evaluator = NotificationEvaluator(
            self.db, self.clock, self.notifications, self.entitlements,
            tick_seconds=s.notifications_tick_seconds,
            sweep_seconds=s.notifications_sweep_seconds,
        )  # fmt: skip
        self.notify_evaluator = evaluator
        self.events.after_commit = evaluator.touched
        self.entitlements.on_scope_change = evaluator.scope_changed
        self.grants.on_scope_change = evaluator.scope_changed
        evaluator.start()
        self.webhooks.start()

    def now_us(self) -> int:
        return to_micros(self.clock.now())

    def start(self) -> None:
        """Bring the database up to date and load configuration into it."""
        applied = migrate.migrate(self.db, self.now_us())
        for m in applied:
            log.info("applied migration %s_%s", m.version, m.name)
        sync = getattr(self.meters, "sync_config", None)
        if sync is not None:
            sync(self.settings.meters)

    def close(self) -> None:
        self.events.close()  # the group-commit writer finishes what is queued first
        if self.notify_evaluator is not None:
            self.notify_evaluator.stop()
        self.webhooks.stop()
        self.db.close()


def make_clock(settings: Settings) -> Clock:
    if settings.test_clock:
        return FrozenClock(parse_rfc3339(settings.test_clock, "ALLOTMENT_TEST_CLOCK"))
    return SystemClock()


def build_container(settings: Settings, clock: Clock | None = None) -> Container:
    db = open_database(
        settings.db_url, pool=settings.pool, sqlite_synchronous=settings.sqlite_synchronous.upper()
    )
    return Container(settings, db, clock or make_clock(settings))
