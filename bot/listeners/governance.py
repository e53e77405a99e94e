"""Revert and Accept on an out-of-band alert, and the accept modal: authorise, ack, enqueue."""

from __future__ import annotations

import json
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot.deps import QUEUE_DOWN, Deps
from bot.listeners.clicks import authorised_click, ephemeral
from registry.messages import (
    ACCEPT_ACTION,
    ACCEPT_MODAL,
    REASON_BLOCK,
    REASON_INPUT,
    REVERT_ACTION,
    accept_modal,
    parse_alert_value,
)
from registry.queue import TASK_ACCEPT, TASK_REVERT

EMPTY_REASON = "Give a reason: it is recorded on the version as why the change was accepted."
REVERTING = "Reverting {model}…"


def register(app: App) -> None:
    """Register this group's listeners."""
    app.action(REVERT_ACTION)(on_revert)
    app.action(ACCEPT_ACTION)(on_accept)
    app.view(ACCEPT_MODAL)(on_accept_submitted)


def on_revert(ack: Ack, body: dict, context: BoltContext, respond: Respond) -> None:
    """Acknowledge; refuse anyone but the model's approvers; queue the revert."""
    click = authorised_click(ack, context, body, "revert", respond, parse_alert_value)
    if click is None:
        return
    deps, user, model, key = click
    queued = deps.enqueue(
        TASK_REVERT,
        event_id=f"revert-{model}-{key}",
        model_name=model,
        key=key,
        user=user,
        response_url=body.get("response_url", ""),
    )
    ephemeral(respond, REVERTING.format(model=model) if queued else QUEUE_DOWN, context, body)


def on_accept(
    ack: Ack, body: dict, context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """Acknowledge; refuse non-approvers; open the reason modal while trigger_id is valid."""
    click = authorised_click(ack, context, body, "accept", respond, parse_alert_value)
    if click is None:
        return
    deps, _, model, key = click
    # A trigger_id is valid for 3 seconds: open the modal here, never from the worker.
    channel = (body.get("channel") or {}).get("id", deps.settings.slack_channel)
    ts = (body.get("message") or {}).get("ts", "")
    client.views_open(
        trigger_id=body["trigger_id"],
        view=accept_modal(model, key, channel=channel, message_ts=ts),
    )


def on_accept_submitted(ack: Ack, body: dict, view: dict, context: BoltContext) -> None:
    """Refuse an empty reason inside the modal; refuse non-approvers; queue the acceptance."""
    reason = (view["state"]["values"][REASON_BLOCK][REASON_INPUT].get("value") or "").strip()
    if not reason:
        ack(response_action="errors", errors={REASON_BLOCK: EMPTY_REASON})
        return
    ack()
    deps: Deps = context["deps"]
    meta: dict[str, Any] = json.loads(view["private_metadata"])
    user = body["user"]["id"]
    # The modal outlives the click: check again who submits it.
    refusal = deps.refusal(user, "accept", meta["model"])
    queued = not refusal and deps.enqueue(
        TASK_ACCEPT,
        event_id=f"view-{view.get('id', '')}",
        model_name=meta["model"],
        key=meta["key"],
        user=user,
        reason=reason,
    )
    if not queued:
        text = refusal or QUEUE_DOWN
        context.client.chat_postEphemeral(channel=meta["channel"], user=user, text=text)
