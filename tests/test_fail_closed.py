"""When Slack cannot say who a clicker is, nothing that depends on it is decided (SPEC 8)."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from devkit.slack_double import SlackDouble
from registry.adapters.directory import SlackDirectory
from registry.adapters.slack import RETRIES, web_client
from registry.flows import lifecycle
from registry.rules.decisions import OWN_VERSION, TRY_AGAIN, LookupFailed
from registry.rules.events import TrainingEvent
from registry.rules.settings import Settings
from registry.views.notice import APPROVE_ACTION, REJECT_ACTION, button_value
from tests.support import (
    answered,
    click,
    fake_services,
    log_model,
    slash,
    wait_for,
)

FAILING = RETRIES + 1  # every attempt the client makes: the first and each retry
MODEL = "churn"


# -- the directory over the Slack Web API ------------------------------------------------


@pytest.fixture
def own_slack():
    """A Slack double of this module's own, so its faults touch no other test."""
    users = {
        "UADA": {"name": "ada", "email": "ada@example.com"},
        "UGUS": {"name": "gus", "email": "gus@example.com"},
        "UNOMAIL": {"name": "nomail"},  # as Slack answers without users:read.email
    }
    with SlackDouble(token="xoxb-own", users=users, usergroups={"SLEADS": ["UGUS"]}) as double:
        yield double


def directory(double: SlackDouble, **settings) -> SlackDirectory:
    config = Settings(
        mlflow_tracking_uri="unused",
        slack_bot_token=double.token,
        slack_api_url=double.api_url,
        **settings,
    )
    return SlackDirectory(config, web_client(config))


@pytest.mark.slow
def test_a_failed_users_info_raises_and_is_not_cached(own_slack):
    found = directory(own_slack, approvers=("UADA",))
    own_slack.fail_next("users.info", status=500, count=FAILING)
    with pytest.raises(LookupFailed, match="users.info"):
        found.clicker("UADA", with_email=True)
    assert len(own_slack.calls("users.info")) == FAILING  # the client's retries, then us
    assert found.clicker("UADA", with_email=True).email == "ada@example.com"  # asked afresh
    with pytest.raises(LookupFailed, match="no e-mail"):
        found.clicker("UNOMAIL", with_email=True)


@pytest.mark.slow
def test_a_failed_group_lookup_raises_and_is_not_cached(own_slack):
    found = directory(own_slack, approver_group="SLEADS")
    own_slack.fail_next("usergroups.users.list", status=500, count=FAILING)
    with pytest.raises(LookupFailed, match="usergroups.users.list"):
        found.clicker("UGUS")
    assert found.clicker("UGUS").is_approver and not found.clicker("UADA").is_approver
    assert len(own_slack.calls("usergroups.users.list")) == FAILING + 1  # then cached


@pytest.mark.slow
def test_an_unknown_email_is_an_answer_a_failed_lookup_is_not(own_slack):
    found = directory(own_slack)
    assert found.user_for_email("ada@example.com") == "UADA"
    assert found.user_for_email("nobody@example.com") == ""
    own_slack.fail_next("users.lookupByEmail", status=429, retry_after=0, count=FAILING)
    with pytest.raises(LookupFailed, match="users.lookupByEmail"):
        found.user_for_email("ada@example.com")


# -- the decision rules against the in-memory fakes ----------------------------------------


def staged(svc, requested_by: str) -> str:
    event = TrainingEvent(MODEL, "run-1", requested_by=requested_by)
    return lifecycle.stage_training_event(svc, event, event_id="e1").version


def test_an_approval_that_needs_a_failed_lookup_is_refused_and_not_counted():
    svc = fake_services(approvers=("UA", "UB"), emails={"UA": "ada@example.com"})
    svc.directory.down = {"users.lookupByEmail"}  # at notice time: the requester stays unknown
    version = staged(svc, "ada@example.com")
    assert not svc.gateway.get_version(MODEL, version).tag("requested_by_user")
    svc.directory.down = {"users.lookupByEmail", "users.info"}
    assert lifecycle.approve(svc, MODEL, version, user="UA") == "try_again"
    assert svc.notifier.told[-1] == ("UA", TRY_AGAIN)
    mv = svc.gateway.get_version(MODEL, version)
    assert (mv.stage, mv.tag("approvals"), mv.tag("decision")) == ("Staging", "", "")
    assert [e["type"] for e in json.loads(mv.tags["registry_bot.log"])] == ["staged"]

    svc.directory.down = set()
    assert lifecycle.approve(svc, MODEL, version, user="UA") == "refused"
    assert svc.notifier.told[-1] == ("UA", OWN_VERSION.format(name=MODEL, version=version))
    assert svc.gateway.get_version(MODEL, version).tag("requested_by_user") == "UA"


def test_the_requester_is_resolved_at_click_time_when_not_at_notice_time():
    svc = fake_services(approvers=("UA", "UB"), emails={"UA": "ada@example.com"})
    svc.directory.down = {"users.lookupByEmail"}
    version = staged(svc, "ada@example.com")
    svc.directory.down = {"users.info"}  # the click needs no e-mail once the requester is known
    assert lifecycle.approve(svc, MODEL, version, user="UA") == "refused"
    assert svc.notifier.told[-1][1] == OWN_VERSION.format(name=MODEL, version=version)
    assert lifecycle.approve(svc, MODEL, version, user="UB") == "promoted"


def test_an_email_compare_decides_when_only_the_requester_lookup_failed():
    svc = fake_services(approvers=("UA", "UB"), emails={"UA": "ada@example.com"})
    svc.directory.down = {"users.lookupByEmail"}
    version = staged(svc, "ada@example.com")
    assert lifecycle.approve(svc, MODEL, version, user="UA") == "refused"  # by e-mail
    assert svc.notifier.told[-1][1] == OWN_VERSION.format(name=MODEL, version=version)


# -- through the running bot and worker ------------------------------------------------------


@pytest.fixture(scope="module")
def identity(stacks):
    """A stack of its own, so no earlier test's cached answers hide a failing lookup."""
    return stacks.get(
        services=("worker", "webhooks", "bot"), APPROVER_GROUP="SAPPROVERS", FAULTS="identity"
    )


@pytest.mark.slow
def test_a_requester_known_by_email_is_told_to_try_again_then_refused_as_their_own(
    identity, slack, mlflow_server, model_name
):
    client = MlflowClient(mlflow_server)
    slack.fail_next("users.lookupByEmail", status=500, count=FAILING)  # at notice time
    run_id = log_model(mlflow_server, constant=1.0)
    body = {"model_name": model_name, "run_id": run_id, "requested_by": "ada@example.com"}
    assert identity.post_training(body).status_code == 202
    tags = wait_for(
        lambda: next(
            (
                mv.tags
                for mv in client.search_model_versions(f"name = '{model_name}'")
                if "registry_bot.notice_ts" in mv.tags
            ),
            None,
        ),
        "the notice",
        timeout=60,
    )
    assert "registry_bot.requested_by_user" not in tags
    v1 = button_value(model_name, "1")

    # Slack fails every users.* lookup, past the client's retries.
    slack.fail_next("users.lookupByEmail", status=500, count=FAILING)
    slack.fail_next("users.info", status=500, count=FAILING)
    _, url = click(identity.bot_url, slack, user="UAPPROVER1", action_id=APPROVE_ACTION, value=v1)
    assert answered(slack, url, timeout=60)[-1]["text"] == TRY_AGAIN
    tags = client.get_model_version(model_name, "1").tags
    assert "registry_bot.approvals" not in tags and "registry_bot.decision" not in tags
    assert [e["type"] for e in json.loads(tags["registry_bot.log"])] == ["staged"]
    assert client.get_model_version(model_name, "1").current_stage == "Staging"

    # Slack answers again: the same click is refused as the requester's own version.
    _, url = click(identity.bot_url, slack, user="UAPPROVER1", action_id=APPROVE_ACTION, value=v1)
    own = OWN_VERSION.format(name=model_name, version="1")
    assert answered(slack, url, timeout=30)[-1]["text"] == own
    tags = client.get_model_version(model_name, "1").tags
    assert tags["registry_bot.requested_by_user"] == "UAPPROVER1"
    assert "registry_bot.approvals" not in tags
    assert client.get_model_version(model_name, "1").current_stage == "Staging"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["approve", "reject", "rollback"])
def test_a_failed_group_lookup_gets_try_again_from_the_bot(identity, slack, model_name, how):
    slack.fail_next("usergroups.users.list", status=500, count=FAILING)
    before = len(slack.calls("views.open"))
    if how == "rollback":
        _, url = slash(identity.bot_url, slack, f"rollback {model_name}", user="UGROUPIE")
    else:
        action = APPROVE_ACTION if how == "approve" else REJECT_ACTION
        value = button_value(model_name, "1")
        _, url = click(identity.bot_url, slack, user="UGROUPIE", action_id=action, value=value)
    assert answered(slack, url, timeout=30)[-1]["text"] == TRY_AGAIN
    assert len(slack.calls("views.open")) == before  # no reject modal was opened either
