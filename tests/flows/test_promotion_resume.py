"""Resuming a promotion a killed worker left half done, against the in-memory registry."""

from __future__ import annotations

import itertools

import pytest

from registry.flows import lifecycle, operations
from registry.flows.sweep import sweep
from registry.ports.services import Services
from registry.rules.events import TrainingEvent
from registry.rules.record import history_of
from registry.rules.reports import plan_rollback
from registry.rules.settings import Settings
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


def test_a_promotion_that_died_after_archiving_what_it_replaced_redraws_that_notice(svc):
    # Found by the state machine. v3's decision named v2 as the version it replaces; a
    # rollback to v1 came between; v3's run then archived v1, recorded it and died before
    # redrawing v1's notice. The rerun counted only `replaces` and versions with no record
    # of leaving, so v1's notice said "Production again" for ever.
    v1, v2, v3 = staged(svc, 3)
    for version in (v1, v2):
        lifecycle.approve(svc, MODEL, version, user="UA")
    decide(svc, v3, decision="approved", decided_by="UA", decided_at="1000000.5", replaces=v2)
    plan = plan_rollback(svc.gateway.versions(MODEL), MODEL, v1, "drift")
    operations.rollback(svc, plan, user="UA", channel="CNOTICES", response_url="")
    svc.gateway.die_after = (  # type: ignore[attr-defined]
        lambda op, version, arg: op == "set_tags" and version == v1 and "registry_bot.log" in arg
    )
    with pytest.raises(Crash):
        lifecycle.approve(svc, MODEL, v3, user="UA")  # finishes v3's decision, and dies
    sweep(svc, lambda name: _nothing(), [MODEL])
    v1_ts = svc.gateway.get_version(MODEL, v1).tag("notice_ts")
    last = [text for ts, text in svc.notifier.updates if ts == v1_ts][-1]  # type: ignore[attr-defined]
    assert svc.gateway.get_version(MODEL, v1).stage == "Archived"
    assert "archived" in last.lower(), last


def _nothing():
    from contextlib import nullcontext

    return nullcontext()


def test_a_rollback_to_a_version_whose_approval_died_finishes_that_approval(svc):
    # Found by the state machine: v2's approval died before promoting it; a rollback then
    # made v2 Production, and a second rollback, back to v1, died after its first write.
    # The sweep promoted v2 "again" after its rollback and archived it with a
    # production_until earlier than that new production_since.
    v1, v2 = staged(svc, 2)
    lifecycle.approve(svc, MODEL, v1, user="UA")
    decide(svc, v2, decision="approved", decided_by="UA", decided_at="1000000.5", replaces=v1)
    to_v2 = plan_rollback(svc.gateway.versions(MODEL), MODEL, v2, "v1 drifts")
    assert operations.rollback(svc, to_v2, user="UA", channel="CNOTICES", response_url="") == (
        "rolled_back"
    )
    to_v1 = plan_rollback(svc.gateway.versions(MODEL), MODEL, v1, "v2 is worse")
    svc.gateway.die_after = lambda op, version, arg: True  # the first write
    with pytest.raises(Crash):
        operations.rollback(svc, to_v1, user="UA", channel="CNOTICES", response_url="")
    svc.gateway.die_after = None
    sweep(svc, lambda name: _nothing(), [MODEL])
    assert svc.gateway.production(MODEL).version == v1
    assert changes(svc, v2) == ["staged", "rolled_back", "archived"]  # never "promoted"
    archived = svc.gateway.get_version(MODEL, v2)
    assert archived.tag("production_until") >= archived.tag("production_since")
