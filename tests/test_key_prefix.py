"""REDIS_KEY_PREFIX: two deployments on one Redis database, with the same queue name, each
run their own events and write no key and publish on no channel outside their prefix."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis

from devkit.stack import free_port, start_redis, stop
from tests.support import Stack, StackFactory, log_model, wait_for, wait_notice

pytestmark = pytest.mark.slow

PREFIXES = ("team-a:", "team-b:")


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory) -> Iterator[str]:
    """A Redis of this module's own: every key and channel in it is one of the two stacks'."""
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("shared-redis"))
    yield f"redis://127.0.0.1:{port}/3"
    stop(proc)


class Channels:
    """Every pub/sub channel anything publishes on in the shared Redis, heard with PSUBSCRIBE."""

    def __init__(self, url: str):
        self.published: list[str] = []
        self.lock = threading.Lock()
        self.pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(**{"*": self.heard})
        self.thread = self.pubsub.run_in_thread(sleep_time=0.05, daemon=True)

    def heard(self, message: dict) -> None:
        with self.lock:
            self.published.append(message["channel"].decode())

    def stop(self) -> None:
        self.thread.stop()
        self.pubsub.close()


@pytest.fixture(scope="module")
def two(stacks: StackFactory, shared_redis: str) -> Iterator[tuple[Stack, Stack]]:
    made = []
    for prefix in PREFIXES:
        stack = stacks.make(
            REDIS_URL=shared_redis, REDIS_KEY_PREFIX=prefix, REGISTRY_BOT_QUEUE="registry-bot"
        )
        stack.start("worker", "webhooks")
        made.append(stack)
    yield made[0], made[1]
    for stack in made:
        stack.stop()


def test_two_prefixed_stacks_share_a_redis_database_without_touching(
    two, shared_redis, slack, mlflow_server, model_name
):
    channels = Channels(shared_redis)
    names = {}
    try:
        for stack, prefix in zip(two, PREFIXES, strict=True):
            name = f"{model_name}-{prefix[:-1]}"
            run_id = log_model(mlflow_server, constant=1.0)
            body = {"model_name": name, "run_id": run_id, "requested_by": "UREQUESTER"}
            assert stack.post_training(body).status_code == 202
            names[prefix] = name
        for name in names.values():
            wait_notice(slack, name)
        # Both workers idle: their queues (the same name, apart by prefix) are empty.
        db = redis.Redis.from_url(shared_redis)
        wait_for(lambda: not any(db.llen(f"{p}registry-bot") for p in PREFIXES), "queues")
    finally:
        channels.stop()
    published = channels.published

    keys = sorted(k.decode() for k in db.scan_iter(count=1000))
    outside = [k for k in keys if not k.startswith(PREFIXES)]
    assert keys and outside == [], outside
    for prefix in PREFIXES:  # each wrote its own dedup mark and kombu its own bindings
        assert f"{prefix}_kombu.binding.registry-bot" in keys
        assert any(k.startswith(f"{prefix}registry-bot:seen:training:") for k in keys), keys
    assert published and [c for c in published if not c.startswith(PREFIXES)] == []
    # Each stage event published its lifecycle event on its own deployment's channel.
    assert {c for c in published if c.endswith("registry-bot:lifecycle")} == {
        f"{p}registry-bot:lifecycle" for p in PREFIXES
    }
    # Each worker ran its own deployment's event and never the other's.
    for stack, prefix in zip(two, PREFIXES, strict=True):
        log = stack.log("worker")
        other = next(p for p in PREFIXES if p != prefix)
        assert names[prefix] in log and names[other] not in log
