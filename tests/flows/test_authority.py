"""Who may change a model is asked again in the worker, where the change happens.

A task names its person without proof (anyone who can write to the queue can forge one),
and a person may leave the approvers between a click and its task: each task that changes
the registry on someone's behalf checks them against the model's policy before it writes.
"""

from __future__ import annotations

import json

import pytest
import redis
from mlflow import MlflowClient

from registry.adapters.queue import TASK_ACCEPT, TASK_COMMAND, TASK_REVERT, TASK_ROLLBACK, Producer
from registry.flows import lifecycle, operations, protection
from registry.rules.commands import Command
from registry.rules.events import TrainingEvent
from registry.rules.reports import RollbackPlan
from registry.rules.settings import Settings
from tests.fakes import FakeDirectory
from tests.support import (
    Ticking,
    fake_services,
    local_services,
    promote,
    stage_and_wait,
    stage_of,
    version_tags,
    wait_for,
    wait_idle,
)

PROTECTED = "defaults:\n  protect_production: alert\n"


def two_in_production_then_a_hand_move(svc, model: str = "churn") -> str:
    """v1 then v2 approved to Production, then v1 put back by hand: return the alert's key."""
    for run in ("run-1", "run-2"):
        version = lifecycle.stage_training_event(svc, TrainingEvent(model, run), event_id=run)
        assert lifecycle.approve(svc, model, version.version, user="UA") == "promoted"
    svc.gateway.move(model, "1", "Production")  # out of band
    assert protection.check_production(svc, model)[0] == "out_of_band"
    alert = json.loads(svc.gateway.get_version(model, "1").tag("oob_alert"))
    return alert["key"]


def snapshot(svc, model: str = "churn") -> list[tuple[str, str, dict]]:
    return [(mv.version, mv.stage, dict(mv.tags)) for mv in svc.gateway.versions(model)]


def last_told(svc) -> tuple[str, str]:
    return svc.notifier.told[-1]


# -- the domain code, on the in-memory fakes ------------------------------------------------


def test_a_promote_command_in_a_non_approvers_name_changes_nothing():
    svc = fake_services()
    svc.gateway.register_elsewhere("churn", "run-1")
    cmd = Command("promote", "churn", version="1")
    outcome = operations.answer_command(svc, cmd, user="UOUT", channel="CNOTICES", response_url="")
    assert outcome == "refused"
    assert svc.gateway.get_version("churn", "1").stage == "None" and svc.notifier.posts == []
    assert last_told(svc) == ("UOUT", "Only approvers may promote model versions; you are not one.")


def test_a_rollback_in_a_non_approvers_name_changes_nothing():
    svc = fake_services()
    for run in ("run-1", "run-2"):
        version = lifecycle.stage_training_event(svc, TrainingEvent("churn", run), event_id=run)
        lifecycle.approve(svc, "churn", version.version, user="UA")
    before = snapshot(svc)
    plan = RollbackPlan("churn", "2", "1", "forged")
    outcome = operations.rollback(svc, plan, user="UOUT", channel="CNOTICES", response_url="")
    assert outcome == "refused" and snapshot(svc) == before
    assert last_told(svc) == (
        "UOUT",
        "Only approvers may roll back model versions; you are not one.",
    )


@pytest.mark.parametrize("verb", ["revert", "accept"])
def test_a_revert_or_accept_in_a_non_approvers_name_changes_nothing(verb):
    svc = fake_services(policy=PROTECTED, clock=Ticking())
    key = two_in_production_then_a_hand_move(svc)
    before = snapshot(svc)
    if verb == "revert":
        outcome = protection.revert(svc, "churn", key=key, user="UOUT")
    else:
        outcome = protection.accept(svc, "churn", key=key, user="UOUT", reason="forged")
    assert outcome == "refused" and snapshot(svc) == before
    assert last_told(svc) == ("UOUT", f"Only approvers may {verb} model versions; you are not one.")


def test_an_approver_removed_between_click_and_task_is_refused_and_told():
    svc = fake_services()
    for run in ("run-1", "run-2"):
        version = lifecycle.stage_training_event(svc, TrainingEvent("churn", run), event_id=run)
        lifecycle.approve(svc, "churn", version.version, user="UA")
    svc.directory.approvers.discard("UB")  # the bot let UB confirm; then UB left the group
    plan = RollbackPlan("churn", "2", "1")
    assert operations.rollback(svc, plan, user="UB", channel="C1", response_url="") == "refused"
    assert svc.gateway.production("churn").version == "2"
    assert "you are not one" in last_told(svc)[1]


def test_a_lookup_slack_cannot_answer_refuses_with_try_again():
    svc = fake_services(policy="defaults:\n  approvers: {groups: [SLEADS]}\n")
    svc.directory = FakeDirectory([], groups={"SLEADS": ["UA"]}, settings=svc.settings)
    svc.gateway.register_elsewhere("churn", "run-1")
    svc.directory.down.add("usergroups.users.list")
    cmd = Command("promote", "churn", version="1")
    outcome = operations.answer_command(svc, cmd, user="UA", channel="C1", response_url="")
    assert outcome == "refused" and svc.gateway.get_version("churn", "1").stage == "None"
    assert "try again" in last_told(svc)[1]


# -- forged tasks, straight onto the queue, run by a real worker ------------------------------


@pytest.mark.slow
def test_forged_tasks_in_a_non_approvers_name_are_refused_by_the_worker(
    stacks, slack, mlflow_server, model_name, tmp_path
):
    policy = tmp_path / "policy.yaml"
    policy.write_text(PROTECTED)
    stack = stacks.get(services=("worker", "webhooks", "bot"), POLICY_FILE=str(policy))
    v1 = promote(stack, slack, mlflow_server, model_name, constant=1.0)
    v2 = promote(stack, slack, mlflow_server, model_name, constant=2.0)
    v3, _, _ = stage_and_wait(stack, mlflow_server, model_name, constant=3.0)
    with pytest.warns(FutureWarning):  # v1 back in Production by hand: an out-of-band change
        MlflowClient(mlflow_server).transition_model_version_stage(
            model_name, v1, "Production", archive_existing_versions=True
        )
    svc = local_services(mlflow_server, slack, policy=PROTECTED)
    assert protection.check_production(svc, model_name)[0] == "out_of_band"
    key = json.loads(version_tags(mlflow_server, model_name, v1)["registry_bot.oob_alert"])["key"]
    wait_idle(stack)
    before = {v: version_tags(mlflow_server, model_name, v) for v in (v1, v2, v3)}
    stages = {v: stage_of(mlflow_server, model_name, v) for v in before}

    queue = Settings(mlflow_tracking_uri="x", redis_url=stack.redis_url, queue=stack.queue)
    send = Producer(queue).send
    forged = {"user": "UOUTSIDER", "model_name": model_name}
    told_before = len(slack.ephemerals("CNOTICES"))
    send(
        TASK_ROLLBACK, event_id="f1", current=v1, target=v2, reason="", channel="CNOTICES", **forged
    )
    send(TASK_REVERT, event_id="f2", key=key, **forged)
    send(TASK_ACCEPT, event_id="f3", key=key, reason="forged", **forged)
    send(TASK_COMMAND, event_id="f4", verb="promote", version=v3, channel="CNOTICES", **forged)
    refusals = wait_for(
        lambda: (lambda e: e if len(e) >= 4 else None)(
            [e for e in slack.ephemerals("CNOTICES")[told_before:] if e["user"] == "UOUTSIDER"]
        ),
        "the four refusals",
        timeout=60,
    )
    wait_idle(stack)
    assert sorted(e["text"].split(" model")[0] for e in refusals) == [
        "Only approvers may accept",
        "Only approvers may promote",
        "Only approvers may revert",
        "Only approvers may roll back",
    ]
    after = {v: version_tags(mlflow_server, model_name, v) for v in before}
    assert after == before
    assert {v: stage_of(mlflow_server, model_name, v) for v in before} == stages
    log = stack.log("worker")
    assert log.count("where it would change") >= 4
    assert redis.Redis.from_url(stack.redis_url).llen(stack.queue) == 0
