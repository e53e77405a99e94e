"""The worker's and the scheduler's heartbeats (registry.process.heartbeat), read by probes."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery import bootsteps
from celery.beat import PersistentScheduler

from registry.process.heartbeat import EVERY, Heartbeat, keep_beating

log = logging.getLogger(__name__)


class Pulse(bootsteps.StartStopStep):
    """Beat the worker's heartbeat from its consumer's loop: live while the loop runs, ready
    while the consumer consumes and Redis answers a PING on its connection.

    The step runs only while the consumer is connected and consuming. Stopped (a lost
    broker), it says at once that the worker is not ready, and a thread keeps it live while
    Celery reconnects (for at most its `broker_connection_max_retries`, then the worker
    exits): a restart would only wait for the broker the same way.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any):
        super().__init__(parent, **kwargs)
        self.tref: Any = None
        self.heart = Heartbeat("worker")
        self.heart.reset()
        self.reconnecting = threading.Event()

    def start(self, parent: Any) -> None:
        self.reconnecting.set()  # ends the thread a stop started, if any
        channel = parent.task_consumer.channel
        self.beat(channel)
        self.tref = parent.timer.call_repeatedly(EVERY, self.beat, (channel,))

    def beat(self, channel: Any) -> None:
        """Beat, ready if Redis answers on the consumer's channel."""
        try:
            with channel.conn_or_acquire() as client:
                client.ping()
        except Exception as exc:  # kombu and redis-py raise several types for a lost broker
            log.warning("not ready: Redis did not answer: %s", exc)
            self.heart.beat(ready=False)
            return
        self.heart.beat(ready=True)

    def stop(self, parent: Any) -> None:
        if self.tref is None:
            return  # stopped already: Celery calls stop, then shutdown
        self.tref.cancel()
        self.tref = None
        self.heart.unready()
        self.reconnecting = threading.Event()
        waiting = (self.heart, lambda: False, self.reconnecting)
        threading.Thread(target=keep_beating, args=waiting, daemon=True).start()

    shutdown = stop


class PulsingScheduler(PersistentScheduler):
    """Celery beat's scheduler, beating the scheduler's heartbeat as it ticks: live while its
    loop runs, ready while Redis, where it sends the sweeps, answers a PING.

    Beat sleeps until the next entry is due, at most `beat_max_loop_interval`, which
    worker.app sets to the heartbeat's interval.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.heart = Heartbeat("scheduler")
        self.heart.reset()
        self.beaten = float("-inf")
        self.redis = redis.Redis.from_url(
            self.app.conf.broker_url, socket_connect_timeout=1, socket_timeout=2
        )

    def tick(self, *args: Any, **kwargs: Any) -> float:
        now = time.monotonic()
        if now - self.beaten >= EVERY:
            self.beaten = now
            self.heart.beat(ready=self._redis_answers())
        return super().tick(*args, **kwargs)

    def _redis_answers(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError as exc:
            log.warning("not ready: Redis did not answer: %s", exc)
            return False
