"""The App Home tab: the pure view, then opening it and deciding from it through the bot."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace

import pytest
from mlflow import MlflowClient

from registry.flows.notice import publish_home
from registry.ports.services import Services
from registry.rules.decisions import Clicker
from registry.rules.governance import required_of, slots_of
from registry.rules.policy import Slot, parse_policy
from registry.rules.settings import Settings
from registry.rules.versions import ModelVersion
from registry.views.home import BLOCK_LIMIT, MAX_AWAITING, NOTHING_AWAITS, ModelRule, home_view
from registry.views.notice import APPROVE_ACTION, REJECT_ACTION, button_value
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
# Four models: churn by the defaults (UADA, three approvals), fraud by its own group,
# loans by two slots (an ML lead and a risk reviewer), orphan by nobody at all.
POLICY = """
models:
  fraud:
    approvers: {groups: [SFRAUD]}
  loans:
    approvers: {groups: [SML, SRISK]}
    approvals:
      - {group: SML, count: 1}
      - {group: SRISK, count: 1}
  orphan:
    approvers: {}
"""
GROUPS = {"SFRAUD": ["UFRED"], "SML": ["UMLLEAD", "UMLLEAD2", "UBOTH"], "SRISK": ["URISK", "UBOTH"]}
GOVERNED = Settings(
    mlflow_tracking_uri="x",
    approvers=("UADA",),
    required_approvals=3,
    policy=parse_policy(POLICY, "policy.yaml"),
)


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


def block_with(view: dict, phrase: str) -> str:
    """Return the text of the first block that says `phrase` ('' if none does)."""
    texts = (json.dumps(block, ensure_ascii=False) for block in view["blocks"])
    return next((text for text in texts if phrase in text), "")


def same_rule(clicker: Clicker, versions, required: int) -> dict[str, ModelRule]:
    """Give every model with a Staging version the same rule, as without a policy file."""
    return {mv.name: ModelRule(clicker, required) for mv in versions if mv.stage == "Staging"}


def rules_for(user: str, versions) -> dict[str, ModelRule]:
    """Describe `user` to each model with a Staging version, as the governed policy does."""
    directory = FakeDirectory([], groups=GROUPS, settings=GOVERNED)
    return {
        mv.name: ModelRule(
            directory.clicker(user, model=mv.name),
            required_of(GOVERNED, mv.name),
            slots_of(GOVERNED, mv.name),
        )
        for mv in versions
        if mv.stage == "Staging"
    }


def view_for(user: str, versions) -> dict:
    return home_view(versions, rules=rules_for(user, versions), now=NOW)


def decide(name: str, version: str = "1") -> list[tuple[str, str]]:
    return [("Approve", button_value(name, version)), ("Reject", button_value(name, version))]


# -- the view, pure -------------------------------------------------------------------------


def test_an_approver_sees_what_awaits_them_with_both_buttons_newest_first():
    versions = [
        mv("churn", "3", "Staging", staged_at="200", requested_by="URITA", approvals="UGRACE"),
        mv("fraud", "1", "Staging", staged_at="300", requested_by="URITA"),
        mv("churn", "2", "Production", decided_by="UGRACE", production_since=str(NOW - 60)),
    ]
    view = home_view(versions, rules=same_rule(ADA, versions, 2), now=NOW)
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
    assert buttons(home_view(versions, rules=same_rule(ADA, versions, 1), now=NOW)) == [
        ("Withdraw", button_value("churn", "3", "UADA"))
    ]
    # The requester may withdraw even when they are no approver (SPEC 6).
    requester = Clicker("UADA")
    assert buttons(home_view(versions, rules=same_rule(requester, versions, 1), now=NOW)) == [
        ("Withdraw", button_value("churn", "3", "UADA"))
    ]
    outsider = Clicker("UOLAF")
    view = home_view(versions, rules=same_rule(outsider, versions, 1), now=NOW)
    assert buttons(view) == [] and "Nothing awaits your decision." in text_of(view)
    nobody = Clicker("UADA", nobody_may_approve=True)
    assert "nobody can approve" in text_of(
        home_view(versions, rules=same_rule(nobody, versions, 1), now=NOW)
    )


def test_decided_versions_and_those_past_their_gates_await_nothing():
    versions = [
        mv("a", "1", "Staging", decision="approved"),
        mv("b", "1", "Staging", gates="failed"),
        mv("c", "1", "Staging", canary_state="running", canary_until=str(NOW + 60)),
        mv("d", "1", "Archived"),
    ]
    assert buttons(home_view(versions, rules=same_rule(ADA, versions, 1), now=NOW)) == []


def test_the_last_changes_are_listed_newest_first():
    log = json.dumps(
        [
            {"type": "staged", "at": str(NOW - 30), "actor": "URITA"},
            {"type": "rejected", "at": str(NOW - 10), "actor": "UADA", "reason": "worse on EU"},
        ]
    )
    view = home_view(
        [mv("churn", "4", "Archived", log=log)],
        rules=same_rule(ADA, [mv("churn", "4", "Archived", log=log)], 1),
        now=NOW,
    )
    changes = view["blocks"][-1]["text"]["text"].splitlines()
    assert "churn v4 rejected by <@UADA>: worse on EU" in changes[0]
    assert "churn v4 staged by <@URITA>" in changes[1]


def test_a_busy_registry_stays_within_slacks_100_blocks():
    versions = [
        mv(f"model-{i:03d}", str(v), "Staging" if v == 2 else "Production", staged_at=str(i))
        for i in range(300)
        for v in (1, 2)
    ]
    view = home_view(versions, rules=same_rule(ADA, versions, 1), now=NOW)
    assert len(view["blocks"]) <= BLOCK_LIMIT
    assert len(buttons(view)) == 2 * MAX_AWAITING
    assert buttons(view)[0][1] == button_value("model-299", "2")  # newest first
    assert "… and 280 more" in text_of(view)


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


STAGED = [
    mv("churn", "1", "Staging", staged_at="100", requested_by="URITA"),
    mv("fraud", "1", "Staging", staged_at="200", requested_by="URITA"),
    mv("loans", "1", "Staging", staged_at="300", requested_by="URITA"),
]


def test_each_model_offers_its_buttons_to_its_own_approvers_only():
    assert buttons(view_for("UFRED", STAGED)) == decide("fraud")  # by fraud's group
    assert buttons(view_for("UMLLEAD", STAGED)) == decide("loans")  # by a slot's group
    # A default approver sees only the model that keeps the defaults.
    assert buttons(view_for("UADA", STAGED)) == decide("churn")
    outsider = view_for("UOLAF", STAGED)
    assert buttons(outsider) == [] and NOTHING_AWAITS in text_of(outsider)


def test_slots_count_per_model_and_say_who_filled_which():
    fills = json.dumps({"UMLLEAD": ["SML|"]})
    versions = [
        mv("loans", "1", "Staging", requested_by="URITA", approvals="UMLLEAD", slot_fills=fills),
        mv("churn", "1", "Staging", requested_by="URITA", approvals="UGRACE"),
    ]
    risk = view_for("URISK", versions)
    assert buttons(risk) == decide("loans")
    entry = block_with(risk, "*loans v1* in Staging")
    assert "1 of 2 approvals" in entry and "✅ group SML (1 needed): <@UMLLEAD>" in entry
    assert "⬜ group SRISK (1 needed): nobody yet, 1 missing" in entry
    assert "Staging: v1, 1 of 2 approvals (<@UMLLEAD>)" in text_of(risk)  # loans' slots
    assert "Staging: v1, 1 of 3 approvals (<@UGRACE>)" in text_of(risk)  # REQUIRED_APPROVALS
    # The ML slot is full: its other lead, and its filler, may reject but not approve.
    assert buttons(view_for("UMLLEAD2", versions)) == [("Reject", button_value("loans", "1"))]
    assert buttons(view_for("UMLLEAD", versions)) == [("Reject", button_value("loans", "1"))]
    assert buttons(view_for("UBOTH", versions)) == decide("loans")  # fills the risk slot


def test_a_requester_may_only_withdraw_their_own_whatever_the_models_policy():
    versions = [
        mv("loans", "2", "Staging", requested_by="UMLLEAD"),
        mv("fraud", "1", "Staging", requested_by="UMLLEAD"),
    ]
    assert buttons(view_for("UMLLEAD", versions)) == [
        ("Withdraw", button_value("loans", "2", "UMLLEAD")),
        ("Withdraw", button_value("fraud", "1", "UMLLEAD")),
    ]


def test_a_model_nobody_may_approve_says_so_on_its_own_entries():
    versions = [
        mv("orphan", "1", "Staging", staged_at="200", requested_by="URITA"),
        mv("orphan", "0", "Staging", staged_at="300", gates="failed"),
        mv("churn", "1", "Staging", staged_at="100", requested_by="URITA"),
    ]
    ada = view_for("UADA", versions)
    assert buttons(ada) == decide("churn")
    warning = block_with(ada, "nobody can approve")
    assert "*orphan v1*" in warning and "churn" not in warning
    assert "*orphan v0*" not in text_of(ada)  # nothing left to decide there
    assert buttons(view_for("URITA", versions)) == [
        ("Withdraw", button_value("orphan", "1", "URITA")),
        ("Withdraw", button_value("churn", "1", "URITA")),
    ]


def test_a_model_slack_could_not_answer_for_offers_no_buttons_and_says_try_again():
    rules = rules_for("UFRED", STAGED)
    rules["fraud"] = replace(rules["fraud"], clicker=None)
    view = home_view(STAGED, rules=rules, now=NOW)
    assert buttons(view) == []
    told = block_with(view, "could not say who you are")
    assert "fraud" in told and "try again" in told.lower() and "churn" not in told


def test_outside_text_is_escaped():
    versions = [mv("<!channel>", "1", "Staging", metrics=json.dumps({"<b>": 1.0}))]
    view = home_view(versions, rules=same_rule(ADA, versions, 1), now=NOW)
    shown = "\n".join(b["text"]["text"] for b in view["blocks"] if b["type"] == "section")
    assert "<!channel>" not in shown and "&lt;!channel&gt;" in shown and "&lt;b&gt; 1" in shown


def test_many_slots_stay_within_a_sections_3000_characters():
    slots = tuple(Slot(count=2, group=f"SGROUP{i:04d}") for i in range(300))
    versions = [mv(f"model-{i:02d}", "1", "Staging", staged_at=str(i)) for i in range(30)]
    rules = {v.name: ModelRule(ADA, required=600, slots=slots) for v in versions}
    view = home_view(versions, rules=rules, now=NOW)
    assert len(view["blocks"]) <= BLOCK_LIMIT
    sections = [b["text"]["text"] for b in view["blocks"] if b["type"] == "section"]
    assert sections and max(len(text) for text in sections) <= 3000
    assert "0 of 600 approvals" in text_of(view)


def governed_services(*staged: tuple[str, dict[str, str]]) -> Services:
    """Build fakes over the governed policy with each (model, tags) staged once."""
    gateway = FakeGateway()
    for name, tags in staged:
        mv = gateway.register(
            name, "r1", "model", "", {f"registry_bot.{k}": v for k, v in tags.items()}
        )
        gateway.move(name, mv.version, "Staging")
    directory = FakeDirectory([], {"UADA": "ada@example.com"}, groups=GROUPS, settings=GOVERNED)
    return Services(
        gateway=gateway,
        notifier=RecordingNotifier(),
        settings=GOVERNED,
        directory=directory,
        clock=lambda: NOW,
    )


def published_buttons(svc: Services, user: str) -> list[tuple[str, str]]:
    assert publish_home(svc, user) == "published"
    return buttons(svc.notifier.homes[user])


def test_publish_home_asks_each_models_policy_who_may_decide():
    svc = governed_services(
        ("churn", {"requested_by": "URITA"}),
        ("fraud", {"requested_by": "URITA"}),
        ("loans", {"requested_by": "URITA"}),
    )
    assert published_buttons(svc, "UFRED") == [
        ("Approve", button_value("fraud", "1")),
        ("Reject", button_value("fraud", "1")),
    ]
    assert published_buttons(svc, "UADA") == [
        ("Approve", button_value("churn", "1")),
        ("Reject", button_value("churn", "1")),
    ]
    assert [value for _, value in published_buttons(svc, "URISK")] == [
        button_value("loans", "1")
    ] * 2
    shown = text_of(svc.notifier.homes["URISK"])
    assert "Staging: v1, 0 of 2 approvals" in shown and "Staging: v1, 0 of 3 approvals" in shown


def test_publish_home_fails_closed_for_a_model_whose_approvers_slack_cannot_name():
    svc = governed_services(
        ("churn", {"requested_by": "URITA"}), ("fraud", {"requested_by": "URITA"})
    )
    svc.directory.down.add("usergroups.users.list")
    # churn's approvers are listed by ID, so its buttons need no lookup; fraud's do.
    assert published_buttons(svc, "UADA") == [
        ("Approve", button_value("churn", "1")),
        ("Reject", button_value("churn", "1")),
    ]
    told = block_with(svc.notifier.homes["UADA"], "could not say who you are")
    assert "fraud" in told and "churn" not in told


def test_publish_home_asks_for_the_e_mail_only_for_a_model_that_names_one():
    svc = governed_services(
        ("churn", {"requested_by": "ada@example.com"}), ("fraud", {"requested_by": "URITA"})
    )
    assert published_buttons(svc, "UADA") == [
        ("Withdraw", button_value("churn", "1", "ada@example.com"))  # her own: withdraw only
    ]
    svc.directory.down.add("users.info")
    assert published_buttons(svc, "UFRED") == [
        ("Approve", button_value("fraud", "1")),
        ("Reject", button_value("fraud", "1")),
    ]
    assert published_buttons(svc, "UADA") == []  # without her e-mail, churn fails closed
    assert "churn" in block_with(svc.notifier.homes["UADA"], "could not say who you are")


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


HOME_SLOTS = f"home-slots-{uuid.uuid4().hex[:6]}"
HOME_POLICY = f"""
defaults:
  protect_production: off      # only the governance tests watch Production
models:
  {HOME_SLOTS}:
    approvers: {{groups: [SHOMEML, SHOMERISK]}}
    approvals:
      - {{group: SHOMEML, count: 1}}
      - {{group: SHOMERISK, count: 1}}
"""


@pytest.fixture(scope="module")
def governed_home(stacks, slack, tmp_path_factory):
    """A stack whose policy gives one model two slots, filled from two Slack user groups."""
    slack.users.update(
        UHOMEML={"name": "lead", "email": "lead@example.com"},
        UHOMERISK={"name": "risk", "email": "risk@example.com"},
    )
    slack.usergroups.update(SHOMEML=["UHOMEML"], SHOMERISK=["UHOMERISK"])
    path = tmp_path_factory.mktemp("home-policy") / "policy.yaml"
    path.write_text(HOME_POLICY)
    return stacks.get(services=SERVICES, POLICY_FILE=str(path))


@pytest.mark.slow
def test_home_follows_the_models_policy_through_the_running_bot(
    governed_home, slack, mlflow_server
):
    version, _ = stage(governed_home, slack, mlflow_server, HOME_SLOTS)
    decide = button_value(HOME_SLOTS, version)
    opened = time.time()
    open_home(governed_home.bot_url, "UAPPROVER1")  # a default approver this model excludes
    assert decide not in [value for _, value in buttons(home_of(slack, "UAPPROVER1", after=opened))]
    open_home(governed_home.bot_url, "UHOMEML")
    home = home_of(slack, "UHOMEML", after=opened, has=HOME_SLOTS)
    assert [b for b in buttons(home) if b[1] == decide] == [("Approve", decide), ("Reject", decide)]
    assert "0 of 2 approvals" in text_of(home) and "group SHOMERISK (1 needed)" in text_of(home)

    clicked = time.time()
    payload = home_click_payload(home, user="UHOMEML", action_id=APPROVE_ACTION, value=decide)
    assert interaction(governed_home.bot_url, payload).status_code == 200
    redrawn = home_of(slack, "UHOMEML", after=clicked, has="1 of 2 approvals")
    # Their slot is full: Reject is left, Approve is not; the risk reviewer is still wanted.
    assert [b for b in buttons(redrawn) if b[1] == decide] == [("Reject", decide)]
    assert "✅ group SHOMEML (1 needed): <@UHOMEML>" in text_of(redrawn)
    assert stage_of(mlflow_server, HOME_SLOTS, version) == "Staging"
