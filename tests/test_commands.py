"""Chat commands: the pure grammar and plans, then every command end to end."""

from __future__ import annotations

import json
import time

import mlflow
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow import MlflowClient

from registry.adapters.mlflow import ModelVersion
from registry.rules.commands import Command, CommandError, parse_command
from registry.rules.reports import RollbackRefused, history_entries, plan_rollback
from registry.views.notice import APPROVE_ACTION, button_value
from registry.views.plans import ROLLBACK_CANCEL
from tests.support import (
    answered,
    click,
    confirm,
    confirm_with_reason,
    log_model,
    mention_event,
    notices_for,
    production_versions,
    slash,
    stage,
    stage_of,
    wait_for,
)

# -- the grammar -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("help", Command("help")),
        ("status churn", Command("status", "churn")),
        ("<@UBOT> status churn", Command("status", "churn")),
        ("history churn", Command("history", "churn", count=10)),
        ("history churn 3", Command("history", "churn", count=3)),
        ("promote churn 07", Command("promote", "churn", version="7")),
        ("rollback churn", Command("rollback", "churn")),
        (
            "rollback churn 1 bad drift in EU",
            Command("rollback", "churn", version="1", reason="bad drift in EU"),
        ),
        (
            "rollback churn drift since 2 days",
            Command("rollback", "churn", reason="drift since 2 days"),
        ),
        ("ROLLBACK churn 2", Command("rollback", "churn", version="2")),
    ],
)
def test_commands_parse(text, command):
    assert parse_command(text) == command


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "Usage: /registry help"),
        ("   ", "Usage:"),
        ("status", "which model?"),
        ("promote churn", "the version is a number"),
        ("promote churn x1", "the version is a number"),
        ("promote churn 0", "the version is a number"),
        ("history churn lots", "n is a number"),
        ("history churn 0", "n is a number"),
        ("status churn extra", "Usage: /registry status <model>"),
        ("deploy churn", "Unknown command 'deploy'"),
        ("status <script>", "is not a model name"),
    ],
)
def test_malformed_commands_get_one_usage_line(text, says):
    with pytest.raises(CommandError) as caught:
        parse_command(text)
    assert says in str(caught.value) and "\n" not in str(caught.value)


@given(st.text(max_size=300))
def test_the_parser_never_raises_anything_else(text):
    try:
        assert isinstance(parse_command(text), Command)
    except CommandError as exc:
        assert str(exc).strip()


# -- rollback plans and history, pure --------------------------------------------------


def mv(version, stage, **tags) -> ModelVersion:
    return ModelVersion(
        "churn", version, stage, tags={f"registry_bot.{k}": v for k, v in tags.items()}
    )


SERVED = [
    mv("4", "Staging"),
    mv("3", "Production", production_since="300", decision="approved", decided_by="UA"),
    mv("2", "Archived", production_since="100", production_until="300", decided_by="UB"),
    mv("1", "Archived", production_since="50", production_until="100", decided_by="UC"),
    mv("0", "Archived", decision="rejected"),
]


def test_default_target_is_the_previous_production_not_the_highest_archived():
    versions = [*SERVED, mv("5", "Archived", production_since="20", production_until="50")]
    plan = plan_rollback(versions, "churn")
    assert (plan.current, plan.target, plan.target_approved_by) == ("3", "2", "UB")


@pytest.mark.parametrize(
    ("version", "says"),
    [
        ("3", "already Production"),
        ("0", "never passed approval"),
        ("4", "never passed approval"),
        ("9", "no version 9"),
    ],
)
def test_rollback_refusals(version, says):
    with pytest.raises(RollbackRefused, match=says):
        plan_rollback(SERVED, "churn", version)


def test_rollback_needs_a_production_version():
    with pytest.raises(RollbackRefused, match="no Production version"):
        plan_rollback([mv("1", "Archived")], "churn")
    with pytest.raises(RollbackRefused, match="no earlier Production"):
        plan_rollback([mv("1", "Production", production_since="1")], "churn")


def test_history_is_newest_first_with_causes_before_effects():
    log2 = json.dumps([{"type": "rolled_back", "at": "500", "actor": "UA", "reason": "r"}])
    log3 = json.dumps(
        [
            {"type": "promoted", "at": "300", "actor": "UA"},
            {"type": "archived", "at": "500", "actor": "UA"},
        ]
    )
    versions = [mv("3", "Archived", log=log3), mv("2", "Production", log=log2)]
    entries = history_entries(versions, 10)
    assert [(e["version"], e["type"]) for e in entries] == [
        ("2", "rolled_back"),
        ("3", "archived"),
        ("3", "promoted"),
    ]
    assert len(history_entries(versions, 1)) == 1


# -- end to end through the running bot -------------------------------------------------


def ephemerals_to(slack, user: str, since: int) -> list[dict]:
    return [c.params for c in slack.calls("chat.postEphemeral")[since:] if c.params["user"] == user]


def promote_in_turn(loop, slack, mlflow_server, model_name, n: int) -> list[str]:
    versions = []
    for i in range(n):
        version, ts = stage(loop, slack, mlflow_server, model_name, constant=float(i + 1))
        click(
            loop.bot_url,
            slack,
            user="UAPPROVER1",
            action_id=APPROVE_ACTION,
            value=button_value(model_name, version),
            message_ts=ts,
        )
        wait_for(
            lambda v=version: stage_of(mlflow_server, model_name, v) == "Production", "promotion"
        )
        versions.append(version)
        time.sleep(0.01)
    return versions


@pytest.mark.slow
def test_rollback_to_the_previous_production(loop, slack, mlflow_server, model_name):
    v1, v2, v3 = promote_in_turn(loop, slack, mlflow_server, model_name, 3)
    resp, url = slash(loop.bot_url, slack, f"rollback {model_name}", user="UAPPROVER2")
    assert resp.status_code == 200
    plan = answered(slack, url)[0]
    assert f"from v{v3} to v{v2}" in plan["text"]
    assert [
        el["text"]["text"] for b in plan["blocks"] if b["type"] == "actions" for el in b["elements"]
    ] == ["Confirm", "Cancel"]

    assert "Confirm asks for the reason (optional)" in plan["text"]
    done_url = confirm_with_reason(loop, slack, plan, "UAPPROVER2", reason="")
    wait_for(lambda: stage_of(mlflow_server, model_name, v2) == "Production", "rollback")
    # v2 moves first, then v3 is archived by a transition of its own: wait for the second.
    wait_for(lambda: stage_of(mlflow_server, model_name, v3) == "Archived", "v3 archived")
    assert production_versions(mlflow_server, model_name) == [v2]
    replies = answered(slack, done_url, count=2)
    assert replies[0]["replace_original"] is True and replies[-1]["replace_original"] is True
    assert "Production again" in replies[-1]["text"]
    channel_posts = [
        c.params["text"]
        for c in slack.calls("chat.postMessage")
        if "rolled" in c.params.get("text", "") and model_name in c.params["text"]
    ]
    assert channel_posts and f"from v{v3} to v{v2}" in channel_posts[-1]
    assert channel_posts[-1].endswith("No reason was given.")  # they were asked, and left it

    resp, hist_url = slash(loop.bot_url, slack, f"history {model_name}", user="UOUTSIDER")
    lines = answered(slack, hist_url)[0]["text"].splitlines()
    assert f"rolled back from v{v3} to v{v2} by <@UAPPROVER2>" in lines[1]
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/Production")
    assert list(loaded.predict([[0.0]])) == [2.0]
    assert (
        MlflowClient(mlflow_server).get_model_version_by_alias(model_name, "production").version
        == v2
    )


@pytest.mark.slow
def test_rollback_to_a_given_version_records_the_reason(loop, slack, mlflow_server, model_name):
    v1, v2 = promote_in_turn(loop, slack, mlflow_server, model_name, 2)
    _, url = slash(
        loop.bot_url, slack, f"rollback {model_name} {v1} bad drift in EU", user="UAPPROVER1"
    )
    plan = answered(slack, url)[0]
    assert f"to v{v1}" in plan["text"] and "bad drift in EU" in plan["text"]
    confirm_with_reason(loop, slack, plan, "UAPPROVER1")  # the command's reason, prefilled
    client = MlflowClient(mlflow_server)
    entry = wait_for(
        lambda: (lambda e: e if e["type"] == "rolled_back" else None)(
            json.loads(client.get_model_version(model_name, v1).tags["registry_bot.log"])[-1]
        ),
        "rollback record",
    )
    assert stage_of(mlflow_server, model_name, v1) == "Production"
    assert (entry["type"], entry["actor"], entry["reason"]) == (
        "rolled_back",
        "UAPPROVER1",
        "bad drift in EU",
    )


@pytest.mark.slow
def test_the_reason_typed_in_the_confirm_modal_is_recorded_and_announced(
    loop, slack, mlflow_server, model_name
):
    v1, v2 = promote_in_turn(loop, slack, mlflow_server, model_name, 2)
    _, url = slash(loop.bot_url, slack, f"rollback {model_name}", user="UAPPROVER2")
    plan = answered(slack, url)[0]
    done_url = confirm_with_reason(loop, slack, plan, "UAPPROVER2", reason="  latency doubled  ")
    replies = answered(slack, done_url, count=2)
    assert "Rolling" in replies[0]["text"] and replies[0]["replace_original"] is True
    wait_for(lambda: stage_of(mlflow_server, model_name, v1) == "Production", "rollback")
    client = MlflowClient(mlflow_server)
    entry = wait_for(
        lambda: (lambda e: e if e["type"] == "rolled_back" else None)(
            json.loads(client.get_model_version(model_name, v1).tags["registry_bot.log"])[-1]
        ),
        "rollback record",
    )
    assert entry["reason"] == "latency doubled"
    posts = [c.params["text"] for c in slack.calls("chat.postMessage")]
    assert any(
        p.endswith(f"(v{v2} archived). Reason: latency doubled") and model_name in p for p in posts
    )


@pytest.mark.slow
def test_non_approvers_are_refused_and_cancel_changes_nothing(
    loop, slack, mlflow_server, model_name
):
    v1, v2 = promote_in_turn(loop, slack, mlflow_server, model_name, 2)
    for text, said in (
        (f"promote {model_name} {v1}", "promote"),
        (f"rollback {model_name}", "roll back"),
    ):
        _, url = slash(loop.bot_url, slack, text, user="UOUTSIDER")
        # The verb, as a person says it: "may roll back", never "may rollback".
        assert f"Only approvers may {said} model versions" in answered(slack, url)[0]["text"]
    _, url = slash(loop.bot_url, slack, f"rollback {model_name}", user="UAPPROVER1")
    plan = answered(slack, url)[0]
    opened_before = len(slack.calls("views.open"))
    refused_url = confirm(loop, slack, plan, "UOUTSIDER")
    assert "Only approvers" in answered(slack, refused_url)[0]["text"]
    assert len(slack.calls("views.open")) == opened_before  # no reason modal for them
    cancel_url = confirm(loop, slack, plan, "UAPPROVER1", action=ROLLBACK_CANCEL)
    assert "cancelled" in answered(slack, cancel_url)[0]["text"]
    time.sleep(1.0)
    assert production_versions(mlflow_server, model_name) == [v2]


@pytest.mark.slow
def test_status_history_help_through_slash_and_mention(loop, slack, mlflow_server, model_name):
    (v1,) = promote_in_turn(loop, slack, mlflow_server, model_name, 1)
    _, url = slash(loop.bot_url, slack, f"status {model_name}", user="UOUTSIDER")
    status = answered(slack, url)[0]["text"]
    assert f"Production: v{v1}" in status and "<@UAPPROVER1>" in status and "accuracy 0.9" in status
    _, url = slash(loop.bot_url, slack, "help", user="UOUTSIDER")
    assert "rollback <model>" in answered(slack, url)[0]["text"]

    for text, says in (
        (f"status {model_name}", f"Production: v{v1}"),
        (f"history {model_name} 2", f"v{v1} promoted"),
        ("help", "history <model>"),
    ):
        before = len(slack.calls("chat.postEphemeral"))
        assert mention_event(loop.bot_url, text, user="UOUTSIDER").status_code == 200
        found = wait_for(lambda b=before: ephemerals_to(slack, "UOUTSIDER", b), "ephemeral")
        assert says in found[0]["text"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "Usage:"),
        ("status", "which model?"),
        ("status no-such-model-anywhere", "No model named no-such-model-anywhere"),
        ("promote {model} 99", "has no version 99"),
        ("promote {model} x", "the version is a number"),
        ("frobnicate", "Unknown command"),
        ("rollback {model} 99", "has no version 99"),
    ],
)
def test_malformed_commands_get_usage_or_not_found(
    loop, slack, mlflow_server, model_name, text, says
):
    if "{model}" in text:
        stage(loop, slack, mlflow_server, model_name)
    _, url = slash(loop.bot_url, slack, text.format(model=model_name), user="UAPPROVER1")
    reply = answered(slack, url)[0]["text"]
    assert says in reply and "Traceback" not in reply


@pytest.mark.slow
def test_promote_stages_an_existing_version(loop, slack, mlflow_server, model_name):
    import mlflow as ml

    run_id = log_model(mlflow_server, constant=4.0)
    ml.set_tracking_uri(mlflow_server)
    version = ml.register_model(f"runs:/{run_id}/model", model_name).version
    _, url = slash(loop.bot_url, slack, f"promote {model_name} {version}", user="UAPPROVER1")
    assert "is in Staging" in answered(slack, url)[0]["text"]
    assert stage_of(mlflow_server, model_name, version) == "Staging"
    assert len(notices_for(slack, model_name)) == 1
    _, again = slash(loop.bot_url, slack, f"promote {model_name} {version}", user="UAPPROVER1")
    assert "already awaiting approval" in answered(slack, again)[0]["text"]
    assert len(notices_for(slack, model_name)) == 1


@pytest.mark.slow
def test_a_mention_redelivered_by_slack_is_acknowledged_and_answered_once(
    loop, slack, mlflow_server, model_name
):
    from tests.support import mention_body

    (v1,) = promote_in_turn(loop, slack, mlflow_server, model_name, 1)
    body = mention_body(f"status {model_name}", user="UREQUESTER")
    before = len(slack.calls("chat.postEphemeral"))
    # Slack's first delivery, then two redeliveries of the same event_id (X-Slack-Retry-Num).
    for retry in (0, 1, 2):
        resp = mention_event(loop.bot_url, "", user="UREQUESTER", body=body, retry=retry)
        assert resp.status_code == 200
    wait_for(lambda: ephemerals_to(slack, "UREQUESTER", before), "the answer")
    time.sleep(1.5)  # a second answer would come from a redelivery run again
    answers = ephemerals_to(slack, "UREQUESTER", before)
    assert len(answers) == 1 and f"Production: v{v1}" in answers[0]["text"]
