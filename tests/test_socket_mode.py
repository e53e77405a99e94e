"""Socket Mode end to end: the bot on slack_sdk's client, over a real WebSocket to the double."""

from __future__ import annotations

import json
import time

import pytest
from mlflow import MlflowClient

from bot.listeners.decisions import EMPTY_REASON
from registry.views.notice import APPROVE_ACTION, REJECT_ACTION, button_value
from tests.support import (
    SERVICES,
    click_payload,
    mention_body,
    over_socket,
    said_to,
    slash_form,
    stage,
    stage_of,
    updates_of,
    view_payload,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def socket_loop(stacks, slack):
    """The services with the bot in Socket Mode: SLACK_TRANSPORT=socket, no HTTP endpoint."""
    return stacks.get(services=SERVICES, SLACK_APP_TOKEN=slack.app_token, SLACK_TRANSPORT="socket")


def click(slack, model_name, version, ts, *, user, action_id=APPROVE_ACTION):
    """Click a notice's button over Socket Mode; return the ack and the response URL."""
    payload, url = click_payload(
        slack,
        user=user,
        action_id=action_id,
        value=button_value(model_name, version),
        message_ts=ts,
    )
    return over_socket(slack, "interactive", payload), url


def test_the_bot_connects_with_the_app_token(socket_loop, slack):
    assert slack.socket.links(slack.app_token) >= 1
    opened = slack.calls("apps.connections.open")
    assert opened and opened[-1].status == 200 and opened[-1].response["url"].startswith("ws://")
    assert opened[-1].headers["Authorization"] == f"Bearer {slack.app_token}"


def test_approval_over_socket_mode(socket_loop, slack, mlflow_server, model_name):
    version, ts = stage(socket_loop, slack, mlflow_server, model_name)
    acked, _ = click(slack, model_name, version, ts, user="UAPPROVER1")
    assert acked.response is None  # a bare ack: the worker does the rest
    wait_for(lambda: stage_of(mlflow_server, model_name, version) == "Production", "promotion")
    update = wait_for(lambda: updates_of(slack, ts), "notice update")[-1]
    assert "*Approved* by <@UAPPROVER1>" in json.dumps(update.params["blocks"])


def test_reject_modal_over_socket_mode(socket_loop, slack, mlflow_server, model_name):
    version, ts = stage(socket_loop, slack, mlflow_server, model_name)
    opened_before = len(slack.calls("views.open"))
    click(slack, model_name, version, ts, user="UAPPROVER2", action_id=REJECT_ACTION)
    view = wait_for(lambda: slack.calls("views.open")[opened_before:], "views.open")[-1].params[
        "view"
    ]

    blank = over_socket(slack, "interactive", view_payload(view, user="UAPPROVER2", reason="  "))
    assert blank.response == {"response_action": "errors", "errors": {"reason": EMPTY_REASON}}
    time.sleep(0.5)
    assert stage_of(mlflow_server, model_name, version) == "Staging"

    reason = "drifts on the new cohort"
    done = over_socket(slack, "interactive", view_payload(view, user="UAPPROVER2", reason=reason))
    assert done.response is None  # closes the modal
    wait_for(lambda: stage_of(mlflow_server, model_name, version) == "Archived", "archive")
    tags = MlflowClient(mlflow_server).get_model_version(model_name, version).tags
    assert (tags["registry_bot.reason"], tags["registry_bot.decided_by"]) == (reason, "UAPPROVER2")
    update = wait_for(lambda: updates_of(slack, ts), "notice update")[-1]
    assert "*Rejected* by <@UAPPROVER2>" in json.dumps(update.params["blocks"])


def test_a_refusal_over_socket_mode_changes_nothing(socket_loop, slack, mlflow_server, model_name):
    version, ts = stage(socket_loop, slack, mlflow_server, model_name)
    _, url = click(slack, model_name, version, ts, user="UOUTSIDER")
    assert "not one" in said_to(slack, url)
    time.sleep(0.5)
    assert stage_of(mlflow_server, model_name, version) == "Staging"
    assert updates_of(slack, ts) == []


def test_a_slash_command_over_socket_mode(socket_loop, slack, mlflow_server, model_name):
    version, _ = stage(socket_loop, slack, mlflow_server, model_name)
    form, url = slash_form(slack, f"status {model_name}", user="UOUTSIDER")
    over_socket(slack, "slash_commands", form)
    answer = wait_for(lambda: _posted_to(slack, url), "status answer")[-1]
    assert f"Staging: v{version}" in answer["text"] and answer["response_type"] == "ephemeral"


def test_a_mention_over_socket_mode_runs_once_however_often_redelivered(
    socket_loop, slack, mlflow_server, model_name
):
    version, _ = stage(socket_loop, slack, mlflow_server, model_name)
    body = mention_body(f"status {model_name}", user="UREQUESTER")
    before = len(slack.calls("chat.postEphemeral"))
    for attempt in (0, 1, 2):
        over_socket(slack, "events_api", body, retry_attempt=attempt, retry_reason="timeout")
    answers = wait_for(lambda: _ephemerals_to(slack, "UREQUESTER", before), "mention answer")
    time.sleep(1.5)  # a second answer would come from a redelivery run again
    answers = _ephemerals_to(slack, "UREQUESTER", before)
    assert len(answers) == 1 and f"Staging: v{version}" in answers[0]["text"]


def test_every_envelope_was_acknowledged_within_three_seconds(socket_loop, slack):
    form, url = slash_form(slack, "help", user="UOUTSIDER")
    over_socket(slack, "slash_commands", form)
    assert "status <model>" in wait_for(lambda: _posted_to(slack, url), "help")[-1]["text"]
    envelopes = slack.socket.envelopes()
    assert envelopes
    slow = [
        (e.type, e.ack_seconds) for e in envelopes if e.ack_seconds is None or e.ack_seconds >= 3
    ]
    assert slow == []


def _posted_to(slack, response_url: str) -> list[dict]:
    path = "/response/" + response_url.rsplit("/", 1)[-1]
    return [c.params for c in slack.calls("response_url") if c.path == path]


def _ephemerals_to(slack, user: str, since: int) -> list[dict]:
    return [c.params for c in slack.calls("chat.postEphemeral")[since:] if c.params["user"] == user]
