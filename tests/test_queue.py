"""Redelivery on real Redis: a live holder keeps its messages, a dead holder's come back."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from kombu import Connection

from registry.queue import (
    HELD_RENEW_EVERY,
    RESTORE_SCAN_EVERY,
    VISIBILITY_TIMEOUT,
    celery_config,
    renew_held,
)
from registry.settings import Settings

SHORT = 2.0  # a visibility timeout the test can outlive in seconds, not minutes


@pytest.fixture
def queue(redis_url):
    """A held message on a queue of its own, on a kombu channel like the worker's."""
    url, name = f"{redis_url}/9", f"registry-bot-queue-test-{uuid.uuid4().hex[:8]}"
    options = {"visibility_timeout": SHORT, "unacked_restore_throttle": 1}
    with Connection(url, transport_options=options) as conn:
        simple = conn.SimpleQueue(name)
        simple.put({"task": "x"})
        message = simple.get(timeout=5)
        yield simple.channel, redis.Redis.from_url(url), name
        message.ack()
        simple.close()
    redis.Redis.from_url(url).delete(name)


def scan(channel) -> None:
    """Run the scan every worker runs, giving back what looks abandoned."""
    channel.qos.restore_visible(num=None, interval=1)


def test_a_live_holder_keeps_its_message_past_the_visibility_timeout(queue):
    channel, client, name = queue
    deadline = time.monotonic() + 3 * SHORT
    while time.monotonic() < deadline:
        assert renew_held(channel) == 1
        scan(channel)
        assert client.llen(name) == 0
        time.sleep(SHORT / 4)


def test_a_message_whose_holder_stopped_renewing_comes_back_marked_redelivered(queue):
    channel, client, name = queue
    time.sleep(SHORT + 0.5)
    scan(channel)
    [raw] = client.lrange(name, 0, -1)
    assert json.loads(raw)["properties"]["delivery_info"]["redelivered"] is True


def test_renewing_never_brings_back_an_acked_message(queue):
    channel, client, _ = queue
    [tag] = list(channel.qos._delivered)
    channel.qos.ack(tag)
    renew_held(channel)
    assert client.zscore("unacked_index", tag) is None


def test_the_settings_bound_recovery_within_two_minutes():
    options = celery_config(Settings(mlflow_tracking_uri="x"))["broker_transport_options"]
    assert options["visibility_timeout"] == VISIBILITY_TIMEOUT
    assert options["unacked_restore_interval"] == RESTORE_SCAN_EVERY
    assert options["unacked_restore_throttle"] == 1
    # Held messages are renewed several times per timeout, so a slow beat is not a death.
    assert HELD_RENEW_EVERY * 3 <= VISIBILITY_TIMEOUT
    # Back in the queue this long after a death; the rest of the 2 minutes is for the work.
    assert VISIBILITY_TIMEOUT + RESTORE_SCAN_EVERY <= 70
