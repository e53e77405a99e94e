"""The Celery and kombu internals registry-bot reaches into keep the shape it relies on.

registry.adapters.queue reads kombu's QoS (`_delivered`, `_dirty`), the Redis channel's
`unacked_index_key` and its `unacked` hash, and writes task messages in the envelope
kombu's Redis transport keeps in its list; worker.app adds consumer bootsteps that use the
consumer's channel and timer. pyproject.toml pins Celery and kombu below their next major
version; these tests fail first when a release inside those pins changes any of that.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from celery.signals import setup_logging
from kombu import Connection

from registry.adapters.queue import (
    TASK_TELL,
    UNACKED,
    Producer,
    celery_config,
    renew_held,
    task_message,
)
from registry.rules.settings import Settings

KWARGS = {"event_id": "e-1", "channel": "C1", "user": "U1", "response_url": "", "text": "hi"}


@pytest.fixture
def settings(redis_url) -> Settings:
    url = f"{redis_url}/13"
    redis.Redis.from_url(url).flushdb()
    return Settings(mlflow_tracking_uri="unused", redis_url=url, queue=f"q-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def held(settings) -> Iterator[tuple]:
    """A message the producer queued, taken by a kombu consumer and not yet acknowledged."""
    Producer(settings).send(TASK_TELL, **KWARGS)
    client = redis.Redis.from_url(settings.redis_url)
    [raw] = client.lrange(settings.queue, 0, -1)
    options = celery_config(settings)["broker_transport_options"]
    with Connection(settings.redis_url, transport_options=options) as conn:
        simple = conn.SimpleQueue(settings.queue)
        message = simple.get(timeout=5)
        yield simple.channel, message, json.loads(raw), client
        simple.close()


def test_a_held_message_is_where_renew_held_looks_for_it(settings, held):
    channel, message, queued, client = held
    qos, tag = channel.qos, message.delivery_tag
    # kombu's QoS: the tags this channel holds, and those acked but not yet flushed.
    assert isinstance(qos._delivered, dict) and tag in qos._delivered
    assert isinstance(qos._dirty, set) and tag not in qos._dirty
    assert channel.unacked_key == UNACKED and isinstance(channel.unacked_index_key, str)
    # The unacked hash entry is [message, exchange, routing_key]; the index scores its tag.
    entry = json.loads(client.hget(UNACKED, tag))
    assert entry == [queued, "", settings.queue]
    assert isinstance(client.zscore(channel.unacked_index_key, tag), float)
    with channel.conn_or_acquire() as conn:
        assert isinstance(conn, redis.Redis)
    assert renew_held(channel, now=1234.5) == 1
    assert client.zscore(channel.unacked_index_key, tag) == 1234.5
    message.ack()
    assert tag in qos._dirty and renew_held(channel) == 0


def test_kombu_reads_the_envelope_the_producer_writes(held):
    _, message, queued, _ = held
    assert message.headers["task"] == TASK_TELL and message.headers["id"] == queued["headers"]["id"]
    args, kwargs, embed = message.decode()
    assert (args, kwargs) == ([], KWARGS) and set(embed) == {
        "callbacks",
        "errbacks",
        "chain",
        "chord",
    }
    assert message.delivery_tag == queued["properties"]["delivery_tag"]


def test_kombu_writes_the_envelope_task_message_writes(settings):
    from worker.app import create_celery

    app = create_celery(settings)
    app.send_task(TASK_TELL, kwargs=KWARGS, headers={"enqueued_at": 1.0})
    [raw] = redis.Redis.from_url(settings.redis_url).lrange(settings.queue, 0, -1)
    theirs = json.loads(raw)
    ours = task_message(
        TASK_TELL, KWARGS, task_id="t-1", queue=settings.queue, headers={"enqueued_at": 1.0}
    )
    assert set(theirs) == set(ours)
    assert set(theirs["headers"]) == set(ours["headers"])
    assert set(theirs["properties"]) == set(ours["properties"])
    for key in ("body_encoding", "delivery_info", "delivery_mode", "priority"):
        assert theirs["properties"][key] == ours["properties"][key], key
    decoded = [json.loads(base64.b64decode(m["body"])) for m in (theirs, ours)]
    assert decoded[0] == decoded[1]


def leave_logging_alone(**_: object) -> None:
    """Keep an embedded worker from configuring this process's logging (Celery does it
    only while no one listens to setup_logging): it would set the root level to ERROR."""


def test_the_consumer_bootsteps_start_on_a_real_worker_and_run(settings):
    """RenewHeld and ResendLost log a failure as a warning and go on: run them here."""
    from worker.app import RenewHeld, ResendLost, create_celery

    app = create_celery(settings)
    setup_logging.connect(leave_logging_alone)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False) as worker:
            steps = worker.consumer.blueprint.steps
            for step_type in (RenewHeld, ResendLost):
                step = steps[step_type.name]
                assert step.tref is not None and step.settings == settings
                step.run(worker.consumer.task_consumer.channel)  # raises if a shape changed
    finally:
        setup_logging.disconnect(leave_logging_alone)
