"""Transition requests (SPEC 14): a move into Production the gate inside MLflow refused.

The version is staged behind its gates and noticed like any candidate; whoever asked
through MLflow is barred from approving it, and nothing more: asking makes nobody its
requester, so nobody can withdraw someone else's candidate by asking for it.
"""

from __future__ import annotations

from dataclasses import replace

from registry.flows import lifecycle, transition
from registry.rules.events import TrainingEvent
from registry.rules.versions import RunSummary
from tests.support import fake_services

GATED = "defaults:\n  gates: [{metric: accuracy, min: 0.9}]\n"


def ask(svc, version: str = "1", asked_by: str = "", model: str = "churn") -> str:
    return transition.request_production(
        svc, model, version, asked_by=asked_by, asked_at=1_000_000.0, event_id=f"ask-{version}"
    )


def notice_text(svc) -> str:
    """All the blocks of every notice drawn (posted or redrawn)."""
    return repr([*svc.notifier.blocks, *svc.notifier.update_blocks])


# -- finding: a version moved to Staging by hand skipped its gates ---------------------------


def test_a_version_moved_to_staging_by_hand_has_its_gates_evaluated_when_asked_for():
    svc = fake_services(policy=GATED)
    svc.gateway.add_run("run-1", {"accuracy": 0.5})
    svc.gateway.register_elsewhere("churn", "run-1")
    svc.gateway.move("churn", "1", "Staging")  # by hand, through the gate
    assert ask(svc, asked_by="eve@x.com") == "gate_failed"
    mv = svc.gateway.get_version("churn", "1")
    assert mv.tag("gates") == "failed"
    assert lifecycle.approve(svc, "churn", "1", user="UA") == "done"
    assert svc.gateway.get_version("churn", "1").stage == "Staging"
    assert not svc.gateway.get_version("churn", "1").tag("decision")


def test_a_hand_staged_version_passing_its_gates_is_noticed_and_approvable():
    svc = fake_services(policy=GATED)
    svc.gateway.add_run("run-1", {"accuracy": 0.95})
    svc.gateway.register_elsewhere("churn", "run-1")
    svc.gateway.move("churn", "1", "Staging")
    assert ask(svc, asked_by="eve@x.com") == "noticed"
    assert svc.gateway.get_version("churn", "1").tag("gates") == "passed"
    assert lifecycle.approve(svc, "churn", "1", user="UA") == "promoted"


def test_a_hand_staged_candidate_noticed_before_its_gates_existed_has_them_evaluated():
    svc = fake_services()
    noticed_without_requester(svc)  # noticed while the model had no gates
    svc.gateway.runs["run-1"] = RunSummary("run-1", "0", {"accuracy": 0.5})
    gated = replace(svc, settings=fake_services(policy=GATED).settings)
    assert ask(gated, asked_by="eve@x.com") == "already_requested"
    assert svc.gateway.get_version("churn", "1").tag("gates") == "failed"
    assert lifecycle.approve(gated, "churn", "1", user="UA") == "done"
    assert "failed its promotion gates" in svc.notifier.told[-1][1]
    assert "gate" in repr(svc.notifier.update_blocks[-1]).lower()


# -- finding: asking in MLflow made the asker the requester ----------------------------------


def noticed_without_requester(svc) -> None:
    """The team's candidate, noticed by the sweep after a hand move: nobody requested it."""
    svc.gateway.add_run("run-1", {"accuracy": 0.95})
    svc.gateway.register_elsewhere("churn", "run-1")
    svc.gateway.move("churn", "1", "Staging")
    assert lifecycle.stage_version(svc, "churn", "1", event_id="sweep").outcome == "noticed"


def test_asking_in_mlflow_does_not_let_a_non_approver_withdraw_the_candidate():
    svc = fake_services(emails={"UEVE": "eve@x.com"})
    noticed_without_requester(svc)
    assert ask(svc, asked_by="eve@x.com") == "already_requested"
    assert lifecycle.reject(svc, "churn", "1", user="UEVE", reason="no") == "refused"
    mv = svc.gateway.get_version("churn", "1")
    assert mv.stage == "Staging" and not mv.tag("requested_by")
    assert "eve" not in notice_text(svc)


def test_a_fresh_request_names_the_asker_as_asker_not_requester_and_bars_only_approval():
    svc = fake_services(approvers=("UA", "UEVE"), emails={"UEVE": "eve@x.com"})
    svc.gateway.add_run("run-1", {"accuracy": 0.95})
    svc.gateway.register_elsewhere("churn", "run-1")
    assert ask(svc, asked_by="eve@x.com") == "noticed"
    mv = svc.gateway.get_version("churn", "1")
    assert not mv.tag("requested_by") and transition.asked_in_mlflow(mv) == ["eve@x.com"]
    text = notice_text(svc)
    assert "Asked for Production in MLflow by eve@x.com" in text
    assert "Requested by*\\neve" not in text
    assert lifecycle.approve(svc, "churn", "1", user="UEVE") == "refused"
    assert svc.gateway.get_version("churn", "1").stage == "Staging"


def test_an_asker_who_is_an_approver_may_still_reject_as_an_approver():
    svc = fake_services(approvers=("UA", "UEVE"), emails={"UEVE": "eve@x.com"})
    noticed_without_requester(svc)
    ask(svc, asked_by="eve@x.com")
    assert lifecycle.reject(svc, "churn", "1", user="UEVE", reason="no") == "rejected"


# -- finding: with no known asker, "Requested by" came from the run's user -------------------


def test_a_request_by_nobody_known_never_names_the_runs_user():
    svc = fake_services()
    svc.gateway.runs["run-1"] = RunSummary("run-1", "0", {"accuracy": 0.95}, user="UA")
    svc.gateway.register_elsewhere("churn", "run-1")
    assert ask(svc, asked_by="") == "noticed"
    text = notice_text(svc)
    assert "<@UA>" not in text
    assert "Requested by*\\nunknown: asked in MLflow, which did not sign them in" in text
    assert lifecycle.approve(svc, "churn", "1", user="UA") == "promoted"


def test_an_event_staged_version_still_shows_its_runs_user():
    svc = fake_services()
    svc.gateway.runs["run-1"] = RunSummary("run-1", "0", {"accuracy": 0.95}, user="UB")
    lifecycle.stage_training_event(svc, TrainingEvent("churn", "run-1"), event_id="e1")
    assert "<@UB>" in notice_text(svc)


# -- finding: the record kept the last 20 askers, so a 21st freed the first to approve --------


def test_every_asker_stays_barred_however_many_ask_after_them():
    people = {"UEVE": "eve@x.com", **{f"UP{i}": f"p{i}@x.com" for i in range(30)}}
    svc = fake_services(approvers=("UA", "UEVE"), emails=people)
    noticed_without_requester(svc)
    ask(svc, asked_by="eve@x.com")
    for i in range(30):
        assert ask(svc, asked_by=f"p{i}@x.com") == "already_requested"
    ask(svc, asked_by=" EVE@x.com ")  # the same person, however the server cases or pads it
    mv = svc.gateway.get_version("churn", "1")
    assert sorted(transition.asked_in_mlflow(mv)) == sorted(people.values())
    assert lifecycle.approve(svc, "churn", "1", user="UEVE") == "refused"
    assert lifecycle.approve(svc, "churn", "1", user="UA") == "promoted"
