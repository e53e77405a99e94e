"""The queue's backlog for Prometheus: how many tasks wait, and how long the oldest has waited,
read from Redis when scraped."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

DEPTH = "registry_bot_queue_depth"
OLDEST = "registry_bot_queue_oldest_age_seconds"


def enqueued_at(raw: bytes | str | None) -> float | None:
    """Return when a queued message was queued (its `enqueued_at` header), if it says."""
    if raw is None:
        return None
    try:
        stamp = json.loads(raw)["headers"].get("enqueued_at")
        return float(stamp) if stamp is not None else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not a message of ours: a depth without an age


def oldest_age(raw: bytes | str | None, now: float) -> float:
    """Return how long the message `raw` has waited (0 for none, or one that does not say)."""
    stamp = enqueued_at(raw)
    return max(0.0, now - stamp) if stamp is not None else 0.0


class QueueCollector(Collector):
    """Read the queue's length and its oldest message (the list's tail: producers LPUSH,
    workers BRPOP) from Redis at each scrape; with Redis down, say nothing."""

    def __init__(self, client: redis.Redis, queue: str, clock: Callable[[], float] = time.time):
        self.client, self.queue, self.clock = client, queue, clock

    def describe(self) -> Iterator[Any]:
        """Name the metrics without reading Redis (prometheus_client asks at register)."""
        return iter(self._families(0, 0.0))

    def collect(self) -> Iterator[Any]:
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(self.queue)
        pipe.lindex(self.queue, -1)
        try:
            depth, oldest = pipe.execute()
        except redis.RedisError as exc:
            log.warning("queue metrics not read: %s", exc)
            return iter(())
        return iter(self._families(int(depth), oldest_age(oldest, self.clock())))

    def _families(self, depth: int, age: float) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(DEPTH, "Tasks waiting in the queue for a worker", value=depth),
            GaugeMetricFamily(
                OLDEST, "How long the oldest waiting task has waited (0: none waits)", value=age
            ),
        ]
