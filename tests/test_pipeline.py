"""The event pipeline end to end: signed event, real worker, version in Staging, notice."""

from __future__ import annotations

import time

import mlflow
import pytest
from mlflow import MlflowClient

from registry.views.notice import APPROVE_ACTION, REJECT_ACTION
from tests.support import buttons, log_model, notices_for, wait_idle, wait_notice

pytestmark = pytest.mark.slow


def wait_tag(client, model_name: str, version: str, tag: str, timeout: float = 10.0) -> dict:
    """Wait until the version carries `tag` (set just after the notice is posted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tags = client.get_model_version(model_name, version).tags
        if tag in tags:
            return tags
        time.sleep(0.1)
    raise AssertionError(f"{model_name} v{version} never got {tag}")


def test_training_event_reaches_staging_with_one_notice(stack, slack, mlflow_server, model_name):
    run_id = log_model(
        mlflow_server, constant=3.0, metrics={"accuracy": 0.93}, git_commit="abc123def4567890"
    )
    started = time.monotonic()
    resp = stack.post_training(
        {"model_name": model_name, "run_id": run_id, "requested_by": "UREQUESTER"}
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "queued"

    notice = wait_notice(slack, model_name)
    assert time.monotonic() - started < 20
    client = MlflowClient(mlflow_server)
    versions = client.search_model_versions(f"name = '{model_name}'")
    assert [(v.version, v.current_stage) for v in versions] == [("1", "Staging")]
    assert client.get_model_version_by_alias(model_name, "staging").version == "1"

    found = buttons(notice)
    assert set(found) == {"Approve", "Reject"}
    assert found["Approve"]["action_id"] == APPROVE_ACTION
    assert found["Reject"]["action_id"] == REJECT_ACTION
    text = str(notice.params["blocks"])
    assert "<@UREQUESTER>" in text and "abc123def456" in text and "accuracy" in text
    assert f"#/models/{model_name}/versions/1" in text and f"/runs/{run_id}" in text

    tags = wait_tag(client, model_name, "1", "registry_bot.notice_ts")
    assert tags["registry_bot.notice_channel"] == "CNOTICES"
    assert tags["registry_bot.notice_ts"] in [m["ts"] for m in slack.messages("CNOTICES")]
    assert tags["registry_bot.requested_by"] == "UREQUESTER"
    assert "staged" in tags["registry_bot.log"]

    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/Staging")
    assert list(loaded.predict([[1.0]])) == [3.0]


def test_repeated_events_make_no_second_version_or_notice(stack, slack, mlflow_server, model_name):
    run_id = log_model(mlflow_server, constant=1.0)
    body = {"model_name": model_name, "run_id": run_id}
    first = stack.post_training(body, msg_id="msg_fixed_" + model_name)
    assert first.json() == {"status": "queued", "event_id": "msg_fixed_" + model_name}
    wait_notice(slack, model_name)

    again = stack.post_training(body, msg_id="msg_fixed_" + model_name)
    assert again.status_code == 202 and again.json()["status"] == "duplicate"
    other = stack.post_training(body)  # a new webhook-id for the same run
    assert other.status_code == 202 and other.json()["status"] == "queued"

    wait_idle(stack)
    assert len(notices_for(slack, model_name)) == 1
    versions = MlflowClient(mlflow_server).search_model_versions(f"name = '{model_name}'")
    assert len(versions) == 1


def test_slack_429_is_retried_after_retry_after(stack, slack, mlflow_server, model_name):
    run_id = log_model(mlflow_server, constant=2.0)
    slack.fail_next("chat.postMessage", status=429, retry_after=1)
    resp = stack.post_training({"model_name": model_name, "run_id": run_id})
    assert resp.status_code == 202
    wait_notice(slack, model_name)
    wait_idle(stack)
    posts = slack.calls("chat.postMessage")
    limited = [c for c in posts if c.status == 429]
    assert limited, "the double never answered 429"
    ok = notices_for(slack, model_name)
    assert len(ok) == 1
    assert ok[0].at - limited[-1].at >= 1.0


def test_aliases_mode_moves_no_stage(stacks, slack, mlflow_server, model_name):
    stack = stacks.get(REGISTRY_MODE="aliases")
    run_id = log_model(mlflow_server, constant=5.0)
    assert stack.post_training({"model_name": model_name, "run_id": run_id}).status_code == 202
    wait_notice(slack, model_name)
    client = MlflowClient(mlflow_server)
    version = client.get_model_version(model_name, "1")
    assert version.current_stage == "None"
    assert version.tags["registry_bot.stage"] == "Staging"
    assert client.get_model_version_by_alias(model_name, "staging").version == "1"
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}@staging")
    assert list(loaded.predict([[0.0]])) == [5.0]
