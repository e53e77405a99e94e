"""The Celery application factory: the shared queue settings, the tasks and the beat schedule."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import Celery, bootsteps, current_app
from celery.signals import before_task_publish, task_received
from kombu.utils.json import dumps

from registry.queue import (
    HELD_RENEW_EVERY,
    RESEND_EVERY,
    TASK_SWEEP,
    celery_app,
    envelope,
    journal,
    renew_held,
    resend_lost,
    strike_off,
)
from registry.settings import Settings

log = logging.getLogger(__name__)

JOURNAL_WAIT = 15.0  # seconds a journal write waits for Redis before the publish goes on


def create_celery(settings: Settings | None = None, *, require_slack: bool = False) -> Celery:
    """Build the worker's Celery app, with its tasks and the scheduler's sweep."""
    if settings is None:
        slack = ("SLACK_BOT_TOKEN", "SLACK_CHANNEL") if require_slack else ()
        required = ("MLFLOW_TRACKING_URI", *slack)
        settings = Settings.from_env(require=required)
    app = celery_app(settings, include=["worker.tasks"])
    app.conf.beat_schedule = beat_schedule(settings)
    app.steps["consumer"].add(RenewHeld)
    app.steps["consumer"].add(ResendLost)
    app.registry_settings = settings  # type: ignore[attr-defined]
    return app


def beat_schedule(settings: Settings) -> dict:
    """Return the scheduler's periodic sweep (reminders, expiry, canaries, reconciliation)."""
    # A short expiry: a sweep that could not run in time is dropped, not stacked up.
    return {
        "sweep": {
            "task": TASK_SWEEP,
            "schedule": settings.sweep_interval,
            "options": {"expires": settings.sweep_interval},
        }
    }


class _Every(bootsteps.StartStopStep):
    """A consumer step that runs `run(channel)` every `every` seconds on the consumer's
    channel (started again on every reconnect, with the new connection's channel); a broker
    that is down now is tried again next time."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    every = 10.0
    failing = ""  # the warning when a run fails

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.tref = None
        self.queue = ""

    def start(self, parent) -> None:
        channel = parent.task_consumer.channel
        self.queue = parent.app.registry_settings.queue
        self.tref = parent.timer.call_repeatedly(self.every, self._run, (channel,))

    def _run(self, channel) -> None:
        try:
            self.run(channel)
        except Exception as exc:  # kombu and redis-py raise several types for a lost broker
            log.warning("%s: %s", self.failing, exc)

    def run(self, channel) -> None:
        raise NotImplementedError

    def stop(self, parent) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop


class RenewHeld(_Every):
    """Keep the messages this worker holds from looking abandoned (registry.queue.renew_held)."""

    every = HELD_RENEW_EVERY
    failing = "could not renew held messages"

    def run(self, channel) -> None:
        renew_held(channel)


class ResendLost(_Every):
    """Queue again what a killed worker took off the queue before recording it as held
    (registry.queue.resend_lost); one worker at a time."""

    every = RESEND_EVERY
    failing = "could not look for lost tasks"

    def run(self, channel) -> None:
        with channel.conn_or_acquire() as client:
            if client.set(f"{self.queue}:journal:lock", "1", nx=True, ex=RESEND_EVERY):
                resend_lost(client, self.queue)


def _settings() -> Settings | None:
    return getattr(current_app, "registry_settings", None)


def _client(settings: Settings) -> redis.Redis:
    from worker.tasks import redis_client  # one client per process, shared with the tasks

    return redis_client(settings.redis_url)


@before_task_publish.connect(weak=False, dispatch_uid="registry-bot-journal")
def journal_published(
    sender: str = "",
    body: Any = None,
    exchange: str = "",
    routing_key: str = "",
    headers: dict | None = None,
    properties: dict | None = None,
    **_: Any,
) -> None:
    """Journal a message the worker queues itself (a retry, an event delivery), as the
    producer journals its own; the sweep, which beat sends again anyway, is left out."""
    settings = _settings()
    if settings is None or sender == TASK_SWEEP or not headers or "id" not in headers:
        return
    raw = envelope(
        dumps(body),
        dict(headers),
        exchange=exchange or "",
        routing_key=routing_key or settings.queue,
        reply_to=(properties or {}).get("reply_to") or "",
    )
    # Redis restarting (or loading its file) refuses for a few seconds; so would the publish
    # that follows, which kombu retries. Wait as long before publishing unjournaled.
    deadline = time.monotonic() + JOURNAL_WAIT
    while True:
        try:
            pipe = _client(settings).pipeline(transaction=True)
            journal(pipe, settings.queue, headers["id"], dumps(raw), time.time())
            pipe.execute()
            return
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                log.warning("queued without a journal entry: %s", exc, extra={"task": sender})
                return
            time.sleep(0.5)


@task_received.connect(weak=False, dispatch_uid="registry-bot-journal-received")
def journal_received(request: Any = None, **_: Any) -> None:
    """Strike a message off the journal once this worker has it recorded as held."""
    settings = _settings()
    if settings is None or request is None:
        return
    try:
        strike_off(_client(settings), settings.queue, request.id)
    except redis.RedisError as exc:  # left in the journal: found held, or sent again
        log.warning("could not strike a task off the journal: %s", exc)
