"""The promotion policy at work: gates, canary windows, reminders, expiry and reconciliation."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from contextlib import nullcontext

import pytest
import requests
from mlflow import MlflowClient

from devkit.stack import stop
from registry.flows import canary, lifecycle
from registry.flows.sweep import sweep
from registry.rules.events import TrainingEvent
from registry.views.notice import APPROVE_ACTION, button_value
from tests.support import (
    CANARY_SECRET,
    SERVICES,
    TRAINING_SECRET,
    Clock,
    buttons,
    click,
    local_services,
    log_model,
    notices_for,
    production_versions,
    signed_headers,
    stage_of,
    updates_of,
    wait_for,
    wait_notice,
)

pytestmark = pytest.mark.slow

GATES = """
defaults:
  gates:
    - metric: accuracy
      min: 0.80
      no_worse_than_production: 0.01
"""
CANARY = """
defaults:
  canary:
    duration: 1s
    require_report: true
"""
TIMERS = """
defaults:
  approval_expires_after: 72h
  remind_every: 24h
"""


def policy_stack(stacks, tmp_path_factory, name: str, text: str):
    path = tmp_path_factory.getbasetemp() / f"{name}.yaml"
    path.write_text(text)
    return stacks.get(services=SERVICES, POLICY_FILE=str(path))


def send(stack, mlflow_server, model_name, accuracy: float, constant: float = 1.0) -> None:
    run_id = log_model(mlflow_server, constant=constant, metrics={"accuracy": accuracy})
    assert stack.post_training({"model_name": model_name, "run_id": run_id}).status_code == 202


def nth_notice(slack, model_name, n: int):
    return wait_for(
        lambda: (lambda found: found[n - 1] if len(found) >= n else None)(
            notices_for(slack, model_name)
        ),
        f"notice {n}",
        timeout=30,
    )


def approve_and_wait(stack, slack, mlflow_server, model_name, version):
    ts = wait_for(
        lambda: (
            MlflowClient(mlflow_server)
            .get_model_version(model_name, version)
            .tags.get("registry_bot.notice_ts")
        ),
        "notice tag",
    )
    click(
        stack.bot_url,
        slack,
        user="UAPPROVER1",
        action_id=APPROVE_ACTION,
        value=button_value(model_name, version),
        message_ts=ts,
    )
    return ts


def test_gates_keep_a_worse_candidate_out_and_let_a_better_one_in(
    stacks, tmp_path_factory, slack, mlflow_server, model_name
):
    stack = policy_stack(stacks, tmp_path_factory, "gates", GATES)
    send(stack, mlflow_server, model_name, 0.90)
    nth_notice(slack, model_name, 1)
    approve_and_wait(stack, slack, mlflow_server, model_name, "1")
    wait_for(lambda: stage_of(mlflow_server, model_name, "1") == "Production", "v1 Production")

    send(stack, mlflow_server, model_name, 0.85)  # 0.05 worse, tolerance 0.01
    worse = nth_notice(slack, model_name, 2)
    assert "Approve" not in buttons(worse)
    assert "failed its promotion gates" in worse.params["text"]
    assert metric_row(worse, "accuracy") == [
        "accuracy",
        "0.85",  # one format: the table's numbers as the gate's note writes them
        "0.9",
        "-0.05",
        "worse",
        "✗ vs Production 0.9: worse by 0.05 (tolerance 0.01)",
    ]
    assert stage_of(mlflow_server, model_name, "2") == "None"
    tags = MlflowClient(mlflow_server).get_model_version(model_name, "2").tags
    assert tags["registry_bot.gates"] == "failed"

    send(stack, mlflow_server, model_name, 0.95)
    better = nth_notice(slack, model_name, 3)
    assert set(buttons(better)) == {"Approve", "Reject"}
    assert metric_row(better, "accuracy") == [
        "accuracy",
        "0.95",
        "0.9",
        "+0.05",
        "better",
        "✓ ≥ 0.8, ≥ Production − 0.01",
    ]
    assert stage_of(mlflow_server, model_name, "3") == "Staging"


def metric_row(notice, metric: str) -> list[str]:
    """Return one metric's row of a notice's metrics table, cell by cell."""
    text = next(b["text"]["text"] for b in notice.params["blocks"] if "*Metrics*" in str(b))
    [row] = [line for line in text.splitlines() if line.startswith(f"{metric} ")]
    return re.split(r"\s{2,}", row.strip())


def post_canary(stack, body: dict, *, secret: str = CANARY_SECRET) -> requests.Response:
    raw = json.dumps(body).encode()
    headers = signed_headers(raw, secret=secret)
    return requests.post(
        f"{stack.webhooks_url}/hooks/canary", data=raw, headers=headers, timeout=10
    )


def test_canary_holds_approval_until_a_passing_report(
    stacks, tmp_path_factory, slack, mlflow_server, model_name
):
    stack = policy_stack(stacks, tmp_path_factory, "canary", CANARY)
    send(stack, mlflow_server, model_name, 0.9, constant=1.0)
    nth_notice(slack, model_name, 1)
    ts1 = approve_and_wait(stack, slack, mlflow_server, model_name, "1")
    client = MlflowClient(mlflow_server)
    wait_for(
        lambda: (
            client.get_model_version(model_name, "1").tags.get("registry_bot.canary_state")
            == "running"
        ),
        "canary started",
    )
    assert stage_of(mlflow_server, model_name, "1") == "Staging"
    update = wait_for(lambda: updates_of(slack, ts1), "notice update")[-1]
    assert "canary in Staging until" in json.dumps(update.params["blocks"])
    time.sleep(1.1)  # past the 1 s window: the report alone decides now
    resp = post_canary(
        stack,
        {
            "model_name": model_name,
            "version": "1",
            "passed": False,
            "detail": "p99 latency doubled",
        },
    )
    assert resp.status_code == 202
    wait_for(
        lambda: stage_of(mlflow_server, model_name, "1") == "Archived", "failed canary archived"
    )
    assert (
        "canary failed: p99 latency doubled"
        in client.get_model_version(model_name, "1").tags["registry_bot.reason"]
    )

    send(stack, mlflow_server, model_name, 0.9, constant=2.0)
    nth_notice(slack, model_name, 2)
    approve_and_wait(stack, slack, mlflow_server, model_name, "2")
    wait_for(
        lambda: (
            client.get_model_version(model_name, "2").tags.get("registry_bot.canary_state")
            == "running"
        ),
        "second canary started",
    )
    time.sleep(1.1)
    assert (
        post_canary(
            stack,
            {
                "model_name": model_name,
                "version": 2,
                "passed": True,
                "metrics": {"error_rate": 0.001},
            },
        ).status_code
        == 202
    )
    wait_for(lambda: stage_of(mlflow_server, model_name, "2") == "Production", "promoted")
    assert production_versions(mlflow_server, model_name) == ["2"]


def test_canary_refusals(stacks, tmp_path_factory):
    stack = policy_stack(stacks, tmp_path_factory, "canary", CANARY)
    for body, field in (
        ({"model_name": "m", "version": "1"}, "passed"),
        ({"model_name": "m", "version": "x", "passed": True}, "version"),
        ({"version": "1", "passed": True}, "model_name"),
    ):
        resp = post_canary(stack, body)
        assert resp.status_code == 400 and field in json.dumps(resp.json()["details"])
    raw = json.dumps({"model_name": "m", "version": "1", "passed": True}).encode()
    unsigned = requests.post(
        f"{stack.webhooks_url}/hooks/canary",
        data=raw,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert unsigned.status_code == 401
    # Signed, but by the training job: it may not pass its own canary.
    assert post_canary(stack, json.loads(raw), secret=TRAINING_SECRET).status_code == 401


def test_reminder_then_expiry_on_a_controlled_clock(slack, mlflow_server, model_name):
    clock = Clock()
    svc = local_services(mlflow_server, slack, clock=clock, policy=TIMERS)
    run_id = log_model(mlflow_server, constant=1.0)
    result = lifecycle.stage_training_event(
        svc, TrainingEvent(model_name, run_id), event_id="evt-timers"
    )
    assert result.outcome == "noticed"

    def run() -> dict:
        return {
            k: len(v) for k, v in sweep(svc, lambda n: nullcontext(), [model_name]).done.items()
        }

    assert run() == {}
    clock.advance(24 * 3600 + 1)
    assert run() == {"reminded": 1}
    assert run() == {}  # not again until another 24 h
    replies = [
        r["text"]
        for m in slack.messages("CNOTICES")
        if m["ts"] == result.notice_ts
        for r in m["replies"]
    ]
    assert len(replies) == 1 and "still awaits approval (0 of 1 approvals" in replies[0]
    clock.advance(48 * 3600)
    assert run() == {"expired": 1}
    assert stage_of(mlflow_server, model_name, "1") == "Archived"
    tags = MlflowClient(mlflow_server).get_model_version(model_name, "1").tags
    assert (tags["registry_bot.decision"], tags["registry_bot.reason"]) == ("expired", "expired")
    update = updates_of(slack, result.notice_ts)[-1]
    assert "actions" not in [b["type"] for b in update.params["blocks"]]
    assert "*Expired*" in json.dumps(update.params["blocks"])
    assert run() == {}


CANARY_EXPIRY = """
defaults:
  approval_expires_after: 72h
  canary:
    duration: 30m
    require_report: true
"""


def test_a_canary_window_ended_without_its_report_says_so_once_then_expires(
    slack, mlflow_server, model_name
):
    clock = Clock()
    svc = local_services(mlflow_server, slack, clock=clock, policy=CANARY_EXPIRY)
    run_id = log_model(mlflow_server, constant=1.0)
    staged = lifecycle.stage_training_event(
        svc, TrainingEvent(model_name, run_id), event_id="evt-overdue"
    )
    assert lifecycle.approve(svc, model_name, staged.version, user="UAPPROVER1") == (
        "canary_started"
    )

    def run() -> dict:
        return {
            k: len(v) for k, v in sweep(svc, lambda n: nullcontext(), [model_name]).done.items()
        }

    def notes() -> list[str]:
        return [
            r["text"]
            for m in slack.messages("CNOTICES")
            if m["ts"] == staged.notice_ts
            for r in m["replies"]
            if "canary window ended" in r["text"]
        ]

    clock.advance(30 * 60 - 1)
    assert run() == {}  # still inside the window
    clock.advance(2)
    assert run() == {"canary_overdue": 1}
    assert run() == {}
    assert len(notes()) == 1 and "without a passing canary report" in notes()[0]
    assert "expires at" in notes()[0]
    update = updates_of(slack, staged.notice_ts)[-1]
    assert "without a passing report" in json.dumps(update.params["blocks"])
    clock.advance(72 * 3600 - 10)  # 72 h from the window's end, not from the approval
    assert run() == {}
    assert stage_of(mlflow_server, model_name, staged.version) == "Staging"
    clock.advance(10)
    assert run() == {"expired": 1}
    assert run() == {}
    assert len(notes()) == 1
    assert stage_of(mlflow_server, model_name, staged.version) == "Archived"
    tags = MlflowClient(mlflow_server).get_model_version(model_name, staged.version).tags
    assert (tags["registry_bot.decision"], tags["registry_bot.canary_state"]) == (
        "expired",
        "expired",
    )
    assert "*Expired*" in json.dumps(updates_of(slack, staged.notice_ts)[-1].params["blocks"])
    late = canary.canary_verdict(
        svc, model_name, staged.version, passed=True, detail="", metrics={}, event_id="late"
    )
    assert late == "ignored"
    assert stage_of(mlflow_server, model_name, staged.version) == "Archived"


def test_reconciliation_posts_one_notice_for_a_version_staged_behind_our_back(
    slack, mlflow_server, model_name
):
    import mlflow

    run_id = log_model(mlflow_server, constant=1.0)
    mlflow.set_tracking_uri(mlflow_server)
    version = mlflow.register_model(f"runs:/{run_id}/model", model_name).version
    with pytest.warns(FutureWarning):
        MlflowClient(mlflow_server).transition_model_version_stage(model_name, version, "Staging")
    svc = local_services(mlflow_server, slack)
    first = sweep(svc, lambda n: nullcontext(), [model_name])
    assert first.count("noticed") == 1 and len(notices_for(slack, model_name)) == 1
    second = sweep(svc, lambda n: nullcontext(), [model_name])
    assert second.done == {} and len(notices_for(slack, model_name)) == 1


def test_the_scheduler_runs_the_sweep(stacks, slack, mlflow_server, model_name):
    """`python -m worker beat` drives the sweep task on the worker, and the sweep does its work."""
    import mlflow

    # A version staged behind the bot's back: no event names it, only a sweep notices it.
    run_id = log_model(mlflow_server, constant=1.0)
    mlflow.set_tracking_uri(mlflow_server)
    version = mlflow.register_model(f"runs:/{run_id}/model", model_name).version
    with pytest.warns(FutureWarning):
        MlflowClient(mlflow_server).transition_model_version_stage(model_name, version, "Staging")
    stack = stacks.get(services=("worker",), SWEEP_INTERVAL="1", BEAT="1")
    time.sleep(1.5)
    assert notices_for(slack, model_name) == []  # the worker alone does nothing for it

    # The child writes to its own copy of the descriptor: ours is closed at once.
    with open(stack.workdir / "beat.log", "ab") as log:
        beat = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker",
                "beat",
                "--schedule",
                str(stack.workdir / "beat-schedule"),
            ],
            env=stack.env,
            cwd=stack.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        notice = wait_notice(slack, model_name, timeout=90)  # one sweep covers every model
        client = MlflowClient(mlflow_server)
        tags = wait_for(
            lambda: (lambda t: t if "registry_bot.notice_ts" in t else None)(
                client.get_model_version(model_name, version).tags
            ),
            "the notice tag the sweep writes",
        )
        assert notice.params["channel"] == tags["registry_bot.notice_channel"] == "CNOTICES"
        assert tags["registry_bot.notice_ts"] in [m["ts"] for m in slack.messages("CNOTICES")]
        posted = wait_for(
            lambda: [
                e
                for e in map(json.loads, _json_lines(stack.log("worker")))
                if e.get("model") == model_name and e.get("msg") == "notice posted"
            ],
            "the worker's log line for the sweep's notice",
        )
        assert [(e["event_id"], e["version"]) for e in posted] == [("sweep", version)]
        time.sleep(2.5)  # later sweeps find the notice and post no second one
        assert len(notices_for(slack, model_name)) == 1
    finally:
        stop(beat)


def _json_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("{")]
