"""Notification settings. The webhook retry schedule is configurable (issue 19: "first
retry within 10 s, then growing …; configurable"; docs/notifications.md "Configuration"): the
config file's
``notifications.retrySchedule`` (a list or a comma-separated string) and its environment twin
``ALLOTMENT_WEBHOOK_RETRY_SCHEDULE`` (which wins) set the delays the delivery worker waits
between attempts, ±10 % jitter, and how many attempts it makes before ``FAILED``; a bad
schedule stops the start-up naming the field. On each real backend, in process, on a frozen
clock: nothing here waits on the wall clock. Also: an outbound request that gets no answer
times out (10 s by default), and the config file's ``allowPrivateAddresses`` opens loopback
and private receivers as its environment twin does."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from allotment.clock import FrozenClock
from allotment.config import ConfigError, apply_env, load_file, validate
from allotment.container import Container, build_container
from allotment.domain.entitlement_inputs import Paging
from allotment.domain.errors import InvalidInput
from allotment.domain.notifications import DEFAULT_RETRY_SCHEDULE, parse_channel, parse_rule
from allotment.services.outbound import OutboundPolicy
from allotment.services.webhooks import DeliverySettings, Response, WebhookDelivery, post
from allotment.storage.notification_outbox import DeliveryRecord
from tests.notify_support import notify_container
from tests.support import EXAMPLE_CONFIG

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _config(tmp_path: Path, notifications: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(EXAMPLE_CONFIG.read_text() + "\nnotifications:\n" + notifications)
    return path


def test_the_file_and_the_environment_set_the_schedule(tmp_path: Path) -> None:
    listed = load_file(str(_config(tmp_path, "  retrySchedule: [7s, 1m, 2h]\n")))
    as_text = load_file(str(_config(tmp_path, '  retrySchedule: "7s, 1m,2h"\n')))
    for s in (listed, as_text):
        validate(s)
        assert s.webhook_retry_schedule is not None
        assert _schedule_of(s.webhook_retry_schedule) == (7.0, 60.0, 7200.0)
    env = apply_env(listed, {"ALLOTMENT_WEBHOOK_RETRY_SCHEDULE": "3s,4s"})
    assert env.webhook_retry_schedule == "3s,4s"  # the environment wins over the file
    unset = load_file(str(EXAMPLE_CONFIG))
    assert unset.webhook_retry_schedule is None  # the default: 5 s … hourly, over a day
    assert DEFAULT_RETRY_SCHEDULE[0] <= 10
    assert sum(DEFAULT_RETRY_SCHEDULE) >= 86_400


@pytest.mark.parametrize(
    ("schedule", "words"),
    [("[5s, soon]", "'soon' is not a delay"), ("[5s, 0s]", "must be > 0"),
     ("[5s, 25h]", "at most 24h")],
)  # fmt: skip
def test_a_bad_schedule_is_refused_naming_the_field(
    tmp_path: Path, schedule: str, words: str
) -> None:
    s = load_file(str(_config(tmp_path, f"  retrySchedule: {schedule}\n")))
    with pytest.raises(ConfigError) as err:
        validate(s)
    assert "notifications.retrySchedule" in str(err.value)
    assert words in str(err.value)


def _schedule_of(text: str) -> tuple[float, ...]:
    from allotment.domain.notifications import parse_schedule

    return parse_schedule(text, "notifications.retrySchedule")


@pytest.fixture
def c(db_url: str, tmp_path: Path) -> Iterator[Container]:
    file = load_file(str(_config(tmp_path, "  retrySchedule: [7s, 1m]\n")))
    with notify_container(replace(file, db_url=db_url), T0) as container:
        yield container  # no background workers: the test runs each delivery pass itself


def test_the_worker_waits_the_configured_delays_then_fails(c: Container) -> None:
    clock = c.clock
    assert isinstance(clock, FrozenClock)
    sent: list[datetime] = []

    def refuse(url: str, headers: Mapping[str, str], body: bytes, timeout: float) -> Response:
        sent.append(clock.now())
        return Response(503, "busy", 3)

    worker = WebhookDelivery(
        c.db, clock, OutboundPolicy(allow_private=True), c.webhooks.settings, send=refuse
    )
    assert worker.settings.retry_schedule == (7.0, 60.0)  # from the file
    ch = c.notifications.create_channel(
        parse_channel({"type": "WEBHOOK", "name": "c", "url": "http://127.0.0.1:9/h"})
    )
    rule = c.notifications.create_rule(parse_rule(
        {"type": "entitlements.reset", "name": "r", "channels": [ch.id]}))  # fmt: skip
    event = c.notifications.test_rule(rule.id)

    def status() -> DeliveryRecord:
        (s,) = c.notifications.get_event(event.event.id).deliveries
        return s

    assert worker.run_once() == 1  # the first attempt, at once
    first = status()
    assert (first.state.value, first.attempts_made) == ("PENDING", 1)
    assert first.next_attempt_at is not None
    assert T0 + timedelta(seconds=6.3) <= first.next_attempt_at <= T0 + timedelta(seconds=7.7)
    clock.set(T0 + timedelta(seconds=6.2))
    assert worker.run_once() == 0  # not due before 7 s − 10 %
    clock.set(first.next_attempt_at)
    assert worker.run_once() == 1  # the second attempt
    second = status()
    assert (second.state.value, second.attempts_made) == ("PENDING", 2)
    assert second.next_attempt_at is not None
    gap = second.next_attempt_at - clock.now()
    assert timedelta(seconds=54) <= gap <= timedelta(seconds=66)  # 1 m ± 10 %
    clock.set(clock.now() + timedelta(seconds=53.9))
    assert worker.run_once() == 0
    clock.set(second.next_attempt_at)
    assert worker.run_once() == 1  # the third and last (two delays: three attempts)
    last = status()
    assert (last.state.value, last.attempts_made, last.next_attempt_at) == ("FAILED", 3, None)
    assert "failed after 3 attempt(s); last: HTTP 503" in last.reason
    clock.set(clock.now() + timedelta(days=2))
    assert worker.run_once() == 0  # nothing after the last attempt
    assert len(sent) == 3


def test_a_receiver_that_never_answers_is_a_timed_out_attempt() -> None:
    """Outbound requests time out (issue 19: 10 s, the default of ``notifications.timeout``):
    a receiver that accepts the connection and never answers ends the attempt with an error,
    which the worker records and retries like any failure."""
    assert DeliverySettings().timeout_seconds == 10.0
    assert load_file(str(EXAMPLE_CONFIG)).webhook_timeout_seconds == 10.0
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel accepts; nobody reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        answer = post(url, {"content-type": "application/json"}, b"{}", 0.2)
    assert answer.status is None
    assert answer.error is not None
    assert "timed out" in answer.error


@pytest.mark.parametrize("allowed", [True, False])
def test_the_config_file_twin_of_allow_private(db_url: str, tmp_path: Path, allowed: bool) -> None:
    """``notifications.allowPrivateAddresses`` (the file twin of
    ``ALLOTMENT_WEBHOOK_ALLOW_PRIVATE=1``): a loopback channel is stored when it is true, and
    refused with a 400 naming ``url`` (nothing stored) when it is false, the default."""
    text = f"  allowPrivateAddresses: {str(allowed).lower()}\n"
    settings = replace(load_file(str(_config(tmp_path, text))), db_url=db_url)
    assert settings.webhook_allow_private is allowed
    container = build_container(settings, FrozenClock(T0))
    container.start()
    try:
        spec = parse_channel({"type": "WEBHOOK", "name": "c", "url": "http://127.0.0.1:9/h"})
        if allowed:
            assert container.notifications.create_channel(spec).url == "http://127.0.0.1:9/h"
        else:
            with pytest.raises(InvalidInput) as err:
                container.notifications.create_channel(spec)
            assert err.value.field == "url"
            assert "loopback" in err.value.detail
        paging = Paging(envelope=True, page=1, page_size=10, limit=10, offset=0,
                        descending=False, order_by="id")  # fmt: skip
        _, total = container.notifications.list_channels(True, True, paging)
        assert total == (1 if allowed else 0)
    finally:
        container.close()
