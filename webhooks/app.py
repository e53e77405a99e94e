"""The Flask receiver: verify, validate, deduplicate, enqueue, answer in milliseconds."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from werkzeug.exceptions import HTTPException

from registry.adapters.dedup import seen_key
from registry.adapters.queue import (
    TASK_ALERT,
    TASK_CANARY,
    TASK_PROTECT,
    TASK_STAGE_EVENT,
    TASK_STAGE_VERSION,
    Producer,
    QueueUnavailable,
)
from registry.process.settings import load_settings
from registry.rules.events import (
    MAX_BODY_BYTES,
    AliasChanged,
    InvalidEvent,
    ModelAlert,
    SignatureError,
    model_alert,
    parse_alertmanager,
    parse_canary_event,
    parse_mlflow_alias_event,
    parse_mlflow_event,
    parse_training_event,
    verify_bearer,
    verify_mlflow_webhook,
    verify_standard_webhook,
)
from registry.rules.guard import alert_key
from registry.rules.settings import Settings
from webhooks.openapi import openapi_document

log = logging.getLogger(__name__)

DEDUP_TTL = 7 * 24 * 3600  # longer than any sender's retry schedule
CLAIM_TTL = 5  # seconds; an enqueue takes milliseconds
CLAIMED, QUEUED = "claimed", "queued"
QUEUE_DOWN = "queue unavailable"
ALERTS_OFF = "Alertmanager alerts are not enabled (ALERTMANAGER_TOKEN)"
CANARY_OFF = "canary verdicts are not enabled (CANARY_WEBHOOK_SECRET)"


class Refused(Exception):
    """A request we answer with an error status; nothing is enqueued."""

    def __init__(self, status: int, error: str, details: list[str] | None = None, reason: str = ""):
        super().__init__(error)
        self.status, self.error, self.details = status, error, details or []
        self.reason = reason or error


def create_app(settings: Settings | None = None, *, celery: Any = None) -> Flask:
    """Build the webhooks app; settings come from the environment unless given."""
    settings = settings or load_settings(require=("MLFLOW_TRACKING_URI", "TRAINING_WEBHOOK_SECRET"))
    app = Flask("webhooks")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["registry_bot"] = Receiver(settings, Producer(settings, celery=celery))
    _register_routes(app)
    return app


class Receiver:
    """The webhooks service's state: settings, queue, Redis and metrics."""

    def __init__(self, settings: Settings, producer: Producer):
        self.settings = settings
        self.producer = producer
        # Short timeouts: with Redis down the sender must get a 503 fast, not hang.
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=0.5, socket_timeout=1.0
        )
        self.metrics = CollectorRegistry()
        self.accepted = Counter(
            "registry_bot_events_accepted", "Events accepted", ["route"], registry=self.metrics
        )
        self.refused = Counter(
            "registry_bot_events_refused",
            "Events refused",
            ["route", "reason"],
            registry=self.metrics,
        )
        self.latency = Histogram(
            "registry_bot_accept_seconds",
            "Time to accept an event",
            ["route"],
            registry=self.metrics,
        )

    def seen(self, kind: str, event_id: str) -> str:
        """Return the key that marks this inbound event as queued, under REDIS_KEY_PREFIX."""
        return seen_key(kind, event_id, self.settings.redis_key_prefix)

    def enqueue_once(self, key: str, task: str, kwargs: dict[str, Any]) -> str:
        """Enqueue unless `key` (registry.adapters.dedup.seen_key) was queued already; return
        "queued" or "duplicate"."""
        if not self._claim(key):
            return "duplicate"
        try:
            self.producer.send(task, **kwargs)
        except QueueUnavailable as exc:
            with contextlib.suppress(redis.RedisError):
                self.redis.delete(key)  # let the sender's retry through once the queue is back
            raise Refused(503, QUEUE_DOWN, [str(exc)], reason="queue") from None
        # Should this fail, the claim lapses and a resend is queued again: harmless, as every
        # task is idempotent, where a lost event would not be.
        with contextlib.suppress(redis.RedisError):
            self.redis.set(key, QUEUED, ex=DEDUP_TTL)
        return "queued"

    def enqueue(self, task: str, kwargs: dict[str, Any]) -> None:
        """Enqueue `task` (the worker deduplicates it), or refuse with 503."""
        try:
            self.producer.send(task, **kwargs)
        except QueueUnavailable as exc:
            raise Refused(503, QUEUE_DOWN, [str(exc)], reason="queue") from None

    def _claim(self, key: str) -> bool:
        """Claim `key` for this request; False if it was queued already.

        The claim lasts CLAIM_TTL until the task is queued: one left by a request that died
        (Redis took the SET and went down before answering it) lapses, so the sender's
        retry is queued instead of being called a duplicate for ever. A request that finds
        a live claim waits for it to turn into "queued" or to lapse.
        """
        deadline = time.monotonic() + CLAIM_TTL + 1
        try:
            while True:
                if self.redis.set(key, CLAIMED, nx=True, ex=CLAIM_TTL):
                    return True
                seen = self.redis.get(key)
                if seen is not None and seen != CLAIMED.encode():
                    return False  # queued (or marked "1" before claims existed)
                if time.monotonic() > deadline:
                    raise Refused(503, QUEUE_DOWN, ["the event is being queued"], reason="queue")
                time.sleep(0.01)
        except redis.RedisError as exc:
            raise Refused(503, QUEUE_DOWN, [str(exc)], reason="queue") from None


def _register_routes(app: Flask) -> None:
    app.add_url_rule("/hooks/training", view_func=training_hook, methods=["POST"])
    app.add_url_rule("/hooks/mlflow", view_func=mlflow_hook, methods=["POST"])
    app.add_url_rule("/hooks/canary", view_func=canary_hook, methods=["POST"])
    app.add_url_rule("/hooks/alertmanager", view_func=alertmanager_hook, methods=["POST"])
    app.add_url_rule("/healthz", view_func=healthz, methods=["GET"])
    app.add_url_rule("/livez", view_func=livez, methods=["GET"])
    app.add_url_rule("/metrics", view_func=metrics, methods=["GET"])
    app.add_url_rule("/openapi.json", view_func=openapi, methods=["GET"])
    app.register_error_handler(Refused, _refused)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _crash)


def receiver() -> Receiver:
    """Return the current app's Receiver."""
    from flask import current_app

    return current_app.extensions["registry_bot"]


def training_hook() -> tuple[Response, int]:
    """Accept a signed training-completion event."""
    recv = receiver()
    with recv.latency.labels("training").time():
        secrets = recv.settings.training_webhook_secrets
        event_id, event = _signed_event("training", secrets, parse_training_event)
        status = recv.enqueue_once(
            recv.seen("training", event_id),
            TASK_STAGE_EVENT,
            {"event_id": event_id, **event.as_kwargs()},
        )
    recv.accepted.labels("training").inc()
    log.info("training event %s", status, extra={"event_id": event_id, "model": event.model_name})
    return jsonify(status=status, event_id=event_id), 202


def canary_hook() -> tuple[Response, int]:
    """Accept a canary verdict signed with the canary's own secret, never the training one:
    a training job must not be able to pass its own canary."""
    recv = receiver()
    secrets = recv.settings.canary_webhook_secrets
    if not secrets:
        raise Refused(404, CANARY_OFF, reason="off")
    event_id, verdict = _signed_event("canary", secrets, parse_canary_event)
    status = recv.enqueue_once(
        recv.seen("canary", event_id), TASK_CANARY, {"event_id": event_id, **verdict.as_kwargs()}
    )
    recv.accepted.labels("canary").inc()
    return jsonify(status=status, event_id=event_id), 202


def _signed_event(
    route: str, secrets: Sequence[str], parse: Callable[[bytes], Any]
) -> tuple[str, Any]:
    """Verify a Standard Webhooks signature by one of `secrets` and parse the body, or refuse."""
    body = _json_body(route)
    try:
        event_id = verify_standard_webhook(request.headers, body, secrets)
        return event_id, parse(body)
    except SignatureError as exc:
        raise Refused(401, "invalid signature", [str(exc)], reason="signature") from None
    except InvalidEvent as exc:
        raise Refused(400, str(exc), exc.details, reason="invalid") from None


def mlflow_hook() -> tuple[Response, int]:
    """Accept MLflow's own registry webhook; act on `model_version.created`."""
    recv = receiver()
    secret = recv.settings.mlflow_webhook_secret
    if not secret:
        raise Refused(404, "MLflow webhooks are not enabled (MLFLOW_WEBHOOK_SECRET)", reason="off")
    body = _json_body("mlflow")
    try:
        delivery_id = verify_mlflow_webhook(request.headers, body, secret)
        created = parse_mlflow_event(body)
        moved = parse_mlflow_alias_event(body) if created is None else None
    except SignatureError as exc:
        raise Refused(401, "invalid signature", [str(exc)], reason="signature") from None
    except InvalidEvent as exc:
        raise Refused(400, str(exc), exc.details, reason="invalid") from None
    if moved is not None:
        return _alias_moved(recv, moved, delivery_id)
    if created is None or created.created_by_us:
        return jsonify(status="ignored", delivery_id=delivery_id), 200
    # MLflow gives every delivery a new id, so deduplicate on the version itself.
    event_id = f"mlflow-{created.model_name}-{created.version}"
    kwargs = {"event_id": event_id, "model_name": created.model_name, "version": created.version}
    status = recv.enqueue_once(
        recv.seen("mlflow", f"{created.model_name}:{created.version}"), TASK_STAGE_VERSION, kwargs
    )
    recv.accepted.labels("mlflow").inc()
    return jsonify(status=status, event_id=event_id), 202


def _alias_moved(recv: Receiver, moved: AliasChanged, delivery_id: str) -> tuple[Response, int]:
    """Check a protected model's Production at once when its production alias moved."""
    settings = recv.settings
    protected = settings.policy.protection(moved.model_name) != "off"
    if moved.alias != settings.production_alias or not protected:
        return jsonify(status="ignored", delivery_id=delivery_id), 200
    # Our own promotions move the alias too: the check finds nothing then, under the lock.
    event_id = f"mlflow-alias-{delivery_id}"
    kwargs = {"event_id": event_id, "model_name": moved.model_name}
    status = recv.enqueue_once(recv.seen("mlflow-alias", delivery_id), TASK_PROTECT, kwargs)
    recv.accepted.labels("mlflow").inc()
    return jsonify(status=status, event_id=event_id), 202


def alertmanager_hook() -> tuple[Response, int]:
    """Accept Alertmanager's webhook; queue every alert that names a model.

    The door does not read the registry, and a mirror of it in Redis lags it (right after
    Production moved, after a worker died between a move and its record, after Redis lost
    its data): an alert it filtered out would be lost, as Alertmanager sends it again only
    hours later. So each is queued, and the worker decides it against the registry under
    the model's lock; `handled` counts the alerts queued for that.
    """
    recv = receiver()
    token = recv.settings.alertmanager_token
    if not token:
        raise Refused(404, ALERTS_OFF, reason="off")
    try:
        verify_bearer(request.headers, token)
    except SignatureError as exc:
        raise Refused(401, "invalid token", [str(exc)], reason="token") from None
    try:
        alerts = parse_alertmanager(_json_body("alertmanager"))
    except InvalidEvent as exc:
        raise Refused(400, str(exc), exc.details, reason="invalid") from None
    taken = _model_alerts(alerts)
    for alert in taken:
        key = alert_key(alert.fingerprint, alert.starts_at)
        recv.enqueue(TASK_ALERT, {"event_id": f"alert-{key}", **alert.as_kwargs()})
    recv.accepted.labels("alertmanager").inc()
    return jsonify(status="ok", handled=len(taken)), 200


def _model_alerts(alerts: list) -> list[ModelAlert]:
    label = receiver().settings.alert_model_label
    found = [model_alert(alert, label) for alert in alerts]
    return [alert for alert in found if alert is not None]


def healthz() -> tuple[Response, int]:
    """Report whether Redis answers."""
    try:
        receiver().redis.ping()
    except redis.RedisError as exc:
        return jsonify(redis=f"down: {exc}"), 503
    return jsonify(redis="ok"), 200


def livez() -> tuple[Response, int]:
    """Say the service answers (its liveness: Redis being down is no reason to restart it)."""
    return jsonify(live=True), 200


def metrics() -> Response:
    """Serve Prometheus metrics."""
    return Response(generate_latest(receiver().metrics), mimetype="text/plain; version=0.0.4")


def openapi() -> Response:
    """Serve the OpenAPI description."""
    return jsonify(openapi_document())


def _json_body(route: str) -> bytes:
    if request.mimetype != "application/json":
        raise Refused(415, "Content-Type must be application/json", reason="content_type")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise Refused(413, f"body larger than {MAX_BODY_BYTES} bytes", reason="too_large")
    return request.get_data(cache=True)


def _refused(exc: Refused) -> tuple[Response, int]:
    receiver().refused.labels(request.path.rsplit("/", 1)[-1], exc.reason).inc()
    log.info("refused %s: %s %s", exc.status, exc.error, exc.details, extra={"route": request.path})
    return jsonify(error=exc.error, details=exc.details), exc.status


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    status = exc.code or 500
    if status == 413:
        return _refused(
            Refused(413, f"body larger than {MAX_BODY_BYTES} bytes", reason="too_large")
        )
    return jsonify(error=exc.name.lower(), details=[exc.description or ""]), status


def _crash(exc: Exception) -> tuple[Response, int]:
    incident = uuid.uuid4().hex[:12]
    log.exception("unhandled error, incident %s", incident, extra={"route": request.path})
    return jsonify(error="internal error", details=[f"incident {incident}"]), 500
