"""The webhooks service over real HTTP: every SPEC answer, refusals that change nothing."""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis
import requests
from mlflow import MlflowClient

from tests.support import (
    MLFLOW_SECRET,
    TRAINING_SECRET,
    log_model,
    mlflow_signed_headers,
    notices_for,
    signed_headers,
    stamp,
    wait_notice,
)

pytestmark = pytest.mark.slow

OTHER_SECRET = "whsec_" + base64.b64encode(b"not-the-configured-secret-32byte").decode()
GOOD = {"model_name": "refused-model", "run_id": "r0"}


def queue_state(stack) -> tuple[int, list]:
    client = redis.Redis.from_url(stack.redis_url)
    return client.llen(stack.queue), sorted(client.keys("registry-bot:seen:*"))


def _oversized() -> bytes:
    return json.dumps({**GOOD, "description": "x" * (1024 * 1024)}).encode()


REFUSALS = [
    (
        "bad signature",
        lambda b: (b, {**signed_headers(b), "webhook-signature": "v1,Zm9v"}),
        401,
        "no matching signature",
    ),
    (
        "wrong secret",
        lambda b: (b, signed_headers(b, secret=OTHER_SECRET)),
        401,
        "no matching signature",
    ),
    ("stale", lambda b: (b, signed_headers(b, at=stamp(-310, within=False))), 401, "too old"),
    ("future", lambda b: (b, signed_headers(b, at=stamp(310, within=False))), 401, "future"),
    ("unsigned", lambda b: (b, {"content-type": "application/json"}), 401, "missing"),
    ("not json", lambda b: (b"{nope", signed_headers(b"{nope")), 400, "not valid JSON"),
    (
        "no model_name",
        lambda b: (b'{"run_id": "r"}', signed_headers(b'{"run_id": "r"}')),
        400,
        "model_name: required",
    ),
    (
        "no run_id",
        lambda b: (b'{"model_name": "m"}', signed_headers(b'{"model_name": "m"}')),
        400,
        "run_id: required",
    ),
    ("oversized", lambda b: (_oversized(), signed_headers(_oversized())), 413, "larger than"),
    (
        "text/plain",
        lambda b: (b, {**signed_headers(b), "content-type": "text/plain"}),
        415,
        "application/json",
    ),
]


@pytest.mark.parametrize(("case", "make", "status", "says"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_answer_per_spec_and_enqueue_nothing(stack, case, make, status, says):
    before = queue_state(stack)
    body, headers = make(json.dumps(GOOD).encode())
    resp = stack.post_training(body, headers=headers)
    assert resp.status_code == status, resp.text
    payload = resp.json()
    assert set(payload) == {"error", "details"}
    assert says in json.dumps(payload)
    assert queue_state(stack) == before


def test_healthz_and_metrics(stack):
    assert requests.get(f"{stack.webhooks_url}/healthz", timeout=5).json() == {"redis": "ok"}
    text = requests.get(f"{stack.webhooks_url}/metrics", timeout=5).text
    assert "registry_bot_events_refused_total" in text


def test_redis_down_answers_503_fast_then_recovers(stacks, redis_url, tmp_path):
    from devkit.stack import free_port, start_redis, stop

    port = free_port()
    server = start_redis(port, tmp_path / "redis")
    stack = stacks.make(redis_base=f"redis://127.0.0.1:{port}")
    stack.start("webhooks")
    try:
        stop(server)
        body = json.dumps(GOOD).encode()
        headers = signed_headers(body, msg_id="msg_redis_down")
        started = time.monotonic()
        resp = stack.post_training(body, headers=headers)
        assert resp.status_code == 503 and resp.json()["error"] == "queue unavailable"
        assert time.monotonic() - started < 2
        health = requests.get(f"{stack.webhooks_url}/healthz", timeout=5)
        assert health.status_code == 503 and "down" in health.json()["redis"]

        server = start_redis(port, tmp_path / "redis")
        retried = stack.post_training(body, headers=signed_headers(body, msg_id="msg_redis_down"))
        assert retried.status_code == 202 and retried.json()["status"] == "queued"
        assert redis.Redis.from_url(stack.redis_url).llen(stack.queue) == 1
    finally:
        stack.stop()
        stop(server)


def test_a_claim_left_by_a_request_that_died_lets_the_retry_through(stacks):
    stack = stacks.make()
    stack.start("webhooks")
    client = redis.Redis.from_url(stack.redis_url)
    try:
        msg_id = f"msg_claimed_{time.time_ns()}"
        # Redis took the first request's claim, then went down before answering it.
        client.set(f"registry-bot:seen:training:{msg_id}", "claimed", ex=2)
        body = json.dumps(GOOD).encode()
        before = client.llen(stack.queue)
        retried = stack.post_training(body, headers=signed_headers(body, msg_id=msg_id))
        assert retried.status_code == 202 and retried.json()["status"] == "queued"
        assert client.llen(stack.queue) == before + 1
        again = stack.post_training(body, headers=signed_headers(body, msg_id=msg_id))
        assert again.status_code == 202 and again.json()["status"] == "duplicate"
        assert client.llen(stack.queue) == before + 1
    finally:
        stack.stop()
        client.delete(stack.queue)


def test_forged_mlflow_delivery_is_refused(stack):
    body = json.dumps(
        {"entity": "model_version", "action": "created", "data": {"name": "forged", "version": "1"}}
    ).encode()
    before = queue_state(stack)
    resp = requests.post(
        f"{stack.webhooks_url}/hooks/mlflow",
        data=body,
        headers=mlflow_signed_headers(body, "not-the-secret"),
        timeout=5,
    )
    assert resp.status_code == 401
    assert queue_state(stack) == before
    ok = requests.post(
        f"{stack.webhooks_url}/hooks/mlflow",
        data=body,
        headers=mlflow_signed_headers(body, MLFLOW_SECRET),
        timeout=5,
    )
    assert ok.status_code == 202  # the same body, correctly signed, is taken


def test_mlflow_server_webhook_stages_a_version_registered_elsewhere(
    stack, slack, mlflow_server, model_name
):
    import mlflow

    client = MlflowClient(mlflow_server)
    hook = client.create_webhook(
        name=f"hook-{model_name}",
        url=f"{stack.webhooks_url}/hooks/mlflow",
        events=["model_version.created"],
        secret=MLFLOW_SECRET,
    )
    try:
        run_id = log_model(mlflow_server, constant=7.0)
        time.sleep(1.2)  # past the server's webhook cache (MLFLOW_WEBHOOK_CACHE_TTL=1)
        mlflow.set_tracking_uri(mlflow_server)
        mv = mlflow.register_model(f"runs:/{run_id}/model", model_name)
        wait_notice(slack, model_name)
    finally:
        client.delete_webhook(hook.webhook_id)
    assert client.get_model_version(model_name, mv.version).current_stage == "Staging"
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1
    assert len(notices_for(slack, model_name)) == 1


def test_mlflow_route_is_404_without_a_secret(stacks):
    stack = stacks.get(services=("webhooks",), MLFLOW_WEBHOOK_SECRET="")
    resp = requests.post(
        f"{stack.webhooks_url}/hooks/mlflow",
        data=b"{}",
        headers={"content-type": "application/json"},
        timeout=5,
    )
    assert resp.status_code == 404 and "MLFLOW_WEBHOOK_SECRET" in resp.json()["error"]


def test_training_secret_rotation_accepts_either(stacks):
    stack = stacks.get(
        services=("webhooks",), TRAINING_WEBHOOK_SECRET=f"{OTHER_SECRET} {TRAINING_SECRET}"
    )
    for secret in (OTHER_SECRET, TRAINING_SECRET):
        body = json.dumps(GOOD).encode()
        resp = stack.post_training(body, headers=signed_headers(body, secret=secret))
        assert resp.status_code == 202, resp.text
