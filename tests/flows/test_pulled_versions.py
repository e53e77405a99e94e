"""A version a person pulled from Production is never proposed again without a word.

ada rolls churn back from v3 to v2 because v3 misbehaves; an alert on v2 then must not
propose v3 silently: the guard's plan and the `rollback` command pass over v3 for the one
before it and say why; naming v3 outright is allowed, and the plan says who pulled it.
"""

from __future__ import annotations

from registry.flows import lifecycle, operations
from registry.flows.alerts import handle_alert
from registry.flows.recording import record
from registry.rules.events import ModelAlert, TrainingEvent
from registry.rules.reports import plan_rollback, pulled_entry
from registry.views.plans import plan_blocks
from tests.support import fake_services

MODEL = "churn"
ADA = "UADA"


def alert(fingerprint: str = "f1") -> ModelAlert:
    return ModelAlert(
        model_name=MODEL,
        status="firing",
        fingerprint=fingerprint,
        starts_at="2027-01-15T08:00:00Z",
        alertname="PredictionErrorRate",
        summary="More than 5% of predictions fail",
    )


def promoted(runs: int):
    """Return services with v1..v`runs` each promoted over the one before."""
    svc = fake_services(approvers=("UA", ADA))
    for run in range(1, runs + 1):
        event = TrainingEvent(MODEL, f"run-{run}")
        staged = lifecycle.stage_training_event(svc, event, event_id=f"e{run}")
        assert lifecycle.approve(svc, MODEL, staged.version, user="UA") == "promoted"
        svc.clock.advance(60)
    return svc


def roll_back_from_latest(svc, target: str, reason: str = "v3 misbehaves") -> None:
    plan = plan_rollback(svc.gateway.versions(MODEL), MODEL, target, reason)
    assert operations.rollback(svc, plan, user=ADA, channel="COPS", response_url="") == (
        "rolled_back"
    )
    svc.clock.advance(60)


def production(svc) -> str:
    return next(mv.version for mv in svc.gateway.versions(MODEL) if mv.stage == "Production")


def test_an_alert_after_a_rollback_passes_over_the_version_rolled_back_from():
    svc = promoted(3)
    roll_back_from_latest(svc, "2")  # ada: v3 -> v2
    posts_before = len(svc.notifier.posts)
    assert handle_alert(svc, alert()) == "proposed"
    [(text, _)] = svc.notifier.posts[posts_before:]
    assert "Roll churn back from v2 to v1?" in text
    assert "Passed over: v3 was rolled back from by <@UADA>" in text
    assert "(v3 misbehaves)" in text
    assert production(svc) == "2"  # a plan moves nothing


def test_the_rollback_command_passes_over_it_too_and_says_so():
    svc = promoted(3)
    roll_back_from_latest(svc, "2")
    plan = plan_rollback(svc.gateway.versions(MODEL), MODEL, "", "")
    assert (plan.current, plan.target) == ("2", "1")
    text, _ = plan_blocks(plan)
    assert "Passed over: v3 was rolled back from by <@UADA>" in text


def test_after_ada_rolls_back_from_v3_to_v1_an_alert_on_v1_never_proposes_v3():
    svc = promoted(3)
    roll_back_from_latest(svc, "1")  # ada: v3 -> v1, because v3 misbehaves
    posts_before = len(svc.notifier.posts)
    assert handle_alert(svc, alert()) == "proposed"
    [(text, _)] = svc.notifier.posts[posts_before:]
    assert "Roll churn back from v1 to v2?" in text and "to v3" not in text
    assert "Passed over: v3 was rolled back from by <@UADA>" in text
    assert "(v3 misbehaves)" in text
    assert production(svc) == "1"


def test_with_nothing_else_to_restore_the_alert_says_no_plan_and_why_once():
    svc = promoted(2)
    roll_back_from_latest(svc, "1", reason="v2 misbehaves")  # v2 -> v1: v2 is the only other
    posts_before = len(svc.notifier.posts)
    assert handle_alert(svc, alert()) == "no plan"
    [(text, _)] = svc.notifier.posts[posts_before:]
    assert svc.notifier.blocks[-1] == []  # nothing to confirm
    assert "*Alert PredictionErrorRate* is firing for *churn* v1" in text
    assert "*No rollback plan:* there is no earlier Production version to roll back to" in text
    assert "that nobody pulled. v2 was rolled back from by <@UADA>" in text
    assert "(v2 misbehaves)" in text and "Nothing was changed." in text
    assert "`/registry rollback churn &lt;version&gt;`" in text
    assert production(svc) == "1"
    # Alertmanager repeats a firing alert: it is said once.
    assert handle_alert(svc, alert()) == "duplicate"
    assert len(svc.notifier.posts) == posts_before + 1


def test_with_no_earlier_version_at_all_the_alert_says_no_plan():
    svc = promoted(1)
    posts_before = len(svc.notifier.posts)
    assert handle_alert(svc, alert()) == "no plan"
    [(text, _)] = svc.notifier.posts[posts_before:]
    assert "*No rollback plan:* there is no earlier Production version to roll back to." in text
    assert "nobody pulled" not in text and production(svc) == "1"


def test_a_version_rejected_after_it_served_is_passed_over_and_named():
    svc = promoted(3)
    v2 = svc.gateway.get_version(MODEL, "2")
    record(svc, v2, "rejected", actor="UA", reason="it leaks customer ids")
    posts_before = len(svc.notifier.posts)
    assert handle_alert(svc, alert()) == "proposed"
    [(text, _)] = svc.notifier.posts[posts_before:]
    assert "Roll churn back from v3 to v1?" in text
    assert "Passed over: v2 was rejected by <@UA>" in text


def test_a_version_reverted_out_of_production_is_pulled():
    svc = promoted(3)
    v2 = svc.gateway.get_version(MODEL, "2")
    v2 = record(svc, v2, "archived", actor="UA", reason="reverted to v3", details={"via": "revert"})
    assert pulled_entry(v2) is not None
    plan = plan_rollback(svc.gateway.versions(MODEL), MODEL, "", "")
    assert (plan.current, plan.target) == ("3", "1")
    assert "v2 was reverted out of Production by <@UA>" in plan.pulled


def test_with_nothing_else_to_restore_the_command_proposes_it_naming_who_pulled_it_and_why():
    svc = promoted(2)
    roll_back_from_latest(svc, "1", reason="v2 misbehaves")
    plan = plan_rollback(svc.gateway.versions(MODEL), MODEL, "", "")
    assert (plan.current, plan.target) == ("1", "2")
    text, _ = plan_blocks(plan)
    assert "Note: v2 was rolled back from by <@UADA>" in text
    assert "(v2 misbehaves)" in text and "Confirm only if that no longer holds." in text


def test_naming_the_pulled_version_is_allowed_and_the_plan_says_who_pulled_it_and_why():
    svc = promoted(3)
    roll_back_from_latest(svc, "2")
    plan = plan_rollback(svc.gateway.versions(MODEL), MODEL, "3", "fixed upstream")
    assert (plan.current, plan.target) == ("2", "3")
    text, _ = plan_blocks(plan)
    assert "Note: v3 was rolled back from by <@UADA>" in text
    assert "Confirm only if that no longer holds." in text


def test_a_version_that_served_again_since_it_was_pulled_is_an_ordinary_candidate():
    svc = promoted(3)
    roll_back_from_latest(svc, "2")  # v3 pulled
    roll_back_from_latest(svc, "3", reason="the upstream fix is in")  # v3 restored, v2 pulled
    plan = plan_rollback(svc.gateway.versions(MODEL), MODEL, "", "")
    # v2 was just pulled by ada: passed over; v1 is the one before it.
    assert (plan.current, plan.target) == ("3", "1")
    assert "v2 was rolled back from" in plan.pulled and "v3" not in plan.pulled
