"""The Celery application factory: the shared queue settings, the tasks and the beat schedule."""

from __future__ import annotations

import logging

from celery import Celery, bootsteps

from registry.queue import HELD_RENEW_EVERY, TASK_SWEEP, celery_app, renew_held
from registry.settings import Settings

log = logging.getLogger(__name__)


def create_celery(settings: Settings | None = None, *, require_slack: bool = False) -> Celery:
    """Build the worker's Celery app, with its tasks and the scheduler's sweep."""
    if settings is None:
        slack = ("SLACK_BOT_TOKEN", "SLACK_CHANNEL") if require_slack else ()
        required = ("MLFLOW_TRACKING_URI", *slack)
        settings = Settings.from_env(require=required)
    app = celery_app(settings, include=["worker.tasks"])
    app.conf.beat_schedule = beat_schedule(settings)
    app.steps["consumer"].add(RenewHeld)
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


class RenewHeld(bootsteps.StartStopStep):
    """Keep the messages this worker holds from looking abandoned (registry.queue.renew_held)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.tref = None

    def start(self, parent) -> None:
        # Started again on every reconnect, with the new connection's channel.
        channel = parent.task_consumer.channel
        self.tref = parent.timer.call_repeatedly(HELD_RENEW_EVERY, self.renew, (channel,))

    def renew(self, channel) -> None:
        """Renew what the channel holds; a broker that is down now is retried next time."""
        try:
            renew_held(channel)
        except Exception as exc:  # kombu and redis-py raise several types for a lost broker
            log.warning("could not renew held messages: %s", exc)

    def stop(self, parent) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop
