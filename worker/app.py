"""The Celery application factory: broker, reliability settings and the beat schedule."""

from __future__ import annotations

import os

from celery import Celery

from registry.settings import Settings

TASK_STAGE_EVENT = "registry_bot.stage_training_event"
TASK_STAGE_VERSION = "registry_bot.stage_version"
TASK_APPROVE = "registry_bot.approve"
TASK_REJECT = "registry_bot.reject"
TASK_COMMAND = "registry_bot.command"
TASK_ROLLBACK = "registry_bot.rollback"
TASK_DELIVER_EVENT = "registry_bot.deliver_event"
TASK_CANARY = "registry_bot.canary_verdict"
TASK_SWEEP = "registry_bot.sweep"

# MLflow's HTTP client retries 7 times with backoff factor 2 by default (minutes of
# waiting); the tasks retry with their own backoff, so keep the client's short.
MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def create_celery(settings: Settings | None = None, *, require_slack: bool = False) -> Celery:
    """Build the Celery app; producers (webhooks, bot) and the worker share it."""
    if settings is None:
        slack = ("SLACK_BOT_TOKEN", "SLACK_CHANNEL") if require_slack else ()
        required = ("MLFLOW_TRACKING_URI", *slack)
        settings = Settings.from_env(require=required)
    app = Celery("registry_bot", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        task_default_queue=settings.queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # Ack after the task ran, and redeliver if the worker process died mid-task:
        # every task is idempotent, so running twice is safe and losing one is not.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Redis redelivers unacked messages after this; tasks are far shorter, and
        # nothing uses long countdowns (the sweep re-finds late work instead).
        broker_transport_options={
            "visibility_timeout": 600,
            "socket_connect_timeout": 2,
            # A producer (webhooks, bot) must fail fast when Redis is down, so the
            # sender gets its 503 and the clicker is told to try again at once.
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        beat_schedule=beat_schedule(settings),
    )
    app.registry_settings = settings  # type: ignore[attr-defined]
    return app


def configure_mlflow_client() -> None:
    """Keep MLflow's own HTTP retries bounded unless the operator chose otherwise."""
    for key, value in MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)


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
