"""Click rules and Block Kit builders: pure functions, tested by equality."""

from __future__ import annotations

import pytest

from registry.decisions import Clicker, approvals_on, judge_approval, judge_rejection
from registry.gateway import ModelVersion
from registry.messages import (
    APPROVE_ACTION,
    NoticeFacts,
    Outcome,
    button_value,
    decided_notice,
    metrics_table,
    parse_button_value,
    reject_modal,
    staging_notice,
)

APPROVER = Clicker("UAPPROVER1", "ada@example.com", is_approver=True)


def version(stage="Staging", **tags) -> ModelVersion:
    return ModelVersion("churn", "3", stage, tags={f"registry_bot.{k}": v for k, v in tags.items()})


def test_an_approver_promotes_at_the_last_required_approval():
    assert judge_approval(version(), APPROVER, required=1).action == "promote"
    assert judge_approval(version(), APPROVER, required=2).action == "count"
    assert judge_approval(version(approvals="UAPPROVER2"), APPROVER, required=2).action == "promote"


def test_the_same_approver_never_counts_twice():
    verdict = judge_approval(version(approvals="UAPPROVER1"), APPROVER, required=2)
    assert verdict.action == "done" and "1 of 2" in verdict.message


@pytest.mark.parametrize(
    ("clicker", "tags", "says"),
    [
        (Clicker("UOUTSIDER"), {}, "not one"),
        (Clicker("UX", is_approver=True, nobody_may_approve=True), {}, "No approvers"),
        (APPROVER, {"requested_by": "UAPPROVER1"}, "someone else"),
        (APPROVER, {"requested_by": "ADA@example.com"}, "someone else"),
        (APPROVER, {"requested_by": "x@y.z", "requested_by_user": "UAPPROVER1"}, "someone else"),
    ],
)
def test_refusals(clicker, tags, says):
    verdict = judge_approval(version(**tags), clicker, required=1)
    assert verdict.action == "refused" and says in verdict.message


def test_a_decided_or_moved_version_changes_nothing_and_says_by_whom():
    decided = version(decision="approved", decided_by="UAPPROVER2", decided_at="1700000000")
    verdict = judge_approval(decided, APPROVER, required=1)
    assert verdict.action == "done"
    assert "already approved by <@UAPPROVER2> at 2023-11-14 22:13 UTC" in verdict.message
    moved = judge_rejection(version(stage="Production"), APPROVER)
    assert (
        moved.action == "done" and "now Production" in moved.message and "MLflow" in moved.message
    )


def test_rejection_needs_an_approver_but_the_requester_may_withdraw():
    assert judge_rejection(version(), Clicker("UOUTSIDER")).action == "refused"
    assert judge_rejection(version(requested_by="UAPPROVER1"), APPROVER).action == "reject"


def test_approvals_are_read_in_order():
    assert approvals_on(version(approvals="U1,U2,")) == ["U1", "U2"]


FACTS = NoticeFacts(
    model_name="churn",
    version="3",
    run_id="abcdef1234567890",
    run_url="http://ui/#/r",
    version_url="http://ui/#/v",
    requested_by="UREQUESTER",
    git_commit="0123456789abcdef",
    metrics={"accuracy": 0.93, "f1": 0.8},
    production_version="2",
    production_metrics={"accuracy": 0.91},
    approvals=("UAPPROVER1",),
    required_approvals=2,
)


def _buttons(blocks):
    return [el for b in blocks if b["type"] == "actions" for el in b["elements"]]


def test_staging_notice_has_exactly_approve_and_reject():
    text, blocks = staging_notice(FACTS)
    assert text == "churn v3 is in Staging and needs approval"
    found = _buttons(blocks)
    assert [b["text"]["text"] for b in found] == ["Approve", "Reject"]
    assert found[0]["action_id"] == APPROVE_ACTION
    assert parse_button_value(found[0]["value"]) == ("churn", "3")
    flat = str(blocks)
    assert "1 of 2 approvals (<@UAPPROVER1>)" in flat
    assert "<http://ui/#/v|churn v3>" in flat and "0123456789ab" in flat and "<@UREQUESTER>" in flat


def test_notice_warns_when_nobody_may_approve():
    _, blocks = staging_notice(NoticeFacts("churn", "1", nobody_may_approve=True))
    assert "nobody can approve" in str(blocks)


def test_decided_notice_has_no_buttons_and_names_the_decider():
    _, blocks = decided_notice(
        FACTS, Outcome("Rejected", ["UAPPROVER2"], 1700000000, "bad <drift>")
    )
    assert _buttons(blocks) == []
    flat = str(blocks)
    assert "*Rejected* by <@UAPPROVER2> at 2023-11-14 22:13 UTC" in flat
    assert "bad &lt;drift&gt;" in flat


def test_metrics_table_shows_the_difference():
    table = metrics_table({"accuracy": 0.93, "f1": 0.8}, {"accuracy": 0.91})
    assert "accuracy | 0.93 | 0.91 | +0.02" in table
    assert "f1 | 0.8 | – | –" in table
    assert metrics_table({}, {}) == "_no metrics recorded_"


def test_button_values_round_trip_and_foreign_ones_are_refused():
    assert parse_button_value(button_value("m", "12")) == ("m", "12")
    for bad in ('{"model": "m"}', "[1]", "nope"):
        with pytest.raises(ValueError):
            parse_button_value(bad)


def test_reject_modal_requires_a_reason():
    view = reject_modal("churn", "3", channel="C1", message_ts="1.2")
    assert view["callback_id"] == "reject_reason"
    assert view["blocks"][0]["type"] == "input" and not view["blocks"][0].get("optional")
