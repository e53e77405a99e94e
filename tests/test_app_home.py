"""The App Home tab: the pure view, then opening it and deciding from it through the bot."""

from __future__ import annotations

import json
import time

import pytest
from mlflow import MlflowClient

from registry.decisions import Clicker
from registry.home import BLOCK_LIMIT, MAX_AWAITING, home_view
from registry.home_tab import publish_home
from registry.messages import APPROVE_ACTION, REJECT_ACTION, button_value
from registry.services import Services
from registry.settings import Settings
from registry.versions import ModelVersion
from tests.fakes import FakeDirectory, FakeGateway, RecordingNotifier
from tests.support import (
    SERVICES,
    home_click_payload,
    interaction,
    open_home,
    stage,
    stage_of,
    submit_view,
    updates_of,
    wait_for,
)

NOW = 1_800_000_000.0
ADA = Clicker("UADA", is_approver=True)


def mv(name, version, stage, **tags) -> ModelVersion:
    return ModelVersion(
        name, version, stage, tags={f"registry_bot.{k}": v for k, v in tags.items()}
    )


def buttons(view: dict) -> list[tuple[str, str]]:
    """Return (button text, value) for every button in the view, in order."""
    return [
        (el["text"]["text"], el["value"])
        for block in view["blocks"]
        if block["type"] == "actions"
        for el in block["elements"]
    ]


def text_of(view: dict) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


# -- the view, pure -------------------------------------------------------------------------


def test_an_approver_sees_what_awaits_them_with_both_buttons_newest_first():
    versions = [
        mv("churn", "3", "Staging", staged_at="200", requested_by="URITA", approvals="UGRACE"),
        mv("fraud", "1", "Staging", staged_at="300", requested_by="URITA"),
        mv("churn", "2", "Production", decided_by="UGRACE", production_since=str(NOW - 60)),
    ]
    view = home_view(ADA, versions, required=2, now=NOW)
    assert view["type"] == "home"
    assert buttons(view) == [
        ("Approve", button_value("fraud", "1")),
        ("Reject", button_value("fraud", "1")),
        ("Approve", button_value("churn", "3")),
        ("Reject", button_value("churn", "3")),
    ]
    shown = text_of(view)
    assert "*churn v3* in Staging, requested by <@URITA>" in shown and "1 of 2 approvals" in shown
    assert "Production: v2 since" in shown and "approved by <@UGRACE>" in shown
    assert "Staging: v3, 1 of 2 approvals (<@UGRACE>)" in shown


def test_the_requester_may_only_withdraw_and_an_outsider_decides_nothing():
    versions = [mv("churn", "3", "Staging", requested_by="UADA")]
    # Their Reject is a withdraw: it names them as the requester, as the notice's does.
    assert buttons(home_view(ADA, versions, required=1, now=NOW)) == [
        ("Reject", button_value("churn", "3", "UADA"))
    ]
    # The requester may withdraw even when they are no approver (SPEC 6).
    requester = Clicker("UADA")
    assert buttons(home_view(requester, versions, required=1, now=NOW)) == [
        ("Reject", button_value("churn", "3", "UADA"))
    ]
    outsider = Clicker("UOLAF")
    view = home_view(outsider, versions, required=1, now=NOW)
    assert buttons(view) == [] and "Nothing awaits your decision." in text_of(view)
    nobody = Clicker("UADA", nobody_may_approve=True)
    assert "nobody can approve" in text_of(home_view(nobody, versions, required=1, now=NOW))


def test_decided_versions_and_those_past_their_gates_await_nothing():
    versions = [
        mv("a", "1", "Staging", decision="approved"),
        mv("b", "1", "Staging", gates="failed"),
        mv("c", "1", "Staging", canary_state="running", canary_until=str(NOW + 60)),
        mv("d", "1", "Archived"),
    ]
    assert buttons(home_view(ADA, versions, required=1, now=NOW)) == []


def test_the_last_changes_are_listed_newest_first():
    log = json.dumps(
        [
            {"type": "staged", "at": str(NOW - 30), "actor": "URITA"},
            {"type": "rejected", "at": str(NOW - 10), "actor": "UADA", "reason": "worse on EU"},
        ]
    )
    view = home_view(ADA, [mv("churn", "4", "Archived", log=log)], required=1, now=NOW)
    changes = view["blocks"][-1]["text"]["text"].splitlines()
    assert "churn v4 rejected by <@UADA>: worse on EU" in changes[0]
    assert "churn v4 staged by <@URITA>" in changes[1]


def test_a_busy_registry_stays_within_slacks_100_blocks():
    versions = [
        mv(f"model-{i:03d}", str(v), "Staging" if v == 2 else "Production", staged_at=str(i))
        for i in range(300)
        for v in (1, 2)
    ]
    view = home_view(ADA, versions, required=1, now=NOW)
    assert len(view["blocks"]) <= BLOCK_LIMIT
    assert len(buttons(view)) == 2 * MAX_AWAITING
    assert buttons(view)[0][1] == button_value("model-299", "2")  # newest first
    assert "…and 280 more" in text_of(view)


def test_publish_home_reads_the_registry_and_publishes_for_the_user():
    gateway, notifier = FakeGateway(), RecordingNotifier()
    staged = gateway.register("churn", "r1", "model", "", {"registry_bot.requested_by": "URITA"})
    gateway.move("churn", staged.version, "Staging")
    svc = Services(
        gateway=gateway,
        notifier=notifier,
        settings=Settings(mlflow_tracking_uri="x", approvers=("UADA",)),
        directory=FakeDirectory(["UADA"]),
        clock=lambda: NOW,
    )
    assert publish_home(svc, "UADA") == "published"
    assert buttons(notifier.homes["UADA"]) == [
        ("Approve", button_value("churn", "1")),
        ("Reject", button_value("churn", "1")),
    ]


# -- through the running bot and worker -------------------------------------------------------


@pytest.fixture(scope="module")
def loop(stacks):
    return stacks.get(services=SERVICES)


def home_of(slack, user: str, *, after: float, has: str = "") -> dict:
    """Wait for a Home tab published for `user` after `after` (containing `has`)."""

    def published():
        calls = [
            c
            for c in slack.calls("views.publish")
            if c.params.get("user_id") == user and c.at > after and c.status == 200
        ]
        return [c for c in calls if has in json.dumps(c.response)] if calls else []

    return wait_for(published, f"{user}'s Home tab", timeout=20)[-1].response["view"]


@pytest.mark.slow
def test_opening_home_then_approving_from_it_updates_the_notice(
    loop, slack, mlflow_server, model_name
):
    version, ts = stage(loop, slack, mlflow_server, model_name)
    opened = time.time()
    assert open_home(loop.bot_url, "UAPPROVER1").status_code == 200
    home = home_of(slack, "UAPPROVER1", after=opened)
    assert buttons(home)[:2] == [
        ("Approve", button_value(model_name, version)),
        ("Reject", button_value(model_name, version)),
    ]

    clicked = time.time()
    payload = home_click_payload(
        home, user="UAPPROVER1", action_id=APPROVE_ACTION, value=button_value(model_name, version)
    )
    assert interaction(loop.bot_url, payload).status_code == 200
    wait_for(lambda: stage_of(mlflow_server, model_name, version) == "Production", "promotion")
    update = wait_for(lambda: updates_of(slack, ts), "notice update")[-1]
    assert "*Approved* by <@UAPPROVER1>" in json.dumps(update.params["blocks"])
    redrawn = home_of(slack, "UAPPROVER1", after=clicked, has=f"Production: v{version}")
    assert button_value(model_name, version) not in [value for _, value in buttons(redrawn)]
    assert "approved by <@UAPPROVER1>" in text_of(redrawn)


@pytest.mark.slow
def test_rejecting_from_home_opens_the_modal_and_archives(loop, slack, mlflow_server, model_name):
    version, ts = stage(loop, slack, mlflow_server, model_name)
    opened = time.time()
    open_home(loop.bot_url, "UAPPROVER2")
    home = home_of(slack, "UAPPROVER2", after=opened)
    before = len(slack.calls("views.open"))
    payload = home_click_payload(
        home, user="UAPPROVER2", action_id=REJECT_ACTION, value=button_value(model_name, version)
    )
    interaction(loop.bot_url, payload)
    view = wait_for(lambda: slack.calls("views.open")[before:], "views.open")[-1].params["view"]
    assert json.loads(view["private_metadata"])["home"] is True

    submitted = time.time()
    submit_view(loop.bot_url, view, user="UAPPROVER2", reason="fails the fairness review")
    wait_for(lambda: stage_of(mlflow_server, model_name, version) == "Archived", "archive")
    update = wait_for(lambda: updates_of(slack, ts), "notice update")[-1]
    assert "fails the fairness review" in json.dumps(update.params["blocks"])
    redrawn = home_of(slack, "UAPPROVER2", after=submitted, has="fails the fairness review")
    assert button_value(model_name, version) not in [value for _, value in buttons(redrawn)]


@pytest.mark.slow
def test_a_refused_click_from_home_is_told_in_the_channel_and_changes_nothing(
    loop, slack, mlflow_server, model_name
):
    version, ts = stage(loop, slack, mlflow_server, model_name)
    opened = time.time()
    open_home(loop.bot_url, "UAPPROVER1")
    home = home_of(slack, "UAPPROVER1", after=opened)
    before = len(slack.calls("chat.postEphemeral"))
    # Someone who is not an approver clicks a button they were never shown (a stale tab).
    payload = home_click_payload(
        home, user="UOUTSIDER", action_id=APPROVE_ACTION, value=button_value(model_name, version)
    )
    assert interaction(loop.bot_url, payload).status_code == 200
    told = wait_for(lambda: slack.calls("chat.postEphemeral")[before:], "refusal")
    assert told[-1].params["user"] == "UOUTSIDER" and "not one" in told[-1].params["text"]
    assert told[-1].params["channel"] == "CNOTICES"
    time.sleep(0.5)
    assert stage_of(mlflow_server, model_name, version) == "Staging"
    assert updates_of(slack, ts) == []
    outsider_opened = time.time()
    open_home(loop.bot_url, "UOUTSIDER")
    assert buttons(home_of(slack, "UOUTSIDER", after=outsider_opened)) == []
    assert (
        MlflowClient(mlflow_server)
        .get_model_version(model_name, version)
        .tags.get("registry_bot.approvals")
        is None
    )
