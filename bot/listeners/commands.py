"""Chat commands through the slash command and @mentions, and the rollback buttons."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot.deps import QUEUE_DOWN, Deps
from bot.listeners.clicks import click_id
from registry.adapters.queue import TASK_COMMAND, TASK_ROLLBACK
from registry.rules.commands import (
    APPROVER_VERBS,
    VERB_WORDS,
    CommandError,
    help_text,
    parse_command,
)
from registry.rules.reports import REASON_LIMIT, RollbackPlan
from registry.rules.text import escape, format_time, mention
from registry.views.alerts import PLAN_CANCELLED, PLAN_CONFIRMED, closed_plan
from registry.views.modals import REASON_BLOCK, REASON_INPUT, ROLLBACK_MODAL, rollback_modal
from registry.views.plans import ROLLBACK_CANCEL, ROLLBACK_CONFIRM, parse_plan_value

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
    verb = VERB_WORDS.get(cmd.verb, cmd.verb)  # "may roll back", as a person says it
    refusal = deps.refusal(user, verb, cmd.model) if cmd.verb in APPROVER_VERBS else ""
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
    """Refuse non-approvers; ask an approver for the (optional) reason in a modal.

    A plan an alert posted in the channel is everyone's and already says why (the
    alert): Confirm queues it at once and replaces it for everyone with "Confirmed by …",
    so no one else can confirm it while a modal is open.
    """
    ack()
    deps: Deps = context["deps"]
    user = body["user"]["id"]
    plan = parse_plan_value(body["actions"][0]["value"])
    refusal = deps.refusal(user, "roll back", plan.model)
    if refusal:
        respond(text=refusal, response_type="ephemeral", replace_original=False)
        return
    channel = (body.get("channel") or {}).get("id", deps.settings.slack_channel)
    if plan.alert:
        _confirm_channel_plan(deps, plan, user=user, channel=channel, body=body, respond=respond)
        return
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
        event_id=f"view-{view.get('id', '')}",  # one per submission, as a rejection's
        model_name=meta["model"],
        current=meta["current"],
        target=meta["target"],
        reason=(typed or "").strip()[:REASON_LIMIT],
        user=user,
        channel=meta["channel"],
        response_url=response_url,
    )
    rolling = ROLLING_BACK.format(model=escape(meta["model"]), target=meta["target"])
    text = rolling if queued else QUEUE_DOWN
    if response_url:
        # Replacing the plan removes its buttons, so it cannot be confirmed twice.
        Respond(response_url=response_url)(
            text=text, response_type="ephemeral", replace_original=queued
        )
    elif not queued:
        context.client.chat_postEphemeral(channel=meta["channel"], user=user, text=QUEUE_DOWN)


def _confirm_channel_plan(
    deps: Deps, plan: RollbackPlan, *, user: str, channel: str, body: dict, respond: Respond
) -> None:
    """Queue an alert's channel plan with the alert's reason; replace it for everyone."""
    queued = deps.enqueue(
        TASK_ROLLBACK,
        event_id=click_id(body),
        model_name=plan.model,
        current=plan.current,
        target=plan.target,
        reason=plan.reason,
        user=user,
        channel=channel,
        # A plan in the channel is everyone's: the worker tells the clicker, not the message.
        response_url="",
    )
    if not queued:
        respond(text=QUEUE_DOWN, response_type="ephemeral", replace_original=False)
        return
    model = escape(plan.model)
    line = PLAN_CONFIRMED.format(who=mention(user), at=_now(), model=model, target=plan.target)
    close_channel_plan(respond, body, line)


def on_rollback_cancel(ack: Ack, body: dict, context: BoltContext, respond: Respond) -> None:
    """Drop the plan; nothing changes. A plan in the channel only an approver may drop."""
    ack()
    plan = parse_plan_value(body["actions"][0]["value"])
    if not plan.alert:
        respond(text=CANCELLED, response_type="ephemeral", replace_original=True)
        return
    user = body["user"]["id"]
    refusal = context["deps"].refusal(user, "roll back", plan.model)
    if refusal:
        respond(text=refusal, response_type="ephemeral", replace_original=False)
        return
    close_channel_plan(respond, body, PLAN_CANCELLED.format(who=mention(user), at=_now()))


def close_channel_plan(respond: Respond, body: dict, line: str) -> None:
    """Replace a plan posted in the channel with the same plan, its buttons gone, and `line`."""
    message = body.get("message") or {}
    blocks = closed_plan(message.get("blocks") or [], line)
    text = f"{message.get('text') or ''} {line}".strip()
    respond(text=text, blocks=blocks, response_type="in_channel", replace_original=True)


def _now() -> str:
    return format_time(time.time())
