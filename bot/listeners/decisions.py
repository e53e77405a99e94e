"""Approve and Reject buttons and the reject modal: authorise, ack, enqueue."""

from __future__ import annotations

import json
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot.deps import QUEUE_DOWN, Deps
from bot.listeners.clicks import authorised_click, click_id, ephemeral, from_home
from registry.messages import (
    APPROVE_ACTION,
    REASON_BLOCK,
    REASON_INPUT,
    REJECT_ACTION,
    REJECT_MODAL,
    button_requester,
    parse_button_value,
    reject_modal,
)
from registry.queue import TASK_APPROVE, TASK_REJECT

EMPTY_REASON = "Give a reason: it is recorded on the version and shown to the team."


def register(app: App) -> None:
    """Register this group's listeners."""
    app.action(APPROVE_ACTION)(on_approve)
    app.action(REJECT_ACTION)(on_reject)
    app.view(REJECT_MODAL)(on_reject_submitted)


def on_approve(ack: Ack, body: dict, context: BoltContext, respond: Respond) -> None:
    """Acknowledge at once; refuse non-approvers; queue the approval."""
    click = authorised_click(ack, context, body, "approve", respond, parse_button_value)
    if click is None:
        return
    deps, user, model, version = click
    queued = deps.enqueue(
        TASK_APPROVE,
        event_id=click_id(body),
        model_name=model,
        version=version,
        user=user,
        response_url=body.get("response_url", ""),
        home=from_home(body),
    )
    if not queued:
        ephemeral(respond, QUEUE_DOWN, context, body)


def on_reject(
    ack: Ack, body: dict, context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """Acknowledge; refuse all but approvers and the requester; open the reason modal in time.

    The notice's Reject button names the requester (Slack hands the value back as it was
    posted), so the requester may withdraw without the bot asking MLflow; the worker
    checks the record again before anything changes.
    """
    requester = button_requester(body["actions"][0]["value"])
    click = authorised_click(
        ack, context, body, "reject", respond, parse_button_value, requester=requester
    )
    if click is None:
        return
    deps, _, model, version = click
    # A trigger_id is valid for 3 seconds: open the modal here, never from the worker.
    channel = (body.get("channel") or {}).get("id", deps.settings.slack_channel)
    ts = (body.get("message") or {}).get("ts", "")
    client.views_open(
        trigger_id=body["trigger_id"],
        view=reject_modal(model, version, channel=channel, message_ts=ts, home=from_home(body)),
    )


def on_reject_submitted(ack: Ack, body: dict, view: dict, context: BoltContext) -> None:
    """Refuse an empty reason inside the modal; otherwise close it and queue the rejection."""
    reason = (view["state"]["values"][REASON_BLOCK][REASON_INPUT].get("value") or "").strip()
    if not reason:
        ack(response_action="errors", errors={REASON_BLOCK: EMPTY_REASON})
        return
    ack()
    deps: Deps = context["deps"]
    meta: dict[str, Any] = json.loads(view["private_metadata"])
    user = body["user"]["id"]
    queued = deps.enqueue(
        TASK_REJECT,
        event_id=f"view-{view.get('id', '')}",
        model_name=meta["model"],
        version=meta["version"],
        user=user,
        reason=reason,
        home=bool(meta.get("home")),
    )
    if not queued:
        context.client.chat_postEphemeral(channel=meta["channel"], user=user, text=QUEUE_DOWN)
