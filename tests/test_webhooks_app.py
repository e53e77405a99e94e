"""The webhooks app through Flask's test client: real Redis for dedup, a recording queue."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

import pytest
import redis

from registry.adapters.queue import TASK_STAGE_EVENT, TASK_STAGE_VERSION
from registry.rules.events import CREATED_BY_TAG
from registry.rules.settings import Settings
from tests.support import (
    CANARY_SECRET,
    MLFLOW_SECRET,
    TRAINING_SECRET,
    mlflow_signed_headers,
    primitive,
    signed_headers,
)
from webhooks import app as webhooks_app

DB = 15  # the stacks take databases from 1 up; every key here also carries MARK
MARK = uuid.uuid4().hex[:8]  # in every model name and message id: the keys to clean up


class RecordingCelery:
    """Stands for the Celery app behind `registry.adapters.queue.Producer`: records `send_task`."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail_with: Exception | None = None

    def send_task(self, name: str, *, kwargs: dict, retry: bool, headers: dict) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append({"name": name, "kwargs": kwargs, "retry": retry, "headers": headers})


@pytest.fixture
def celery() -> RecordingCelery:
    return RecordingCelery()


@pytest.fixture
def client(redis_url, celery):
    """The app on the session's real Redis, enqueueing into `celery`."""
    settings = Settings(
        mlflow_tracking_uri="http://mlflow.invalid",
        redis_url=f"{redis_url}/{DB}",
        training_webhook_secrets=(TRAINING_SECRET,),
        mlflow_webhook_secret=MLFLOW_SECRET,
    )
    app = webhooks_app.create_app(settings, celery=celery)
    yield app.test_client()
    dedup = redis.Redis.from_url(settings.redis_url)
    for key in dedup.scan_iter(f"registry-bot:seen:*{MARK}*"):
        dedup.delete(key)


def unique(prefix: str) -> str:
    return f"{prefix}-{MARK}-{uuid.uuid4().hex[:8]}"


def post_training(client, body: dict, *, msg_id: str | None = None):
    raw = json.dumps(body).encode()
    headers = signed_headers(raw, msg_id=msg_id or f"msg_{unique('t')}")
    return client.post("/hooks/training", data=raw, headers=headers)


def post_mlflow(client, body: dict):
    raw = json.dumps(body).encode()
    headers = mlflow_signed_headers(raw, MLFLOW_SECRET, delivery_id=unique("d"))
    return client.post("/hooks/mlflow", data=raw, headers=headers)


def test_a_valid_training_event_is_queued_once_with_primitives(client, celery):
    model, msg_id = unique("m"), f"msg_{unique('t')}"
    body = {"model_name": model, "run_id": "r0abc", "metrics": {"accuracy": 0.9}}
    before = time.time()
    resp = post_training(client, body, msg_id=msg_id)
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json() == {"status": "queued", "event_id": msg_id}
    [sent] = celery.sent
    assert sent["name"] == TASK_STAGE_EVENT and sent["retry"] is False
    assert sent["kwargs"] == {
        "event_id": msg_id,
        "model_name": model,
        "run_id": "r0abc",
        "artifact_path": "model",
        "model_uri": "",
        "requested_by": "",
        "metrics": {"accuracy": 0.9},
        "description": "",
    }
    assert primitive(sent["kwargs"]) and json.loads(json.dumps(sent["kwargs"])) == sent["kwargs"]
    assert before <= sent["headers"]["enqueued_at"] <= time.time()

    again = post_training(client, body, msg_id=msg_id)
    assert (again.status_code, again.get_json()["status"]) == (202, "duplicate")
    assert len(celery.sent) == 1


def test_an_unexpected_error_is_500_with_an_incident_id_and_logged(
    client, celery, monkeypatch, caplog
):
    def crash(body: bytes):
        raise RuntimeError("parser blew up")

    # Producer.send turns any failure of the broker into a 503, so crash before it.
    monkeypatch.setattr(webhooks_app, "parse_training_event", crash)
    with caplog.at_level(logging.ERROR, logger="webhooks.app"):
        resp = post_training(client, {"model_name": unique("m"), "run_id": "r0"})
    assert resp.status_code == 500
    payload = resp.get_json()
    assert payload["error"] == "internal error"
    [detail] = payload["details"]
    incident = re.fullmatch(r"incident ([0-9a-f]{12})", detail)
    assert incident, detail
    [record] = [r for r in caplog.records if r.name == "webhooks.app"]
    assert record.levelno == logging.ERROR and incident.group(1) in record.getMessage()
    assert record.exc_info and isinstance(record.exc_info[1], RuntimeError)
    assert getattr(record, "route", "") == "/hooks/training"
    assert "parser blew up" not in json.dumps(payload)  # the sender learns nothing inside
    assert celery.sent == []


def test_any_enqueue_failure_is_503_and_lets_the_retry_through(client, celery):
    body, msg_id = {"model_name": unique("m"), "run_id": "r0"}, f"msg_{unique('t')}"
    celery.fail_with = RuntimeError("not a kombu error at all")
    resp = post_training(client, body, msg_id=msg_id)
    assert resp.status_code == 503 and resp.get_json()["error"] == "queue unavailable"
    celery.fail_with = None
    retried = post_training(client, body, msg_id=msg_id)
    assert (retried.status_code, retried.get_json()["status"]) == (202, "queued")
    assert len(celery.sent) == 1


@pytest.mark.parametrize(
    "body",
    [
        {
            "entity": "model_version",
            "action": "created",
            "data": {"name": "{model}", "version": "1", "tags": {CREATED_BY_TAG: "registry-bot"}},
        },
        {"entity": "registered_model", "action": "created", "data": {"name": "{model}"}},
        {
            "entity": "model_version_tag",
            "action": "set",
            "data": {"name": "{model}", "version": "1", "key": "k", "value": "v"},
        },
    ],
    ids=["created by registry-bot", "registered_model.created", "model_version_tag.set"],
)
def test_mlflow_deliveries_we_do_not_act_on_are_ignored(client, celery, body):
    raw = json.loads(json.dumps(body).replace("{model}", unique("m")))
    resp = post_mlflow(client, raw)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["status"] == "ignored"
    assert celery.sent == []


def test_an_mlflow_version_created_elsewhere_is_queued_once(client, celery):
    model = unique("m")
    body = {
        "entity": "model_version",
        "action": "created",
        "data": {"name": model, "version": "4", "run_id": "r1", "tags": {"team": "churn"}},
    }
    first = post_mlflow(client, body)
    assert first.status_code == 202
    assert first.get_json() == {"status": "queued", "event_id": f"mlflow-{model}-4"}
    again = post_mlflow(client, body)  # MLflow gives a retry a new delivery id
    assert (again.status_code, again.get_json()["status"]) == (202, "duplicate")
    [sent] = celery.sent
    assert sent["name"] == TASK_STAGE_VERSION
    assert sent["kwargs"] == {"event_id": f"mlflow-{model}-4", "model_name": model, "version": "4"}
    assert "enqueued_at" in sent["headers"]


def test_a_number_no_float_can_hold_is_a_400_naming_the_field(client, celery):
    # JSON allows any integer; 10**400 overflows a float and once answered 500.
    resp = post_training(
        client, {"model_name": unique("m"), "run_id": "r1", "metrics": {"auc": 10**400}}
    )
    assert resp.status_code == 400, resp.get_json()
    assert [d.split(":")[0] for d in resp.get_json()["details"]] == ["metrics"]
    assert celery.sent == []


def canary_app(redis_url, celery, **settings):
    config = Settings(
        mlflow_tracking_uri="http://mlflow.invalid",
        redis_url=f"{redis_url}/{DB}",
        training_webhook_secrets=(TRAINING_SECRET,),
        **settings,
    )
    return webhooks_app.create_app(config, celery=celery).test_client()


def post_canary(client, *, secret: str):
    raw = json.dumps({"model_name": unique("m"), "version": "3", "passed": True}).encode()
    headers = signed_headers(raw, secret=secret, msg_id=f"msg_{unique('c')}")
    return client.post("/hooks/canary", data=raw, headers=headers)


def test_a_canary_verdict_needs_the_canary_secret_not_the_training_one(redis_url, celery):
    client = canary_app(redis_url, celery, canary_webhook_secrets=(CANARY_SECRET,))
    # The training job holds the training secret: it must not pass its own canary.
    refused = post_canary(client, secret=TRAINING_SECRET)
    assert (refused.status_code, refused.get_json()["error"]) == (401, "invalid signature")
    assert celery.sent == []
    accepted = post_canary(client, secret=CANARY_SECRET)
    assert accepted.status_code == 202, accepted.get_json()
    assert [sent["name"] for sent in celery.sent] == ["registry_bot.canary_verdict"]


def test_without_a_canary_secret_the_canary_route_is_off(redis_url, celery):
    client = canary_app(redis_url, celery)
    resp = post_canary(client, secret=TRAINING_SECRET)
    assert resp.status_code == 404 and "CANARY_WEBHOOK_SECRET" in resp.get_json()["error"]
    assert celery.sent == []
