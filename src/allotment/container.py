"""Composition root: settings → database → services. The only place that picks an engine.

Each service receives, through its constructor, the few collaborators it uses (the database,
the clock, another service); :class:`Container` builds them once, in dependency order, so
a service's needs are read off its constructor and no service knows the container. The
attribute names (``container.meters``, ``container.entitlements`` …) are what the HTTP
routes and the tests reach them by.
"""

from __future__ import annotations

import logging

from allotment.clock import Clock, FrozenClock, SystemClock
from allotment.config import Settings
from allotment.domain.timeutil import parse_rfc3339, to_micros
from allotment.services.api_keys import ApiKeyService
from allotment.services.audit import AuditService
from allotment.services.catalog import CatalogService
from allotment.services.catalog_entitlements import CatalogEntitlements
from allotment.services.catalog_meter_data import MeterDataService
from allotment.services.catalog_subscriptions import SubscriptionService
from allotment.services.console_sessions import ConsoleSessions
from allotment.services.customer_entitlements import CustomerEntitlements
from allotment.services.customers import CustomerService
from allotment.services.enforcement import EnforcementService
from allotment.services.enforcement_source import EnforcementCatalog
from allotment.services.entitlements import EntitlementService
from allotment.services.events import EventService
from allotment.services.features import FeatureService
from allotment.services.grants import GrantService
from allotment.services.ingest_rate import IngestRate
from allotment.services.meter_queries import MeterQueryService
from allotment.services.meters import MeterService
from allotment.services.notification_evaluator import NotificationEvaluator
from allotment.services.notifications import NotificationService
from allotment.services.outbound import OutboundPolicy
from allotment.services.portal import PortalService
from allotment.services.subjects import SubjectService
from allotment.services.value_cache import ValueCache
from allotment.services.value_cache import enabled as value_cache_enabled
from allotment.services.webhooks import DeliverySettings, WebhookDelivery
from allotment.storage import migrate
from allotment.storage.database import Database, open_database
from allotment.storage.enforcement_repo import EnforcementStore
from allotment.storage.key_revocations import RevocationListener

log = logging.getLogger("allotment")


class Container:
    def __init__(self, settings: Settings, db: Database, clock: Clock) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        # leaves first: each line uses only what the lines above built
        self.meters = MeterService(db, clock)
        self.events = EventService(db, clock, fold_max_lag=settings.fold_max_lag)
        self.ingest_rate = IngestRate(db, clock)
        self.subjects = SubjectService(db, clock)
        self.grants = GrantService(db, clock)
        self.meter_queries = MeterQueryService(db, clock, self.meters, settle=self.events.settle)
        self.features = FeatureService(db, clock, self.meters)
        self.portal = PortalService(
            db, clock, self.meters,
            settings.portal_token_secret, settings.portal_token_expiration_seconds,
        )  # fmt: skip
        cache = ValueCache(db, clock, self.meter_queries) if value_cache_enabled() else None
        self.entitlements = EntitlementService(db, clock, self.meters, self.meter_queries, cache)
        self.customers = CustomerService(db, clock)
        self.customer_entitlements = CustomerEntitlements(db, clock, self.entitlements, self.grants)
        self.catalog = CatalogService(db, clock, self.meters)
        # the subscription guard (400 while subscribed) runs before the entitlement one (409)
        self.subscriptions = SubscriptionService(
            db,
            clock,
            self.catalog,
            self.customers,
            CatalogEntitlements(
                db,
                clock,
                self.meters,
                self.customer_entitlements,
                self.entitlements,
                settle=self.events.settle,
                tail_check=self.events.tail_check,
            ),
        )
        self.customers.add_guard(self.customer_entitlements)
        self.meter_data = MeterDataService(
            clock, self.customers, self.subscriptions, self.meters, self.meter_queries
        )
        self.enforcement = EnforcementService(
            EnforcementStore(db, max_sessions=settings.pool.max_size // 2),
            EnforcementCatalog(
                self.customers, self.subscriptions, self.catalog, self.meters, self.meter_data
            ),
            self.events,
            clock,
        )
        self.audit = AuditService(db, clock)
        self.api_keys = ApiKeyService(db, clock, cache_seconds=settings.auth_cache_seconds)
        self.console_sessions = ConsoleSessions(db, clock)
        self.key_revocations = (
            RevocationListener(getattr(db, "url", settings.db_url), self.api_keys.forget)
            if db.dialect == "postgresql"
            else None
        )
        self._wire_notifications()

    def _wire_notifications(self) -> None:
        from allotment.domain.notifications import DEFAULT_RETRY_SCHEDULE, parse_schedule

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
        # the payload renderer (wire forms) is installed by the HTTP layer: http.app
        self.notifications = NotificationService(self.db, self.clock, policy, self.webhooks.wake)
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
        self.meters.sync_config(self.settings.meters)
        if self.settings.catalog:
            for item, what in self.catalog.apply_config(self.settings.catalog).items():
                log.info("config catalog: %s %s", item, what)
        if self.key_revocations is not None:
            self.key_revocations.start()

    def close(self, *, settle: bool = True) -> None:
        """Stop the writers (each finishes what is queued) and the background workers; fold
        the events' tail unless ``settle`` is False (``EventService.close``)."""
        if self.key_revocations is not None:
            self.key_revocations.close()
        self.enforcement.close()  # its SQLite group writer finishes what is queued first
        self.events.close(settle=settle)  # the group-commit writer finishes what is queued first
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
