"""The sweep reads in full only models that changed; elsewhere, the versions tagged pending.

Each duty of the sweep is found again on a model that did not change since the last
sweep, so through the pending tag alone (`read_in_full` stays empty); a model that did
change is read in full, and a version an older release left without the tag is found
by a process's first sweep. Against real MLflow: its update times behave as the sweep
expects, and the sweep's calls with nothing pending do not grow with the registry.
"""

from __future__ import annotations

import contextlib
import json
import time
from contextlib import nullcontext

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.utils import rest_utils

from devkit.stack import free_port, start_mlflow_server, stop
from registry.flows import lifecycle, operations, protection
from registry.flows.sweep import SweepMemory, SweepReport, needs_sweep, sweep
from registry.rules.events import TrainingEvent
from registry.rules.reports import plan_rollback
from registry.rules.versions import PENDING_TAG
from tests.fakes import Crash
from tests.support import Clock, fake_services, local_services

HOUR = 3600.0
POLICY = """
defaults:
  remind_every: 1h
  approval_expires_after: 6h
models:
  canaried:
    canary: {duration: 10m}
  frozen:
    freeze:
      - {schedule: "0 16 * * FRI", duration: 64h, timezone: UTC, reason: weekend freeze}
"""
FRIDAY_5PM = 1_795_798_800.0  # 2026-11-27 17:00 UTC, an hour into the freeze


class Sweeps:
    """A scheduler's sweeps in one worker process: one memory across them."""

    def __init__(self, svc):
        self.svc, self.memory = svc, SweepMemory()

    def __call__(self) -> SweepReport:
        return sweep(self.svc, lambda name: nullcontext(), memory=self.memory)


def staged(svc, model: str, run: str = "run-1") -> str:
    return lifecycle.stage_training_event(svc, TrainingEvent(model, run), event_id=run).version


def pending(svc, model: str, version: str) -> bool:
    return svc.gateway.get_version(model, version).tags.get(PENDING_TAG) == "true"


def dies_after_writing(tag: str):
    """Return a fake's `die_after` that kills the process right after a write of `tag`."""
    return lambda op, version, arg: op == "set_tags" and tag in arg


def world(clock: Clock | None = None, **settings):
    svc = fake_services(clock=clock or Clock(FRIDAY_5PM - 48 * HOUR), policy=POLICY, **settings)
    return svc, Sweeps(svc)


# -- each duty, found through the pending tag ---------------------------------------------


def test_a_reminder_is_found_through_the_pending_tag():
    svc, sweeps = world()
    version = staged(svc, "churn")
    assert pending(svc, "churn", version)
    assert sweeps().read_in_full == ["churn"]  # the process's first sweep
    svc.clock.advance(2 * HOUR)
    report = sweeps()
    assert report.done == {"reminded": [("churn", version)]}
    assert report.read_in_full == []


def test_an_expiry_is_found_and_the_tag_then_cleared():
    svc, sweeps = world()
    version = staged(svc, "churn")
    sweeps()
    svc.clock.advance(7 * HOUR)
    report = sweeps()
    assert report.done == {"expired": [("churn", version)]} and report.read_in_full == []
    assert not pending(svc, "churn", version)  # archived and announced: nothing to watch
    assert sweeps().read_in_full == ["churn"]  # its archiving moved the model: read once
    assert sweeps() == SweepReport()  # then nothing at all


def test_a_canary_window_end_is_found_through_the_pending_tag():
    svc, sweeps = world()
    version = staged(svc, "canaried")
    assert lifecycle.approve(svc, "canaried", version, user="UA") == "canary_started"
    sweeps()
    svc.clock.advance(11 * 60)
    report = sweeps()
    assert report.done == {"promoted": [("canaried", version)]} and report.read_in_full == []
    assert svc.gateway.get_version("canaried", version).stage == "Production"


def test_the_end_of_a_freeze_is_found_through_the_pending_tag():
    svc, sweeps = world(Clock(FRIDAY_5PM))
    version = staged(svc, "frozen")
    assert lifecycle.approve(svc, "frozen", version, user="UA") == "frozen"
    assert sweeps().done == {}
    svc.clock.advance(64 * HOUR)
    report = sweeps()
    assert report.done == {"promoted": [("frozen", version)]} and report.read_in_full == []


def test_a_decision_a_dead_worker_left_unannounced_is_finished():
    svc, sweeps = world()
    version = staged(svc, "churn")
    sweeps()
    svc.gateway.die_after = dies_after_writing("registry_bot.decision")
    with pytest.raises(Crash):
        lifecycle.approve(svc, "churn", version, user="UA")  # died before anything moved
    report = sweeps()
    assert report.done == {"promoted": [("churn", version)]} and report.read_in_full == []
    assert svc.gateway.get_version("churn", version).tag("announced")


def test_a_rollback_a_dead_worker_left_before_moving_is_finished():
    svc, sweeps = world()
    for run in ("run-1", "run-2"):
        assert lifecycle.approve(svc, "churn", staged(svc, "churn", run), user="UA") == "promoted"
    sweeps()
    plan = plan_rollback(svc.gateway.versions("churn"), "churn", "", "drift")
    svc.gateway.die_after = lambda op, v, arg: (
        op == "set_tags" and "registry_bot.rollback_at" in arg
    )
    with pytest.raises(Crash):
        operations.rollback(svc, plan, user="UB", channel="COPS", response_url="")
    assert pending(svc, "churn", "1")  # the intent puts the target on the sweep's watch
    report = sweeps()
    assert report.done == {"rolled_back": [("churn", "1")]} and report.read_in_full == []
    assert svc.gateway.get_version("churn", "1").stage == "Production"


def test_a_revert_a_dead_worker_left_is_finished():
    svc, sweeps = world()  # a policy file: protect_production is alert
    assert lifecycle.approve(svc, "churn", staged(svc, "churn"), user="UA") == "promoted"
    sweeps()
    svc.gateway.move("churn", "1", "Archived")  # by hand, in the MLflow UI
    report = sweeps()
    assert report.done == {"out_of_band": [("churn", "1")]} and report.read_in_full == ["churn"]
    key = json.loads(svc.gateway.get_version("churn", "1").tag("oob_alert"))["key"]
    svc.gateway.die_after = dies_after_writing("registry_bot.revert_intent")
    with pytest.raises(Crash):
        protection.revert(svc, "churn", key=key, user="UA")  # the click's task died
    report = sweeps()
    assert report.done == {"reverted": [("churn", "1")]} and report.read_in_full == []
    assert svc.gateway.get_version("churn", "1").stage == "Production"


# -- what a change of the model brings in ---------------------------------------------


def test_a_version_staged_by_hand_gets_its_notice_from_a_full_look():
    svc, sweeps = world()
    svc.gateway.register_elsewhere("churn", "run-x")
    sweeps()
    svc.gateway.move("churn", "1", "Staging")
    report = sweeps()
    assert report.done == {"noticed": [("churn", "1")]} and report.read_in_full == ["churn"]
    assert pending(svc, "churn", "1")


def test_a_lost_delivery_is_caught_up_on_a_model_read_before():
    svc, sweeps = world(mlflow_webhook_secret="s")
    staged(svc, "churn")
    sweeps()
    svc.gateway.register_elsewhere("churn", "run-elsewhere")
    assert sweeps().done == {"caught_up": [("churn", "2")]}
    assert pending(svc, "churn", "2")


def test_an_unchanged_model_without_pending_versions_is_not_read():
    svc, sweeps = world()
    for run in ("run-1", "run-2", "run-3"):
        assert lifecycle.approve(svc, "churn", staged(svc, "churn", run), user="UA") == "promoted"
    staged(svc, "fraud")
    assert sorted(sweeps().read_in_full) == ["churn", "fraud"]
    assert [pending(svc, "churn", v) for v in "123"] == [False, False, False]  # cleared
    svc.clock.advance(2 * HOUR)
    report = sweeps()
    assert report.done == {"reminded": [("fraud", "1")]} and report.read_in_full == []


def test_a_full_look_a_busy_lock_put_off_is_done_later():
    from registry.ports.locks import LockBusy

    svc, sweeps = world()
    staged(svc, "churn")
    sweeps()
    svc.gateway.register_elsewhere("churn", "run-x")
    svc.gateway.move("churn", "2", "Staging")
    busy = {"churn"}

    def lock(name):
        if name in busy:
            raise LockBusy(name)
        return nullcontext()

    assert sweep(svc, lock, memory=sweeps.memory).done == {}
    svc.clock.advance(2 * 60)
    svc.gateway.register_elsewhere("fraud", "run-f")  # newer: churn leaves the listing
    assert sweep(svc, lock, memory=sweeps.memory).read_in_full == ["fraud"]
    busy.clear()
    report = sweep(svc, lock, memory=sweeps.memory)
    assert report.read_in_full == ["churn"] and report.done == {"noticed": [("churn", "2")]}


# -- versions from before the tag ------------------------------------------------------


def test_a_version_from_before_the_tag_is_found_by_a_process_first_sweep():
    svc, old_process = world()
    version = staged(svc, "churn")
    old_process()
    svc.gateway.delete_tags("churn", version, [PENDING_TAG])  # as an older release left it
    new_process = Sweeps(svc)
    assert new_process().read_in_full == ["churn"]
    assert pending(svc, "churn", version)  # tagged by that first full look
    svc.clock.advance(2 * HOUR)
    report = new_process()
    assert report.done == {"reminded": [("churn", version)]} and report.read_in_full == []


def test_needs_sweep_says_what_the_sweep_watches():
    svc, _ = world()
    version = staged(svc, "churn")
    mv = svc.gateway.get_version("churn", version)
    assert needs_sweep(mv)  # a notice awaiting its decision
    lifecycle.approve(svc, "churn", version, user="UA")
    assert not needs_sweep(svc.gateway.get_version("churn", version))  # promoted, announced


# -- against real MLflow ---------------------------------------------------------------


@pytest.fixture(scope="module")
def private_mlflow(tmp_path_factory):
    """An MLflow server of this module's own: the sweep lists every model on its server."""
    port = free_port()
    proc = start_mlflow_server(port, tmp_path_factory.mktemp("sweep-mlflow"))
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def add_versions(client: MlflowClient, model: str, count: int, **tags: str) -> list[str]:
    """Register `count` versions of `model` as registry-bot would, decided and done."""
    with contextlib.suppress(MlflowException):  # it exists already
        client.create_registered_model(model)
    made = []
    for _ in range(count):
        mv = client.create_model_version(
            model,
            f"s3://sweep-test/{model}/model",
            tags={"registry_bot.created_by": "registry-bot", **tags},
            await_creation_for=0,
        )
        made.append(str(mv.version))
    return made


def counted(do) -> int:
    """Count the MLflow REST requests `do()` makes."""
    calls, real = [0], rest_utils.http_request

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    rest_utils.http_request = counting
    try:
        do()
    finally:
        rest_utils.http_request = real
    return calls[0]


def test_real_mlflow_a_version_from_before_the_tag_is_swept_and_tags_leave_the_model_alone(
    private_mlflow, slack
):
    clock = Clock(time.time())
    svc = local_services(private_mlflow, slack, clock=clock, policy=POLICY)
    (version,) = add_versions(MlflowClient(private_mlflow), "legacy", 1)
    lifecycle.stage_version(svc, "legacy", version, event_id="legacy-1")
    svc.gateway.delete_tags("legacy", version, [PENDING_TAG])  # as an older release left it
    sweeps = Sweeps(svc)
    assert "legacy" in sweeps().read_in_full
    assert pending(svc, "legacy", version)
    clock.advance(2 * HOUR)
    report = sweeps()  # the tag writes above did not move the model's update time
    assert report.done == {"reminded": [("legacy", version)]}
    assert report.read_in_full == []
    svc.gateway.move("legacy", version, "Archived")  # a stage change does move it
    assert sweeps().read_in_full == ["legacy"]
    assert not pending(svc, "legacy", version)


def test_real_mlflow_an_idle_sweep_makes_the_same_calls_on_a_registry_ten_times_bigger(
    private_mlflow, slack
):
    clock = Clock(time.time())
    svc = local_services(private_mlflow, slack, clock=clock)
    client = MlflowClient(private_mlflow)
    add_versions(client, "idle-0", 10)
    sweeps = Sweeps(svc)
    sweeps()  # the first, full, read
    clock.advance(60)  # the scheduler's interval: the newest update is a minute old
    small = counted(sweeps)
    for i in range(1, 5):
        add_versions(client, f"idle-{i}", 25)
    sweeps()  # the new models: read in full once
    clock.advance(60)
    big = counted(sweeps)
    assert big == small
    everything = counted(lambda: sweep(svc, lambda name: nullcontext()))  # a first sweep
    assert everything > 4 * big  # what every sweep cost before
