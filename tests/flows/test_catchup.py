"""The sweep's catch-up: versions registered elsewhere whose MLflow delivery was lost (SPEC 8)."""

from __future__ import annotations

import json
import threading
import time
from contextlib import nullcontext
from dataclasses import replace

import mlflow
import pytest
import redis
from mlflow import MlflowClient
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from devkit.stack import free_port, start_mlflow_server, stop
from registry.adapters import mlflow as gateway_module
from registry.adapters.locks import model_lock
from registry.adapters.mlflow import MlflowGateway
from registry.flows import lifecycle
from registry.flows.sweep import sweep
from registry.rules.events import TrainingEvent
from tests.support import (
    MLFLOW_SECRET,
    Clock,
    fake_services,
    local_services,
    log_model,
    notices_for,
    wait_for,
    wait_idle,
)

HOUR = 3600.0


def run_sweep(svc, models=None) -> dict[str, list[tuple[str, str]]]:
    return sweep(svc, lambda name: nullcontext(), models).done


def posted_notices(svc) -> list[str]:
    return [text for text, meta in svc.notifier.posts if "registry_bot_notice" in meta]


# -- against the in-memory registry ------------------------------------------------------


def test_versions_registered_elsewhere_in_the_window_get_staging_and_one_notice():
    clock = Clock(1_000_000.0)
    svc = fake_services(clock=clock, mlflow_webhook_secret="s", catchup_window=2 * HOUR)
    gw = svc.gateway
    gw.register_elsewhere("churn", "run-old")  # v1, three hours before the sweep
    clock.advance(2 * HOUR)
    gw.register_elsewhere("churn", "run-new")  # v2
    gw.register_elsewhere("fraud", "run-f")  # v1
    lifecycle.stage_training_event(svc, TrainingEvent("churn", "run-ours"), event_id="e1")  # v3
    clock.advance(HOUR)

    assert run_sweep(svc) == {"caught_up": [("churn", "2"), ("fraud", "1")]}
    assert gw.get_version("churn", "2").stage == "Staging"
    assert gw.get_version("fraud", "1").tag("notice_ts")
    assert gw.get_version("churn", "1").stage == "None"  # before the window: left alone
    assert len(posted_notices(svc)) == 3  # v3's own, and the two caught up
    assert run_sweep(svc) == {}
    assert len(posted_notices(svc)) == 3


def test_the_catch_up_reads_only_back_to_the_window():
    clock = Clock(1_000_000.0)
    svc = fake_services(clock=clock, mlflow_webhook_secret="s", catchup_window=HOUR)
    for i in range(500):
        svc.gateway.register_elsewhere("churn", f"run-{i}")
    clock.advance(2 * HOUR)
    svc.gateway.register_elsewhere("churn", "run-new")
    svc.gateway.reads_since = 0
    assert run_sweep(svc) == {"caught_up": [("churn", "501")]}
    assert svc.gateway.reads_since == 2  # the new version, then the first one too old


def test_no_catch_up_without_the_mlflow_hook():
    svc = fake_services(mlflow_webhook_secret="")
    svc.gateway.register_elsewhere("churn", "run-1")
    assert run_sweep(svc) == {}
    assert svc.gateway.get_version("churn", "1").stage == "None"


def test_a_version_a_delivery_already_handled_is_not_noticed_twice():
    svc = fake_services(mlflow_webhook_secret="s")
    svc.gateway.register_elsewhere("churn", "run-1")
    svc.gateway.register_elsewhere("churn", "run-2")
    # The delivery for v1 came first; v2's is still on its way when the sweep runs.
    lifecycle.stage_version(svc, "churn", "1", event_id="mlflow-churn-1")
    assert run_sweep(svc) == {"caught_up": [("churn", "2")]}
    assert lifecycle.stage_version(svc, "churn", "2", event_id="mlflow-churn-2").outcome == (
        "already_noticed"
    )
    assert len(posted_notices(svc)) == 2


def test_versions_not_ready_outside_the_grammar_or_prompts_wait_or_are_left_alone():
    svc = fake_services(mlflow_webhook_secret="s")
    gw = svc.gateway
    pending = gw.register_elsewhere("churn", "run-1")
    gw.put(replace(pending, status="PENDING_REGISTRATION"))
    gw.register_elsewhere("bad name", "run-2")  # /hooks/mlflow refuses such a name too
    gw.register_elsewhere("greeting", "", tags={"mlflow.prompt.is_prompt": "true"})  # a prompt
    assert run_sweep(svc) == {}
    gw.put(replace(pending, status="READY"))
    assert run_sweep(svc) == {"caught_up": [("churn", "1")]}
    assert gw.get_version("bad name", "1").stage == "None"
    assert gw.get_version("greeting", "1").stage == "None"


def test_a_version_moved_in_mlflow_before_the_sweep_is_not_announced():
    svc = fake_services(mlflow_webhook_secret="s")
    mv = svc.gateway.register_elsewhere("churn", "run-1")
    svc.gateway.put(replace(mv, stage="Production"))  # a delivery would say "already decided"
    assert run_sweep(svc) == {}
    assert posted_notices(svc) == []


# -- against real MLflow servers -----------------------------------------------------------


class DeliveryRecorder:
    """An HTTP endpoint that records every webhook delivery it receives."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/mlflow"
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ, start_response):
        self.bodies.append(json.loads(Request(environ).get_data() or b"{}"))
        return Response("{}", 200, content_type="application/json")(environ, start_response)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def default_cache_mlflow(tmp_path_factory):
    """A real `mlflow server` with its default webhook cache (60 s)."""
    port = free_port()
    proc = start_mlflow_server(port, tmp_path_factory.mktemp("mlflow-default-cache"))
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def sweeps_until_noticed(svc, model_name: str, slack, lock, models=None, limit: int = 2) -> int:
    """Run the sweep up to `limit` times until the model has a notice; return how many ran."""
    for done in range(1, limit + 1):
        sweep(svc, lock, models)
        if notices_for(slack, model_name):
            return done
    return limit + 1


@pytest.mark.slow
def test_a_delivery_lost_to_the_webhook_cache_is_announced_by_the_sweep(
    default_cache_mlflow, slack, redis_url, model_name
):
    uri = default_cache_mlflow
    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    warm = log_model(uri, constant=0.5)
    # A registry in use has its webhook list cached: the first registration loads it.
    mlflow.register_model(f"runs:/{warm}/model", f"{model_name}-warm")
    recorder = DeliveryRecorder()
    hook = client.create_webhook(
        name=f"hook-{model_name}",
        url=recorder.url,
        events=["model_version.created"],
        secret=MLFLOW_SECRET,
    )
    try:
        run_id = log_model(uri, constant=1.0)
        time.sleep(1.0)  # the scenario itself: registered one second after the webhook
        version = mlflow.register_model(f"runs:/{run_id}/model", model_name).version
        with pytest.raises(AssertionError):
            wait_for(lambda: recorder.bodies, "a delivery (the cache should lose it)", timeout=3)
    finally:
        client.delete_webhook(hook.webhook_id)
        recorder.close()

    svc = local_services(uri, slack, mlflow_webhook_secret=MLFLOW_SECRET)
    locks = redis.Redis.from_url(f"{redis_url}/15")
    lock = lambda name: model_lock(locks, name, wait=5)  # noqa: E731
    sweeps = sweeps_until_noticed(svc, model_name, slack, lock)
    print(f"\nlost delivery: announced by sweep {sweeps} (of at most 2)")
    assert sweeps <= 2
    assert client.get_model_version(model_name, version).current_stage == "Staging"
    sweep(svc, lock)
    assert len(notices_for(slack, model_name)) == 1
    log = json.loads(client.get_model_version(model_name, version).tags["registry_bot.log"])
    assert [e["type"] for e in log] == ["staged"]


@pytest.mark.slow
def test_the_newest_first_read_stops_at_the_window(default_cache_mlflow, monkeypatch, model_name):
    uri = default_cache_mlflow
    mlflow.set_tracking_uri(uri)
    run_id = log_model(uri, constant=2.0)
    for _ in range(6):
        mlflow.register_model(f"runs:/{run_id}/model", model_name)
    time.sleep(0.05)  # a clear millisecond boundary between old and new
    since = time.time()
    new = [mlflow.register_model(f"runs:/{run_id}/model", model_name).version for _ in range(2)]

    gw = MlflowGateway(uri)
    pages = []
    search = gw.client.search_model_versions

    def counted(*args, **kwargs):
        pages.append(kwargs.get("page_token"))
        return search(*args, **kwargs)

    monkeypatch.setattr(gateway_module, "CREATED_FIRST_PAGE", 1)
    monkeypatch.setattr(gateway_module, "CREATED_PAGE", 1)
    monkeypatch.setattr(gw.client, "search_model_versions", counted)
    found = gw.created_since(since)
    assert [(mv.name, mv.version) for mv in found] == [(model_name, v) for v in reversed(new)]
    assert len(pages) == 3  # two in the window, one to see the window end; not the 7+ older


@pytest.mark.slow
def test_a_delivery_that_also_arrives_still_makes_one_notice(
    stack, slack, mlflow_server, model_name
):
    client = MlflowClient(mlflow_server)
    hook = client.create_webhook(
        name=f"hook-{model_name}",
        url=f"{stack.webhooks_url}/hooks/mlflow",
        events=["model_version.created"],
        secret=MLFLOW_SECRET,
    )
    svc = local_services(mlflow_server, slack, mlflow_webhook_secret=MLFLOW_SECRET)
    locks = redis.Redis.from_url(stack.redis_url)  # the worker's own locks
    lock = lambda name: model_lock(locks, name, wait=5)  # noqa: E731
    try:
        run_id = log_model(mlflow_server, constant=3.0)
        time.sleep(1.2)  # past this server's webhook cache (MLFLOW_WEBHOOK_CACHE_TTL=1)
        mlflow.set_tracking_uri(mlflow_server)
        version = mlflow.register_model(f"runs:/{run_id}/model", model_name).version
        # The sweep races the delivery for the same version (only this test's model: the
        # session's server holds every other test's versions too).
        sweeps = sweeps_until_noticed(svc, model_name, slack, lock, [model_name])
        print(f"\ndelivery and sweep racing: noticed after sweep {sweeps}")
        assert sweeps <= 2
        seen = f"registry-bot:seen:mlflow:{model_name}:{version}"
        wait_for(lambda: locks.exists(seen), "the MLflow delivery to arrive", timeout=20)
        wait_idle(stack)
    finally:
        client.delete_webhook(hook.webhook_id)
    sweep(svc, lock, [model_name])
    assert len(notices_for(slack, model_name)) == 1
    assert client.get_model_version(model_name, version).current_stage == "Staging"
    log = json.loads(client.get_model_version(model_name, version).tags["registry_bot.log"])
    assert [e["type"] for e in log] == ["staged"]


def test_an_event_after_mlflows_delivery_puts_its_requester_on_record():
    svc = fake_services(mlflow_webhook_secret="s")
    svc.gateway.register_elsewhere("churn", "run-1")  # the pipeline's own register step
    lifecycle.stage_version(svc, "churn", "1", event_id="mlflow-churn-1")  # delivered first
    [notice_ts] = [f"{i + 1}.000" for i, _ in enumerate(svc.notifier.posts)]
    event = TrainingEvent("churn", "run-1", requested_by="UA", description="nightly")
    assert lifecycle.stage_training_event(svc, event, event_id="e1").outcome == "already_noticed"
    mv = svc.gateway.get_version("churn", "1")
    assert (mv.tag("requested_by"), mv.tag("description")) == ("UA", "nightly")
    # The notice now names who asked, and their own Reject is a withdraw.
    (ts, text), *_ = svc.notifier.updates
    assert ts == notice_ts and "<@UA>" in json.dumps(svc.notifier.update_blocks[-1])
    assert lifecycle.approve(svc, "churn", "1", user="UA") == "refused"
    assert svc.notifier.told[-1][1] == "You requested churn v1, so someone else has to approve it."
    assert lifecycle.approve(svc, "churn", "1", user="UB") == "promoted"


def test_a_decided_version_keeps_its_record_whatever_a_late_event_says():
    svc = fake_services(mlflow_webhook_secret="s")
    svc.gateway.register_elsewhere("churn", "run-1")
    lifecycle.stage_version(svc, "churn", "1", event_id="mlflow-churn-1")
    assert lifecycle.approve(svc, "churn", "1", user="UA") == "promoted"
    late = TrainingEvent("churn", "run-1", requested_by="UA")
    lifecycle.stage_training_event(svc, late, event_id="e-late")
    assert svc.gateway.get_version("churn", "1").tag("requested_by") == ""
