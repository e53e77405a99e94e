"""The metrics an operator runs registry-bot by (SPEC 16): the queue's backlog, the last
finished sweep, the pending notices and failures by kind, scraped from the worker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from devkit.stack import free_port, start_mlflow_server, stop, wait_until
from registry.adapters.queue import TASK_STAGE_EVENT, TASK_SWEEP, Producer
from registry.process.backlog import QueueCollector, oldest_age
from registry.process.settings import load_settings
from tests.support import Stack, log_model

pytestmark = pytest.mark.slow

SWEEP_EVERY = 2  # seconds: SWEEP_INTERVAL for the watched stack


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Return every sample at `url`: (name, sorted labels) -> value."""
    text = requests.get(url, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


# --- the backlog, read from Redis -----------------------------------------------------------


def test_the_backlog_is_the_queues_length_and_its_oldest_messages_wait(redis_url, stacks):
    stack = stacks.make()
    settings = load_settings(stack.env, dotenv_path=None)
    client = redis.Redis.from_url(stack.redis_url)
    collector = QueueCollector(client, stack.queue, clock=lambda: time.time() + 30)
    assert [(m.name, m.samples[0].value) for m in collector.collect()] == [
        ("registry_bot_queue_depth", 0),
        ("registry_bot_queue_oldest_age_seconds", 0.0),
    ]
    producer = Producer(settings)
    producer.send(TASK_STAGE_EVENT, event_id="e1", model_name="m", run_id="r")
    time.sleep(0.2)
    producer.send(TASK_STAGE_EVENT, event_id="e2", model_name="m", run_id="r")
    depth, age = (m.samples[0].value for m in collector.collect())
    assert depth == 2 and 30.2 <= age < 32  # the first one queued, not the newest
    # What beat and the worker queue through Celery carries the same stamp.
    from worker.app import create_celery

    client.delete(stack.queue)
    create_celery(settings).send_task(TASK_SWEEP)
    assert 29 < oldest_age(client.lindex(stack.queue, -1), time.time() + 30) < 31
    client.delete(stack.queue)


def test_a_message_that_does_not_say_when_it_was_queued_has_no_age():
    assert oldest_age(None, 100.0) == 0.0
    assert oldest_age(b"not json", 100.0) == 0.0
    assert oldest_age(json.dumps({"headers": {}}), 100.0) == 0.0
    assert oldest_age(json.dumps({"headers": {"enqueued_at": 40.5}}), 100.0) == 59.5


def test_with_redis_down_the_backlog_says_nothing():
    down = redis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    assert list(QueueCollector(down, "q").collect()) == []


# --- the worker's metrics, after sweeps and events -----------------------------------------


@pytest.fixture(scope="module")
def watched(stacks, tmp_path_factory) -> Iterator[tuple[Stack, str]]:
    """Worker (its metrics served), webhooks and the scheduler sweeping every 2 s, on an
    MLflow server of their own, so the pending versions are this module's alone."""
    workdir = tmp_path_factory.mktemp("watched")
    mlflow_port, metrics_port = free_port(), free_port()
    server = start_mlflow_server(mlflow_port, workdir / "mlflow")
    stack = stacks.make(
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{mlflow_port}",
        WORKER_METRICS_PORT=str(metrics_port),
        SWEEP_INTERVAL=str(SWEEP_EVERY),
        BEAT_SCHEDULE_FILE=str(workdir / "beat-schedule"),
    )
    stack.start("worker", "webhooks")
    with open(workdir / "beat.log", "wb") as log:
        beat = subprocess.Popen([sys.executable, "-m", "worker", "beat"], env=stack.env, stdout=log)
    yield stack, f"http://127.0.0.1:{metrics_port}/metrics"
    stop(beat)
    stack.stop()
    stop(server)


def test_after_a_sweep_and_a_few_events_the_new_metrics_say_what_happened(watched, model_name):
    stack, url = watched
    mlflow_uri = stack.env["MLFLOW_TRACKING_URI"]
    for constant in (1.0, 2.0):
        body = {"model_name": model_name, "run_id": log_model(mlflow_uri, constant=constant)}
        assert stack.post_training(body).status_code == 202
    # A run MLflow does not have: the worker's task fails, and says MLflow was what failed.
    assert stack.post_training({"model_name": model_name, "run_id": "0" * 32}).status_code == 202
    started = time.time()

    def settled() -> dict | None:
        samples = scrape(url)
        finished = value(samples, "registry_bot_sweep_last_finished_timestamp_seconds") or 0
        pending = value(samples, "registry_bot_pending_versions")
        # Beat sends a sweep every SWEEP_EVERY seconds: a scrape may land between a send and
        # its pick-up, so "drained" is a moment to wait for, not a state every scrape shows.
        drained = value(samples, "registry_bot_queue_depth") == 0
        return samples if finished > started and pending == 2 and drained else None

    samples = wait_until(settled, 60, "a sweep that saw both staged versions, queue drained")
    now = time.time()
    finished = value(samples, "registry_bot_sweep_last_finished_timestamp_seconds")
    assert now - 3 * SWEEP_EVERY - 5 < finished <= now
    assert value(samples, "registry_bot_sweep_interval_seconds") == SWEEP_EVERY
    assert value(samples, "registry_bot_pending_versions") == 2  # two notices await a decision
    assert value(samples, "registry_bot_queue_depth") == 0  # all drained
    assert value(samples, "registry_bot_queue_oldest_age_seconds") == 0
    failed = {
        dict(labels)["kind"]
        for (name, labels), count in samples.items()
        if name == "registry_bot_task_failures_total" and count
    }
    assert failed == {"mlflow"}, failed
    assert value(samples, "registry_bot_tasks_given_up_total", task=TASK_STAGE_EVENT) is None
