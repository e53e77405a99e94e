"""The queue on real Redis: the producer's messages, and redelivery after a holder died."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
import redis
from kombu import Connection

from registry.queue import (
    HELD_RENEW_EVERY,
    RESTORE_SCAN_EVERY,
    TASK_STAGE_EVENT,
    VISIBILITY_TIMEOUT,
    Producer,
    QueueUnavailable,
    celery_app,
    celery_config,
    renew_held,
    task_message,
)
from registry.settings import Settings
from tests.support import log_model, wait_notice

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


KWARGS = {"event_id": "e-1", "model_name": "churn", "run_id": "abc123", "requested_by": "U1"}


def test_a_task_message_carries_what_celery_send_task_would():
    app = celery_app(Settings(mlflow_tracking_uri="x", redis_url="redis://127.0.0.1:1/0"))
    theirs = app.amqp.as_task_v2("t-1", TASK_STAGE_EVENT, (), KWARGS, ignore_result=True)
    ours = task_message(
        TASK_STAGE_EVENT, KWARGS, task_id="t-1", queue="q", headers={"enqueued_at": 1.5}
    )
    # send_task adds the caller's headers to Celery's; the sender's name and saferepr's
    # quoting of the same kwargs repr may differ.
    expected = {
        **theirs.headers,
        "timelimit": list(theirs.headers["timelimit"]),
        "enqueued_at": 1.5,
    }
    ignored = {"origin", "kwargsrepr"}
    assert {k: v for k, v in ours["headers"].items() if k not in ignored} == {
        k: v for k, v in expected.items() if k not in ignored
    }
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(json.dumps(theirs.body))
    assert ours["properties"]["correlation_id"] == "t-1"
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": "q"}


def test_the_producer_queues_one_message_a_worker_channel_decodes(redis_url):
    url, name = f"{redis_url}/9", f"registry-bot-queue-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(mlflow_tracking_uri="x", redis_url=url, queue=name)
    Producer(settings).send(TASK_STAGE_EVENT, **KWARGS)
    assert redis.Redis.from_url(url).llen(name) == 1
    options = celery_config(settings)["broker_transport_options"]
    with Connection(url, transport_options=options) as conn:
        simple = conn.SimpleQueue(name)
        message = simple.get(timeout=5)
        assert message.headers["task"] == TASK_STAGE_EVENT
        assert message.headers["enqueued_at"] <= time.time()
        args, kwargs, embed = message.decode()
        assert (args, kwargs) == ([], KWARGS) and embed["chain"] is None
        message.ack()
        simple.close()
    redis.Redis.from_url(url).delete(name)


def test_the_producer_refuses_at_once_with_redis_down():
    producer = Producer(Settings(mlflow_tracking_uri="x", redis_url="redis://127.0.0.1:1/0"))
    with pytest.raises(QueueUnavailable):
        producer.send(TASK_STAGE_EVENT, **KWARGS)


@pytest.mark.slow
def test_a_task_the_producer_sends_is_run_by_the_real_worker(stack, slack, mlflow_server):
    model_name = f"queue-test-{uuid.uuid4().hex[:8]}"
    run_id = log_model(mlflow_server, constant=2.0)
    producer = Producer(
        Settings(mlflow_tracking_uri="x", redis_url=stack.redis_url, queue=stack.queue)
    )
    kwargs = {"model_name": model_name, "run_id": run_id, "requested_by": "UREQUESTER"}
    producer.send(TASK_STAGE_EVENT, event_id=f"queue-test-{uuid.uuid4().hex}", **kwargs)
    wait_notice(slack, model_name, timeout=60)
