"""The Celery application factory: the shared queue settings, the tasks and the beat schedule."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import redis
from celery import Celery, bootsteps, current_app
from celery.signals import before_task_publish, celeryd_init, task_received
from kombu.utils.json import dumps

from registry.adapters.queue import (
    HELD_RENEW_EVERY,
    RESEND_EVERY,
    TASK_SWEEP,
    UNACKED,
    celery_app,
    envelope,
    journal,
    renew_held,
    resend_lost,
    strike_off,
)
from registry.process import preflight
from registry.process.heartbeat import EVERY
from registry.process.settings import load_settings
from registry.rules.settings import Settings, SettingsError
from worker.pulse import Pulse

log = logging.getLogger(__name__)

JOURNAL_WAIT = 15.0  # seconds a journal write waits for Redis before the publish goes on
WORKER_REQUIRED = ("MLFLOW_TRACKING_URI", "SLACK_BOT_TOKEN", "SLACK_CHANNEL")


def create_celery(settings: Settings | None = None, *, require_slack: bool = False) -> Celery:
    """Build the worker's Celery app, with its tasks and the scheduler's sweep."""
    if settings is None:
        required = WORKER_REQUIRED if require_slack else ("MLFLOW_TRACKING_URI",)
        settings = load_settings(require=required)
    app = celery_app(settings, include=["worker.tasks"])
    app.conf.beat_schedule = beat_schedule(settings)
    app.steps["consumer"].add(RenewHeld)
    app.steps["consumer"].add(ResendLost)
    app.steps["consumer"].add(Pulse)
    # Beat's own loop beats the scheduler's heartbeat, so it wakes at least that often.
    app.conf.beat_scheduler = "worker.pulse:PulsingScheduler"
    app.conf.beat_max_loop_interval = EVERY
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
        self.settings: Settings | None = None

    def start(self, parent) -> None:
        channel = parent.task_consumer.channel
        self.settings = parent.app.registry_settings
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
    """Keep the messages this worker holds from looking abandoned
    (registry.adapters.queue.renew_held)."""

    every = HELD_RENEW_EVERY
    failing = "could not renew held messages"

    def run(self, channel) -> None:
        renew_held(channel)


class ResendLost(_Every):
    """Queue again what a killed worker took off the queue before recording it as held
    (registry.adapters.queue.resend_lost); one worker at a time."""

    every = RESEND_EVERY
    failing = "could not look for lost tasks"

    def run(self, channel) -> None:
        # A client of its own, not the channel's: kombu's puts REDIS_KEY_PREFIX before only
        # some commands' keys, and every key here is named with the prefix already.
        settings = self.settings
        assert settings is not None  # set by start()
        client = _client(settings)
        if client.set(f"{settings.queue_key}:journal:lock", "1", nx=True, ex=RESEND_EVERY):
            resend_lost(client, settings.queue_key, unacked=settings.redis_key(UNACKED))


@celeryd_init.connect(weak=False, dispatch_uid="registry-bot-check-at-start")
def check_at_start(instance: Any = None, **_: Any) -> None:
    """Check the Slack setup before the worker takes any work (registry.process.preflight); a token
    Slack refuses stops it with one line, as a bad setting does."""
    settings = getattr(getattr(instance, "app", None), "registry_settings", None)
    if settings is None or not settings.slack_bot_token:
        return  # not registry-bot's worker, or one built without Slack (tests)
    try:
        preflight.check(settings)
    except SettingsError as exc:
        print(f"registry-bot worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


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
    """Stamp a message the worker or the scheduler queues with when it was queued, and
    journal it (a retry, an event delivery) as the producer journals its own; the sweep,
    which beat sends again anyway, is left out."""
    settings = _settings()
    if settings is None or headers is None:
        return
    # The queue's oldest age is read off this header (registry.process.backlog), as the producer
    # writes it; a retry is queued anew, whatever its first try's stamp was.
    headers["enqueued_at"] = time.time()
    if sender == TASK_SWEEP or "id" not in headers:
        return
    raw = envelope(
        dumps(body),
        dict(headers),
        exchange=exchange or "",
        routing_key=routing_key or settings.queue,
        reply_to=(properties or {}).get("reply_to") or "",
    )
    _journal_patiently(settings, str(headers["id"]), dumps(raw), sender)


def _journal_patiently(settings: Settings, task_id: str, raw: str, sender: str) -> None:
    """Journal a message; Redis restarting (or loading its file) refuses for a few seconds,
    and so would the publish that follows, which kombu retries: wait as long, then publish
    unjournaled."""
    deadline = time.monotonic() + JOURNAL_WAIT
    while True:
        try:
            pipe = _client(settings).pipeline(transaction=True)
            journal(pipe, settings.queue_key, task_id, raw, time.time())
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
        strike_off(_client(settings), settings.queue_key, request.id)
    except redis.RedisError as exc:  # left in the journal: found held, or sent again
        log.warning("could not strike a task off the journal: %s", exc)
