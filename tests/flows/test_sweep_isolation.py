"""One model's failure never starves the sweep; a version registered and never staged is finished.

A channel the bot was never invited to, a malformed tag, a version deleted between the
listing and the read, a message Slack refuses: each is logged with its model and version,
counted, and its model retried with backoff, while every other model is swept as usual.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import pytest

from registry.flows import lifecycle
from registry.flows.sweep import BACKOFF_MAX, SweepMemory, needs_sweep, sweep
from registry.rules.events import TrainingEvent
from registry.rules.versions import PENDING_TAG
from tests.fakes import Crash
from tests.support import Clock, fake_services

POLICY = """
models:
  muted:
    channel: CMUTED
"""


class Refused(Exception):
    """What Slack answers a post to a channel the bot is not in (not_in_channel)."""


def refusing(svc, refused: str) -> None:
    """Make every post and reply to `refused` fail, as Slack does outside the bot's channels."""
    post, reply = svc.notifier.post, svc.notifier.reply

    def refused_post(text, blocks, *, channel: str = "", **meta):
        if channel == refused:
            raise Refused("not_in_channel")
        return post(text, blocks, channel=channel, **meta)

    def refused_reply(where, thread_ts, text, **meta):
        if where == refused:
            raise Refused("not_in_channel")
        return reply(where, thread_ts, text, **meta)

    svc.notifier.post, svc.notifier.reply = refused_post, refused_reply


def staged_by_hand(svc, model: str) -> None:
    svc.gateway.register_elsewhere(model, f"run-{model}")
    svc.gateway.move(model, "1", "Staging")  # no notice yet: the sweep owes one


def sweeps(svc, clock, memory, count: int, every: float = 60.0) -> list[dict]:
    """Run `count` sweeps, `every` seconds apart; return what each did and what failed."""
    found = []
    for _ in range(count):
        report = sweep(svc, lambda name: nullcontext(), memory=memory)
        done = {k: [m for m, _ in v] for k, v in report.done.items()}
        found.append({**done, "failed": [(m, v) for m, v, _ in report.failures]})
        clock.advance(every)
    return found


def test_a_model_whose_channel_refuses_every_post_does_not_stop_the_others(caplog):
    clock = Clock(1_000_000.0)
    svc = fake_services(clock=clock, policy=POLICY)
    refusing(svc, "CMUTED")
    staged_by_hand(svc, "muted")  # every post to its channel is refused
    staged_by_hand(svc, "churn")  # needs its notice like any other
    memory = SweepMemory()
    with caplog.at_level(logging.WARNING):
        first = sweeps(svc, clock, memory, 1)
    assert first == [{"noticed": ["churn"], "failed": [("muted", "1")]}]
    assert svc.gateway.get_version("churn", "1").tag("notice_ts")
    failed = [r for r in caplog.records if "sweep failed" in r.getMessage()]
    assert [(r.model, r.version) for r in failed] == [("muted", "1")]  # type: ignore[attr-defined]
    # Then the failing model waits longer each time (1, 2, 4 ... sweeps), the others do not.
    later = sweeps(svc, clock, memory, 8)
    tried = [i + 1 for i, result in enumerate(later) if result["failed"]]
    assert tried == [2, 6], later  # after 120 s, then after 240 s more


def test_the_backoff_is_capped_and_a_recovered_model_is_swept_every_time_again():
    clock = Clock(1_000_000.0)
    svc = fake_services(clock=clock, policy=POLICY)
    refusing(svc, "CMUTED")
    staged_by_hand(svc, "muted")
    memory = SweepMemory()
    results = sweeps(svc, clock, memory, 12, every=BACKOFF_MAX / 2)
    assert sum(1 for r in results if r["failed"]) >= 5  # never more than BACKOFF_MAX apart
    svc.notifier.post = type(svc.notifier).post.__get__(svc.notifier)  # invited at last
    clock.advance(BACKOFF_MAX)
    assert sweeps(svc, clock, memory, 1) == [{"noticed": ["muted"], "failed": []}]


@pytest.mark.parametrize("broken", ["malformed tag", "deleted version"])
def test_a_broken_version_is_counted_and_the_rest_of_the_sweep_goes_on(broken):
    clock = Clock(1_000_000.0)
    svc = fake_services(clock=clock)
    staged_by_hand(svc, "aaa")
    staged_by_hand(svc, "zzz")
    if broken == "malformed tag":  # anyone may edit a tag in MLflow's UI
        svc.gateway.set_tags("aaa", "1", {"registry_bot.metrics": "{not json"})
    else:  # deleted between the listing and the read
        get = svc.gateway.get_version
        svc.gateway.get_version = lambda name, version: (  # type: ignore[method-assign]
            svc.gateway.models["aaa"].pop("1") and get(name, version)
            if name == "aaa"
            else get(name, version)
        )
    result = sweeps(svc, clock, SweepMemory(), 1)
    assert result == [{"noticed": ["zzz"], "failed": [("aaa", "1")]}]


# -- a version registered and never staged ------------------------------------------------------


def test_a_version_registered_and_never_staged_is_finished_by_the_sweep():
    svc = fake_services()
    svc.gateway.die_after = lambda op, version, arg: op == "register"  # the worker died here
    with pytest.raises(Crash):
        lifecycle.stage_training_event(svc, TrainingEvent("churn", "run-1"), event_id="e1")
    mv = svc.gateway.get_version("churn", "1")
    assert (mv.stage, mv.tags.get(PENDING_TAG)) == ("None", "true") and needs_sweep(mv)
    memory = SweepMemory()
    assert sweep(svc, lambda name: nullcontext(), memory=memory).done == {
        "noticed": [("churn", "1")]
    }
    mv = svc.gateway.get_version("churn", "1")
    assert mv.stage == "Staging" and mv.tag("notice_ts") and len(svc.notifier.posts) == 1
    assert mv.tags.get(PENDING_TAG) == "true"  # the notice awaits its decision: still watched
    assert sweep(svc, lambda name: nullcontext(), memory=memory).done == {}
    assert len(svc.notifier.posts) == 1


def test_a_version_kept_out_of_staging_by_its_gates_is_done_once_noticed():
    svc = fake_services(policy="defaults:\n  gates: [{metric: accuracy, min: 0.99}]\n")
    svc.gateway.add_run("run-1", {"accuracy": 0.5})
    lifecycle.stage_training_event(svc, TrainingEvent("churn", "run-1"), event_id="e1")
    mv = svc.gateway.get_version("churn", "1")
    assert (mv.stage, mv.tag("gates")) == ("None", "failed") and mv.tag("notice_ts")
    assert not needs_sweep(mv)  # nothing left to do: the pending mark may go


def test_what_the_sweep_left_is_counted_by_kind():
    from mlflow.exceptions import MlflowException
    from prometheus_client import REGISTRY
    from slack_sdk.errors import SlackApiError

    from registry.flows.sweep import SweepReport
    from registry.rules.versions import VersionNotFound
    from worker.tasks import count_sweep_failures

    def counted(kind: str) -> float:
        return REGISTRY.get_sample_value("registry_bot_sweep_failures_total", {"kind": kind}) or 0

    before = {kind: counted(kind) for kind in ("slack", "mlflow", "data", "other")}
    report = SweepReport()
    for exc in (
        SlackApiError("not_in_channel", {"ok": False, "error": "not_in_channel"}),
        MlflowException("down"),
        VersionNotFound("churn has no version 3"),
        ValueError("Expecting property name"),
        RuntimeError("who knows"),
    ):
        report.failures.append(("churn", "3", exc))
    count_sweep_failures(report)
    after = {kind: counted(kind) - before[kind] for kind in before}
    assert after == {"slack": 1, "mlflow": 2, "data": 1, "other": 1}
