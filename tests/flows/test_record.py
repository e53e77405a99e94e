"""The durable record as a person reads it in MLflow: readable times, no stale state tags."""

from __future__ import annotations

import json
import re
import warnings
from contextlib import nullcontext

import pytest
from mlflow import MlflowClient

from registry.flows import lifecycle, operations
from registry.flows.sweep import sweep
from registry.rules.decisions import settled_message
from registry.rules.events import TrainingEvent
from registry.rules.record import format_stamp, logged, parse_time, time_of
from registry.rules.reports import (
    Outcome,
    Standing,
    history_text,
    outcome_of,
    plan_rollback,
    standing,
    status_text,
)
from registry.rules.versions import ModelVersion
from registry.views.plans import plan_blocks
from tests.support import Clock, local_services, log_model

# -- times: ISO 8601 written, both forms read -------------------------------------------


def test_times_are_written_as_iso_8601_utc_to_the_millisecond():
    assert format_stamp(1700000000.1234) == "2023-11-14T22:13:20.123Z"
    assert format_stamp(1700000000.9996) == "2023-11-14T22:13:21.000Z"
    assert format_stamp(0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2023-11-14T22:13:20.123Z", 1700000000.123),
        ("2023-11-14T22:13:20Z", 1700000000.0),
        ("2023-11-14T23:13:20+01:00", 1700000000.0),
        ("2023-11-14T22:13:20", 1700000000.0),  # no offset: the record is UTC
        ("1700000000.123", 1700000000.123),  # the form written before ISO 8601
        ("1700000000", 1700000000.0),
        (" 1700000000.5 ", 1700000000.5),
    ],
)
def test_both_recorded_forms_read_the_same(text, seconds):
    assert parse_time(text) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize("text", ["", "   ", None, "soon", "nan", "inf", "2023-13-45T00:00:00Z"])
def test_anything_else_reads_as_no_time(text):
    assert parse_time(text) is None


def test_a_written_time_reads_back_as_written():
    for at in (1700000000.0, 1795800000.123, 1234567890.999):
        assert parse_time(format_stamp(at)) == pytest.approx(at, abs=5e-4)
        assert format_stamp(parse_time(format_stamp(at)) or 0) == format_stamp(at)


def test_time_of_reads_a_version_tag_in_either_form():
    mv = ModelVersion(
        "churn",
        "1",
        "Production",
        tags={
            "registry_bot.decided_at": "1700000000.000",
            "registry_bot.production_since": "2023-11-14T22:13:20.000Z",
        },
    )
    assert time_of(mv, "decided_at") == time_of(mv, "production_since") == 1700000000.0
    assert time_of(mv, "archived_at") is None


def test_logged_matches_a_change_by_its_time_and_the_details_of_its_entry():
    entry = {"type": "archived", "at": "2026-11-27T17:20:00.000Z", "replaced_by": "12"}
    mv = ModelVersion("churn", "3", "Archived", tags={"registry_bot.log": json.dumps([entry])})
    assert logged(mv, "archived") and not logged(mv, "promoted")
    assert logged(mv, "archived", since="2026-11-27T17:20:00.000Z")
    assert not logged(mv, "archived", since="2026-11-27T17:20:00.001Z")
    assert logged(mv, "archived", details={"replaced_by": "12"})
    assert not logged(mv, "archived", details={"replaced_by": "1"})  # whole values, not prefixes
    assert not logged(mv, "archived", details={"replaced_by": "12", "via": "rollback"})


# -- where a decided version stands, from its record -------------------------------------


def recorded(stage: str, log: list[dict], **tags: str) -> ModelVersion:
    all_tags = {f"registry_bot.{k}": v for k, v in tags.items()}
    all_tags["registry_bot.log"] = json.dumps(log)
    return ModelVersion("churn", "1", stage, tags=all_tags)


APPROVED = {"decision": "approved", "decided_by": "UADA", "decided_at": "2026-11-27T17:20:00.000Z"}


def test_an_approved_version_in_production_says_since_when():
    mv = recorded(
        "Production",
        [{"type": "promoted", "at": "2026-11-27T17:20:00.000Z", "actor": "UADA"}],
        production_since="2026-11-27T17:20:00.000Z",
        **APPROVED,
    )
    assert outcome_of(mv) == Outcome("Approved", ["UADA"], 1795800000.0)
    assert standing(mv) == Standing(
        "Approved, in Production", "*Now in Production* since 2026-11-27 17:20 UTC."
    )


def test_a_replaced_version_says_which_version_replaced_it():
    log = [
        {"type": "promoted", "at": "2026-11-27T17:20:00.000Z", "actor": "UADA"},
        {
            "type": "archived",
            "at": "2026-11-27T18:20:00.000Z",
            "actor": "UGRACE",
            "replaced_by": "3",
        },
    ]
    mv = recorded("Archived", log, archived_at="2026-11-27T18:20:00.000Z", **APPROVED)
    assert standing(mv) == Standing(
        "Approved, now Archived", "*Now Archived* since 2026-11-27 18:20 UTC, when v3 replaced it."
    )


def test_rolled_away_and_rolled_back_to_say_who_did_it_and_why():
    away = recorded(
        "Archived",
        [
            {"type": "promoted", "at": "2026-11-27T17:20:00.000Z", "actor": "UADA"},
            {
                "type": "archived",
                "at": "2026-11-27T19:20:00.000Z",
                "actor": "UGRACE",
                "reason": "rolled back to v1: drift in EU",
                "replaced_by": "1",
                "via": "rollback",
            },
        ],
        archived_at="2026-11-27T19:20:00.000Z",
        **APPROVED,
    )
    assert standing(away) == Standing(
        "Approved, now Archived",
        "*Now Archived* since 2026-11-27 19:20 UTC, when <@UGRACE> rolled back to v1.",
        "drift in EU",
    )
    back = recorded(
        "Production",
        [
            {"type": "promoted", "at": "2026-11-27T17:20:00.000Z", "actor": "UADA"},
            {"type": "archived", "at": "2026-11-27T18:20:00.000Z", "replaced_by": "3"},
            {
                "type": "rolled_back",
                "at": "2026-11-27T19:20:00.000Z",
                "actor": "UGRACE",
                "reason": "drift in EU",
                "previous_version": "3",
            },
        ],
        production_since="2026-11-27T19:20:00.000Z",
        **APPROVED,
    )
    assert standing(back) == Standing(
        "Production again",
        "*Now in Production again* since 2026-11-27 19:20 UTC: "
        "<@UGRACE> rolled back to it from v3.",
        "drift in EU",
    )


def test_a_rejection_by_the_requester_reads_as_their_withdrawal():
    tags = {"decision": "rejected", "decided_at": "2026-11-27T17:20:00.000Z", "reason": "oops"}
    log = [{"type": "rejected", "at": "2026-11-27T17:20:00.000Z", "actor": "URITA"}]
    mine = recorded("Archived", log, decided_by="URITA", requested_by="URITA", **tags)
    assert outcome_of(mine) == Outcome(
        "Withdrawn", ["URITA"], 1795800000.0, "oops", by_requester=True
    )
    assert standing(mine) == Standing("Withdrawn", "*Now Archived* since 2026-11-27 17:20 UTC.")
    by_mail = recorded(
        "Archived",
        log,
        decided_by="URITA",
        requested_by="rita@example.com",
        requested_by_user="URITA",
        **tags,
    )
    assert outcome_of(by_mail).verb == "Withdrawn"  # type: ignore[union-attr]
    theirs = recorded("Archived", log, decided_by="UADA", requested_by="URITA", **tags)
    assert outcome_of(theirs) == Outcome("Rejected", ["UADA"], 1795800000.0, "oops")


def test_an_undecided_version_has_no_outcome_and_no_standing():
    pending = recorded("Staging", [])
    assert outcome_of(pending) is None and standing(pending) is None
    mid_promotion = recorded("Staging", [], **APPROVED)  # decided, not yet moved
    assert standing(mid_promotion) is None


# -- the tags in MLflow after approve, replace and rollback --------------------------------

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TIME_TAGS = (
    "staged_at",
    "noticed_at",
    "decided_at",
    "production_since",
    "production_until",
    "archived_at",
    "announced",
    "reminded_at",
    "canary_until",
)
START = 1_795_800_000.0  # 2026-11-27T17:20:00.000Z


def ours(mlflow_server: str, model: str, version: str) -> dict[str, str]:
    """Return the version's registry_bot.* tags as MLflow holds them, without the prefix."""
    tags = MlflowClient(mlflow_server).get_model_version(model, version).tags
    return {k.removeprefix("registry_bot."): v for k, v in tags.items() if k.startswith("reg")}


def staged(svc, mlflow_server: str, model: str, constant: float) -> str:
    run_id = log_model(mlflow_server, constant=constant, metrics={"accuracy": 0.8 + constant / 10})
    event = TrainingEvent(model, run_id, requested_by="UREQUESTER")
    return lifecycle.stage_training_event(svc, event, event_id=f"evt-{run_id}").version


def notice_text(slack, ts: str) -> str:
    """Return what a notice shows now: its last chat.update."""
    updates = [c for c in slack.calls("chat.update") if c.params.get("ts") == ts]
    return json.dumps(updates[-1].params["blocks"], ensure_ascii=False) if updates else ""


@pytest.mark.slow
def test_approve_replace_and_rollback_leave_readable_tags_that_say_only_what_is_true(
    mlflow_server, slack, model_name
):
    clock = Clock(START)
    svc = local_services(mlflow_server, slack, clock=clock)
    v1 = staged(svc, mlflow_server, model_name, 1.0)
    assert lifecycle.approve(svc, model_name, v1, user="UAPPROVER1") == "promoted"
    clock.advance(3600)
    v2 = staged(svc, mlflow_server, model_name, 2.0)
    assert lifecycle.approve(svc, model_name, v2, user="UAPPROVER2") == "promoted"
    ts1, ts2 = (ours(mlflow_server, model_name, v)["notice_ts"] for v in (v1, v2))
    assert f"when v{v2} replaced it" in notice_text(slack, ts1)
    clock.advance(3600)

    plan = plan_rollback(svc.gateway.versions(model_name), model_name, reason="drift in EU")
    assert (plan.current, plan.target) == (v2, v1)
    operations.rollback(svc, plan, user="UAPPROVER1", channel="CNOTICES", response_url="")

    back, away = ours(mlflow_server, model_name, v1), ours(mlflow_server, model_name, v2)
    for tags in (back, away):
        times = {k: v for k, v in tags.items() if k in TIME_TAGS}
        assert times and all(ISO_UTC.match(v) for v in times.values()), times
        assert all(ISO_UTC.match(e["at"]) for e in json.loads(tags["log"]))
    # v1 is Production again: nothing on it says it was archived or left Production.
    assert stage_in(mlflow_server, model_name, v1) == "Production"
    assert "archived_at" not in back and "production_until" not in back
    assert back["production_since"] == "2026-11-27T19:20:00.000Z"
    assert back["decided_at"] == "2026-11-27T17:20:00.000Z"  # its approval still stands
    # v2 left Production: when it entered, when it left.
    assert (away["production_since"], away["production_until"], away["archived_at"]) == (
        "2026-11-27T18:20:00.000Z",
        "2026-11-27T19:20:00.000Z",
        "2026-11-27T19:20:00.000Z",
    )
    # Names beside the IDs, for whoever reads this in the MLflow UI.
    assert back["people"] == "UAPPROVER1=ada, UREQUESTER=rita"
    assert away["people"] == "UAPPROVER1=ada, UAPPROVER2=grace, UREQUESTER=rita"
    # Both notices say where their version stands now.
    assert "Production again" in notice_text(slack, ts1)
    assert f"rolled back to it from v{v2}" in notice_text(slack, ts1)
    assert f"<@UAPPROVER1> rolled back to v{v1}." in notice_text(slack, ts2)
    assert "drift in EU" in notice_text(slack, ts2)


def stage_in(mlflow_server: str, model: str, version: str) -> str:
    return MlflowClient(mlflow_server).get_model_version(model, version).current_stage


# What an earlier release wrote: epoch seconds, and "" for a Production version's
# production_until after a rollback.
OLD_V1 = {
    "requested_by": "UREQUESTER",
    "decision": "approved",
    "decided_by": "UAPPROVER1",
    "decided_at": "1700000000.000",
    "approvals": "UAPPROVER1",
    "production_since": "1700000000.000",
    "production_until": "1700003600.000",
    "archived_at": "1700003600.000",
    "announced": "1700000000.500",
    "log": json.dumps(
        [
            {"type": "staged", "at": "1699999000.000", "actor": "UREQUESTER", "reason": ""},
            {"type": "promoted", "at": "1700000000.000", "actor": "UAPPROVER1", "reason": ""},
            {
                "type": "archived",
                "at": "1700003600.000",
                "actor": "UAPPROVER2",
                "reason": "replaced by v2",
            },
        ]
    ),
}
OLD_V2 = {
    "requested_by": "UREQUESTER",
    "decision": "approved",
    "decided_by": "UAPPROVER2",
    "decided_at": "1700003600.000",
    "replaces": "1",
    "production_since": "1700003600.000",
    "production_until": "",
    "announced": "1700003600.500",
    "log": json.dumps(
        [{"type": "promoted", "at": "1700003600.000", "actor": "UAPPROVER2", "reason": ""}]
    ),
}
OLD_V3 = {
    "requested_by": "UREQUESTER",
    "staged_at": "1700005000.000",
    "noticed_at": "1700005000.000",
}


@pytest.mark.slow
def test_a_registry_recorded_in_the_earlier_format_reads_and_rolls_back_the_same(
    mlflow_server, slack, model_name
):
    import mlflow

    client = MlflowClient(mlflow_server)
    run_id = log_model(mlflow_server, constant=1.0)
    mlflow.set_tracking_uri(mlflow_server)
    svc = local_services(mlflow_server, slack, policy="defaults:\n  approval_expires_after: 72h\n")
    old_notice = svc.notifier.post(f"{model_name} v3 is in Staging (an old notice)", [])
    for tags, stage in ((OLD_V1, "Archived"), (OLD_V2, "Production"), (OLD_V3, "Staging")):
        version = mlflow.register_model(f"runs:/{run_id}/model", model_name).version
        if stage == "Staging":
            tags = {**tags, "notice_channel": "CNOTICES", "notice_ts": old_notice}
        for key, value in tags.items():  # written directly, as the earlier release did
            client.set_model_version_tag(model_name, version, f"registry_bot.{key}", value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            client.transition_model_version_stage(model_name, version, stage)
    versions = svc.gateway.versions(model_name)

    assert status_text(model_name, versions, 1).splitlines()[1] == (
        "Production: v2 since 2023-11-14 23:13 UTC, approved by <@UAPPROVER2>"
    )
    assert history_text(model_name, versions, 3).splitlines()[1:] == [
        "2023-11-14 23:13 UTC · v2 promoted to Production by <@UAPPROVER2>",
        "2023-11-14 23:13 UTC · v1 archived by <@UAPPROVER2>: replaced by v2",
        "2023-11-14 22:13 UTC · v1 promoted to Production by <@UAPPROVER1>",
    ]
    v1 = next(mv for mv in versions if mv.version == "1")
    assert settled_message(v1).endswith("by <@UAPPROVER1> at 2023-11-14 22:13 UTC.")
    assert standing(v1) == Standing(
        "Approved, now Archived", "*Now Archived* since 2023-11-14 23:13 UTC.", "replaced by v2"
    )
    plan = plan_rollback(versions, model_name)
    assert "It last served on 2023-11-14 from 22:13 to 23:13 UTC." in plan_blocks(plan)[0]

    # The pending version was noticed long ago (epoch seconds): the sweep expires it.
    assert sweep(svc, lambda name: nullcontext(), [model_name]).done == {
        "expired": [(model_name, "3")]
    }
    assert "*Expired*" in notice_text(slack, old_notice)

    operations.rollback(svc, plan, user="UAPPROVER1", channel="CNOTICES", response_url="")
    back, away = ours(mlflow_server, model_name, "1"), ours(mlflow_server, model_name, "2")
    assert stage_in(mlflow_server, model_name, "1") == "Production"
    assert "archived_at" not in back and "production_until" not in back
    assert ISO_UTC.match(back["production_since"]) and ISO_UTC.match(away["production_until"])
    assert away["production_since"] == "1700003600.000"  # what was written stays as it was
    assert plan_rollback(svc.gateway.versions(model_name), model_name).target == "2"


# -- record() returns what it wrote, so nobody reads it back ------------------------------


def test_record_returns_the_version_as_the_registry_now_holds_it():
    from types import SimpleNamespace

    from registry.flows.recording import record
    from tests.fakes import FakeGateway

    gw = FakeGateway()
    gw.register_elsewhere("m", "r1", tags={"registry_bot.archived_at": "2023-11-14T22:13:20.000Z"})
    svc = SimpleNamespace(gateway=gw, clock=lambda: 1700000000.0, emit=lambda event: None)
    mv = gw.get_version("m", "1")
    after = record(svc, mv, "promoted", actor="UA", extra={"x": "1"}, drop=["archived_at"])
    assert after == gw.get_version("m", "1")
    assert after.tag("x") == "1" and not after.tag("archived_at")
    assert [e["type"] for e in json.loads(after.tags["registry_bot.log"])] == ["promoted"]
