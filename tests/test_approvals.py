"""The approval loop through signed Slack requests to the running bot, a real worker and MLflow."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import mlflow
import pytest
import redis
from mlflow import MlflowClient

from registry.views.notice import APPROVE_ACTION, REJECT_ACTION, button_value
from tests.support import (
    SERVICES,
    click,
    interaction,
    log_model,
    message_in,
    notices_for,
    production_versions,
    said_to,
    slash,
    stage,
    stage_of,
    submit_view,
    updates_of,
    version_tags,
    wait_for,
)

pytestmark = pytest.mark.slow


def approve(stack, slack, model_name, version, user, ts=""):
    resp, url = click(
        stack.bot_url,
        slack,
        user=user,
        action_id=APPROVE_ACTION,
        value=button_value(model_name, version),
        message_ts=ts,
    )
    assert resp.status_code == 200, resp.text
    return url


def test_approve_promotes_and_archives_the_old_production(loop, slack, mlflow_server, model_name):
    v1, ts1 = stage(loop, slack, mlflow_server, model_name, constant=1.0)
    approve(loop, slack, model_name, v1, "UAPPROVER1", ts1)
    wait_for(lambda: stage_of(mlflow_server, model_name, v1) == "Production", "v1 in Production")

    v2, ts2 = stage(loop, slack, mlflow_server, model_name, constant=2.0)
    approve(loop, slack, model_name, v2, "UAPPROVER2", ts2)
    wait_for(lambda: updates_of(slack, ts2), "notice update")
    assert stage_of(mlflow_server, model_name, v2) == "Production"
    assert stage_of(mlflow_server, model_name, v1) == "Archived"
    assert production_versions(mlflow_server, model_name) == [v2]

    update = updates_of(slack, ts2)[-1].params
    assert "actions" not in [b["type"] for b in update["blocks"]]
    assert "*Approved* by <@UAPPROVER2>" in json.dumps(update["blocks"])
    replies = [m for m in slack.messages("CNOTICES") if m["ts"] == ts2][0]["replies"]
    assert any("now Production" in r["text"] for r in replies)

    client = MlflowClient(mlflow_server)
    assert client.get_model_version_by_alias(model_name, "production").version == v2
    tags2, tags1 = (client.get_model_version(model_name, v).tags for v in (v2, v1))
    assert tags2["registry_bot.decided_by"] == "UAPPROVER2"
    assert tags2["registry_bot.production_since"] and tags1["registry_bot.production_until"]
    for uri in (f"models:/{model_name}/Production", f"models:/{model_name}@production"):
        assert list(mlflow.pyfunc.load_model(uri).predict([[0.0]])) == [2.0]


@pytest.mark.parametrize(
    ("user", "requested_by", "says"),
    [
        ("UOUTSIDER", "UREQUESTER", "not one"),
        ("UAPPROVER1", "UAPPROVER1", "someone else"),
        ("UAPPROVER1", "ada@example.com", "someone else"),
    ],
    ids=["non-approver", "requester by id", "requester by e-mail"],
)
def test_refused_clicks_change_nothing(
    loop, slack, mlflow_server, model_name, user, requested_by, says
):
    version, ts = stage(loop, slack, mlflow_server, model_name, requested_by=requested_by)
    url = approve(loop, slack, model_name, version, user, ts)
    assert says in said_to(slack, url)
    assert stage_of(mlflow_server, model_name, version) == "Staging"
    assert (
        "registry_bot.approvals"
        not in MlflowClient(mlflow_server).get_model_version(model_name, version).tags
    )
    assert updates_of(slack, ts) == []


def test_nobody_may_approve_without_approvers(stacks, slack, mlflow_server, model_name):
    stack = stacks.get(services=SERVICES, APPROVERS="", APPROVER_GROUP="")
    version, ts = stage(stack, slack, mlflow_server, model_name)
    notice = notices_for(slack, model_name)[0]
    assert "nobody can approve" in json.dumps(notice.params["blocks"])
    url = approve(stack, slack, model_name, version, "UAPPROVER1", ts)
    assert "No approvers are configured" in said_to(slack, url)
    assert stage_of(mlflow_server, model_name, version) == "Staging"


def test_approver_group_members_may_approve(stacks, slack, mlflow_server, model_name):
    stack = stacks.get(services=SERVICES, APPROVERS="", APPROVER_GROUP="SAPPROVERS")
    version, ts = stage(stack, slack, mlflow_server, model_name)
    url = approve(stack, slack, model_name, version, "UOUTSIDER", ts)
    assert "not one" in said_to(slack, url)
    approve(stack, slack, model_name, version, "UGROUPIE", ts)
    wait_for(lambda: stage_of(mlflow_server, model_name, version) == "Production", "promotion")


def test_two_required_approvals_survive_a_redis_flush(stacks, slack, mlflow_server, model_name):
    stack = stacks.get(services=SERVICES, REQUIRED_APPROVALS="2")
    version, ts = stage(stack, slack, mlflow_server, model_name)
    first = approve(stack, slack, model_name, version, "UAPPROVER1", ts)
    assert "1 of 2" in said_to(slack, first)
    update = wait_for(lambda: updates_of(slack, ts), "count update")[-1]
    assert "1 of 2 approvals" in json.dumps(update.params["blocks"])
    assert stage_of(mlflow_server, model_name, version) == "Staging"

    again = approve(stack, slack, model_name, version, "UAPPROVER1", ts)
    assert "already approved" in said_to(slack, again)
    redis.Redis.from_url(stack.redis_url).flushdb()  # approvals live on the version, not here
    assert stage_of(mlflow_server, model_name, version) == "Staging"

    approve(stack, slack, model_name, version, "UAPPROVER2", ts)
    wait_for(lambda: stage_of(mlflow_server, model_name, version) == "Production", "promotion")
    tags = MlflowClient(mlflow_server).get_model_version(model_name, version).tags
    assert tags["registry_bot.approvals"] == "UAPPROVER1,UAPPROVER2"


def test_twenty_concurrent_approvals_make_one_transition(loop, slack, mlflow_server, model_name):
    version, ts = stage(loop, slack, mlflow_server, model_name)
    users = [f"UCLICK{i:02d}" for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        urls = list(pool.map(lambda u: approve(loop, slack, model_name, version, u, ts), users))
    paths = {"/response/" + quote(u.rsplit("/", 1)[-1], safe="") for u in urls}
    told = wait_for(
        lambda: (lambda c: c if len(c) >= 19 else None)(
            [c for c in slack.calls("response_url") if c.path in paths]
        ),
        "19 replies",
        timeout=60,
    )
    time.sleep(1.0)  # a twentieth reply would be a second transition's doing
    told = [c for c in slack.calls("response_url") if c.path in paths]
    assert len(told) == 19
    assert all("already approved by" in c.params["text"] for c in told), told
    assert production_versions(mlflow_server, model_name) == [version]
    winner = (
        MlflowClient(mlflow_server)
        .get_model_version(model_name, version)
        .tags["registry_bot.decided_by"]
    )
    assert winner in users and "," not in winner
    promotions = [r for m in slack.messages("CNOTICES") if m["ts"] == ts for r in m["replies"]]
    assert len([r for r in promotions if "now Production" in r["text"]]) == 1


def test_reject_asks_for_a_reason_and_archives(loop, slack, mlflow_server, model_name):
    version, ts = stage(loop, slack, mlflow_server, model_name)
    opened_before = len(slack.calls("views.open"))
    resp, _ = click(
        loop.bot_url,
        slack,
        user="UAPPROVER1",
        action_id=REJECT_ACTION,
        value=button_value(model_name, version),
        message_ts=ts,
    )
    assert resp.status_code == 200
    opened = wait_for(lambda: slack.calls("views.open")[opened_before:], "views.open")
    view = opened[-1].params["view"]
    assert view["title"]["text"] == "Reject version"  # an approver's: a rejection

    empty = submit_view(loop.bot_url, view, user="UAPPROVER1", reason="   ")
    assert empty.status_code == 200
    assert empty.json()["response_action"] == "errors" and "reason" in empty.json()["errors"]
    time.sleep(0.5)
    assert stage_of(mlflow_server, model_name, version) == "Staging"

    ok = submit_view(loop.bot_url, view, user="UAPPROVER1", reason="worse on the EU slice")
    assert ok.status_code == 200 and not ok.content.strip()
    wait_for(lambda: stage_of(mlflow_server, model_name, version) == "Archived", "archive")
    tags = MlflowClient(mlflow_server).get_model_version(model_name, version).tags
    assert tags["registry_bot.reason"] == "worse on the EU slice"
    assert tags["registry_bot.decided_by"] == "UAPPROVER1"
    update = wait_for(lambda: updates_of(slack, ts), "notice update")[-1]
    assert "worse on the EU slice" in json.dumps(update.params["blocks"])
    assert "*Rejected* by <@UAPPROVER1>" in json.dumps(update.params["blocks"])


def test_reject_by_a_non_approver_opens_no_modal(loop, slack, mlflow_server, model_name):
    version, ts = stage(loop, slack, mlflow_server, model_name)
    opened_before = len(slack.calls("views.open"))
    resp, url = click(
        loop.bot_url,
        slack,
        user="UOUTSIDER",
        action_id=REJECT_ACTION,
        value=button_value(model_name, version),
        message_ts=ts,
    )
    assert resp.status_code == 200
    assert "neither an approver nor the requester" in said_to(slack, url)
    assert len(slack.calls("views.open")) == opened_before


@pytest.mark.parametrize("requested_by", ["UREQUESTER", "rita@example.com"])
def test_the_requester_may_withdraw_their_own_candidate(
    loop, slack, mlflow_server, model_name, requested_by
):
    version, ts = stage(loop, slack, mlflow_server, model_name, requested_by=requested_by)
    [notice] = notices_for(slack, model_name)
    reject = [
        el for b in notice.params["blocks"] if b["type"] == "actions" for el in b["elements"]
    ][1]
    opened_before = len(slack.calls("views.open"))
    resp, _ = click(
        loop.bot_url,
        slack,
        user="UREQUESTER",  # rita: not an approver
        action_id=REJECT_ACTION,
        value=reject["value"],
        message_ts=ts,
    )
    assert resp.status_code == 200
    view = wait_for(lambda: slack.calls("views.open")[opened_before:], "views.open")[-1].params[
        "view"
    ]
    # The requester's Reject is a withdrawal, and the box says so.
    assert (view["title"]["text"], view["submit"]["text"]) == ("Withdraw version", "Withdraw")
    submit_view(loop.bot_url, view, user="UREQUESTER", reason="retraining with more data")
    wait_for(lambda: stage_of(mlflow_server, model_name, version) == "Archived", "withdrawal")
    tags = MlflowClient(mlflow_server).get_model_version(model_name, version).tags
    assert (tags["registry_bot.decided_by"], tags["registry_bot.reason"]) == (
        "UREQUESTER",
        "retraining with more data",
    )
    blocks = json.dumps(
        wait_for(lambda: updates_of(slack, ts), "notice update")[-1].params["blocks"]
    )
    assert "*Withdrawn* by the requester <@UREQUESTER>" in blocks
    assert f"{model_name} v{version}: Withdrawn" in blocks


def test_the_requester_still_may_not_approve(loop, slack, mlflow_server, model_name):
    version, ts = stage(loop, slack, mlflow_server, model_name)
    url = approve(loop, slack, model_name, version, "UREQUESTER", ts)
    assert "Only approvers may approve" in said_to(slack, url)
    assert stage_of(mlflow_server, model_name, version) == "Staging"


def test_a_version_moved_in_mlflow_meanwhile_is_left_alone(loop, slack, mlflow_server, model_name):
    version, ts = stage(loop, slack, mlflow_server, model_name)
    with pytest.warns(FutureWarning):
        MlflowClient(mlflow_server).transition_model_version_stage(model_name, version, "Archived")
    url = approve(loop, slack, model_name, version, "UAPPROVER1", ts)
    text = said_to(slack, url)
    assert "no longer in Staging (now Archived)" in text and "MLflow" in text
    assert stage_of(mlflow_server, model_name, version) == "Archived"
    assert production_versions(mlflow_server, model_name) == []


def test_a_forged_slack_request_is_401(loop, slack):
    resp, _ = click(
        loop.bot_url,
        slack,
        user="UAPPROVER1",
        action_id=APPROVE_ACTION,
        value=button_value("any", "1"),
    )
    assert resp.status_code == 200
    forged = interaction(loop.bot_url, {"type": "block_actions"}, secret="not-the-secret")
    assert forged.status_code == 401
    stale = interaction(loop.bot_url, {"type": "block_actions"}, at=time.time() - 600)
    assert stale.status_code == 401


def test_requests_from_another_workspace_are_refused(loop, slack, mlflow_server, model_name):
    version, ts = stage(loop, slack, mlflow_server, model_name)
    resp, url = click(
        loop.bot_url,
        slack,
        user="UAPPROVER1",
        action_id=APPROVE_ACTION,
        value=button_value(model_name, version),
        message_ts=ts,
        team="TOTHER",
    )
    assert resp.status_code == 403 and "single workspace" in resp.text
    resp, _ = slash(loop.bot_url, slack, f"status {model_name}", user="UAPPROVER1", team="TOTHER")
    assert resp.status_code == 403
    time.sleep(1.0)
    assert stage_of(mlflow_server, model_name, version) == "Staging"
    assert not [c for c in slack.calls("response_url") if c.path.endswith(url.rsplit("/", 1)[-1])]


def test_redis_down_the_clicker_is_told_to_try_again(stacks, slack, tmp_path):
    from devkit.stack import free_port, start_redis, stop

    port = free_port()
    server = start_redis(port, tmp_path / "redis")
    stack = stacks.make(redis_base=f"redis://127.0.0.1:{port}")
    stack.start("bot")
    try:
        stop(server)
        resp, url = click(
            stack.bot_url,
            slack,
            user="UAPPROVER1",
            action_id=APPROVE_ACTION,
            value=button_value("any-model", "1"),
        )
        assert resp.status_code == 200  # acknowledged in time, whatever Redis does
        assert "try again" in said_to(slack, url)
    finally:
        stack.stop()
        stop(server)


def test_a_requester_is_on_record_when_the_pipeline_registered_the_version_itself(
    loop, slack, mlflow_server, model_name
):
    # The pipeline's own register step (mlflow.register_model), then the event naming
    # the approver who ran it: the version exists before registry-bot hears of it.
    run_id = log_model(mlflow_server, constant=1.0)
    registered = mlflow.register_model(f"runs:/{run_id}/model", model_name)
    body = {"model_name": model_name, "run_id": run_id, "requested_by": "UAPPROVER1"}
    assert loop.post_training(body).status_code == 202
    version = registered.version
    tags = wait_for(
        lambda: (lambda t: t if t.get("registry_bot.notice_ts") else None)(
            version_tags(mlflow_server, model_name, version)
        ),
        "the notice of the pipeline's version",
    )
    assert tags["registry_bot.requested_by"] == "UAPPROVER1"
    ts = tags["registry_bot.notice_ts"]
    assert "<@UAPPROVER1>" in json.dumps(message_in(slack, "CNOTICES", ts)["blocks"])

    own = approve(loop, slack, model_name, version, "UAPPROVER1", ts)
    assert "someone else has to approve it" in said_to(slack, own)
    assert stage_of(mlflow_server, model_name, version) == "Staging"
    approve(loop, slack, model_name, version, "UAPPROVER2", ts)
    wait_for(lambda: stage_of(mlflow_server, model_name, version) == "Production", "promotion")
    assert version_tags(mlflow_server, model_name, version)["registry_bot.decided_by"] == (
        "UAPPROVER2"
    )
