"""Governance rules by equality, then the domain code against the in-memory fakes.

Slots (one person, one slot; the requester none), freeze windows in their time zones,
which version registry-bot last made Production, and what an out-of-band change does.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from registry.flows import lifecycle, operations, protection
from registry.flows.protection import PROTECTED_SINCE
from registry.flows.sweep import sweep
from registry.ports.services import Services
from registry.rules.decisions import Clicker, judge_approval
from registry.rules.events import TrainingEvent
from registry.rules.governance import (
    Drift,
    active_freeze,
    drift_of,
    fill_slots,
    freeze_line,
    next_freeze,
    sanction,
    slot_lines,
)
from registry.rules.policy import Freeze, Slot, parse_policy
from registry.rules.record import history_of
from registry.rules.reports import plan_rollback
from registry.rules.settings import Settings
from registry.rules.versions import ModelVersion
from registry.views.alerts import ACCEPT_TEXT, REVERT_TEXT
from tests.fakes import Crash, FakeDirectory, FakeGateway, RecordingNotifier

ML, RISK = Slot(1, group="SML"), Slot(1, group="SRISK")
SLOTS = (ML, RISK)
BERLIN = ZoneInfo("Europe/Berlin")


def at(*args: int, zone: ZoneInfo = BERLIN) -> float:
    return datetime(*args, tzinfo=zone).timestamp()


def candidate(approvals: str = "", fills: dict | None = None, **tags: str) -> ModelVersion:
    all_tags = {"approvals": approvals, "slot_fills": json.dumps(fills or {}), **tags}
    return ModelVersion(
        "fraud", "3", "Staging", tags={f"registry_bot.{k}": v for k, v in all_tags.items()}
    )


def clicker(user: str, *slots: Slot) -> Clicker:
    return Clicker(user, is_approver=True, slots=tuple(s.key for s in slots))


# --- slots ---


def test_a_person_in_both_groups_never_blocks_the_slot_someone_else_could_fill():
    eligible = {"UBOTH": [ML.key, RISK.key], "UML": [ML.key]}
    assert fill_slots(SLOTS, eligible, ["UBOTH", "UML"]) == {
        ML.key: ["UML"],
        RISK.key: ["UBOTH"],
    }
    assert fill_slots(SLOTS, {"UBOTH": [ML.key, RISK.key]}, ["UBOTH"]) == {
        ML.key: ["UBOTH"],
        RISK.key: [],
    }


def test_a_slot_of_two_needs_two_distinct_people():
    slot = Slot(2, group="SML")
    filled = fill_slots((slot,), {"UA": [slot.key], "UB": [slot.key]}, ["UA", "UA", "UB"])
    assert filled == {slot.key: ["UA", "UB"]}


def test_slot_judgements():
    ml_filled = candidate("UML1", {"UML1": [ML.key]})
    assert judge_approval(candidate(), clicker("UML1", ML), required=2, slots=SLOTS).action == (
        "count"
    )
    second = judge_approval(ml_filled, clicker("UML2", ML), required=2, slots=SLOTS)
    assert second.action == "done" and "slot on fraud v3 is already full" in second.message
    assert "1 from group SRISK" in second.message
    risk = judge_approval(ml_filled, clicker("URISK", RISK), required=2, slots=SLOTS)
    assert risk.action == "promote"
    both = judge_approval(ml_filled, clicker("UBOTH", ML, RISK), required=2, slots=SLOTS)
    assert both.action == "promote"  # takes the risk seat: a different person from the ML lead
    nowhere = judge_approval(ml_filled, clicker("UOTHER"), required=2, slots=SLOTS)
    assert nowhere.action == "done" and "you are in none of those" in nowhere.message
    again = judge_approval(ml_filled, clicker("UML1", ML), required=2, slots=SLOTS)
    assert again.action == "done" and "already approved" in again.message


@pytest.mark.parametrize("slot", [ML, RISK])
def test_the_requester_fills_no_slot_whichever_group_they_are_in(slot):
    mine = candidate(requested_by="UREQ")
    verdict = judge_approval(mine, clicker("UREQ", slot), required=2, slots=SLOTS)
    assert verdict.action == "refused" and "someone else" in verdict.message


def test_slot_lines_show_who_filled_what_and_what_is_missing():
    lines = slot_lines(SLOTS, {ML.key: ["UML1"], RISK.key: []})
    assert lines == [
        "✅ group SML (1 needed): <@UML1>",
        "⬜ group SRISK (1 needed): nobody yet, 1 missing",
    ]


# --- freeze windows ---

WEEKEND = Freeze("0 16 * * FRI", 64 * 3600, timezone="Europe/Berlin", reason="weekend freeze")


def test_a_freeze_is_active_from_its_cron_start_for_its_duration_in_its_time_zone():
    friday = at(2026, 11, 27, 16, 0)
    assert active_freeze([WEEKEND], friday - 60) is None
    window = active_freeze([WEEKEND], friday)
    assert window is not None and (window.start, window.end) == (friday, friday + 64 * 3600)
    assert window.until_text() == "2026-11-30 08:00 Europe/Berlin"
    assert active_freeze([WEEKEND], friday + 64 * 3600) is None
    assert (
        freeze_line([WEEKEND], friday + 3600)
    ) == "Freeze: active until 2026-11-30 08:00 Europe/Berlin (weekend freeze)"


def test_the_next_freeze_follows_daylight_saving_time():
    # 16:00 in Berlin is 15:00 UTC in winter and 14:00 UTC in summer.
    winter = next_freeze([WEEKEND], at(2026, 3, 23, 12, 0))
    summer = next_freeze([WEEKEND], at(2026, 3, 30, 12, 0))
    assert winter is not None and summer is not None
    utc = ZoneInfo("UTC")
    assert datetime.fromtimestamp(winter.start, utc).hour == 15
    assert datetime.fromtimestamp(summer.start, utc).hour == 14
    # A duration is elapsed time: 64 h across the spring change end at 09:00 local time.
    assert freeze_line([WEEKEND], at(2026, 3, 23, 12, 0)) == (
        "Next freeze: 2026-03-27 16:00 Europe/Berlin until 2026-03-30 09:00 Europe/Berlin "
        "(weekend freeze)"
    )


def test_windows_that_start_before_the_last_one_ends_are_one_freeze():
    nightly = Freeze("0 22 * * *", 10 * 3600, timezone="UTC")  # 22:00 to 08:00
    evening = Freeze("0 20 * * *", 3 * 3600, timezone="UTC")  # 20:00 to 23:00, overlapping
    window = active_freeze([nightly, evening], at(2026, 1, 5, 21, 0, zone=ZoneInfo("UTC")))
    assert window is not None and window.end == at(2026, 1, 6, 8, 0, zone=ZoneInfo("UTC"))


# --- which version registry-bot last made Production ---


def logged(version: str, stage: str, *entries: tuple[str, float], **tags: str) -> ModelVersion:
    log = [{"type": t, "at": f"{a:.3f}", "actor": "U1", "reason": ""} for t, a in entries]
    all_tags = {"registry_bot.log": json.dumps(log)} | {
        f"registry_bot.{k}": v for k, v in tags.items()
    }
    return ModelVersion("fraud", version, stage, tags=all_tags)


def test_the_sanctioned_version_is_the_newest_promotion_rollback_revert_or_acceptance():
    v1 = logged("1", "Archived", ("promoted", 10), ("archived", 20), ("rolled_back", 30))
    v2 = logged("2", "Archived", ("promoted", 20), ("archived", 30))
    assert sanction([v1, v2]).version == "1"
    assert drift_of("fraud", [v1, v2], "stages", "production") == Drift("fraud", "1", 30.0, ())
    removed = logged("1", "Archived", ("promoted", 10), ("accepted", 40), ("archived", 40))
    assert sanction([removed]).version == ""
    assert drift_of("fraud", [removed], "stages", "production") is None


def test_drift_is_by_stage_or_by_alias():
    v1 = logged("1", "Production", ("promoted", 10))
    v2 = ModelVersion("fraud", "2", "Staging", aliases=("production",))
    assert drift_of("fraud", [v1, v2], "stages", "production") is None
    moved = drift_of("fraud", [v1, v2], "aliases", "production")
    assert moved == Drift("fraud", "1", 10.0, ("2",)) and moved.key == "1@10.000->2"


# --- the domain code against the fakes ---

POLICY = """
defaults:
  remind_every: 24h
models:
  fraud:
    channel: CFRAUD
    approvers: {groups: [SML, SRISK]}
    approvals:
      - {group: SML, count: 1}
      - {group: SRISK, count: 1}
  churn:
    channel: CCHURN
    approvers: {users: [UCHURN]}
    freeze:
      - {schedule: "0 16 * * FRI", duration: 64h, timezone: Europe/Berlin, reason: weekend freeze}
  guarded:
    protect_production: revert
  unwatched:
    protect_production: off
"""
GROUPS = {"SML": ["UML1", "UML2", "UBOTH"], "SRISK": ["URISK", "UBOTH"]}


class World:
    """A registry, Slack and a clock kept in memory, with the policy above."""

    def __init__(self, now: float = at(2026, 11, 25, 12, 0)):
        self.now = now
        settings = Settings(
            mlflow_tracking_uri="fake",
            slack_channel="CNOTICES",
            approvers=("UDEFAULT",),
            policy_file="policy.yaml",
            policy=parse_policy(POLICY, "policy.yaml"),
        )
        self.gateway, self.notifier = FakeGateway(), RecordingNotifier()
        self.directory = FakeDirectory([], groups=GROUPS, settings=settings)
        self.events: list = []
        self.svc = Services(
            self.gateway,
            self.notifier,
            settings,
            self.directory,
            clock=lambda: self.now,
            emit=self.events.append,
        )

    def stage(self, model: str, run: str, requested_by: str = "UREQ") -> str:
        self.gateway.add_run(run, {"accuracy": 0.9})
        event = TrainingEvent(model, run, requested_by=requested_by)
        return lifecycle.stage_training_event(self.svc, event, event_id=run).version

    def approve(self, model: str, version: str, user: str) -> str:
        self.now += 1
        return lifecycle.approve(self.svc, model, version, user=user)

    def sweep(self, model: str) -> dict:
        self.now += 1
        return {
            k: len(v) for k, v in sweep(self.svc, lambda n: nullcontext(), [model]).done.items()
        }

    def stage_of(self, model: str, version: str) -> str:
        return self.gateway.get_version(model, version).stage

    def said(self, user: str) -> str:
        return [text for who, text in self.notifier.told if who == user][-1]


def test_each_model_posts_to_its_channel_and_answers_only_its_approvers():
    world = World()
    fraud, churn = world.stage("fraud", "r1"), world.stage("churn", "r2")
    other = world.stage("plain", "r3")
    assert world.notifier.posted_to == ["CFRAUD", "CCHURN", "CNOTICES"]
    assert world.gateway.get_version("churn", churn).tag("notice_channel") == "CCHURN"
    assert world.approve("churn", churn, "UML1") == "refused"
    assert "not one" in world.said("UML1")
    assert world.approve("plain", other, "UCHURN") == "refused"
    assert world.approve("plain", other, "UDEFAULT") == "promoted"
    assert world.stage_of("fraud", fraud) == "Staging"


def test_slots_through_the_lifecycle():
    world = World()
    v1 = world.stage("fraud", "r1", requested_by="URISK")
    assert world.approve("fraud", v1, "URISK") == "refused"  # the requester fills nothing
    assert world.approve("fraud", v1, "UML1") == "counted"
    assert "still missing: 1 from group SRISK" in world.said("UML1")
    assert world.approve("fraud", v1, "UML2") == "done"
    assert "already full" in world.said("UML2")
    assert world.approve("fraud", v1, "UBOTH") == "promoted"
    assert world.stage_of("fraud", v1) == "Production"
    v2 = world.stage("fraud", "r2")
    assert world.approve("fraud", v2, "UBOTH") == "counted"
    assert world.approve("fraud", v2, "UBOTH") == "done"
    assert world.stage_of("fraud", v2) == "Staging"  # one person fills one slot only


def test_a_failed_group_lookup_refuses_and_says_try_again():
    world = World()
    version = world.stage("fraud", "r1")
    world.directory.down = {"usergroups.users.list"}
    assert world.approve("fraud", version, "UML1") == "try_again"
    assert "try again" in world.said("UML1")
    assert world.gateway.get_version("fraud", version).tag("approvals") == ""


def test_an_approval_during_a_freeze_waits_and_the_sweep_promotes_it_once():
    world = World(now=at(2026, 11, 27, 17, 0))  # a Friday, an hour into the weekend freeze
    version = world.stage("churn", "r1")
    assert world.approve("churn", version, "UCHURN") == "frozen"
    assert "frozen until 2026-11-30 08:00 Europe/Berlin (weekend freeze)" in world.said("UCHURN")
    assert world.stage_of("churn", version) == "Staging"
    assert world.sweep("churn") == {}
    assert lifecycle.approve(world.svc, "churn", version, user="UCHURN") == "done"
    world.now = at(2026, 11, 30, 8, 0)
    assert world.sweep("churn") == {"promoted": 1}
    assert world.stage_of("churn", version) == "Production"
    assert world.sweep("churn") == {}


def test_a_rollback_during_a_freeze_runs_and_says_so():
    world = World()
    v1 = world.stage("churn", "r1")
    world.approve("churn", v1, "UCHURN")
    v2 = world.stage("churn", "r2")
    world.approve("churn", v2, "UCHURN")
    world.now = at(2026, 11, 28, 10, 0)
    plan = plan_rollback(world.gateway.versions("churn"), "churn", "", "drift")
    operations.rollback(world.svc, plan, user="UCHURN", channel="CELSEWHERE", response_url="")
    assert world.stage_of("churn", v1) == "Production"
    text, channel = world.notifier.posts[-1][0], world.notifier.posted_to[-1]
    assert channel == "CCHURN" and "ran during a change freeze" in text


def test_an_out_of_band_change_is_alerted_once_and_reverted_at_a_click():
    world = World()
    v1 = world.stage("plain", "r1")
    world.approve("plain", v1, "UDEFAULT")
    v2 = world.stage("plain", "r2")
    world.gateway.move("plain", v2, "Production")  # by hand, in MLflow
    assert world.sweep("plain") == {"out_of_band": 1}
    assert world.sweep("plain") == {} and world.sweep("plain") == {}
    alert = world.notifier.blocks[-1]
    buttons = [e["text"]["text"] for b in alert if b["type"] == "actions" for e in b["elements"]]
    assert buttons == [REVERT_TEXT, ACCEPT_TEXT]
    key = world.gateway.get_version("plain", v2).tag("oob_alert")
    assert protection.revert(world.svc, "plain", key=json.loads(key)["key"], user="UDEFAULT") == (
        "reverted"
    )
    assert (world.stage_of("plain", v1), world.stage_of("plain", v2)) == ("Production", "Archived")
    assert world.sweep("plain") == {}
    kinds = [e.type for e in world.events if e.type in ("out_of_band", "reverted")]
    assert kinds == ["out_of_band", "reverted"]


def test_accept_records_the_clicker_and_reason_and_a_stale_click_changes_nothing():
    world = World()
    v1 = world.stage("plain", "r1")
    world.approve("plain", v1, "UDEFAULT")
    v2 = world.stage("plain", "r2")
    world.gateway.move("plain", v2, "Production")
    world.sweep("plain")
    key = json.loads(world.gateway.get_version("plain", v2).tag("oob_alert"))["key"]
    assert protection.accept(world.svc, "plain", key="other", user="UDEFAULT", reason="x") == (
        "stale"
    )
    done = protection.accept(world.svc, "plain", key=key, user="UDEFAULT", reason="hotfix")
    assert done == "accepted"
    mv = world.gateway.get_version("plain", v2)
    assert (mv.tag("decided_by"), mv.tag("reason")) == ("UDEFAULT", "hotfix")
    assert world.sweep("plain") == {}
    assert protection.revert(world.svc, "plain", key=key, user="UDEFAULT") == "stale"


def test_protect_production_revert_restores_without_a_click():
    world = World()
    v1 = world.stage("guarded", "r1")
    world.approve("guarded", v1, "UDEFAULT")
    v2 = world.stage("guarded", "r2")
    world.gateway.move("guarded", v2, "Production")
    assert world.sweep("guarded") == {"reverted": 1}
    assert (world.stage_of("guarded", v1), world.stage_of("guarded", v2)) == (
        "Production",
        "Archived",
    )
    assert "registry-bot reverted guarded" in world.notifier.posts[-1][0]
    assert world.sweep("guarded") == {}


def test_a_revert_that_died_after_its_intent_is_finished_by_the_sweep():
    world = World()
    v1 = world.stage("plain", "r1")
    world.approve("plain", v1, "UDEFAULT")
    v2 = world.stage("plain", "r2")
    world.gateway.move("plain", v2, "Production")
    assert world.sweep("plain") == {"out_of_band": 1}
    key = json.loads(world.gateway.get_version("plain", v2).tag("oob_alert"))["key"]
    # The revert records its intent, then its worker dies before the first move.
    world.gateway.die_after = lambda op, version, arg: "registry_bot.revert_intent" in arg
    with pytest.raises(Crash):
        protection.revert(world.svc, "plain", key=key, user="UDEFAULT")
    assert world.stage_of("plain", v2) == "Production"  # died here
    assert world.sweep("plain") == {"reverted": 1}
    assert world.stage_of("plain", v1) == "Production" and world.sweep("plain") == {}


def test_switching_protection_on_adopts_a_production_registry_bot_never_made():
    world = World()  # a policy file switches protection on: "alert" for "plain"
    world.gateway.register_elsewhere("plain", "r1")
    world.gateway.move("plain", "1", "Production")  # long before registry-bot, by hand
    world.gateway.register_elsewhere("plain", "r2")
    assert world.sweep("plain") == {"adopted": 1}
    assert world.notifier.posts == []  # no alert: adopting an existing registry is no storm
    entry = history_of(world.gateway.get_version("plain", "1"))[-1]
    assert (entry["type"], entry["actor"]) == ("accepted", "registry-bot")
    assert "protect_production: alert" in entry["reason"] and "policy.yaml" in entry["reason"]
    assert world.gateway.model_tags("plain")[PROTECTED_SINCE].endswith("(alert)")
    assert world.sweep("plain") == {}
    # From then on a change made by hand is out of band, and v1 is what Revert restores.
    world.gateway.move("plain", "2", "Production")
    assert world.sweep("plain") == {"out_of_band": 1}
    alert = world.notifier.blocks[-1]
    buttons = [e["text"]["text"] for b in alert if b["type"] == "actions" for e in b["elements"]]
    assert buttons == [REVERT_TEXT, ACCEPT_TEXT]


def test_a_model_protection_found_without_production_is_guarded_from_then_on():
    world = World()
    world.gateway.register_elsewhere("plain", "r1")
    assert world.sweep("plain") == {}  # nothing to adopt; watched from now on
    world.gateway.move("plain", "1", "Production")  # by hand, after protection started
    assert world.sweep("plain") == {"out_of_band": 1}


def test_a_model_registry_bot_made_production_is_not_adopted_but_alerted():
    world = World()
    v1 = world.stage("plain", "r1")
    world.approve("plain", v1, "UDEFAULT")
    v2 = world.stage("plain", "r2")
    world.gateway.move("plain", v2, "Production")  # by hand, while protection was off
    assert world.sweep("plain") == {"out_of_band": 1}


def test_the_docs_two_team_example_parses_as_it_says():
    import re

    from tests.support import REPO

    guide = (REPO / "docs" / "how-to" / "several-teams.md").read_text()
    (example,) = [b for b in re.findall(r"```yaml\n(.*?)```", guide, re.S) if "recommender" in b]
    policy = parse_policy(example, "several-teams.md")
    assert policy.for_model("fraud-detector").approvals == (
        Slot(1, group="S0FRAUDML"),
        Slot(1, group="S0RISK"),
    )
    assert policy.protection("fraud-detector") == "revert"
    assert policy.for_model("recommender").freeze == ()
    assert policy.for_model("anything").channel == "C0MLPLATFORM"


# --- MLflow's alias deliveries on /hooks/mlflow ---


class RecordingCelery:
    """Takes tasks as the broker would, and remembers them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def send_task(self, name: str, *, kwargs: dict, **options) -> None:
        self.sent.append((name, kwargs))


def mlflow_signed(body: bytes, secret: str) -> dict[str, str]:
    import base64
    import hashlib
    import hmac
    import time
    import uuid

    delivery, ts = uuid.uuid4().hex, str(int(time.time()))
    mac = hmac.new(secret.encode(), f"{delivery}.{ts}.".encode() + body, hashlib.sha256)
    return {
        "content-type": "application/json",
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": "v1," + base64.b64encode(mac.digest()).decode(),
    }


@pytest.fixture
def alias_hook(redis_url):
    from tests.support import MLFLOW_SECRET, TRAINING_SECRET
    from webhooks.app import create_app

    celery = RecordingCelery()
    settings = Settings(
        mlflow_tracking_uri="http://x",
        redis_url=f"{redis_url}/15",
        training_webhook_secrets=(TRAINING_SECRET,),
        mlflow_webhook_secret=MLFLOW_SECRET,
        policy=parse_policy(POLICY, "policy.yaml"),
    )
    client = create_app(settings, celery=celery).test_client()

    def post(action: str, data: dict):
        body = json.dumps({"entity": "model_version_alias", "action": action, "data": data})
        raw = body.encode()
        return client.post("/hooks/mlflow", data=raw, headers=mlflow_signed(raw, MLFLOW_SECRET))

    return post, celery


def test_a_production_alias_event_queues_a_check_of_a_protected_model(alias_hook):
    post, celery = alias_hook
    moved = post("created", {"name": "fraud", "alias": "production", "version": "4"})
    assert moved.status_code == 202 and moved.json["status"] == "queued"
    gone = post("deleted", {"name": "churn", "alias": "production"})
    assert gone.status_code == 202
    assert [(name, kw["model_name"]) for name, kw in celery.sent] == [
        ("registry_bot.check_production", "fraud"),
        ("registry_bot.check_production", "churn"),
    ]


def test_other_aliases_and_unprotected_models_are_ignored_and_bad_ones_refused(alias_hook):
    post, celery = alias_hook
    assert post("created", {"name": "fraud", "alias": "staging", "version": "4"}).status_code == 200
    off = post("created", {"name": "unwatched", "alias": "production", "version": "4"})
    assert off.status_code == 200 and off.json["status"] == "ignored"
    bad = post("created", {"name": "fraud", "version": "4"})
    assert bad.status_code == 400 and "data.alias: required" in bad.json["details"]
    assert post("created", {"name": "fraud", "alias": "production"}).status_code == 400
    assert celery.sent == []
