"""Governance end to end: real MLflow, Redis, worker, bot and webhooks, and the Slack double.

Per-model channels and approvers, approval slots, protected Production in both registry
modes, change freezes, and malformed keys stopping every service (SPEC 7 and 11).
Sweeps run in this process on the same registry and Slack, with a hand-moved clock
where the test needs time to pass, exactly as the scheduler's sweep task would.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

import pytest
import redis
from mlflow import MlflowClient

from registry.adapters.locks import model_lock
from registry.flows.protection import ALERT_EVENT
from registry.flows.sweep import sweep
from registry.views.alerts import ACCEPT_ACTION, REVERT_ACTION
from tests.support import (
    MLFLOW_SECRET,
    Clock,
    answered,
    approve_click,
    button_in,
    button_texts,
    click,
    confirm_with_reason,
    local_services,
    message_in,
    slash,
    stage_and_wait,
    submit_view,
    version_tags,
    wait_for,
)

pytestmark = pytest.mark.slow
SERVICES = ("worker", "webhooks", "bot")
RUN = uuid.uuid4().hex[:6]
FRAUD, CHURN, SLOTS = f"gv-fraud-{RUN}", f"gv-churn-{RUN}", f"gv-slots-{RUN}"
GUARDED, HEALING, FROZEN = f"gv-guarded-{RUN}", f"gv-healing-{RUN}", f"gv-frozen-{RUN}"
ALIASED = f"gv-aliased-{RUN}"
GROUPS = {
    "SFRAUDML": ["UFRAUD1"],
    "SCHURNML": ["UCHURN1"],
    "SML": ["UMLLEAD1", "UMLLEAD2", "UBOTH", "UREQML"],
    "SRISK": ["URISK1", "UBOTH", "UREQRISK"],
}
# A window that opened a minute ago and lasts two hours: a freeze active now.
_OPENED = datetime.now(UTC) - timedelta(minutes=1)
FREEZE_CRON = f"{_OPENED.minute} {_OPENED.hour} * * *"
FREEZE_ENDS = _OPENED.replace(second=0, microsecond=0) + timedelta(hours=2)

POLICY = f"""
defaults:
  protect_production: off      # only this module's models are watched
models:
  {FRAUD}:
    channel: CFRAUD
    approvers: {{groups: [SFRAUDML]}}
  {CHURN}:
    channel: CCHURN
    approvers: {{groups: [SCHURNML]}}
  {SLOTS}:
    channel: CSLOTS
    approvers: {{groups: [SML, SRISK]}}
    approvals:
      - {{group: SML, count: 1}}
      - {{group: SRISK, count: 1}}
  {GUARDED}:
    channel: CGUARD
    protect_production: alert
  {HEALING}:
    channel: CHEAL
    protect_production: revert
  {FROZEN}:
    channel: CFROZEN
    freeze:
      - schedule: "{FREEZE_CRON}"
        duration: 2h
        timezone: UTC
        reason: release freeze
  {ALIASED}:
    channel: CALIAS
    protect_production: alert
"""


@pytest.fixture(scope="module")
def governed(stacks, slack, tmp_path_factory):
    """One stack (stages mode) with the governance policy, and the Slack user groups."""
    slack.usergroups.update(GROUPS)
    path = tmp_path_factory.mktemp("governance") / "policy.yaml"
    path.write_text(POLICY)
    return stacks.get(services=SERVICES, POLICY_FILE=str(path)), str(path)


def said(slack, url: str) -> str:
    return answered(slack, url)[-1]["text"]


def stage_of(mlflow_server, model, version) -> str:
    return MlflowClient(mlflow_server).get_model_version(model, version).current_stage


def promoted(stack, slack, mlflow_server, model, user, *, constant) -> str:
    version, channel, ts = stage_and_wait(stack, mlflow_server, model, constant=constant)
    approve_click(stack, slack, model, version, user, ts, channel)
    wait_for(lambda: stage_of(mlflow_server, model, version) == "Production", "promotion")
    wait_for(lambda: version_tags(mlflow_server, model, version).get("registry_bot.announced"), "")
    return version


def local_sweeps(mlflow_server, slack, model, count, *, clock=None, **overrides) -> list[dict]:
    """Run `count` sweeps of `model` here, as the scheduler's task does; return what each did."""
    svc = local_services(mlflow_server, slack, clock=clock, policy=POLICY, **overrides)
    return [
        {k: len(v) for k, v in sweep(svc, lambda n: nullcontext(), [model]).done.items()}
        for _ in range(count)
    ]


def alerts_in(slack, channel: str) -> list[dict]:
    """Return the out-of-band alerts posted in `channel` (as they read now)."""
    return [
        m
        for m in slack.messages(channel)
        if (m.get("metadata") or {}).get("event_type") == ALERT_EVENT
    ]


def by_hand(mlflow_server, model, version) -> None:
    """Move a version to Production in MLflow itself, as anyone with access can."""
    with pytest.warns(FutureWarning):
        MlflowClient(mlflow_server).transition_model_version_stage(
            model, version, "Production", archive_existing_versions=True
        )


def log_entries(mlflow_server, model, version) -> list[dict]:
    return json.loads(version_tags(mlflow_server, model, version).get("registry_bot.log", "[]"))


# --- acceptance 1: per-model channels and approvers ---


def test_each_model_notices_in_its_channel_and_refuses_the_other_models_approvers(
    governed, slack, mlflow_server
):
    stack, _ = governed
    fraud_v, fraud_channel, fraud_ts = stage_and_wait(stack, mlflow_server, FRAUD, constant=1.0)
    churn_v, churn_channel, churn_ts = stage_and_wait(stack, mlflow_server, CHURN, constant=2.0)
    assert (fraud_channel, churn_channel) == ("CFRAUD", "CCHURN")
    assert message_in(slack, "CFRAUD", fraud_ts)["text"].startswith(f"{FRAUD} v{fraud_v}")
    assert message_in(slack, "CCHURN", churn_ts)["text"].startswith(f"{CHURN} v{churn_v}")
    assert not [m for m in slack.messages("CNOTICES") if FRAUD in m["text"] or CHURN in m["text"]]

    refused = approve_click(stack, slack, CHURN, churn_v, "UFRAUD1", churn_ts, "CCHURN")
    assert "not one" in said(slack, refused)
    _, url = slash(stack.bot_url, slack, f"rollback {CHURN}", user="UFRAUD1", channel="CCHURN")
    assert "Only approvers" in said(slack, url)
    assert stage_of(mlflow_server, CHURN, churn_v) == "Staging"

    approve_click(stack, slack, FRAUD, fraud_v, "UFRAUD1", fraud_ts, "CFRAUD")
    wait_for(lambda: stage_of(mlflow_server, FRAUD, fraud_v) == "Production", "fraud promoted")
    # The thread also holds the notice's evidence: wait for the promotion's own reply.
    wait_for(
        lambda: any(
            "now Production" in r.get("text", "")
            for r in message_in(slack, "CFRAUD", fraud_ts)["replies"]
        ),
        "the promotion's thread reply",
    )

    _, url = slash(stack.bot_url, slack, f"status {FRAUD}", user="UOUTSIDER")
    status = said(slack, url)
    assert "Channel: <#CFRAUD>" in status and "Approvers: group SFRAUDML" in status
    _, url = slash(stack.bot_url, slack, f"history {CHURN}", user="UOUTSIDER")
    assert "Channel: <#CCHURN>" in said(slack, url)


# --- acceptance 2: separation of duties ---


def test_slots_need_an_ml_lead_and_a_risk_reviewer_who_are_different_people(
    governed, slack, mlflow_server
):
    stack, _ = governed
    v1, channel, ts = stage_and_wait(stack, mlflow_server, SLOTS, constant=1.0)
    assert channel == "CSLOTS"
    first = approve_click(stack, slack, SLOTS, v1, "UMLLEAD1", ts, channel)
    assert "still missing: 1 from group SRISK" in said(slack, first)
    notice = json.dumps(message_in(slack, channel, ts)["blocks"], ensure_ascii=False)
    assert "✅ group SML (1 needed): <@UMLLEAD1>" in notice
    assert "⬜ group SRISK (1 needed): nobody yet, 1 missing" in notice

    second = approve_click(stack, slack, SLOTS, v1, "UMLLEAD2", ts, channel)
    assert "already full" in said(slack, second)
    assert stage_of(mlflow_server, SLOTS, v1) == "Staging"
    approve_click(stack, slack, SLOTS, v1, "URISK1", ts, channel)
    wait_for(lambda: stage_of(mlflow_server, SLOTS, v1) == "Production", "promoted by risk")
    assert version_tags(mlflow_server, SLOTS, v1)["registry_bot.approvals"] == "UMLLEAD1,URISK1"

    v2, _, ts2 = stage_and_wait(stack, mlflow_server, SLOTS, constant=2.0)
    both = approve_click(stack, slack, SLOTS, v2, "UBOTH", ts2, channel)
    assert "still missing: 1 from group SRISK" in said(slack, both)
    again = approve_click(stack, slack, SLOTS, v2, "UBOTH", ts2, channel)
    assert "already approved" in said(slack, again)
    assert stage_of(mlflow_server, SLOTS, v2) == "Staging"  # one person, one slot

    for requester in ("UREQML", "UREQRISK"):
        version, _, ts3 = stage_and_wait(
            stack, mlflow_server, SLOTS, constant=3.0, requested_by=requester
        )
        own = approve_click(stack, slack, SLOTS, version, requester, ts3, channel)
        assert "someone else" in said(slack, own)
        assert "registry_bot.approvals" not in version_tags(mlflow_server, SLOTS, version)


# --- acceptance 3: protected Production ---


def test_a_stage_moved_by_hand_is_alerted_once_then_reverted_then_accepted(
    governed, slack, mlflow_server
):
    stack, _ = governed
    v1 = promoted(stack, slack, mlflow_server, GUARDED, "UAPPROVER1", constant=1.0)
    v2, _, _ = stage_and_wait(stack, mlflow_server, GUARDED, constant=2.0)
    by_hand(mlflow_server, GUARDED, v2)
    assert local_sweeps(mlflow_server, slack, GUARDED, 4) == [{"out_of_band": 1}, {}, {}, {}]
    (alert,) = alerts_in(slack, "CGUARD")
    assert f"{GUARDED} v{v2} became Production in place of v{v1}" in alert["text"]
    assert button_texts(alert["blocks"]) == ["Revert", "Accept"]
    revert_value = next(
        el["value"] for b in alert["blocks"] if b["type"] == "actions" for el in b["elements"]
    )

    resp, url = click(
        stack.bot_url,
        slack,
        user="UOUTSIDER",
        action_id=REVERT_ACTION,
        value=revert_value,
        message_ts=alert["ts"],
        channel="CGUARD",
    )
    assert resp.status_code == 200 and "not one" in said(slack, url)
    assert stage_of(mlflow_server, GUARDED, v2) == "Production"
    click(
        stack.bot_url,
        slack,
        user="UAPPROVER1",
        action_id=REVERT_ACTION,
        value=revert_value,
        message_ts=alert["ts"],
        channel="CGUARD",
    )
    wait_for(lambda: stage_of(mlflow_server, GUARDED, v1) == "Production", "reverted to v1")
    # v1 moves first, then v2 is archived by a transition of its own: wait for the second.
    wait_for(lambda: stage_of(mlflow_server, GUARDED, v2) == "Archived", "v2 archived")
    resolved = wait_for(
        lambda: (lambda m: m if not button_texts(m["blocks"]) else None)(
            message_in(slack, "CGUARD", alert["ts"])
        ),
        "the alert without buttons",
    )
    assert "reverted" in resolved["text"]
    assert [e["type"] for e in log_entries(mlflow_server, GUARDED, v1)][-1] == "reverted"

    v3, _, _ = stage_and_wait(stack, mlflow_server, GUARDED, constant=3.0)
    by_hand(mlflow_server, GUARDED, v3)
    assert local_sweeps(mlflow_server, slack, GUARDED, 3) == [{"out_of_band": 1}, {}, {}]
    second = alerts_in(slack, "CGUARD")[-1]
    accept_value = button_in(second, ACCEPT_ACTION)["value"]
    opened = len(slack.calls("views.open"))
    click(
        stack.bot_url,
        slack,
        user="UAPPROVER2",
        action_id=ACCEPT_ACTION,
        value=accept_value,
        message_ts=second["ts"],
        channel="CGUARD",
    )
    view = wait_for(lambda: slack.calls("views.open")[opened:], "the accept modal")[-1]
    modal = view.params["view"]
    empty = submit_view(stack.bot_url, modal, user="UAPPROVER2", reason="  ")
    assert empty.json()["response_action"] == "errors"
    submit_view(stack.bot_url, modal, user="UAPPROVER2", reason="hotfix shipped by hand")
    entry = wait_for(
        lambda: [e for e in log_entries(mlflow_server, GUARDED, v3) if e["type"] == "accepted"],
        "the acceptance",
    )[-1]
    assert (entry["actor"], entry["reason"]) == ("UAPPROVER2", "hotfix shipped by hand")
    assert stage_of(mlflow_server, GUARDED, v3) == "Production"
    assert local_sweeps(mlflow_server, slack, GUARDED, 2) == [{}, {}]
    assert len(alerts_in(slack, "CGUARD")) == 2


def test_protect_production_revert_restores_without_a_click(governed, slack, mlflow_server):
    stack, _ = governed
    v1 = promoted(stack, slack, mlflow_server, HEALING, "UAPPROVER1", constant=1.0)
    v2, _, _ = stage_and_wait(stack, mlflow_server, HEALING, constant=2.0)
    by_hand(mlflow_server, HEALING, v2)
    assert local_sweeps(mlflow_server, slack, HEALING, 3) == [{"reverted": 1}, {}, {}]
    assert (stage_of(mlflow_server, HEALING, v1), stage_of(mlflow_server, HEALING, v2)) == (
        "Production",
        "Archived",
    )
    posts = [m["text"] for m in slack.messages("CHEAL") if "registry-bot reverted" in m["text"]]
    assert len(posts) == 1 and "no approval was recorded" in posts[0]
    assert alerts_in(slack, "CHEAL") == []


def test_the_production_alias_moved_by_hand_is_alerted_at_once_in_aliases_mode(
    governed, stacks, slack, mlflow_server
):
    _, policy_path = governed
    stack = stacks.get(
        services=("worker", "webhooks"), REGISTRY_MODE="aliases", POLICY_FILE=policy_path
    )
    client = MlflowClient(mlflow_server)
    v1, _, _ = stage_and_wait(stack, mlflow_server, ALIASED, constant=1.0)
    svc = local_services(mlflow_server, slack, policy=POLICY, registry_mode="aliases")
    lock = redis.Redis.from_url(stack.redis_url)
    from registry.flows import lifecycle, protection

    with model_lock(lock, ALIASED):
        assert lifecycle.approve(svc, ALIASED, v1, user="UAPPROVER1") == "promoted"
    v2, _, _ = stage_and_wait(stack, mlflow_server, ALIASED, constant=2.0)
    hook = client.create_webhook(
        name=f"alias-{ALIASED}",
        url=f"{stack.webhooks_url}/hooks/mlflow",
        events=["model_version_alias.created", "model_version_alias.deleted"],
        secret=MLFLOW_SECRET,
    )
    try:
        time.sleep(1.2)  # past the server's webhook cache (MLFLOW_WEBHOOK_CACHE_TTL=1)
        client.set_registered_model_alias(ALIASED, "production", v2)  # by hand
        (alert,) = wait_for(lambda: alerts_in(slack, "CALIAS"), "the alert from the webhook")
    finally:
        client.delete_webhook(hook.webhook_id)
    assert f"v{v2} became Production in place of v{v1}" in alert["text"]
    assert local_sweeps(mlflow_server, slack, ALIASED, 3, registry_mode="aliases") == [{}, {}, {}]
    assert len(alerts_in(slack, "CALIAS")) == 1

    key = json.loads(alert["blocks"][-1]["elements"][0]["value"])["key"]
    with model_lock(lock, ALIASED):
        assert protection.revert(svc, ALIASED, key=key, user="UAPPROVER1") == "reverted"
    assert client.get_model_version_by_alias(ALIASED, "production").version == v1
    assert version_tags(mlflow_server, ALIASED, v2)["registry_bot.stage"] == "Archived"
    assert local_sweeps(mlflow_server, slack, ALIASED, 2, registry_mode="aliases") == [{}, {}]


# --- acceptance 4: a change freeze ---


def test_an_approval_during_a_freeze_waits_for_its_end_and_a_rollback_does_not(
    governed, slack, mlflow_server
):
    stack, _ = governed
    until = f"{FREEZE_ENDS:%Y-%m-%d %H:%M} UTC"
    after = Clock(FREEZE_ENDS.timestamp() + 1)
    versions = []
    for constant in (1.0, 2.0):
        version, channel, ts = stage_and_wait(stack, mlflow_server, FROZEN, constant=constant)
        url = approve_click(stack, slack, FROZEN, version, "UAPPROVER1", ts, channel)
        assert f"frozen until {until} (release freeze)" in said(slack, url)
        assert stage_of(mlflow_server, FROZEN, version) == "Staging"
        notice = json.dumps(message_in(slack, channel, ts)["blocks"])
        assert f"frozen until {until} (release freeze)" in notice
        assert (
            version_tags(mlflow_server, FROZEN, version)["registry_bot.freeze_state"] == "waiting"
        )
        assert local_sweeps(mlflow_server, slack, FROZEN, 1) == [{}]  # still frozen now
        assert local_sweeps(mlflow_server, slack, FROZEN, 2, clock=after) == [{"promoted": 1}, {}]
        assert stage_of(mlflow_server, FROZEN, version) == "Production"
        versions.append(version)

    _, url = slash(stack.bot_url, slack, f"status {FROZEN}", user="UOUTSIDER")
    assert f"Freeze: active until {until} (release freeze)" in said(slack, url)
    _, url = slash(stack.bot_url, slack, f"rollback {FROZEN}", user="UAPPROVER1")
    plan = answered(slack, url)[0]
    confirm_with_reason(stack, slack, plan, "UAPPROVER1", reason="")  # Confirm asks for a reason
    wait_for(lambda: stage_of(mlflow_server, FROZEN, versions[0]) == "Production", "rollback")
    posts = wait_for(
        lambda: [m["text"] for m in slack.messages("CFROZEN") if "rolled" in m["text"]],
        "the rollback announcement",
    )
    assert "ran during a change freeze" in posts[-1] and "release freeze" in posts[-1]
