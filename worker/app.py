"""The Celery application factory: the shared queue settings, the tasks and the beat schedule."""

from __future__ import annotations

from celery import Celery

from registry.queue import TASK_SWEEP, celery_app
from registry.settings import Settings


def create_celery(settings: Settings | None = None, *, require_slack: bool = False) -> Celery:
    """Build the worker's Celery app, with its tasks and the scheduler's sweep."""
    if settings is None:
        slack = ("SLACK_BOT_TOKEN", "SLACK_CHANNEL") if require_slack else ()
        required = ("MLFLOW_TRACKING_URI", *slack)
        settings = Settings.from_env(require=required)
    app = celery_app(settings, include=["worker.tasks"])
    app.conf.beat_schedule = beat_schedule(settings)
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
