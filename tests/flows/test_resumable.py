"""Multi-step changes record what they are about to do first; a rerun or the sweep finishes them."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from contextlib import nullcontext

import pytest
import redis
import requests
from mlflow import MlflowClient

from devkit.stack import descendants
from registry.adapters.queue import TASK_SWEEP, Producer
from registry.flows import lifecycle, operations, protection
from registry.flows.notice import post_notice_once
from registry.flows.operations import ROLLED_BACK_REPLACED
from registry.flows.sweep import sweep
from registry.rules.events import TrainingEvent
from registry.rules.record import history_of
from registry.rules.reports import plan_rollback
from registry.rules.settings import Settings
from tests.fakes import Crash
from tests.support import (
    FaultyProxy,
    Ticking,
    answered,
    approve_click,
    confirm_with_reason,
    fake_services,
    local_services,
    log_model,
    mlflow_signed_headers,
    notices_for,
    slash,
    updates_of,
    version_tags,
    wait_for,
)

MODEL = "churn"


def promoted_twice(**services):
    """Return services with v1 promoted, then v2 promoted over it."""
    svc = fake_services(**services)
    for run in ("run-1", "run-2"):
        staged = lifecycle.stage_training_event(svc, TrainingEvent(MODEL, run), event_id=run)
        assert lifecycle.approve(svc, MODEL, staged.version, user="UA") == "promoted"
    return svc


def changes(svc, version: str, kind: str) -> int:
    return [e["type"] for e in history_of(svc.gateway.get_version(MODEL, version))].count(kind)


def announcements(svc) -> list[str]:
    return [text for text, _ in svc.notifier.posts if "rolled churn back" in text]


def rollback(svc, reason: str = "drift", plan=None) -> str:
    plan = plan or plan_rollback(svc.gateway.versions(MODEL), MODEL, "", reason)
    return operations.rollback(svc, plan, user="UB", channel="COPS", response_url="")


def assert_rolled_back_once(svc) -> None:
    gw = svc.gateway
    assert [mv.version for mv in gw.versions(MODEL) if mv.stage == "Production"] == ["1"]
    assert gw.get_version(MODEL, "2").stage == "Archived"
    assert changes(svc, "1", "rolled_back") == 1
    assert changes(svc, "2", "archived") == 1
    entry = history_of(gw.get_version(MODEL, "1"))[-1]
    assert (entry["type"], entry["actor"], entry["reason"], entry["previous_version"]) == (
        "rolled_back",
        "UB",
        "drift",
        "2",
    )
    assert announcements(svc) == [
        "<@UB> rolled churn back from v2 to v1 (v2 archived). Reason: drift"
    ]


def test_a_rollback_records_its_intent_before_it_moves_anything():
    svc = promoted_twice()
    svc.gateway.die_after = lambda op, version, arg: op == "set_tags"  # the first write
    with pytest.raises(Crash):
        rollback(svc)
    target = svc.gateway.get_version(MODEL, "1")
    assert target.stage == "Archived"  # nothing moved yet...
    assert (target.tag("rollback_from"), target.tag("rollback_by")) == ("2", "UB")
    assert target.tag("rollback_reason") == "drift" and target.tag("rollback_at")
    assert sweep(svc, lambda name: nullcontext()).done == {"rolled_back": [(MODEL, "1")]}
    assert_rolled_back_once(svc)


def after_move(svc) -> None:
    svc.gateway.die_after = lambda op, version, arg: op == "move"


def after_archive_record(svc) -> None:
    svc.gateway.die_after = lambda op, v, arg: v == "2" and "registry_bot.log" in arg


def after_announcement(svc) -> None:
    svc.notifier.die_after = lambda op, text: op == "post" and "rolled churn back" in text


@pytest.mark.parametrize("dies", [after_move, after_archive_record, after_announcement])
@pytest.mark.parametrize("finisher", ["sweep", "rerun"])
def test_a_rollback_that_died_half_way_is_finished_once(dies, finisher):
    svc = promoted_twice()
    plan = plan_rollback(svc.gateway.versions(MODEL), MODEL, "", "drift")
    dies(svc)
    with pytest.raises(Crash):
        rollback(svc, plan=plan)
    if finisher == "sweep":
        assert sweep(svc, lambda name: nullcontext()).done == {"rolled_back": [(MODEL, "1")]}
    else:  # the queue redelivers the task: it finishes instead of answering "already Production"
        svc.notifier.told.clear()
        assert rollback(svc, plan=plan) == "rolled_back"
        assert svc.notifier.told == [("UB", "Done: churn v1 is Production again.")]
    assert_rolled_back_once(svc)
    assert sweep(svc, lambda name: nullcontext()).done == {}
    assert_rolled_back_once(svc)


@pytest.mark.parametrize("mode", ["revert", "alert"])
def test_a_rollback_half_done_is_no_out_of_band_change_to_protection(mode):
    # MLflow's alias webhook runs the check as soon as the rollback's move lands, before
    # the rollback is recorded: the emergency rollback must stand, and nobody be alerted.
    # A clock that moves, so that which change came last is plain from the record.
    svc = promoted_twice(clock=Ticking(), policy=f"defaults:\n  protect_production: {mode}\n")
    plan = plan_rollback(svc.gateway.versions(MODEL), MODEL, "", "drift")
    after_move(svc)
    with pytest.raises(Crash):
        rollback(svc, plan=plan)
    assert protection.check_production(svc, MODEL) == ("", "")
    assert [mv.version for mv in svc.gateway.versions(MODEL) if mv.stage == "Production"] == ["1"]
    assert [text for text, _ in svc.notifier.posts if "Out-of-band" in text] == []
    # The sweep finishes the rollback, and only then looks at Production: nothing to say.
    assert sweep(svc, lambda name: nullcontext()).done == {"rolled_back": [(MODEL, "1")]}
    assert_rolled_back_once(svc)
    assert protection.check_production(svc, MODEL) == ("", "")


def test_a_rollback_overtaken_by_a_promotion_is_dropped_and_said_so():
    svc = promoted_twice()
    svc.gateway.die_after = lambda op, version, arg: op == "set_tags"
    with pytest.raises(Crash):
        rollback(svc)
    staged = lifecycle.stage_training_event(svc, TrainingEvent(MODEL, "run-3"), event_id="r3")
    assert lifecycle.approve(svc, MODEL, staged.version, user="UA") == "promoted"
    assert sweep(svc, lambda name: nullcontext()).done == {"rollback_abandoned": [(MODEL, "1")]}
    assert [mv.version for mv in svc.gateway.versions(MODEL) if mv.stage == "Production"] == ["3"]
    assert changes(svc, "1", "rolled_back") == 0
    dropped = [text for text, _ in svc.notifier.posts if "was not carried out" in text]
    assert dropped == [
        "The rollback of churn to v1 that <@UB> confirmed was not carried out: "
        "Production changed to v3 meanwhile. Nothing was rolled back."
    ]
    assert sweep(svc, lambda name: nullcontext()).done == {}


@pytest.mark.parametrize("finisher", ["sweep", "rerun"])
def test_a_rollback_done_but_replaced_before_it_was_announced_is_announced_once(finisher):
    """Recorded, then cut short (Slack refusing the redraw, say), and a promotion got in
    before the task came back: it happened, so it is announced, never called off."""
    svc = promoted_twice()
    plan = plan_rollback(svc.gateway.versions(MODEL), MODEL, "", "drift")
    svc.gateway.die_after = lambda op, v, arg: (
        v == "1" and op == "set_tags" and "rolled_back" in arg.get("registry_bot.log", "")
    )
    with pytest.raises(Crash):
        rollback(svc, plan=plan)
    staged = lifecycle.stage_training_event(svc, TrainingEvent(MODEL, "run-3"), event_id="r3")
    assert lifecycle.approve(svc, MODEL, staged.version, user="UA") == "promoted"
    if finisher == "sweep":
        assert sweep(svc, lambda name: nullcontext()).done == {"rolled_back": [(MODEL, "1")]}
    else:
        svc.notifier.told.clear()
        assert rollback(svc, plan=plan) == "rolled_back"
        [(user, text)] = svc.notifier.told
        assert (user, text) == ("UB", ROLLED_BACK_REPLACED.format(model=MODEL, target="1"))
    assert [mv.version for mv in svc.gateway.versions(MODEL) if mv.stage == "Production"] == ["3"]
    assert changes(svc, "1", "rolled_back") == 1 and changes(svc, "2", "archived") == 1
    assert not [text for text, _ in svc.notifier.posts if "was not carried out" in text]
    assert announcements(svc) == [
        "<@UB> rolled churn back from v2 to v1 (v2 archived). Reason: drift"
        " A later version has replaced v1 since."
    ]
    assert sweep(svc, lambda name: nullcontext()).done == {}
    assert len(announcements(svc)) == 1


def test_a_second_rollback_to_the_same_version_is_announced_again():
    svc = promoted_twice()
    assert rollback(svc) == "rolled_back"
    svc.clock.advance(60)
    plan = plan_rollback(svc.gateway.versions(MODEL), MODEL, "2", "fixed")
    assert operations.rollback(svc, plan, user="UA", channel="COPS", response_url="") == (
        "rolled_back"
    )
    svc.clock.advance(60)
    assert rollback(svc, "drift again") == "rolled_back"
    assert changes(svc, "1", "rolled_back") == 2
    assert len(announcements(svc)) == 3


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_decision_told_in_its_thread_but_not_marked_is_not_told_twice(decision):
    svc = fake_services()
    staged = lifecycle.stage_training_event(svc, TrainingEvent(MODEL, "run-1"), event_id="e")
    svc.notifier.die_after = lambda op, text: op == "reply"  # told, not yet marked announced
    with pytest.raises(Crash):
        if decision == "approve":
            lifecycle.approve(svc, MODEL, staged.version, user="UA")
        else:
            lifecycle.reject(svc, MODEL, staged.version, user="UA", reason="worse on EU")
    assert len(svc.notifier.replies) == 1
    assert sweep(svc, lambda name: nullcontext()).done == {
        ("promoted" if decision == "approve" else "archived"): [(MODEL, "1")]
    }
    assert len(svc.notifier.replies) == 1
    mv = svc.gateway.get_version(MODEL, "1")
    assert mv.tag("announced") and mv.tag("decided_by") == "UA"
    assert json.loads(mv.tags["registry_bot.log"])[-1]["actor"] == "UA"


def test_a_rerun_records_the_move_to_staging_a_dead_worker_made():
    svc = fake_services()
    svc.gateway.die_after = lambda op, version, arg: op == "move" and arg == "Staging"
    event = TrainingEvent(MODEL, "run-1", requested_by="UREQUESTER")
    with pytest.raises(Crash):
        lifecycle.stage_training_event(svc, event, event_id="e")
    assert changes(svc, "1", "staged") == 0  # moved, nothing recorded yet
    assert lifecycle.stage_training_event(svc, event, event_id="e").outcome == "noticed"
    lifecycle.stage_training_event(svc, event, event_id="e")  # and a third delivery
    [entry] = [e for e in history_of(svc.gateway.get_version(MODEL, "1")) if e["type"] == "staged"]
    assert (entry["actor"], bool(entry["at"])) == ("UREQUESTER", True)
    assert len(svc.notifier.posts) == 1


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_decision_on_a_notice_its_dead_poster_never_recorded_is_told_in_its_thread(decision):
    """The worker died after posting the notice, before tagging its ts; a click on that
    notice is decided before the staging task comes back (the soak found one)."""
    svc = fake_services()
    svc.notifier.die_after = lambda op, text: op == "post"
    event = TrainingEvent(MODEL, "run-1")
    with pytest.raises(Crash):
        lifecycle.stage_training_event(svc, event, event_id="e")
    [_] = svc.notifier.posts  # the notice went out...
    notice = "1.000"  # (the fake's ts of its first post)
    assert not svc.gateway.get_version(MODEL, "1").tag("notice_ts")
    if decision == "approve":
        assert lifecycle.approve(svc, MODEL, "1", user="UA") == "promoted"
    else:
        assert lifecycle.reject(svc, MODEL, "1", user="UA", reason="worse") == "rejected"
    told = "is now Production" if decision == "approve" else "was rejected by <@UA>"
    assert [ts for ts, text in svc.notifier.replies if told in text] == [notice]
    assert notice in [ts for ts, _ in svc.notifier.updates]  # its buttons are gone
    assert svc.gateway.get_version(MODEL, "1").tag("notice_ts") == notice
    # The staging task, delivered again, finds it decided: still one notice, told once.
    assert lifecycle.stage_training_event(svc, event, event_id="e").outcome == "already_decided"
    assert sweep(svc, lambda name: nullcontext()).done == {}
    assert len(svc.notifier.posts) == 1 and len(svc.notifier.replies) == 1


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_click_queued_behind_a_decision_cut_short_finishes_it_and_is_answered(decision):
    svc = fake_services()
    staged = lifecycle.stage_training_event(svc, TrainingEvent(MODEL, "run-1"), event_id="e")
    svc.notifier.die_after = lambda op, text: op == "reply"  # UA's task died after telling

    def click_as(user: str) -> str:
        if decision == "approve":
            return lifecycle.approve(svc, MODEL, staged.version, user=user)
        return lifecycle.reject(svc, MODEL, staged.version, user=user, reason=f"{user} says no")

    with pytest.raises(Crash):
        click_as("UA")
    svc.notifier.die_after = None
    assert click_as("UB") == ("promoted" if decision == "approve" else "rejected")
    mv = svc.gateway.get_version(MODEL, "1")
    assert (mv.tag("announced") != "", mv.tag("decided_by")) == (True, "UA")
    assert len(svc.notifier.replies) == 1  # the channel told once, of UA's decision
    [(user, text)] = [(u, t) for u, t in svc.notifier.told if u == "UB"]
    verb = "approved" if decision == "approve" else "rejected"
    assert f"v1 was already {verb} by <@UA>" in text


@pytest.mark.slow
def test_a_click_finds_the_notice_a_dead_poster_left_unrecorded_on_real_services(
    slack, mlflow_server, model_name
):
    """The same on a real MLflow server and the Slack double: found by its nonce there."""
    svc = local_services(mlflow_server, slack)
    run_id = log_model(mlflow_server, constant=1.0)
    event = TrainingEvent(model_name, run_id, requested_by="UREQUESTER")
    # What a worker killed after posting the notice leaves: the nonce, no ts.
    tags = lifecycle.request_tags(event, "e") | {"registry_bot.notice_channel": "CNOTICES"}
    mv = svc.gateway.register(model_name, run_id, event.artifact_path, event.model_uri, tags)
    svc.gateway.move(model_name, mv.version, "Staging")
    ts = post_notice_once(svc, svc.gateway.get_version(model_name, mv.version))
    assert not svc.gateway.get_version(model_name, mv.version).tag("notice_ts")
    assert lifecycle.approve(svc, model_name, mv.version, user="UAPPROVER1") == "promoted"
    [notice] = [m for m in slack.messages("CNOTICES") if m["ts"] == ts]
    [reply] = notice["replies"]
    assert f"{model_name} v{mv.version} is now Production" in reply["text"]
    assert updates_of(slack, ts)  # its buttons are gone
    assert version_tags(mlflow_server, model_name, mv.version)["registry_bot.notice_ts"] == ts
    assert lifecycle.stage_training_event(svc, event, event_id="e").outcome == "already_decided"
    assert len(notices_for(slack, model_name)) == 1


# -- real processes: the worker killed between a rollback's move and its record -------------


def noticed_version(mlflow_server, model_name: str, run_id: str) -> tuple[str, str]:
    """Wait until the run's version has its notice; return (version, notice ts)."""
    client = MlflowClient(mlflow_server)

    def found():
        for mv in client.search_model_versions(f"name = '{model_name}'"):
            if mv.run_id == run_id and mv.tags.get("registry_bot.notice_ts"):
                return mv.version, mv.tags["registry_bot.notice_ts"]
        return None

    return wait_for(found, f"the notice for run {run_id}", timeout=60)


def promoted(stack, slack, mlflow_server, model_name: str, constant: float) -> str:
    """Train, send the event, approve the notice; return the version once it is announced."""
    run_id = log_model(mlflow_server, constant=constant)
    body = {"model_name": model_name, "run_id": run_id, "requested_by": "UREQUESTER"}
    assert stack.post_training(body).status_code == 202
    version, ts = noticed_version(mlflow_server, model_name, run_id)
    approve_click(stack, slack, model_name, version, "UAPPROVER1", ts)
    client = MlflowClient(mlflow_server)
    wait_for(
        lambda: client.get_model_version(model_name, version).tags.get("registry_bot.announced"),
        f"v{version} promoted",
        timeout=60,
    )
    return version


def kill_worker(stack) -> int:
    """SIGKILL the worker's main process and its whole pool at once, as a lost node would."""
    proc = stack.procs.pop("worker")
    pids = [proc.pid, *descendants(proc.pid)]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    proc.wait(10)
    return len(pids)


def logged_entries(mlflow_server, model_name: str, version: str) -> list[dict]:
    tags = MlflowClient(mlflow_server).get_model_version(model_name, version).tags
    return json.loads(tags.get("registry_bot.log", "[]"))


def alias_delivery(stack, model_name: str, version: str) -> requests.Response:
    """Deliver MLflow's `model_version_alias.created` for the production alias, signed as
    MLflow signs it, to the stack's /hooks/mlflow."""
    data = {"name": model_name, "alias": "production", "version": version}
    body = json.dumps({"entity": "model_version_alias", "action": "created", "data": data})
    headers = mlflow_signed_headers(body.encode(), delivery_id=f"d-{uuid.uuid4().hex}")
    url = f"{stack.webhooks_url}/hooks/mlflow"
    return requests.post(url, data=body.encode(), headers=headers, timeout=10)


def checked_since(stack, since: int) -> bool:
    """Say whether the worker finished a Production check after log offset `since`."""
    lines = stack.log("worker")[since:].splitlines()
    return any(
        '"task": "registry_bot.check_production"' in line and "task done" in line for line in lines
    )


@pytest.mark.slow
def test_a_worker_killed_between_a_rollbacks_move_and_its_record(
    stacks, slack, mlflow_server, model_name, tmp_path
):
    # Protection that would revert any Production registry-bot did not make: the rollback
    # half done must not look like one to MLflow's alias webhook.
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"defaults:\n  protect_production: off\nmodels:\n  {model_name}:\n"
        "    protect_production: revert\n"
    )
    proxy = FaultyProxy(mlflow_server)
    try:
        stack = stacks.get(
            services=("worker", "webhooks", "bot"),
            MLFLOW_TRACKING_URI=proxy.url,
            POLICY_FILE=str(policy),
        )
        v1 = promoted(stack, slack, mlflow_server, model_name, 1.0)
        v2 = promoted(stack, slack, mlflow_server, model_name, 2.0)

        moved = threading.Event()

        def between_move_and_record(request) -> bool:
            body = request.get_data(as_text=True)
            if model_name not in body:
                return False
            if "transition-stage" in request.path and "Production" in body:
                moved.set()  # this move goes through; the record after it never does
                return False
            return moved.is_set() and "model-versions/set-tag" in request.path

        proxy.hang_when(between_move_and_record, 120)
        text = f"rollback {model_name} {v1} bad drift"
        _, url = slash(stack.bot_url, slack, text, user="UAPPROVER2")
        plan = answered(slack, url)[0]
        confirm_with_reason(stack, slack, plan, "UAPPROVER2")  # the command's reason, prefilled
        wait_for(proxy.hung.is_set, "the worker to stop between the move and the record", 60)
        client = MlflowClient(mlflow_server)
        assert client.get_model_version(model_name, v1).current_stage == "Production"
        entries = logged_entries(mlflow_server, model_name, v1)
        assert "rolled_back" not in [e["type"] for e in entries]
        intent = client.get_model_version(model_name, v1).tags
        assert (intent["registry_bot.rollback_by"], intent["registry_bot.rollback_from"]) == (
            "UAPPROVER2",
            v2,
        )
        assert kill_worker(stack) >= 2
        proxy.hang_rule = None
        proxy.release.set()  # the held write is dropped, never sent: its sender is dead

        restarted = time.monotonic()
        since = len(stack.log("worker"))
        stack.start("worker")
        # MLflow's alias webhook for the rollback's move reaches the door now, while the
        # rollback is half done (its task waits for Redis to give it back): a check runs.
        assert alias_delivery(stack, model_name, v1).status_code == 202
        wait_for(lambda: checked_since(stack, since), "the Production check", timeout=60)
        assert client.get_model_version(model_name, v1).current_stage == "Production"
        assert client.get_model_version(model_name, v2).current_stage == "Archived"
        producer = Producer(
            Settings(mlflow_tracking_uri=proxy.url, redis_url=stack.redis_url, queue=stack.queue)
        )

        def finished():
            # What `python -m worker beat` sends every SWEEP_INTERVAL; the dead worker's model
            # lock lapses within LOCK_TTL, until then the sweep skips the model.
            producer.send(TASK_SWEEP)
            try:
                return wait_for(
                    lambda: client.get_model_version(model_name, v1).tags.get(
                        "registry_bot.rollback_done"
                    ),
                    "the sweep",
                    timeout=5,
                )
            except AssertionError:
                return None

        wait_for(finished, "the rollback to be finished after the restart", timeout=120, interval=0)
        recovered = time.monotonic() - restarted
        # The killed task stays unacknowledged until Redis's visibility timeout; the
        # sweeps sent meanwhile must all have run, though.
        queue = redis.Redis.from_url(stack.redis_url)
        wait_for(lambda: queue.llen(stack.queue) == 0, "the sweeps sent to run", timeout=60)
    finally:
        proxy.close()

    print(f"\nrollback finished {recovered:.1f}s after the worker restarted")
    assert recovered < 120
    versions = client.search_model_versions(f"name = '{model_name}'")
    assert sorted(v.version for v in versions if v.current_stage == "Production") == [v1]
    assert client.get_model_version(model_name, v2).current_stage == "Archived"
    entries = logged_entries(mlflow_server, model_name, v1)
    rolled = [e for e in entries if e["type"] == "rolled_back"]
    assert [(e["actor"], e["reason"], e["previous_version"]) for e in rolled] == [
        ("UAPPROVER2", "bad drift", v2)
    ]
    archived = [
        e
        for e in logged_entries(mlflow_server, model_name, v2)
        if e["type"] == "archived" and e["reason"].startswith("rolled back")
    ]
    assert [(e["actor"], e["reason"]) for e in archived] == [
        ("UAPPROVER2", f"rolled back to v{v1}: bad drift")
    ]
    told = [
        c.params["text"]
        for c in slack.calls("chat.postMessage")
        if c.status == 200 and f"rolled {model_name} back" in c.params.get("text", "")
    ]
    assert told == [
        f"<@UAPPROVER2> rolled {model_name} back from v{v2} to v{v1} (v{v2} archived)."
        " Reason: bad drift"
    ]
    # Neither the check at the webhook nor the sweep after it took the rollback for a change
    # made outside registry-bot: no revert, no alert.
    assert not any(e["type"] in ("reverted", "out_of_band") for e in entries)
    assert "revert_intent" not in json.dumps(version_tags(mlflow_server, model_name, v2))
    alerted = [c for c in slack.calls("chat.postMessage") if "Out-of-band" in str(c.params)]
    assert [c for c in alerted if model_name in str(c.params)] == []


# -- a redraw Slack failed after the approval was recorded: the rerun finishes it ------------


class SlackFailsOnce(Exception):
    """A transient Slack failure (a 5xx past the client's retries): the task runs again."""


def failing_once(svc, op: str) -> None:
    """Make the notifier's next `op` (update or tell) fail, once."""
    real = getattr(svc.notifier, op)

    def once(*args, **kwargs):
        setattr(svc.notifier, op, real)
        raise SlackFailsOnce(op)

    setattr(svc.notifier, op, once)


@pytest.mark.parametrize("fails", ["update", "tell"])
def test_a_rerun_of_a_counted_click_redraws_the_notice_and_answers_as_counted(fails):
    svc = fake_services(approvers=("UA", "UB"), required_approvals=2)
    staged = lifecycle.stage_training_event(svc, TrainingEvent(MODEL, "run-1"), event_id="e1")
    failing_once(svc, fails)
    with pytest.raises(SlackFailsOnce):
        lifecycle.approve(svc, MODEL, staged.version, user="UA", click="click-1-UA")
    svc.notifier.updates.clear()
    svc.notifier.told.clear()
    # The same click's task, run again: it finishes what the first run left, in its own words.
    assert lifecycle.approve(svc, MODEL, staged.version, user="UA", click="click-1-UA") == (
        "counted"
    )
    assert [ts for ts, _ in svc.notifier.updates] == [staged.notice_ts]
    assert "1 of 2 approvals" in json.dumps(svc.notifier.update_blocks[-1])
    assert svc.notifier.told == [("UA", "Your approval of churn v1 is counted: 1 of 2 approvals.")]
    # Another click by the same approver is a second click: that one is told so.
    assert lifecycle.approve(svc, MODEL, staged.version, user="UA", click="click-2-UA") == "done"
    assert svc.notifier.told[-1] == ("UA", "You already approved churn v1 (1 of 2 approvals).")
    mv = svc.gateway.get_version(MODEL, staged.version)
    assert mv.tag("approvals") == "UA" and changes(svc, staged.version, "approval") == 1


def test_a_rerun_of_the_click_that_started_a_canary_finishes_it_once():
    svc = fake_services(policy="defaults:\n  canary: {duration: 30m}\n")
    staged = lifecycle.stage_training_event(svc, TrainingEvent(MODEL, "run-1"), event_id="e1")
    failing_once(svc, "update")
    with pytest.raises(SlackFailsOnce):
        lifecycle.approve(svc, MODEL, staged.version, user="UA", click="click-1-UA")
    assert lifecycle.approve(svc, MODEL, staged.version, user="UA", click="click-1-UA") == (
        "canary_started"
    )
    canary = [text for _, text in svc.notifier.replies if "canary until" in text]
    assert len(canary) == 1 and svc.notifier.told == []
    assert "canary in Staging until" in json.dumps(svc.notifier.update_blocks[-1])


def forget_held(stack) -> None:
    """Drop every message the stack's dead worker held, and its queue's journal."""
    client = redis.Redis.from_url(stack.redis_url)
    for tag, raw in client.hgetall("unacked").items():
        if json.loads(raw)[2] == stack.queue:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
    client.delete(f"{stack.queue}:journal", f"{stack.queue}:journal:sent")


@pytest.mark.slow
def test_a_worker_killed_between_registering_and_staging_is_finished_by_the_sweep(
    stacks, slack, mlflow_server, model_name
):
    proxy = FaultyProxy(mlflow_server)
    try:
        stack = stacks.get(services=("worker", "webhooks"), MLFLOW_TRACKING_URI=proxy.url)
        run_id = log_model(mlflow_server, constant=1.0)

        def the_move_to_staging(request) -> bool:
            body = request.get_data(as_text=True)
            return model_name in body and "transition-stage" in request.path

        proxy.hang_when(the_move_to_staging, 120)
        body = {"model_name": model_name, "run_id": run_id, "requested_by": "UREQUESTER"}
        assert stack.post_training(body).status_code == 202
        wait_for(proxy.hung.is_set, "the worker to stop between registering and staging", 60)
        client = MlflowClient(mlflow_server)
        [mv] = client.search_model_versions(f"name = '{model_name}'")
        assert mv.current_stage == "None" and mv.tags["registry_bot.pending"] == "true"
        assert kill_worker(stack) >= 2
        proxy.hang_rule = None
        proxy.release.set()  # the held move is dropped, never sent: its sender is dead
        # And the task itself is gone for good (no redelivery, nothing in the journal): only
        # the record on the version is left for the sweep to go by.
        forget_held(stack)
        stack.start("worker")
        # What beat sends every SWEEP_INTERVAL; the dead worker's lock lapses within 15 s.
        send = Producer(
            Settings(mlflow_tracking_uri=proxy.url, redis_url=stack.redis_url, queue=stack.queue)
        ).send

        def staged():
            send(TASK_SWEEP)
            time.sleep(2)
            return client.get_model_version(model_name, mv.version).tags.get(
                "registry_bot.notice_ts"
            )

        wait_for(staged, "the sweep to stage it and post its notice", timeout=120, interval=0)
    finally:
        proxy.close()
    assert client.get_model_version(model_name, mv.version).current_stage == "Staging"
    wait_for(lambda: len(notices_for(slack, model_name)) >= 1, "the notice")
    assert len(notices_for(slack, model_name)) == 1
