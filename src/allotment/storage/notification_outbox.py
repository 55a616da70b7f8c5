"""The notification outbox: deliveries (one per event and channel) and their attempts.

Rows are written with their event (``notifications_repo.insert_event``). Claiming due
deliveries on PostgreSQL uses ``FOR UPDATE SKIP LOCKED`` and sets a lease, so several
replicas never send the same delivery at the same time; a lease that runs out (the sender
died) makes the row claimable again. SQLite has one writer, so the lease alone does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from allotment.domain.notifications import DeliveryState
from allotment.domain.timeutil import from_micros, to_micros
from allotment.storage.database import Tx


def _in(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


def _t(us: int | None) -> datetime | None:
    return None if us is None else from_micros(us)


def _us(at: datetime | None) -> int | None:
    return None if at is None else to_micros(at)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    attempt: int
    state: DeliveryState
    status_code: int | None
    duration_ms: int
    body: str
    url: str
    at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    event_id: str
    channel_id: str
    state: DeliveryState
    reason: str
    attempts_made: int
    next_attempt_at: datetime | None
    updated_at: datetime
    attempts: tuple[AttemptRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class Claimed:
    event_id: str
    channel_id: str
    attempts_made: int


def deliveries(tx: Tx, event_ids: Sequence[str]) -> dict[str, list[DeliveryRecord]]:
    """Each event's deliveries, with their attempts (oldest first)."""
    if not event_ids:
        return {}
    ids = tuple(event_ids)
    attempts: dict[tuple[str, str], list[AttemptRecord]] = {}
    for r in tx.execute(
        "SELECT event_id, channel_id, attempt, state, status_code, duration_ms, body, url, at "
        f"FROM notification_attempts WHERE event_id IN ({_in(ids)}) ORDER BY attempt",
        ids,
    ):
        attempts.setdefault((r[0], r[1]), []).append(
            AttemptRecord(r[2], DeliveryState(r[3]), r[4], int(r[5]), r[6], r[7], from_micros(r[8]))
        )
    out: dict[str, list[DeliveryRecord]] = {}
    for r in tx.execute(
        "SELECT event_id, channel_id, state, reason, attempts_made, next_attempt_at, updated_at "
        f"FROM notification_deliveries WHERE event_id IN ({_in(ids)}) ORDER BY channel_id",
        ids,
    ):
        out.setdefault(r[0], []).append(
            DeliveryRecord(
                r[0],
                r[1],
                DeliveryState(r[2]),
                r[3],
                int(r[4]),
                _t(r[5]),
                from_micros(r[6]),
                tuple(attempts.get((r[0], r[1]), ())),
            )
        )
    return out


def claim_due(
    tx: Tx, now: datetime, lease_until: datetime, owner: str, limit: int
) -> list[Claimed]:
    """Take up to ``limit`` deliveries that are due (or whose sender's lease ran out) and
    lease them to ``owner``; on PostgreSQL rows another replica holds are skipped."""
    now_us = to_micros(now)
    lock = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgresql" else ""
    rows = tx.execute(
        "SELECT event_id, channel_id, attempts_made FROM notification_deliveries "
        "WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ? "
        "AND (lease_until IS NULL OR lease_until < ?) "
        f"ORDER BY next_attempt_at LIMIT ?{lock}",
        (now_us, now_us, limit),
    )
    claimed = [Claimed(r[0], r[1], int(r[2])) for r in rows]
    if claimed:
        tx.execute_many(
            "UPDATE notification_deliveries SET state = ?, lease_until = ?, lease_owner = ?, "
            "updated_at = ? WHERE event_id = ? AND channel_id = ?",
            [(DeliveryState.SENDING.value, to_micros(lease_until), owner, now_us, c.event_id,
              c.channel_id) for c in claimed],
        )  # fmt: skip
    return claimed


def record_attempt(
    tx: Tx,
    c: Claimed,
    owner: str,
    attempt: AttemptRecord,
    *,
    state: DeliveryState,
    reason: str,
    next_attempt_at: datetime | None,
) -> bool:
    """Store one attempt and the delivery's new state, if ``owner`` still holds the lease.
    A resend requested while the attempt was in flight (the row is ``RESENDING``) wins: the
    delivery is queued again at once, with a fresh round of retries."""
    at_us = to_micros(attempt.at)
    resent = f"state = '{DeliveryState.RESENDING.value}'"
    changed = tx.rowcount(
        f"UPDATE notification_deliveries SET state = CASE WHEN {resent} THEN state ELSE ? END, "
        f"reason = CASE WHEN {resent} THEN reason ELSE ? END, "
        f"attempts_made = CASE WHEN {resent} THEN 0 ELSE ? END, "
        f"next_attempt_at = CASE WHEN {resent} THEN ? ELSE ? END, "
        "lease_until = NULL, lease_owner = NULL, updated_at = ? "
        "WHERE event_id = ? AND channel_id = ? AND lease_owner = ?",
        (state.value, reason, c.attempts_made + 1, at_us, _us(next_attempt_at), at_us,
         c.event_id, c.channel_id, owner),
    )  # fmt: skip
    if changed != 1:
        return False
    row = tx.one(
        "SELECT COALESCE(MAX(attempt), 0) FROM notification_attempts "
        "WHERE event_id = ? AND channel_id = ?",
        (c.event_id, c.channel_id),
    )
    number = (int(row[0]) if row else 0) + 1
    tx.execute(
        "INSERT INTO notification_attempts (event_id, channel_id, attempt, state, status_code, "
        "duration_ms, body, url, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (c.event_id, c.channel_id, number, attempt.state.value, attempt.status_code,
         attempt.duration_ms, attempt.body, attempt.url, at_us),
    )  # fmt: skip
    return True


def resend(tx: Tx, event_id: str, channel_ids: Sequence[str], now: datetime) -> int:
    """Queue the event's deliveries to these channels again (a fresh round of retries)."""
    if not channel_ids:
        return 0
    now_us = to_micros(now)
    return tx.rowcount(
        "UPDATE notification_deliveries SET state = ?, reason = ?, attempts_made = 0, "
        "next_attempt_at = ?, updated_at = ? "
        f"WHERE event_id = ? AND channel_id IN ({_in(channel_ids)})",
        (DeliveryState.RESENDING.value, "resend requested", now_us, now_us, event_id,
         *channel_ids),
    )  # fmt: skip


def next_due(tx: Tx) -> datetime | None:
    row = tx.one("SELECT MIN(next_attempt_at) FROM notification_deliveries")
    return _t(row[0]) if row and row[0] is not None else None
