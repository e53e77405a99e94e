"""The decision buttons and their reason modals: authorise, ack, enqueue.

A notice's Approve and Reject (and the reject modal); an out-of-band alert's Revert and
Accept (and the accept modal).
"""

from __future__ import annotations

import json
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot.deps import QUEUE_DOWN, Deps
from bot.listeners.clicks import (
    authorised_click,
    click_id,
    clicked_message,
    enqueue_click,
    ephemeral,
    from_home,
    modal_reason,
)
from registry.adapters.queue import TASK_ACCEPT, TASK_APPROVE, TASK_REJECT, TASK_REVERT
from registry.rules.text import escape
from registry.views.alerts import ACCEPT_ACTION, REVERT_ACTION, parse_alert_value
from registry.views.modals import ACCEPT_MODAL, REJECT_MODAL, accept_modal, reject_modal
from registry.views.notice import (
    APPROVE_ACTION,
    REJECT_ACTION,
    button_requester,
    parse_button_value,
)

EMPTY_REASON = "Give a reason: it is recorded on the version and shown to the team."
EMPTY_ACCEPT_REASON = "Give a reason: it is recorded on the version as why the change was accepted."
REVERTING = "Reverting {model}…"


def register(app: App) -> None:
    """Register this group's listeners."""
    app.action(APPROVE_ACTION)(on_approve)
    app.action(REJECT_ACTION)(on_reject)
    app.view(REJECT_MODAL)(on_reject_submitted)
    app.action(REVERT_ACTION)(on_revert)
    app.action(ACCEPT_ACTION)(on_accept)
    app.view(ACCEPT_MODAL)(on_accept_submitted)


def on_approve(ack: Ack, body: dict, context: BoltContext, respond: Respond) -> None:
    """Acknowledge at once; refuse non-approvers; queue the approval."""
    click = authorised_click(ack, context, body, "approve", respond, parse_button_value)
    if click is None:
        return
    event_id = click_id(body)
    if not enqueue_click(
        click, TASK_APPROVE, body, event_id=event_id, version=click.what, home=from_home(body)
    ):
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
    channel, ts = clicked_message(body, deps)
    withdraw = bool(requester) and requester == body["user"]["id"]  # the worker checks it again
    view = reject_modal(
        model, version, channel=channel, message_ts=ts, home=from_home(body), withdraw=withdraw
    )
    client.views_open(trigger_id=body["trigger_id"], view=view)


def on_reject_submitted(ack: Ack, body: dict, view: dict, context: BoltContext) -> None:
    """Refuse an empty reason inside the modal; otherwise close it and queue the rejection."""
    reason = modal_reason(ack, view, EMPTY_REASON)
    if not reason:
        return
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


def on_revert(ack: Ack, body: dict, context: BoltContext, respond: Respond) -> None:
    """Acknowledge; refuse anyone but the model's approvers; queue the revert."""
    click = authorised_click(ack, context, body, "revert", respond, parse_alert_value)
    if click is None:
        return
    event_id = f"revert-{click.model}-{click.what}"
    queued = enqueue_click(click, TASK_REVERT, body, event_id=event_id, key=click.what)
    reverting = REVERTING.format(model=escape(click.model))
    ephemeral(respond, reverting if queued else QUEUE_DOWN, context, body)


def on_accept(
    ack: Ack, body: dict, context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """Acknowledge; refuse non-approvers; open the reason modal while trigger_id is valid."""
    click = authorised_click(ack, context, body, "accept", respond, parse_alert_value)
    if click is None:
        return
    deps, _, model, key = click
    # A trigger_id is valid for 3 seconds: open the modal here, never from the worker.
    channel, ts = clicked_message(body, deps)
    client.views_open(
        trigger_id=body["trigger_id"],
        view=accept_modal(model, key, channel=channel, message_ts=ts),
    )


def on_accept_submitted(ack: Ack, body: dict, view: dict, context: BoltContext) -> None:
    """Refuse an empty reason inside the modal; refuse non-approvers; queue the acceptance."""
    reason = modal_reason(ack, view, EMPTY_ACCEPT_REASON)
    if not reason:
        return
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
