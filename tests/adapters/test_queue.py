"""The queue on real Redis: the producer's messages, and redelivery after a holder died."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid

import pytest
import redis
from kombu import Connection

from devkit.stack import free_port, start_redis, stop
from registry.adapters.queue import (
    HELD_RENEW_EVERY,
    JOURNAL_GRACE,
    RESEND_EVERY,
    RESEND_LIMIT,
    RESTORE_SCAN_EVERY,
    TASK_STAGE_EVENT,
    VISIBILITY_TIMEOUT,
    Producer,
    QueueUnavailable,
    celery_app,
    celery_config,
    journal,
    journal_keys,
    renew_held,
    resend_lost,
    task_message,
)
from registry.rules.settings import Settings
from tests.support import log_model, wait_for, wait_notice

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


# -- The journal: a message a killed worker took off the queue before recording it -----------


@pytest.fixture
def journaled(redis_url):
    """A producer on a queue of its own, and a Redis client on the same database."""
    url, name = f"{redis_url}/9", f"registry-bot-queue-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(mlflow_tracking_uri="x", redis_url=url, queue=name)
    client = redis.Redis.from_url(url)
    yield Producer(settings), client, settings
    client.delete(name, *journal_keys(name))


def sent_one(producer: Producer, client: redis.Redis) -> str:
    """Send one task; return its id, as the queued message and the journal name it."""
    producer.send(TASK_STAGE_EVENT, **KWARGS)
    [raw] = client.lrange(producer.queue, 0, -1)
    task_id = json.loads(raw)["headers"]["id"]
    entries, index = journal_keys(producer.queue)
    assert json.loads(json.loads(client.hget(entries, task_id))["message"]) == json.loads(raw)
    assert client.zscore(index, task_id) <= time.time()
    return task_id


LATER = JOURNAL_GRACE + 1


def test_a_message_taken_off_the_queue_and_never_recorded_is_queued_again(journaled, caplog):
    producer, client, settings = journaled
    task_id = sent_one(producer, client)
    client.rpop(producer.queue)  # what a worker's BRPOP did just before it was killed
    assert resend_lost(client, producer.queue, now=time.time() + LATER) == [task_id]
    [said] = [r for r in caplog.records if r.getMessage().startswith("queued again")]
    assert (said.task_id, said.event_id, said.model) == (task_id, "e-1", "churn")
    [raw] = client.lrange(producer.queue, 0, -1)
    # The same task, decoded by a worker's channel as the first copy would have been.
    options = celery_config(settings)["broker_transport_options"]
    with Connection(settings.redis_url, transport_options=options) as conn:
        simple = conn.SimpleQueue(producer.queue)
        message = simple.get(timeout=5)
        assert message.headers["id"] == task_id and message.decode()[1] == KWARGS
        message.ack()
        simple.close()
    entries, _ = journal_keys(producer.queue)
    assert json.loads(client.hget(entries, task_id))["resent"] == 1


def test_a_message_still_waiting_in_the_queue_is_not_sent_again(journaled):
    producer, client, _ = journaled
    sent_one(producer, client)
    assert resend_lost(client, producer.queue, now=time.time() + LATER) == []
    assert client.llen(producer.queue) == 1


def test_a_lost_message_is_left_alone_within_the_grace(journaled):
    producer, client, _ = journaled
    sent_one(producer, client)
    client.rpop(producer.queue)
    assert resend_lost(client, producer.queue, now=time.time() + JOURNAL_GRACE / 2) == []
    assert client.llen(producer.queue) == 0


def test_a_held_message_is_struck_off_and_not_sent_again(journaled):
    producer, client, settings = journaled
    task_id = sent_one(producer, client)
    options = celery_config(settings)["broker_transport_options"]
    with Connection(settings.redis_url, transport_options=options) as conn:
        simple = conn.SimpleQueue(producer.queue)
        message = simple.get(timeout=5)  # held: in kombu's unacked hash, never struck off
        assert resend_lost(client, producer.queue, now=time.time() + LATER) == []
        assert client.hget(journal_keys(producer.queue)[0], task_id) is None
        assert client.llen(producer.queue) == 0
        message.ack()
        simple.close()


def test_a_message_lost_again_and_again_is_given_up(journaled, caplog):
    producer, client, _ = journaled
    task_id = sent_one(producer, client)
    now = time.time()
    for attempt in range(1, RESEND_LIMIT + 1):
        client.rpop(producer.queue)
        now += LATER
        assert resend_lost(client, producer.queue, now=now) == [task_id], attempt
    client.rpop(producer.queue)
    assert resend_lost(client, producer.queue, now=now + LATER) == []
    assert client.hlen(journal_keys(producer.queue)[0]) == 0
    assert any("giving up" in r.getMessage() for r in caplog.records)


def test_a_message_the_worker_queues_itself_is_journaled_too(journaled):
    """A retry or an event delivery goes through Celery's own publish, not the producer."""
    _, client, settings = journaled
    from worker.app import create_celery

    app = create_celery(settings)
    app.send_task(TASK_STAGE_EVENT, kwargs=KWARGS, countdown=2)  # a retry's countdown
    [raw] = client.lrange(settings.queue, 0, -1)
    task_id = json.loads(raw)["headers"]["id"]
    client.rpop(settings.queue)
    assert resend_lost(client, settings.queue, now=time.time() + LATER) == [task_id]
    options = celery_config(settings)["broker_transport_options"]
    with Connection(settings.redis_url, transport_options=options) as conn:
        simple = conn.SimpleQueue(settings.queue)
        message = simple.get(timeout=5)
        assert message.headers["task"] == TASK_STAGE_EVENT and message.headers["eta"]
        assert message.decode()[1] == KWARGS
        message.ack()
        simple.close()


@pytest.mark.slow
def test_the_worker_strikes_off_what_it_takes_and_runs_what_was_lost(stack, slack, mlflow_server):
    client = redis.Redis.from_url(stack.redis_url)
    entries, index = journal_keys(stack.queue)
    producer = Producer(
        Settings(mlflow_tracking_uri="x", redis_url=stack.redis_url, queue=stack.queue)
    )
    first, lost = (f"queue-test-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for model_name in (first, lost):
        kwargs = {"model_name": model_name, "requested_by": "UREQUESTER"}
        kwargs["run_id"] = log_model(mlflow_server, constant=2.0)
        if model_name == first:
            producer.send(TASK_STAGE_EVENT, event_id=f"queue-test-{uuid.uuid4().hex}", **kwargs)
            wait_notice(slack, model_name, timeout=60)
            # Struck off when the worker took it (the sweep, sent by beat, is never journaled).
            wait_for(lambda: client.hlen(entries) == 0, "the first struck off", 10)
            continue
        # Journaled, then taken off the queue by a worker that died before recording it.
        task_id = str(uuid.uuid4())
        kwargs["event_id"] = f"queue-test-{uuid.uuid4().hex}"
        raw = json.dumps(
            task_message(TASK_STAGE_EVENT, kwargs, task_id=task_id, queue=stack.queue, headers={})
        )
        pipe = client.pipeline()
        journal(pipe, stack.queue, task_id, raw, time.time() - JOURNAL_GRACE)
        pipe.execute()
    wait_notice(slack, lost, timeout=JOURNAL_GRACE + 3 * RESEND_EVERY)
    wait_for(lambda: client.hlen(entries) == 0, "the journal emptied", 10)
    assert client.zcard(index) == 0


def test_the_journal_waits_for_a_redis_that_is_coming_back(tmp_path):
    """A retry published while Redis restarts is journaled once Redis answers again."""
    from worker.app import create_celery, journal_published

    port = free_port()
    settings = Settings(mlflow_tracking_uri="x", redis_url=f"redis://127.0.0.1:{port}/0")
    create_celery(settings)  # the current app, whose settings the handler reads
    started: list = []
    later = threading.Timer(1.5, lambda: started.append(start_redis(port, tmp_path)))
    later.start()
    try:
        journal_published(
            sender=TASK_STAGE_EVENT,
            body=((), KWARGS, {}),
            routing_key=settings.queue,
            headers={"id": "t-restart", "task": TASK_STAGE_EVENT},
            properties={},
        )
        later.join()
        client = redis.Redis.from_url(settings.redis_url)
        assert client.hexists(journal_keys(settings.queue)[0], "t-restart")
    finally:
        later.cancel()
        later.join()
        for proc in started:
            stop(proc)
