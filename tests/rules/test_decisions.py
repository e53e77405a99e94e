"""Click rules and Block Kit builders: pure functions, tested by equality."""

from __future__ import annotations

from dataclasses import replace

import pytest

from registry.adapters.mlflow import ModelVersion
from registry.rules.decisions import (
    Clicker,
    approvals_on,
    judge_approval,
    judge_rejection,
    may_reject,
)
from registry.rules.reports import Outcome, Standing
from registry.views.modals import reject_modal
from registry.views.notice import (
    APPROVE_ACTION,
    MetricGate,
    NoticeFacts,
    button_requester,
    button_value,
    decided_notice,
    metrics_table,
    parse_button_value,
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


def test_rejection_needs_an_approver_but_the_requester_may_always_withdraw():
    refused = judge_rejection(version(requested_by="UREQUESTER"), Clicker("UOUTSIDER"))
    assert refused.action == "refused"
    assert "neither an approver nor the requester" in refused.message
    assert judge_rejection(version(requested_by="UREQUESTER"), APPROVER).action == "reject"
    requester = Clicker("UREQUESTER", "rita@example.com")  # not an approver
    assert judge_rejection(version(requested_by="UREQUESTER"), requester).action == "withdraw"
    by_email = version(requested_by="RITA@example.com")
    assert judge_rejection(by_email, requester).action == "withdraw"
    nobody = Clicker("UREQUESTER", nobody_may_approve=True)
    assert judge_rejection(version(requested_by="UREQUESTER"), nobody).action == "withdraw"
    assert judge_rejection(version(), Clicker("UX", nobody_may_approve=True)).action == "refused"


def test_a_requester_cannot_withdraw_a_version_already_decided():
    decided = version(stage="Archived", requested_by="UREQUESTER", decision="rejected")
    verdict = judge_rejection(decided, Clicker("UREQUESTER"))
    assert verdict.action == "done" and "already rejected" in verdict.message


@pytest.mark.parametrize(
    ("clicker", "requester", "refused"),
    [
        (APPROVER, "", False),
        (APPROVER, "UREQUESTER", False),
        (Clicker("UREQUESTER"), "UREQUESTER", False),
        (Clicker("UREQUESTER", "rita@example.com"), "Rita@Example.com", False),
        (Clicker("UOUTSIDER"), "UREQUESTER", True),
        (Clicker("UOUTSIDER"), "", True),
        (Clicker("UOUTSIDER", nobody_may_approve=True), "UREQUESTER", True),
    ],
)
def test_who_may_open_the_reject_modal(clicker, requester, refused):
    assert bool(may_reject(clicker, requester)) is refused


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


def test_a_decided_notice_says_where_the_version_stands_now():
    now = Standing("Approved, now Archived", "*Now Archived* since …, when v4 replaced it.")
    text, blocks = decided_notice(
        replace(FACTS, standing=now), Outcome("Approved", ["UAPPROVER1"], 1700000000)
    )
    assert text == "churn v3 approved, now archived"
    assert blocks[0]["text"]["text"] == "churn v3: Approved, now Archived"
    assert [b["text"]["text"] for b in blocks[-2:]] == [
        "*Approved* by <@UAPPROVER1> at 2023-11-14 22:13 UTC",
        "*Now Archived* since …, when v4 replaced it.",
    ]
    away = Standing("Approved, now Archived", "*Now Archived* since ….", "drift <in> EU")
    _, blocks = decided_notice(replace(FACTS, standing=away), Outcome("Approved", ["UA"], 1))
    assert blocks[-1]["text"]["text"] == "*Now Archived* since ….\n>drift &lt;in&gt; EU"


def test_a_withdrawal_says_it_was_the_requester():
    outcome = Outcome("Withdrawn", ["UREQUESTER"], 1700000000, "retraining", by_requester=True)
    text, blocks = decided_notice(FACTS, outcome)
    assert text == "churn v3 withdrawn"
    assert "*Withdrawn* by the requester <@UREQUESTER> at 2023-11-14 22:13 UTC" in str(blocks)


def test_reject_names_the_requester_who_may_withdraw_and_approve_does_not():
    _, blocks = staging_notice(replace(FACTS, requester="UREQUESTER"))
    approve, reject = _buttons(blocks)
    assert button_requester(reject["value"]) == "UREQUESTER"
    assert button_requester(approve["value"]) == ""
    assert parse_button_value(reject["value"]) == ("churn", "3")
    assert button_requester(button_value("m", "1")) == button_requester("not json") == ""


CANDIDATE = {"accuracy": 0.856, "f1": 0.76164, "latency_ms": 41.3, "auc": 0.91, "loss": 0.2}
PRODUCTION = {"accuracy": 0.854, "f1": 0.73842, "latency_ms": 38.0, "auc": 0.9, "loss": 0.2}
GATES = {
    "accuracy": MetricGate(True, "✓ ≥ 0.8"),
    "f1": MetricGate(True, "✓ ≥ Production − 0.01"),
    "latency_ms": MetricGate(False, "✓ ≤ 50"),
    "loss": MetricGate(False, "✓ ≤ 1"),
    "recall": MetricGate(True, "✗ missing from the run"),
}


def test_metrics_table_aligns_columns_in_the_one_number_format_and_marks_changes():
    table = metrics_table(CANDIDATE, PRODUCTION, GATES)
    assert table.splitlines() == [
        "```",
        "metric      candidate  production    change          gate",
        "accuracy        0.856       0.854    +0.002  better  ✓ ≥ 0.8",
        "auc              0.91         0.9     +0.01          no gate: direction unknown",
        "f1             0.7616      0.7384  +0.02322  better  ✓ ≥ Production − 0.01",
        "latency_ms       41.3          38      +3.3  worse   ✓ ≤ 50",
        "loss              0.2         0.2         0  same    ✓ ≤ 1",
        "recall              –           –         –          ✗ missing from the run",
        "```",
    ]


def test_the_marker_follows_the_gates_direction_not_the_sign():
    lower = {"latency_ms": MetricGate(False, "✓ ≤ 50")}
    faster = metrics_table({"latency_ms": 30.0}, {"latency_ms": 40.0}, lower)
    slower = metrics_table({"latency_ms": 50.0}, {"latency_ms": 40.0}, lower)
    assert "-10  better" in faster and "+10  worse" in slower
    higher = {"accuracy": MetricGate(True, "✓ ≥ 0.8")}
    assert "-0.01  worse" in metrics_table({"accuracy": 0.9}, {"accuracy": 0.91}, higher)
    band = {"width": MetricGate(None, "✓ ≥ 1, ≤ 2")}  # a band: neither way is better
    row = metrics_table({"width": 1.5}, {"width": 1.2}, band).splitlines()[2]
    assert "better" not in row and "worse" not in row and row.endswith("✓ ≥ 1, ≤ 2")


def test_metrics_without_production_or_without_gates_say_so():
    table = metrics_table({"accuracy": 0.93, "f1": 0.8}, {"accuracy": 0.91})
    assert table.splitlines()[1:4] == [
        "metric    candidate  production  change    gate",
        "accuracy       0.93        0.91   +0.02    no gate: direction unknown",
        "f1              0.8           –       –    no gate: direction unknown",
    ]
    assert metrics_table({}, {}) == "_no metrics recorded_"


def test_the_table_escapes_what_slack_would_read_as_markup():
    table = metrics_table({"a<b>": 1.0}, {}, {"a<b>": MetricGate(True, "✗ < min 2")})
    assert "a&lt;b&gt;" in table and "✗ &lt; min 2" in table and "<" not in table


def test_every_number_has_at_most_four_significant_digits_whatever_its_size():
    rows = metrics_table(
        {"big": 12345.6, "tiny": 0.000123, "same": 0.5}, {"big": 12000.0, "tiny": 0.000121}
    ).splitlines()
    assert rows[2].split()[:4] == ["big", "12346", "12000", "+345.6"]
    assert rows[3].split()[:2] == ["same", "0.5"]
    assert rows[4].split()[:4] == ["tiny", "0.000123", "0.000121", "+2e-06"]


def test_button_values_round_trip_and_foreign_ones_are_refused():
    assert parse_button_value(button_value("m", "12")) == ("m", "12")
    for bad in ('{"model": "m"}', "[1]", "nope"):
        with pytest.raises(ValueError):
            parse_button_value(bad)


def test_reject_modal_requires_a_reason():
    view = reject_modal("churn", "3", channel="C1", message_ts="1.2")
    assert view["callback_id"] == "reject_reason"
    assert view["blocks"][0]["type"] == "input" and not view["blocks"][0].get("optional")
