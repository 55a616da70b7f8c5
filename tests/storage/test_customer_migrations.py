"""Migrations 0500/0510 forward from the schema before customers, with data kept: a
subject's entitlement and grant written on the old schema (no ``customer_id``) read back as
subject-owned, answer the same value, and a customer entitlement for the same feature can
live beside it. On each real backend."""

from __future__ import annotations

from datetime import UTC, datetime

from allotment.clock import FrozenClock
from allotment.config import Settings
from allotment.container import Container
from allotment.domain.entitlement_inputs import parse_entitlement_create
from allotment.domain.owners import Owner
from allotment.domain.timeutil import to_micros
from allotment.storage import migrate
from allotment.storage.database import open_database, split_statements

NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
T = to_micros(datetime(2025, 6, 1, tzinfo=UTC))


def test_forward_from_before_customers_keeps_entitlements(db_url: str) -> None:
    db = open_database(db_url)
    try:
        migrate.applied(db)  # creates schema_migrations
        for m in migrate.available(db.dialect):
            if m.version >= "0500":
                break
            with db.write() as tx:
                for statement in split_statements(m.script):
                    tx.execute(statement)
                tx.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                           "VALUES (?, ?, ?)", (m.version, m.name, T))  # fmt: skip
        with db.write() as tx:
            tx.execute(
                "INSERT INTO features (id, key, name, created_at, updated_at) "
                "VALUES ('01JX0000000000000000000001', 'flag', 'Flag', ?, ?)", (T, T),
            )  # fmt: skip
            tx.execute(
                "INSERT INTO entitlements (id, subject_key, feature_id, feature_key, type, "
                "is_soft_limit, preserve_overage_at_reset, active_from, created_at, updated_at) "
                "VALUES ('01JX0000000000000000000002', 'old-subject', "
                "'01JX0000000000000000000001', 'flag', 'boolean', 0, 0, ?, ?, ?)", (T, T, T),
            )  # fmt: skip
        assert [m.version for m in migrate.pending(db)][:2] == ["0500", "0510"]
    finally:
        db.close()
    c = Container(Settings(db_url=db_url), open_database(db_url), FrozenClock(NOW))
    c.start()
    try:
        view = c.entitlements.get("old-subject", "flag")
        assert view.record.customer_id == ""
        assert view.record.owner == Owner.subject("old-subject")
        assert c.entitlements.value("old-subject", "flag", None).has_access
        customer = c.customers.create({"name": "C", "key": "old-subject"})
        made = c.entitlements.create(
            Owner.customer(customer.id),
            parse_entitlement_create({"type": "boolean", "featureKey": "flag"}),
        )
        assert made.record.subject_key == ""
        assert [v.record.id for v in c.entitlements.list_for_subject("old-subject", False)] == [
            view.record.id
        ]
        assert len(c.entitlements.list_for_owner(Owner.customer(customer.id), False)) == 1
    finally:
        c.close()
