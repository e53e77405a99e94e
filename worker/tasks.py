"""Celery tasks: thin wrappers that build clients, take the model's lock and call the core."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from typing import NamedTuple

import redis
import requests
from celery import Task, current_app, shared_task
from slack_sdk.errors import SlackApiError, SlackClientError

from registry.adapters.dedup import forget_event
from registry.adapters.locks import model_lock
from registry.adapters.queue import (
    TASK_ACCEPT,
    TASK_ALERT,
    TASK_APPROVE,
    TASK_CANARY,
    TASK_COMMAND,
    TASK_DELIVER_EVENT,
    TASK_EVIDENCE,
    TASK_GATE_REQUEST,
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
from registry.adapters.slack import ResponseUrlFailed
from registry.flows import (
    alerts,
    canary,
    evidence,
    lifecycle,
    operations,
    protection,
    transition,
)
from registry.flows import notice as home_tab
from registry.flows.sweep import SweepMemory, SweepReport
from registry.flows.sweep import sweep as run_sweep
from registry.ports.evidence import ChannelBusy
from registry.ports.fencing import Fence, fenced
from registry.ports.locks import LockBusy, LockLost
from registry.ports.services import Recipient, Services
from registry.process.connect import build_services
from registry.process.metrics import WorkerMetrics
from registry.rules.commands import APPROVER_VERBS, Command
from registry.rules.events import USER_ID, ModelAlert, TrainingEvent, signed_headers
from registry.rules.governance import channel_of
from registry.rules.record import LIFECYCLE_CHANNEL, LifecycleEvent
from registry.rules.reports import RollbackPlan
from registry.rules.settings import Settings
from registry.rules.text import escape
from registry.rules.versions import ModelVersion, RegistryError

log = logging.getLogger(__name__)

BACKOFF_CAP = 60  # seconds between tries at most: back within a minute of MLflow's return
PACE_CAP = 15  # evidence waiting out a burst's notices looks again this often at most
PACE_PATIENCE = 600.0  # and waits that long at most: then it takes its turn with the rest
FIRST_TRIED = "first_tried_at"  # a retried task's header: when its first try began
HOME_GIVE_UP = 120.0  # a Home tab not drawn by then is drawn again when next opened
DELAYED = (
    "MLflow is not answering just now, so your {what} waits. registry-bot tries again every "
    "minute for up to {limit} and tells you if it gives up; there is nothing to do."
)
GAVE_UP = (
    "registry-bot gave up on your {what}: MLflow or Slack did not answer for {limit}. "
    "Nothing changed; please try again."
)


@dataclass(frozen=True)
class Waiting:
    """Who waits on a task and for what: told once when MLflow delays it (`delayed`), and
    told when it is given up."""

    to: Recipient
    what: str  # mrkdwn, e.g. "approval of churn v3"
    delayed: bool = True


@cache
def services(settings: Settings) -> Services:
    """Build this process's registry gateway and Slack notifier once."""
    return build_services(
        settings, emit=lambda event: emit(settings, event), after_notice=queue_evidence
    )


def queue_evidence(mv: ModelVersion) -> None:
    """Queue the evidence for a version whose notice is posted: a task of its own, so the
    notice never waits for it (SPEC 15)."""
    kwargs = {"event_id": f"evidence:{mv.name}:{mv.version}", "model_name": mv.name}
    current_app.send_task(TASK_EVIDENCE, kwargs={**kwargs, "version": mv.version})


@shared_task(bind=True, name=TASK_EVIDENCE, max_retries=None)
def post_evidence(self: Task, *, event_id: str, model_name: str, version: str) -> str:
    """Show a noticed version's evidence in its thread, under a lock of its own: the model's
    decisions never wait for its uploads, and two runs for one version never overlap."""
    patient = time.time() - _first_tried(self) < PACE_PATIENCE
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: evidence.post_evidence(svc, model_name, version, patient=patient),
        version=version,
        lock_key=f"{model_name} v{version} evidence",
    )


def emit(settings: Settings, event: LifecycleEvent) -> None:
    """Publish a lifecycle event on Redis and queue its delivery to every sink."""
    ctx = {"model": event.model_name, "version": event.version, "event_id": event.event_id}
    try:
        channel = settings.redis_key(LIFECYCLE_CHANNEL)
        redis_client(settings.redis_url).publish(channel, event.body())
    except redis.RedisError as exc:  # subscribers also poll, so a lost publish is only late
        log.warning("lifecycle publish failed: %s", exc, extra=ctx)
    for url in settings.event_sink_urls:
        # A task per sink: a slow or dead sink retries on its own and never holds up Slack.
        current_app.send_task(TASK_DELIVER_EVENT, kwargs={"url": url, "event": asdict(event)})


def deliver(url: str, secret: str, event: LifecycleEvent, *, timeout: float = 5.0) -> None:
    """POST one lifecycle event to one sink, signed per Standard Webhooks; raise unless 2xx."""
    resp = requests.post(
        url,
        data=event.body().encode(),
        headers=signed_headers(secret, event.event_id, event.body()),
        timeout=timeout,
    )
    resp.raise_for_status()


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


@shared_task(bind=True, name=TASK_STAGE_EVENT, max_retries=None)
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
    # The requester is told only if it is given up: an event has no one waiting to see it.
    requester = requested_by if USER_ID.fullmatch(requested_by) else ""
    what = f"training event for {escape(model_name)} (run {escape(run_id)})"
    waiting = _waiting(self, model_name, requester, "", what, delayed=False) if requester else None
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: lifecycle.stage_training_event(svc, training, event_id=event_id).outcome,
        waiting=waiting,
    )


@shared_task(bind=True, name=TASK_STAGE_VERSION, max_retries=None)
def stage_version(self: Task, *, event_id: str, model_name: str, version: str) -> str:
    """Stage a version registered elsewhere (an MLflow webhook) and post its notice."""
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: lifecycle.stage_version(svc, model_name, version, event_id=event_id).outcome,
    )


class Decision(NamedTuple):
    """One click of a notice's Approve or Reject, as its task received it."""

    model_name: str
    version: str
    user: str
    reason: str
    response_url: str
    event_id: str


def _decision_task(name: str, what: str, decide: Callable[[Services, Decision], str]) -> Task:
    """Make the task behind one of a notice's buttons: `decide` the version; redraw the Home
    tab the click came from; tell the clicker (`what` they asked for) if MLflow keeps them."""

    @shared_task(bind=True, name=name, max_retries=None)
    def decision(
        self: Task,
        *,
        event_id: str,
        model_name: str,
        version: str,
        user: str,
        reason: str = "",
        response_url: str = "",
        home: bool = False,
    ) -> str:
        click = Decision(model_name, version, user, reason, response_url, event_id)
        return _clicked(
            self,
            (model_name, event_id, version),
            (user, response_url, f"{what} of {escape(model_name)} v{version}"),
            lambda svc: _then_home(svc, decide(svc, click), user if home else ""),
        )

    return decision


approve = _decision_task(
    TASK_APPROVE,
    "approval",  # count it; promote at the last one
    lambda svc, d: lifecycle.approve(
        svc, d.model_name, d.version, user=d.user, response_url=d.response_url, click=d.event_id
    ),
)
reject = _decision_task(
    TASK_REJECT,
    "rejection",  # archive the candidate with the rejecter's reason
    lambda svc, d: lifecycle.reject(
        svc, d.model_name, d.version, user=d.user, reason=d.reason, response_url=d.response_url
    ),
)


@shared_task(bind=True, name=TASK_PUBLISH_HOME, max_retries=None)
def publish_home(self: Task, *, event_id: str, user: str) -> str:
    """Publish the user's App Home tab."""
    return _run(
        self,
        "",
        event_id,
        lambda svc: home_tab.publish_home(svc, user),
        lock=False,
        give_up_after=HOME_GIVE_UP,
    )


@shared_task(bind=True, name=TASK_TELL, max_retries=None)
def tell(
    self: Task, *, event_id: str, channel: str, user: str, response_url: str, text: str
) -> str:
    """Tell a person what the bot could not get to Slack itself, retrying while Slack is busy."""
    to = Recipient(channel, user, response_url)
    return _run(self, "", event_id, lambda svc: svc.notifier.tell(to, text) or "told", lock=False)


def _clicked(
    task: Task,
    change: tuple[str, str, str],
    clicker: tuple[str, str, str],
    work: Callable[[Services], str],
) -> str:
    """Run a person's click: `change` is (model, event id, version or ''), `clicker` is
    (user, response URL, what they asked for), told if MLflow keeps them waiting."""
    model_name, event_id, version = change
    user, response_url, what = clicker
    return _run(
        task,
        model_name,
        event_id,
        version=version,
        waiting=_waiting(task, model_name, user, response_url, what),
        work=work,
    )


def _waiting(
    task: Task, model: str, user: str, response_url: str, what: str, *, delayed: bool = True
) -> Waiting:
    """Return who waits on a click's task: the clicker, in the model's channel."""
    channel = channel_of(task.app.registry_settings, model)
    return Waiting(Recipient(channel, user, response_url), what, delayed)


def _then_home(svc: Services, outcome: str, user: str) -> str:
    """Redraw `user`'s Home tab after a decision taken from it (no user: nothing to do)."""
    if not user:
        return outcome
    try:
        home_tab.publish_home(svc, user)
    except Exception:  # the decision is done: a retry would tell the clicker it already was
        log.warning("home tab not redrawn", exc_info=True, extra={"user": user})
    return outcome


@shared_task(bind=True, name=TASK_COMMAND, max_retries=None)
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
    what = f"`{verb}` command for {escape(model_name)}"
    return _run(
        self,
        model_name,
        event_id,
        version=version,
        waiting=Waiting(Recipient(channel, user, response_url), what),
        work=lambda svc: operations.answer_command(
            svc, cmd, user=user, channel=channel, response_url=response_url
        ),
        lock=verb in APPROVER_VERBS,
    )


@shared_task(bind=True, name=TASK_ROLLBACK, max_retries=None)
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
    what = f"rollback of {escape(model_name)} to v{target}"
    return _run(
        self,
        model_name,
        event_id,
        version=target,
        waiting=Waiting(Recipient(channel, user, response_url), what),
        work=lambda svc: operations.rollback(
            svc, plan, user=user, channel=channel, response_url=response_url
        ),
    )


@shared_task(bind=True, name=TASK_CANARY, max_retries=None)
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


@shared_task(bind=True, name=TASK_PROTECT, max_retries=None)
def check_production(self: Task, *, event_id: str, model_name: str) -> str:
    """Check the model's Production at once (an MLflow alias event): alert or revert."""
    return _run(
        self, model_name, event_id, lambda svc: protection.check_production(svc, model_name)[0]
    )


@shared_task(bind=True, name=TASK_REVERT, max_retries=None)
def revert(
    self: Task, *, event_id: str, model_name: str, key: str, user: str, response_url: str = ""
) -> str:
    """Revert an alerted out-of-band change at an approver's click."""
    return _clicked(
        self,
        (model_name, event_id, ""),
        (user, response_url, f"revert of {escape(model_name)}"),
        lambda svc: protection.revert(
            svc, model_name, key=key, user=user, response_url=response_url
        ),
    )


@shared_task(bind=True, name=TASK_ACCEPT, max_retries=None)
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
    return _clicked(
        self,
        (model_name, event_id, ""),
        (user, response_url, f"acceptance of the change to {escape(model_name)}"),
        lambda svc: protection.accept(
            svc, model_name, key=key, user=user, reason=reason, response_url=response_url
        ),
    )


@shared_task(bind=True, name=TASK_ALERT, max_retries=None)
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
    return _run(self, model_name, event_id, lambda svc: alerts.handle_alert(svc, notice))


@shared_task(bind=True, name=TASK_GATE_REQUEST, max_retries=None)
def gate_request(
    self: Task,
    *,
    event_id: str,
    model_name: str,
    version: str,
    asked_by: str = "",
    asked_at: float = 0.0,
) -> str:
    """File a move into Production the gate inside MLflow refused as a transition request."""
    return _run(
        self,
        model_name,
        event_id,
        lambda svc: transition.request_production(
            svc, model_name, version, asked_by=asked_by, asked_at=asked_at, event_id=event_id
        ),
        version=version,
    )


@shared_task(bind=True, name=TASK_SWEEP)
def sweep(self: Task) -> dict:
    """Run the periodic sweep over the models with work; a busy model waits for the next."""
    settings: Settings = self.app.registry_settings
    client = redis_client(settings.redis_url)
    # The writes for each model stop once that model's lock is lost, as a task's do.
    fence = Fence(lambda name: model_lock(client, name, wait=5, prefix=settings.redis_key_prefix))
    svc = fenced(services(settings), fence.check)
    report = run_sweep(svc, fence, memory=sweep_memory())
    count_sweep_failures(report)
    note_sweep(settings, sweep_memory())
    return {action: len(done) for action, done in report.done.items()}


def note_sweep(settings: Settings, memory: SweepMemory) -> None:
    """Say when a sweep last finished, how often one is due, and what waits on the sweep."""
    measured = metrics()
    measured.sweep_finished.set(time.time())
    measured.sweep_interval.set(settings.sweep_interval)
    measured.pending.set(memory.pending)


def count_sweep_failures(report: SweepReport) -> None:
    """Count what the sweep had to leave for later, by what failed."""
    for _, _, exc in report.failures:
        metrics().sweep_failures.labels(failure_kind(exc)).inc()


def failure_kind(exc: BaseException) -> str:
    """Name what failed: MLflow, Slack, the data on a version, or something else."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, SlackClientError | ResponseUrlFailed):
        return "slack"
    if isinstance(exc, MlflowException | RegistryError | requests.RequestException):
        return "mlflow"
    if isinstance(exc, ValueError | KeyError | TypeError):
        return "data"  # a malformed tag: anyone may edit one in MLflow's UI
    return "other"


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
    version: str = "",
    waiting: Waiting | None = None,
    give_up_after: float | None = None,
    lock_key: str = "",
) -> str:
    """Run `work` (under the model's lock unless it only reads, or under `lock_key`'s);
    retry transient failures.

    A transient failure (MLflow or Slack unreachable, a busy lock) is tried again, every
    minute at most, until the task is older than RETRY_FOR (or `give_up_after`): never a
    fixed count of tries that an outage of a few minutes outlasts. `waiting` is who waits.
    """
    settings: Settings = task.app.registry_settings
    ctx = {"event_id": event_id, "model": model_name, "version": version, "task": task.name}
    _observe_queue_wait(task)
    _note_redelivery(task, ctx)
    try:
        timed = metrics().task_seconds.labels(task.name).time()
        with timed, _services_for(settings, lock_key or model_name, lock=lock) as svc:
            outcome = work(svc)
    except Exception as exc:
        if not _failed(task, exc, ctx):
            log.exception("task failed for good", extra=ctx)
            raise
        limit = settings.retry_for if give_up_after is None else give_up_after
        _retry_or_give_up(task, exc, ctx, waiting, limit)
        raise
    # One line per task with the event it ran for: a click or an event can be followed.
    log.info("task done: %s", outcome, extra=ctx)
    return _counted(task, outcome)


def _retry_or_give_up(
    task: Task, exc: Exception, ctx: dict, waiting: Waiting | None, limit: float
) -> None:
    """Retry a transient failure with capped backoff while the task is younger than `limit`;
    past it, give up where it shows: the person waiting, an error line, a metric."""
    first = _first_tried(task)
    if time.time() - first < limit:
        # Told once, and only of MLflow: Slack itself failing could not carry the news.
        first_failure = task.request.retries == 0 and failure_kind(exc) == "mlflow"
        if first_failure and waiting and waiting.delayed:
            _tell(task, waiting, DELAYED, limit)
        paced = isinstance(exc, ChannelBusy)  # not a failure: the notices go first
        delay = min(2 ** (task.request.retries + 1), PACE_CAP if paced else BACKOFF_CAP)
        if paced:  # said once a wait: Celery logs each retry too
            level = logging.INFO if task.request.retries == 0 else logging.DEBUG
            log.log(level, "%s, trying again in %ss", exc, delay, extra=ctx)
        else:
            log.warning("transient failure, retrying in %ss: %s", delay, exc, extra=ctx)
        raise task.retry(exc=exc, countdown=delay, headers={FIRST_TRIED: first}) from exc
    metrics().given_up.labels(task.name).inc()
    log.error("gave up after %s of transient failures: %s", _duration(limit), exc, extra=ctx)
    if waiting is not None:
        _tell(task, waiting, GAVE_UP, limit)
    if task.name == TASK_STAGE_EVENT:  # the sender's resend of this event must get through
        settings = task.app.registry_settings
        forget_event(redis_client(settings.redis_url), ctx["event_id"], settings.redis_key_prefix)


def _first_tried(task: Task) -> float:
    """Return when the task's first try began: carried by its retries, else its enqueue."""
    request = task.request
    headers = request.headers or {}
    for name in (FIRST_TRIED, "enqueued_at"):
        found = getattr(request, name, None) or headers.get(name)
        if found:
            return float(found)
    return time.time()


def _tell(task: Task, waiting: Waiting, template: str, limit: float) -> None:
    """Tell the person waiting, if Slack takes it: their work goes on (or ended) either way."""
    text = template.format(what=waiting.what, limit=_duration(limit))
    try:
        services(task.app.registry_settings).notifier.tell(waiting.to, text)
    except Exception as exc:
        log.warning("could not tell %s: %s", waiting.to.user, exc, extra={"user": waiting.to.user})


def _duration(seconds: float) -> str:
    """Say a RETRY_FOR for people: 6 hours, 90 minutes, 20 seconds."""
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0 or seconds >= 2 * size or size == 1:
            count = seconds / size
            return f"{count:g} {unit}" + ("" if count == 1 else "s")
    return ""  # not reached: the last unit takes any number


@contextmanager
def _services_for(settings: Settings, model_name: str, *, lock: bool) -> Iterator[Services]:
    """Yield the Services to work with: under the model's lock unless the task only reads,
    with registry writes that stop once the lock is lost."""
    if not lock:
        yield services(settings)
        return
    client = redis_client(settings.redis_url)
    with model_lock(client, model_name, prefix=settings.redis_key_prefix) as held:
        yield fenced(services(settings), held.check)


def _failed(task: Task, exc: Exception, ctx: dict) -> bool:
    """Count a failed run (and log a lost lock); say whether it may pass on a retry."""
    if isinstance(exc, ChannelBusy):
        return True  # evidence letting a burst's notices go first: waiting, not failing
    transient = is_transient(exc)
    metrics().task_failures.labels(task.name, str(transient).lower(), failure_kind(exc)).inc()
    if isinstance(exc, SlackApiError):
        metrics().slack_errors.labels(str(exc.response.get("error", "http"))).inc()
    if isinstance(exc, LockLost):
        log.error("model lock lost: stopped before the next registry write: %s", exc, extra=ctx)
    return transient


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

    busy = LockBusy | LockLost | alerts.ChangeInFlight | ChannelBusy
    if isinstance(exc, busy | redis.ConnectionError | redis.TimeoutError):
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
