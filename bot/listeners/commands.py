"""Chat commands through the slash command and @mentions, and the rollback buttons."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot.deps import QUEUE_DOWN, Deps
from registry.commands import APPROVER_VERBS, CommandError, help_text, parse_command
from registry.decisions import may_decide
from registry.messages import REASON_BLOCK, REASON_INPUT
from registry.queue import TASK_COMMAND, TASK_ROLLBACK
from registry.reports import (
    REASON_LIMIT,
    ROLLBACK_CANCEL,
    ROLLBACK_CONFIRM,
    ROLLBACK_MODAL,
    parse_plan_value,
    rollback_modal,
)

CANCELLED = "Rollback cancelled; nothing changed."
ROLLING_BACK = "Rolling {model} back to v{target}…"


def register(app: App, command: str) -> None:
    """Register this group's listeners for `command` (SLACK_COMMAND)."""
    app.command(command)(on_slash_command)
    app.event("app_mention")(on_mention)
    app.action(ROLLBACK_CONFIRM)(on_rollback_confirm)
    app.action(ROLLBACK_CANCEL)(on_rollback_cancel)
    app.view(ROLLBACK_MODAL)(on_rollback_submitted)


def on_slash_command(ack: Ack, command: dict, context: BoltContext, respond: Respond) -> None:
    """Acknowledge at once; answer through the command's response URL."""
    ack()
    handle_text(
        context["deps"],
        command.get("text", ""),
        user=command["user_id"],
        channel=command.get("channel_id", ""),
        response_url=command.get("response_url", ""),
        reply=lambda text: respond(text=text, response_type="ephemeral"),
    )


def on_mention(event: dict, context: BoltContext, client: WebClient) -> None:
    """Answer `@registry-bot <command>` with an ephemeral reply to the person who asked."""
    channel, user = event["channel"], event.get("user", "")
    handle_text(
        context["deps"],
        event.get("text", ""),
        user=user,
        channel=channel,
        response_url="",
        reply=lambda text: client.chat_postEphemeral(channel=channel, user=user, text=text),
    )


def handle_text(
    deps: Deps,
    text: str,
    *,
    user: str,
    channel: str,
    response_url: str,
    reply: Callable[[str], object],
) -> None:
    """Parse a command, answer what needs no registry, authorise, queue the rest."""
    try:
        cmd = parse_command(text, command=deps.settings.slack_command)
    except CommandError as exc:
        reply(str(exc))
        return
    if cmd.verb == "help":
        reply(help_text(deps.settings.slack_command))
        return
    refusal = (
        may_decide(deps.directory.clicker(user), cmd.verb) if cmd.verb in APPROVER_VERBS else ""
    )
    if refusal:
        reply(refusal)
        return
    queued = deps.enqueue(
        TASK_COMMAND,
        event_id=f"cmd-{cmd.verb}-{user}",
        **cmd.task_kwargs(),
        user=user,
        channel=channel,
        response_url=response_url,
    )
    if not queued:
        reply(QUEUE_DOWN)


def on_rollback_confirm(
    ack: Ack, body: dict, context: BoltContext, client: WebClient, respond: Respond
) -> None:
    """Refuse non-approvers; ask an approver for the (optional) reason in a modal."""
    ack()
    deps: Deps = context["deps"]
    user = body["user"]["id"]
    plan = parse_plan_value(body["actions"][0]["value"])
    refusal = may_decide(deps.directory.clicker(user), "roll back")
    if refusal:
        respond(text=refusal, response_type="ephemeral", replace_original=False)
        return
    channel = (body.get("channel") or {}).get("id", deps.settings.slack_channel)
    modal = rollback_modal(plan, channel=channel, response_url=body.get("response_url", ""))
    # A trigger_id is valid for 3 seconds: open the modal here, never from the worker.
    client.views_open(trigger_id=body["trigger_id"], view=modal)


def on_rollback_submitted(ack: Ack, body: dict, view: dict, context: BoltContext) -> None:
    """Close the modal and queue the rollback with the reason given (which may be none)."""
    ack()
    deps: Deps = context["deps"]
    meta: dict[str, Any] = json.loads(view["private_metadata"])
    typed = view["state"]["values"].get(REASON_BLOCK, {}).get(REASON_INPUT, {}).get("value")
    user, response_url = body["user"]["id"], meta.get("response_url", "")
    queued = deps.enqueue(
        TASK_ROLLBACK,
        event_id=f"rollback-{meta['model']}-{meta['target']}",
        model_name=meta["model"],
        current=meta["current"],
        target=meta["target"],
        reason=(typed or "").strip()[:REASON_LIMIT],
        user=user,
        channel=meta["channel"],
        response_url=response_url,
    )
    text = ROLLING_BACK.format(model=meta["model"], target=meta["target"]) if queued else QUEUE_DOWN
    if response_url:
        # Replacing the plan removes its buttons, so it cannot be confirmed twice.
        Respond(response_url=response_url)(
            text=text, response_type="ephemeral", replace_original=queued
        )
    elif not queued:
        context.client.chat_postEphemeral(channel=meta["channel"], user=user, text=QUEUE_DOWN)


def on_rollback_cancel(ack: Ack, respond: Respond) -> None:
    """Drop the plan; nothing changes."""
    ack()
    respond(text=CANCELLED, response_type="ephemeral", replace_original=True)
