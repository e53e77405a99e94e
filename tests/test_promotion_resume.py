"""Resuming a promotion a killed worker left half done, against the in-memory registry."""

from __future__ import annotations

import itertools

import pytest

from registry import lifecycle
from registry.events import TrainingEvent
from registry.record import history_of
from registry.services import Services
from registry.settings import Settings
from registry.sweep import sweep
from tests.fakes import Crash, FakeDirectory, FakeGateway, RecordingNotifier

MODEL = "churn"


@pytest.fixture
def svc() -> Services:
    gateway, ticks = FakeGateway(), itertools.count(1_000_000)
    settings = Settings(mlflow_tracking_uri="fake", slack_channel="CNOTICES", approvers=("UA",))
    return Services(
        gateway=gateway,
        notifier=RecordingNotifier(),
        settings=settings,
        directory=FakeDirectory(["UA"]),
        clock=lambda: float(next(ticks)),
    )


def staged(svc: Services, count: int) -> list[str]:
    versions = []
    for run in range(count):
        svc.gateway.add_run(f"run{run}", {"accuracy": 0.9})  # type: ignore[attr-defined]
        event = TrainingEvent(MODEL, f"run{run}", requested_by="URITA")
        versions.append(lifecycle.stage_training_event(svc, event, event_id=f"e{run}").version)
    return versions


def decide(svc: Services, version: str, **tags: str) -> None:
    """Write an approval decision as lifecycle.approve does, as far as a killed worker got."""
    svc.gateway.set_tags(MODEL, version, {f"registry_bot.{k}": v for k, v in tags.items()})


def changes(svc: Services, version: str) -> list[str]:
    return [e["type"] for e in history_of(svc.gateway.get_version(MODEL, version))]


def test_a_resumed_promotion_never_brings_back_a_version_replaced_since(svc):
    v1, v2, v3 = staged(svc, 3)
    lifecycle.approve(svc, MODEL, v1, user="UA")
    # v2's worker recorded its decision, moved it to Production and died.
    decide(svc, v2, decision="approved", decided_by="UA", decided_at="1000000.5", replaces=v1)
    svc.gateway.move(MODEL, v2, "Production")
    lifecycle.approve(svc, MODEL, v3, user="UA")  # the approvers' latest choice
    lifecycle.approve(svc, MODEL, v2, user="UA")  # v2's task, redelivered
    sweep(svc, lambda name: _nothing(), [MODEL])
    assert [mv.version for mv in svc.gateway.versions(MODEL) if mv.stage == "Production"] == [v3]
    assert changes(svc, v3)[-1] == "promoted"
    assert changes(svc, v1)[-1] == changes(svc, v2)[-1] == "archived"
    replies = [text for _, text in svc.notifier.replies]  # type: ignore[attr-defined]
    assert not [r for r in replies if f"v{v2} is now Production" in r]


def test_a_decision_cut_short_still_records_the_version_it_replaced(svc):
    v1, v2 = staged(svc, 2)
    lifecycle.approve(svc, MODEL, v1, user="UA")
    # Killed after the first two of the decision's tags: no decided_at, no replaces.
    decide(svc, v2, decision="approved", decided_by="UA")
    sweep(svc, lambda name: _nothing(), [MODEL])
    assert svc.gateway.get_version(MODEL, v2).stage == "Production"
    old = history_of(svc.gateway.get_version(MODEL, v1))[-1]
    assert (old["type"], old["reason"], old["actor"]) == ("archived", f"replaced by v{v2}", "UA")


def test_a_promotion_replaced_before_its_thread_was_told_is_told_once_in_the_past(svc):
    v1, v2 = staged(svc, 2)
    # v1's worker recorded that it entered Production, then died before telling the thread.
    svc.gateway.die_after = (  # type: ignore[attr-defined]
        lambda op, version, arg: (
            op == "set_tags" and version == v1 and "registry_bot.production_since" in arg
        )
    )
    with pytest.raises(Crash):
        lifecycle.approve(svc, MODEL, v1, user="UA")
    lifecycle.approve(svc, MODEL, v2, user="UA")  # replaces v1 before v1's task came back
    for _ in range(2):
        sweep(svc, lambda name: _nothing(), [MODEL])
    replies = [text for _, text in svc.notifier.replies]  # type: ignore[attr-defined]
    told_v1 = [r for r in replies if f"v{v1} was promoted to Production, approved by" in r]
    assert len(told_v1) == 1 and "replaced it since" in told_v1[0]
    assert not [r for r in replies if f"v{v1} is now Production" in r]
    assert changes(svc, v1)[-2:] == ["promoted", "archived"]
    assert svc.gateway.get_version(MODEL, v1).tag("announced")


def _nothing():
    from contextlib import nullcontext

    return nullcontext()
