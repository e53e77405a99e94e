"""Chat commands through the slash command and @mentions, and the rollback buttons."""

from __future__ import annotations

import time
from collections.abc import Callable

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from bot.deps import QUEUE_DOWN, Deps
from registry.commands import APPROVER_VERBS, CommandError, help_text, parse_command
from registry.guard import PLAN_CANCELLED, PLAN_CONFIRMED, closed_plan
from registry.messages import escape, format_time, mention
from registry.queue import TASK_COMMAND, TASK_ROLLBACK
from registry.reports import ROLLBACK_CANCEL, ROLLBACK_CONFIRM, parse_plan_value

CANCELLED = "Rollback cancelled; nothing changed."
ROLLING_BACK = "Rolling {model} back to v{target}…"


def register(app: App, command: str) -> None:
    """Register this group's listeners for `command` (SLACK_COMMAND)."""
    app.command(command)(on_slash_command)
    app.event("app_mention")(on_mention)
    app.action(ROLLBACK_CONFIRM)(on_rollback_confirm)
    app.action(ROLLBACK_CANCEL)(on_rollback_cancel)


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
    refusal = deps.refusal(user, cmd.verb, cmd.model) if cmd.verb in APPROVER_VERBS else ""
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


def on_rollback_confirm(ack: Ack, body: dict, context: BoltContext, respond: Respond) -> None:
    """Queue a confirmed rollback if an approver confirmed it."""
    ack()
    deps: Deps = context["deps"]
    user = body["user"]["id"]
    plan = parse_plan_value(body["actions"][0]["value"])
    refusal = deps.refusal(user, "roll back", plan.model)
    if refusal:
        respond(text=refusal, response_type="ephemeral", replace_original=False)
        return
    channel = (body.get("channel") or {}).get("id", deps.settings.slack_channel)
    queued = deps.enqueue(
        TASK_ROLLBACK,
        event_id=f"rollback-{plan.model}-{plan.target}",
        model_name=plan.model,
        current=plan.current,
        target=plan.target,
        reason=plan.reason,
        user=user,
        channel=channel,
        # A plan in the channel is everyone's: the worker tells the clicker, not the message.
        response_url="" if plan.alert else body.get("response_url", ""),
    )
    if queued and plan.alert:
        who, at = mention(user), _now()
        line = PLAN_CONFIRMED.format(who=who, at=at, model=plan.model, target=plan.target)
        close_channel_plan(respond, body, line)
        return
    rolling = ROLLING_BACK.format(model=escape(plan.model), target=plan.target)
    text = rolling if queued else QUEUE_DOWN
    # Replacing the plan removes its buttons, so it cannot be confirmed twice.
    respond(text=text, response_type="ephemeral", replace_original=queued)


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
