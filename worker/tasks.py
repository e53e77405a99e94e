"""Celery tasks: thin wrappers that build clients, take the model's lock and call the core."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from functools import cache

import redis
import requests
from celery import Task, current_app, shared_task
from slack_sdk.errors import SlackApiError

from registry import alerts, canary, home_tab, lifecycle, operations, protection, watchlist
from registry.changes import LIFECYCLE_CHANNEL, LifecycleEvent
from registry.commands import APPROVER_VERBS, Command
from registry.connect import build_services
from registry.events import ModelAlert, TrainingEvent
from registry.locks import LockBusy, model_lock
from registry.metrics import WorkerMetrics
from registry.publish import deliver
from registry.queue import (
    TASK_ACCEPT,
    TASK_ALERT,
    TASK_APPROVE,
    TASK_CANARY,
    TASK_COMMAND,
    TASK_DELIVER_EVENT,
    TASK_PROTECT,
    TASK_PUBLISH_HOME,
    TASK_REJECT,
    TASK_REVERT,
    TASK_ROLLBACK,
    TASK_STAGE_EVENT,
    TASK_STAGE_VERSION,
    TASK_SWEEP,
    TASK_TELL,
)
from registry.reports import RollbackPlan
from registry.services import Recipient, Services
from registry.settings import Settings
from registry.slack import ResponseUrlFailed
from registry.sweep import SweepMemory
from registry.sweep import sweep as run_sweep

log = logging.getLogger(__name__)

MAX_RETRIES = 6
BACKOFF_CAP = 60


@cache
def services(settings: Settings) -> Services:
    """Build this process's registry gateway and Slack notifier once."""
    return build_services(settings, emit=lambda event: emit(settings, event))


def emit(settings: Settings, event: LifecycleEvent) -> None:
    """Publish a lifecycle event on Redis and queue its delivery to every sink."""
    ctx = {"model": event.model_name, "version": event.version, "event_id": event.event_id}
    try:
        redis_client(settings.redis_url).publish(LIFECYCLE_CHANNEL, event.body())
    except redis.RedisError as exc:  # subscribers also poll, so a lost publish is only late
        log.warning("lifecycle publish failed: %s", exc, extra=ctx)
    try:
        watchlist.follow(redis_client(settings.redis_url), event, settings.policy)
    except redis.RedisError as exc:  # the next rebuild of the guard entries puts it right
        log.warning("guard entry not updated: %s", exc, extra=ctx)
    for url in settings.event_sink_urls:
        # A task per sink: a slow or dead sink retries on its own and never holds up Slack.
        current_app.send_task(TASK_DELIVER_EVENT, kwargs={"url": url, "event": asdict(event)})


@shared_task(bind=True, name=TASK_DELIVER_EVENT, max_retries=8)
def deliver_event(self: Task, *, url: str, event: dict) -> str:
    """POST one lifecycle event to one sink, retrying with backoff."""
    settings: Settings = self.app.registry_settings
    lifecycle_event = LifecycleEvent(**event)
    try:
        deliver(url, settings.event_sink_secret, lifecycle_event)
    except requests.RequestException as exc:
        ctx = {"model": lifecycle_event.model_name, "event_id": lifecycle_event.event_id}
        if self.request.retries >= self.max_retries:
            log.error("sink %s gave up: %s", url, exc, extra=ctx)
            raise
        delay = min(2**self.request.retries, BACKOFF_CAP)
        log.warning("sink %s failed, retrying in %ss: %s", url, delay, exc, extra=ctx)
        raise self.retry(exc=exc, countdown=delay) from exc
    return "delivered"


@cache
def redis_client(url: str) -> redis.Redis:
    """Return this process's Redis client."""
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)


@shared_task(bind=True, name=TASK_STAGE_EVENT, max_retries=MAX_RETRIES)
def stage_training_event(
    self: Task,
    *,
    event_id: str,
    model_name: str,
    run_id: str,
    artifact_path: str = "model",
    model_uri: str = "",
    requested_by: str = "",
    metrics: dict[str, float] | None = None,
    description: str = "",
) -> str:
    """Register a training event's version, stage it and post its notice."""
    training = TrainingEvent(
        model_name=model_name,
        run_id=run_id,
        artifact_path=artifact_path,
        model_uri=model_uri,
        requested_by=requested_by,
        metrics=dict(metrics or {}),
        description=description,
    )
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: lifecycle.stage_training_event(svc, training, event_id=event_id).outcome,
    )


@shared_task(bind=True, name=TASK_STAGE_VERSION, max_retries=MAX_RETRIES)
def stage_version(self: Task, *, event_id: str, model_name: str, version: str) -> str:
    """Stage a version registered elsewhere (an MLflow webhook) and post its notice."""
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: lifecycle.stage_version(svc, model_name, version, event_id=event_id).outcome,
    )


@shared_task(bind=True, name=TASK_APPROVE, max_retries=MAX_RETRIES)
def approve(
    self: Task,
    *,
    event_id: str,
    model_name: str,
    version: str,
    user: str,
    response_url: str = "",
    home: bool = False,
) -> str:
    """Count an approval; promote at the last one; redraw the Home tab it came from."""
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: _then_home(
            svc,
            lifecycle.approve(svc, model_name, version, user=user, response_url=response_url),
            user if home else "",
        ),
    )


@shared_task(bind=True, name=TASK_REJECT, max_retries=MAX_RETRIES)
def reject(
    self: Task,
    *,
    event_id: str,
    model_name: str,
    version: str,
    user: str,
    reason: str,
    response_url: str = "",
    home: bool = False,
) -> str:
    """Archive a candidate with the rejecter's reason; redraw the Home tab it came from."""
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: _then_home(
            svc,
            lifecycle.reject(
                svc, model_name, version, user=user, reason=reason, response_url=response_url
            ),
            user if home else "",
        ),
    )


@shared_task(bind=True, name=TASK_PUBLISH_HOME, max_retries=MAX_RETRIES)
def publish_home(self: Task, *, event_id: str, user: str) -> str:
    """Publish the user's App Home tab."""
    return _run(self, "", event_id, lambda svc: home_tab.publish_home(svc, user), lock=False)


@shared_task(bind=True, name=TASK_TELL, max_retries=MAX_RETRIES)
def tell(
    self: Task, *, event_id: str, channel: str, user: str, response_url: str, text: str
) -> str:
    """Tell a person what the bot could not get to Slack itself, retrying while Slack is busy."""
    to = Recipient(channel, user, response_url)
    return _run(self, "", event_id, lambda svc: svc.notifier.tell(to, text) or "told", lock=False)


def _then_home(svc: Services, outcome: str, user: str) -> str:
    """Redraw `user`'s Home tab after a decision taken from it (no user: nothing to do)."""
    if not user:
        return outcome
    try:
        home_tab.publish_home(svc, user)
    except Exception:  # the decision is done: a retry would tell the clicker it already was
        log.warning("home tab not redrawn", exc_info=True, extra={"user": user})
    return outcome


@shared_task(bind=True, name=TASK_COMMAND, max_retries=MAX_RETRIES)
def command(
    self: Task,
    *,
    event_id: str,
    verb: str,
    model_name: str,
    user: str,
    channel: str,
    response_url: str = "",
    version: str = "",
    count: int = 10,
    reason: str = "",
) -> str:
    """Answer a chat command that needs the registry."""
    cmd = Command(verb, model_name, version=version, count=count, reason=reason)
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: operations.answer_command(
            svc, cmd, user=user, channel=channel, response_url=response_url
        ),
        lock=verb in APPROVER_VERBS,
    )


@shared_task(bind=True, name=TASK_ROLLBACK, max_retries=MAX_RETRIES)
def rollback(
    self: Task,
    *,
    event_id: str,
    model_name: str,
    current: str,
    target: str,
    reason: str,
    user: str,
    channel: str,
    response_url: str = "",
) -> str:
    """Carry out a confirmed rollback."""
    plan = RollbackPlan(model_name, current, target, reason)
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: operations.rollback(
            svc, plan, user=user, channel=channel, response_url=response_url
        ),
    )


@shared_task(bind=True, name=TASK_CANARY, max_retries=MAX_RETRIES)
def canary_verdict(
    self: Task,
    *,
    event_id: str,
    model_name: str,
    version: str,
    passed: bool,
    metrics: dict | None = None,
    detail: str = "",
) -> str:
    """Apply a canary verdict."""
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: canary.canary_verdict(
            svc,
            model_name,
            version,
            passed=passed,
            detail=detail,
            metrics=metrics or {},
            event_id=event_id,
        ),
    )


@shared_task(bind=True, name=TASK_PROTECT, max_retries=MAX_RETRIES)
def check_production(self: Task, *, event_id: str, model_name: str) -> str:
    """Check the model's Production at once (an MLflow alias event): alert or revert."""
    return _run(
        self, model_name, event_id, lambda svc: protection.check_production(svc, model_name)[0]
    )


@shared_task(bind=True, name=TASK_REVERT, max_retries=MAX_RETRIES)
def revert(
    self: Task, *, event_id: str, model_name: str, key: str, user: str, response_url: str = ""
) -> str:
    """Revert an alerted out-of-band change at an approver's click."""
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: protection.revert(
            svc, model_name, key=key, user=user, response_url=response_url
        ),
    )


@shared_task(bind=True, name=TASK_ACCEPT, max_retries=MAX_RETRIES)
def accept(
    self: Task,
    *,
    event_id: str,
    model_name: str,
    key: str,
    user: str,
    reason: str,
    response_url: str = "",
) -> str:
    """Accept an alerted out-of-band change, with the approver's reason."""
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: protection.accept(
            svc, model_name, key=key, user=user, reason=reason, response_url=response_url
        ),
    )


@shared_task(bind=True, name=TASK_ALERT, max_retries=MAX_RETRIES)
def alert(
    self: Task,
    *,
    event_id: str,
    model_name: str,
    status: str,
    fingerprint: str,
    starts_at: str,
    ends_at: str = "",
    alertname: str = "",
    summary: str = "",
    description: str = "",
    generator_url: str = "",
    version: str = "",
) -> str:
    """Propose or carry out the rollback an Alertmanager alert calls for, or note it resolved."""
    notice = ModelAlert(
        model_name,
        status,
        fingerprint,
        starts_at,
        ends_at,
        alertname,
        summary,
        description,
        generator_url,
        version,
    )
    client = redis_client(self.app.registry_settings.redis_url)
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: alerts.handle_alert(
            svc, notice, remember=lambda key, model: watchlist.remember_alert(client, key, model)
        ),
    )


@shared_task(bind=True, name=TASK_SWEEP)
def sweep(self: Task) -> dict:
    """Run the periodic sweep over the models with work; a busy model waits for the next."""
    settings: Settings = self.app.registry_settings
    client = redis_client(settings.redis_url)
    lock = lambda name: model_lock(client, name, wait=5)  # noqa: E731
    report = run_sweep(services(settings), lock, memory=sweep_memory())
    # Now and then, the guard entries again from the registry (a Redis may have lost them).
    watchlist.rebuild(client, services(settings), lock)
    return {action: len(done) for action, done in report.done.items()}


@cache
def sweep_memory() -> SweepMemory:
    """Return what this process's sweeps remember; its first sweep reads every version."""
    return SweepMemory()


def _run(
    task: Task,
    model_name: str,
    event_id: str,
    work: Callable[[Services], str],
    *,
    lock: bool = True,
) -> str:
    """Run `work` (under the model's lock unless it only reads); retry transient failures."""
    settings: Settings = task.app.registry_settings
    ctx = {"event_id": event_id, "model": model_name, "task": task.name}
    _observe_queue_wait(task)
    _note_redelivery(task, ctx)
    try:
        held = model_lock(redis_client(settings.redis_url), model_name) if lock else nullcontext()
        with metrics().task_seconds.labels(task.name).time(), held:
            outcome = work(services(settings))
    except Exception as exc:
        transient = is_transient(exc)
        metrics().task_failures.labels(task.name, str(transient).lower()).inc()
        if isinstance(exc, SlackApiError):
            metrics().slack_errors.labels(str(exc.response.get("error", "http"))).inc()
        if transient and task.request.retries < task.max_retries:
            delay = min(2 ** (task.request.retries + 1), BACKOFF_CAP)
            log.warning("transient failure, retrying in %ss: %s", delay, exc, extra=ctx)
            raise task.retry(exc=exc, countdown=delay) from exc
        log.exception("task failed for good", extra=ctx)
        raise
    # One line per task with the event it ran for: a click or an event can be followed.
    log.info("task done: %s", outcome, extra=ctx)
    return _counted(task, outcome)


@cache
def metrics() -> WorkerMetrics:
    """Return this process's metrics (shared across the pool in multiprocess mode)."""
    return WorkerMetrics()


def _observe_queue_wait(task: Task) -> None:
    enqueued = getattr(task.request, "enqueued_at", None) or (task.request.headers or {}).get(
        "enqueued_at"
    )
    if enqueued and not task.request.retries:
        metrics().queue_wait.labels(task.name).observe(max(0.0, time.time() - float(enqueued)))


def _note_redelivery(task: Task, ctx: dict) -> None:
    """Log and count a task Redis gave back because the worker holding it died."""
    if (task.request.delivery_info or {}).get("redelivered"):
        metrics().redeliveries.labels(task.name).inc()
        log.warning("redelivered: the worker that held this task died", extra=ctx)


def _counted(task: Task, outcome: str) -> str:
    if task.name in (
        TASK_APPROVE,
        TASK_REJECT,
        TASK_ROLLBACK,
        TASK_CANARY,
        TASK_REVERT,
        TASK_ACCEPT,
    ):
        metrics().decisions.labels(outcome).inc()
    return outcome


def is_transient(exc: BaseException) -> bool:
    """Say whether a failure may pass if the task runs again later."""
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, LockBusy | redis.ConnectionError | redis.TimeoutError):
        return True
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return True
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", 0)
        return status == 429 or status >= 500
    if isinstance(exc, ResponseUrlFailed):
        return True  # raised only for 429 and 5xx
    if isinstance(exc, RestException | MlflowException):
        status = getattr(exc, "get_http_status_code", lambda: 500)()
        return status >= 500 or status == 429 or "Max retries" in str(exc)
    return False
