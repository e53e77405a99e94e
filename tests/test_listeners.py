"""The Bolt listeners called directly: Slack's payloads in, fakes and recorders around them."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from slack_bolt import BoltContext

from bot.deps import QUEUE_DOWN, Deps
from bot.listeners import commands, decisions
from registry.adapters.dedup import DeliveryLedger
from registry.adapters.queue import (
    TASK_APPROVE,
    TASK_COMMAND,
    TASK_REJECT,
    TASK_ROLLBACK,
    QueueUnavailable,
)
from registry.rules.commands import HISTORY_DEFAULT, help_text
from registry.rules.decisions import NO_APPROVERS, NOT_APPROVER, NOT_APPROVER_NOR_REQUESTER
from registry.rules.reports import RollbackPlan
from registry.rules.settings import Settings
from registry.views.modals import REASON_BLOCK, REASON_INPUT, ROLLBACK_MODAL, reject_modal
from registry.views.notice import APPROVE_ACTION, REJECT_ACTION, button_value
from registry.views.plans import ROLLBACK_CANCEL, ROLLBACK_CONFIRM, plan_blocks
from tests.fakes import FakeDirectory
from tests.support import button_in, primitive

APPROVER, OUTSIDER = "UAPPROVER1", "UOUTSIDER"
RESPONSE_URL = "https://hooks.slack.test/actions/T0TEST/1/abc"


class RecordingProducer:
    """Stands for `registry.adapters.queue.Producer`: records each task, or fails as a down
    broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.down = False

    def send(self, task: str, /, **kwargs: Any) -> None:
        if self.down:
            raise QueueUnavailable("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.sent.append((task, kwargs))


class Recorder:
    """A callable that records the keyword arguments of every call (ack, respond)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


class RecordingClient:
    """The few WebClient methods the listeners call."""

    def __init__(self) -> None:
        self.opened: list[dict[str, Any]] = []
        self.ephemerals: list[dict[str, Any]] = []

    def views_open(self, *, trigger_id: str, view: dict) -> dict:
        self.opened.append({"trigger_id": trigger_id, "view": view})
        return {"ok": True}

    def chat_postEphemeral(self, *, channel: str, user: str, text: str) -> dict:
        self.ephemerals.append({"channel": channel, "user": user, "text": text})
        return {"ok": True}


@dataclass
class Slack:
    """Everything a listener is called with, recording what it did."""

    producer: RecordingProducer = field(default_factory=RecordingProducer)
    ack: Recorder = field(default_factory=Recorder)
    respond: Recorder = field(default_factory=Recorder)
    client: RecordingClient = field(default_factory=RecordingClient)
    approvers: tuple[str, ...] = (APPROVER,)

    @property
    def context(self) -> BoltContext:
        settings = Settings(mlflow_tracking_uri="http://mlflow.invalid", slack_channel="CNOTICES")
        deps = Deps(
            settings, FakeDirectory(self.approvers), self.producer, DeliveryLedger(settings)
        )
        return BoltContext({"deps": deps, "client": self.client})

    def sent_once(self, task: str) -> dict[str, Any]:
        """Return the kwargs of the one task queued, checking it is `task` with primitives."""
        assert [t for t, _ in self.producer.sent] == [task]
        kwargs = self.producer.sent[0][1]
        assert all(isinstance(v, str | int | bool) for v in kwargs.values()), kwargs
        assert primitive(kwargs) and json.loads(json.dumps(kwargs)) == kwargs
        return kwargs


@pytest.fixture
def slack() -> Slack:
    return Slack()


def click(user: str, action_id: str, value: str) -> dict:
    """A block_actions body as Slack sends it (the fields the listeners read)."""
    return {
        "type": "block_actions",
        "user": {"id": user},
        "trigger_id": "1700000000.42.abc",
        "channel": {"id": "CNOTICES"},
        "message": {"ts": "1700000000.000100", "text": ""},
        "response_url": RESPONSE_URL,
        "actions": [{"action_id": action_id, "value": value, "action_ts": "1700000001.000200"}],
    }


def submitted(reason: str | None, *, view_id: str = "V0REJECT") -> dict:
    """The reject modal as the bot opened it, submitted with `reason` typed in."""
    modal = reject_modal("churn", "3", channel="CNOTICES", message_ts="1700000000.000100")
    values = {REASON_BLOCK: {REASON_INPUT: {"type": "plain_text_input", "value": reason}}}
    return {**modal, "id": view_id, "state": {"values": values}}


def ephemeral(text: str) -> dict:
    return {"text": text, "response_type": "ephemeral", "replace_original": False}


# -- Approve and Reject ----------------------------------------------------------------


def test_approve_by_an_approver_queues_the_approval(slack, caplog):
    body = click(APPROVER, APPROVE_ACTION, button_value("churn", "3"))
    with caplog.at_level(logging.INFO, logger="bot.deps"):
        decisions.on_approve(ack=slack.ack, body=body, context=slack.context, respond=slack.respond)
    assert slack.ack.calls == [{}]
    event_id = f"click-1700000001.000200-{APPROVER}"
    # The click can be followed: the bot's line names the id the worker's lines will carry.
    assert [(r.getMessage(), r.event_id, r.task) for r in caplog.records] == [
        ("queued", event_id, TASK_APPROVE)
    ]
    assert slack.sent_once(TASK_APPROVE) == {
        "event_id": event_id,
        "model_name": "churn",
        "version": "3",
        "user": APPROVER,
        "response_url": RESPONSE_URL,
        "home": False,  # clicked on the channel notice, not in the Home tab
    }
    assert slack.respond.calls == []


def test_an_approve_from_the_home_tab_says_so_for_the_redraw(slack):
    body = {**click(APPROVER, APPROVE_ACTION, button_value("churn", "3")), "view": {"type": "home"}}
    decisions.on_approve(ack=slack.ack, body=body, context=slack.context, respond=slack.respond)
    assert slack.ack.calls == [{}]
    assert slack.sent_once(TASK_APPROVE)["home"] is True


@pytest.mark.parametrize(
    ("approvers", "says"),
    [((APPROVER,), NOT_APPROVER), ((), NO_APPROVERS)],
    ids=["non-approver", "no approvers configured"],
)
@pytest.mark.parametrize(
    ("action_id", "verb", "listener"),
    [(APPROVE_ACTION, "approve", "on_approve"), (REJECT_ACTION, "reject", "on_reject")],
)
def test_a_refused_click_is_told_why_and_queues_nothing(approvers, says, action_id, verb, listener):
    slack = Slack(approvers=approvers)
    body = click(OUTSIDER, action_id, button_value("churn", "3"))
    kwargs: dict[str, Any] = {"ack": slack.ack, "body": body, "context": slack.context}
    kwargs["respond"] = slack.respond
    if listener == "on_reject":
        kwargs["client"] = slack.client
    getattr(decisions, listener)(**kwargs)
    assert slack.ack.calls == [{}]
    if verb == "reject" and approvers:  # since the requester's withdraw (issue 18), it says so
        says = NOT_APPROVER_NOR_REQUESTER
    assert slack.respond.calls == [ephemeral(says.format(verb=verb))]
    assert slack.producer.sent == [] and slack.client.opened == []


def test_reject_opens_the_reason_modal_with_the_trigger_id(slack):
    body = click(APPROVER, REJECT_ACTION, button_value("churn", "3"))
    decisions.on_reject(
        ack=slack.ack, body=body, context=slack.context, client=slack.client, respond=slack.respond
    )
    assert slack.ack.calls == [{}]
    assert slack.client.opened == [
        {
            "trigger_id": "1700000000.42.abc",
            "view": reject_modal("churn", "3", channel="CNOTICES", message_ts="1700000000.000100"),
        }
    ]
    assert slack.producer.sent == [] and slack.respond.calls == []


@pytest.mark.parametrize("reason", ["", "   \n", None], ids=["empty", "blank", "never typed"])
def test_an_empty_reason_is_refused_inside_the_modal(slack, reason):
    view = submitted(reason)
    body = {"type": "view_submission", "user": {"id": APPROVER}, "view": view}
    decisions.on_reject_submitted(ack=slack.ack, body=body, view=view, context=slack.context)
    assert slack.ack.calls == [
        {"response_action": "errors", "errors": {REASON_BLOCK: decisions.EMPTY_REASON}}
    ]
    assert slack.producer.sent == [] and slack.client.ephemerals == []


def test_a_reason_closes_the_modal_and_queues_the_rejection(slack):
    view = submitted("  worse on the EU slice ")
    body = {"type": "view_submission", "user": {"id": APPROVER}, "view": view}
    decisions.on_reject_submitted(ack=slack.ack, body=body, view=view, context=slack.context)
    assert slack.ack.calls == [{}]
    assert slack.sent_once(TASK_REJECT) == {
        "event_id": "view-V0REJECT",
        "model_name": "churn",
        "version": "3",
        "user": APPROVER,
        "reason": "worse on the EU slice",
        "home": False,  # submitted from a channel notice's modal, not the Home tab
    }


def test_queue_down_the_clicker_is_told_to_try_again(slack, caplog):
    slack.producer.down = True
    body = click(APPROVER, APPROVE_ACTION, button_value("churn", "3"))
    with caplog.at_level(logging.INFO, logger="bot.deps"):
        decisions.on_approve(ack=slack.ack, body=body, context=slack.context, respond=slack.respond)
    assert slack.ack.calls == [{}]
    assert slack.respond.calls == [ephemeral(QUEUE_DOWN)]
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records] == [
        ("WARNING", "could not queue")
    ]

    ack = Recorder()
    view = submitted("worse on the EU slice")
    body = {"type": "view_submission", "user": {"id": APPROVER}, "view": view}
    decisions.on_reject_submitted(ack=ack, body=body, view=view, context=slack.context)
    assert ack.calls == [{}]  # the modal closes; the message says nothing changed
    assert slack.client.ephemerals == [
        {"channel": "CNOTICES", "user": APPROVER, "text": QUEUE_DOWN}
    ]
    assert slack.producer.sent == []


# -- commands --------------------------------------------------------------------------


def slash_command(text: str, user: str = OUTSIDER) -> dict:
    """A slash command payload as Slack sends it (the fields the listener reads)."""
    return {
        "command": "/registry",
        "text": text,
        "user_id": user,
        "channel_id": "CNOTICES",
        "response_url": RESPONSE_URL,
        "trigger_id": "1700000000.43.abc",
    }


def run_command(slack: Slack, text: str, user: str = OUTSIDER) -> None:
    commands.on_slash_command(
        ack=slack.ack,
        command=slash_command(text, user),
        context=slack.context,
        respond=slack.respond,
    )
    assert slack.ack.calls == [{}]


def test_help_is_answered_by_the_bot_without_the_queue(slack):
    run_command(slack, "help")
    assert slack.respond.calls == [{"text": help_text("/registry"), "response_type": "ephemeral"}]
    assert slack.producer.sent == []


def test_a_malformed_command_gets_its_usage_line_and_queues_nothing(slack):
    run_command(slack, "status")
    [reply] = slack.respond.calls
    assert "which model?" in reply["text"] and reply["response_type"] == "ephemeral"
    assert slack.producer.sent == []


def test_status_is_queued_as_a_command(slack):
    run_command(slack, "status churn")
    assert slack.sent_once(TASK_COMMAND) == {
        "event_id": f"cmd-status-{OUTSIDER}",
        "verb": "status",
        "model_name": "churn",
        "version": "",
        "count": HISTORY_DEFAULT,
        "reason": "",
        "user": OUTSIDER,
        "channel": "CNOTICES",
        "response_url": RESPONSE_URL,
    }
    assert slack.respond.calls == []


@pytest.mark.parametrize("text", ["rollback churn", "promote churn 2"])
def test_approver_commands_by_a_non_approver_are_refused(slack, text):
    run_command(slack, text, user=OUTSIDER)
    verb = {"rollback": "roll back"}.get(text.split()[0], text.split()[0])  # a verb, said so
    assert slack.respond.calls == [
        {"text": NOT_APPROVER.format(verb=verb), "response_type": "ephemeral"}
    ]
    assert slack.producer.sent == []


def test_rollback_by_an_approver_is_queued_for_its_plan(slack):
    run_command(slack, "rollback churn 2 bad drift", user=APPROVER)
    kwargs = slack.sent_once(TASK_COMMAND)
    assert (kwargs["verb"], kwargs["model_name"], kwargs["version"], kwargs["reason"]) == (
        "rollback",
        "churn",
        "2",
        "bad drift",
    )


def test_queue_down_a_command_is_told_to_try_again(slack):
    slack.producer.down = True
    run_command(slack, "status churn")
    assert slack.respond.calls == [{"text": QUEUE_DOWN, "response_type": "ephemeral"}]


def test_a_mention_is_answered_to_the_person_who_asked(slack):
    event = {"type": "app_mention", "user": OUTSIDER, "channel": "CNOTICES", "text": "<@UBOT> help"}
    commands.on_mention(event=event, context=slack.context, client=slack.client)
    assert slack.client.ephemerals == [
        {"channel": "CNOTICES", "user": OUTSIDER, "text": help_text("/registry")}
    ]
    event = {**event, "text": "<@UBOT> history churn 3"}
    commands.on_mention(event=event, context=slack.context, client=slack.client)
    kwargs = slack.sent_once(TASK_COMMAND)
    assert (kwargs["verb"], kwargs["count"], kwargs["response_url"]) == ("history", 3, "")


# -- the rollback plan's buttons -------------------------------------------------------


def plan_button(action_id: str) -> str:
    """The value of a rollback plan's Confirm or Cancel button."""
    _, blocks = plan_blocks(RollbackPlan("churn", current="3", target="2", reason="bad drift"))
    return button_in({"blocks": blocks}, action_id)["value"]


class RecordingRespond:
    """Stands for the `Respond` the rollback modal's submission builds from the plan's URL."""

    said: list[tuple[str, dict[str, Any]]] = []

    def __init__(self, *, response_url: str) -> None:
        self.response_url = response_url

    def __call__(self, **kwargs: Any) -> None:
        self.said.append((self.response_url, kwargs))


@pytest.fixture
def plan_url(monkeypatch) -> list[tuple[str, dict[str, Any]]]:
    """What the modal's submission says through the plan's response URL."""
    said: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(RecordingRespond, "said", said)
    monkeypatch.setattr(commands, "Respond", RecordingRespond)
    return said


def confirmed(slack: Slack, user: str = APPROVER) -> dict:
    """Click Confirm on a command's plan; return the reason modal it opened."""
    body = click(user, ROLLBACK_CONFIRM, plan_button(ROLLBACK_CONFIRM))
    commands.on_rollback_confirm(
        ack=slack.ack, body=body, context=slack.context, client=slack.client, respond=slack.respond
    )
    assert slack.ack.calls == [{}]
    [opened] = slack.client.opened
    assert opened["trigger_id"] == body["trigger_id"]
    return opened["view"]


def reason_given(view: dict, reason: str | None) -> dict:
    values = {REASON_BLOCK: {REASON_INPUT: {"type": "plain_text_input", "value": reason}}}
    return {**view, "id": "V0ROLLBACK", "state": {"values": values}}


# Merged behaviour (issue 18 on top of 16): Confirm on a command's plan no longer queues the
# rollback itself; it opens the reason modal (prefilled with the command's reason), and the
# modal's submission queues it and replaces the plan.
def test_rollback_confirm_by_an_approver_asks_for_the_reason_then_queues_it(slack, plan_url):
    view = confirmed(slack)
    assert view["callback_id"] == ROLLBACK_MODAL
    assert slack.producer.sent == [] and slack.respond.calls == []
    [field] = [b for b in view["blocks"] if b["type"] == "input"]
    assert field["optional"] is True and field["element"]["initial_value"] == "bad drift"

    ack = Recorder()
    body = {"type": "view_submission", "user": {"id": APPROVER}}
    view = reason_given(view, "  latency doubled ")
    commands.on_rollback_submitted(ack=ack, body=body, view=view, context=slack.context)
    assert ack.calls == [{}]  # the modal closes
    assert slack.sent_once(TASK_ROLLBACK) == {
        "event_id": "view-V0ROLLBACK",
        "model_name": "churn",
        "current": "3",
        "target": "2",
        "reason": "latency doubled",
        "user": APPROVER,
        "channel": "CNOTICES",
        "response_url": RESPONSE_URL,
    }
    assert plan_url == [
        (
            RESPONSE_URL,
            {
                "text": commands.ROLLING_BACK.format(model="churn", target="2"),
                "response_type": "ephemeral",
                "replace_original": True,
            },
        )
    ]


def test_a_reason_left_empty_rolls_back_without_one(slack, plan_url):
    view = reason_given(confirmed(slack), None)
    body = {"type": "view_submission", "user": {"id": APPROVER}}
    commands.on_rollback_submitted(ack=Recorder(), body=body, view=view, context=slack.context)
    assert slack.sent_once(TASK_ROLLBACK)["reason"] == ""


def test_rollback_confirm_by_a_non_approver_is_refused(slack):
    body = click(OUTSIDER, ROLLBACK_CONFIRM, plan_button(ROLLBACK_CONFIRM))
    commands.on_rollback_confirm(
        ack=slack.ack, body=body, context=slack.context, client=slack.client, respond=slack.respond
    )
    assert slack.ack.calls == [{}]
    assert slack.respond.calls == [ephemeral(NOT_APPROVER.format(verb="roll back"))]
    assert slack.producer.sent == [] and slack.client.opened == []  # no modal for them


def test_rollback_confirm_with_the_queue_down_keeps_the_plan(slack, plan_url):
    view = confirmed(slack)
    slack.producer.down = True
    body = {"type": "view_submission", "user": {"id": APPROVER}}
    view = reason_given(view, "drift")
    commands.on_rollback_submitted(ack=Recorder(), body=body, view=view, context=slack.context)
    assert plan_url == [(RESPONSE_URL, ephemeral(QUEUE_DOWN))]  # the plan is not replaced


def test_confirm_on_an_alerts_channel_plan_queues_at_once_and_closes_it_for_everyone(slack):
    plan = RollbackPlan("churn", current="3", target="2", reason="HighErrorRate", alert="k1")
    _, blocks = plan_blocks(plan)
    value = button_in({"blocks": blocks}, ROLLBACK_CONFIRM)["value"]
    body = click(APPROVER, ROLLBACK_CONFIRM, value)
    body["message"] = {"ts": "1700000000.000100", "text": "plan", "blocks": blocks}
    commands.on_rollback_confirm(
        ack=slack.ack, body=body, context=slack.context, client=slack.client, respond=slack.respond
    )
    assert slack.client.opened == []  # the alert is its reason: no modal
    sent = slack.sent_once(TASK_ROLLBACK)
    assert (sent["reason"], sent["response_url"]) == ("HighErrorRate", "")
    assert sent["event_id"] == f"click-1700000001.000200-{APPROVER}"  # this click's own id
    [closed] = slack.respond.calls
    assert closed["response_type"] == "in_channel" and closed["replace_original"] is True
    assert "*Confirmed* by <@UAPPROVER1>" in closed["text"]
    assert not any(b["type"] == "actions" for b in closed["blocks"])


def test_rollback_cancel_changes_nothing(slack):
    body = click(APPROVER, ROLLBACK_CANCEL, plan_button(ROLLBACK_CANCEL))
    commands.on_rollback_cancel(
        ack=slack.ack, body=body, context=slack.context, respond=slack.respond
    )
    assert slack.ack.calls == [{}]
    assert slack.respond.calls == [
        {"text": commands.CANCELLED, "response_type": "ephemeral", "replace_original": True}
    ]
    assert slack.producer.sent == []
