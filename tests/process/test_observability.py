"""Prometheus metrics from webhooks, bot and worker, and JSON logs that name the event."""

from __future__ import annotations

import json
import re

import pytest
import requests

from devkit.stack import free_port
from registry.adapters.queue import TASK_STAGE_EVENT
from tests.support import SERVICES, log_model, slash, stage, wait_for, wait_notice

pytestmark = pytest.mark.slow


def sample(text: str, name: str, **labels: str) -> float:
    """Return one sample's value from Prometheus text, or 0 when it is absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == want:
            return float(match.group(2))
    return 0.0


@pytest.fixture(scope="module")
def observed(stacks):
    return stacks.get(services=SERVICES, WORKER_METRICS_PORT=str(free_port()))


def test_worker_metrics_count_tasks_and_queue_wait(observed, slack, mlflow_server, model_name):
    port = observed.env["WORKER_METRICS_PORT"]
    stage(observed, slack, mlflow_server, model_name)
    task = "registry_bot.stage_training_event"
    text = wait_for(
        lambda: (
            lambda t: t if sample(t, "registry_bot_task_seconds_count", task=task) >= 1 else None
        )(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text),
        "task metric",
    )
    assert sample(text, "registry_bot_queue_wait_seconds_count", task=task) >= 1


def test_bot_and_webhooks_metrics(observed, slack, mlflow_server, model_name):
    stage(observed, slack, mlflow_server, model_name)
    slash(observed.bot_url, slack, "help", user="UOUTSIDER")
    bot = requests.get(f"{observed.bot_url}/metrics", timeout=5).text
    assert sample(bot, "registry_bot_slack_answer_seconds_count", status="200") >= 1
    hooks = requests.get(f"{observed.webhooks_url}/metrics", timeout=5).text
    assert sample(hooks, "registry_bot_events_accepted_total", route="training") >= 1
    observed.post_training(b"{}", headers={"content-type": "application/json"})
    hooks = requests.get(f"{observed.webhooks_url}/metrics", timeout=5).text
    assert (
        sample(hooks, "registry_bot_events_refused_total", route="training", reason="signature")
        >= 1
    )


def test_log_lines_about_an_event_name_it(stack, slack, mlflow_server, model_name):
    run_id = log_model(mlflow_server, constant=1.0)
    event_id = stack.post_training({"model_name": model_name, "run_id": run_id}).json()["event_id"]
    wait_notice(slack, model_name)

    def lines_once_the_task_is_done() -> list[dict] | None:
        # The task's last line is written after the notice is posted: wait for it too.
        lines = [
            json.loads(line)
            for line in stack.log("worker").splitlines()
            if line.startswith("{") and model_name in line
        ]
        return lines if staged(lines) else None

    def staged(lines: list[dict]) -> list[dict]:
        # The evidence task that follows the notice has a last line of its own: not this one.
        return [
            e
            for e in lines
            if e["logger"] == "worker.tasks"
            and e["msg"].startswith("task done")
            and e.get("task") == TASK_STAGE_EVENT
        ]

    lines = wait_for(lines_once_the_task_is_done, "the task's last log line")
    # The evidence that follows the notice is a task of its own, named by model and version.
    about = [
        e
        for e in lines
        if e.get("model") == model_name
        and e["logger"].startswith("registry")
        and e["logger"] != "registry.flows.evidence"
    ]
    assert {e["msg"] for e in about} >= {"registered", "notice posted"}
    assert all(e.get("event_id") == event_id and e.get("version") == "1" for e in about)
    # And the task's own last line, with its outcome: a click or an event can be followed.
    assert [e.get("event_id") for e in staged(lines)] == [event_id]
