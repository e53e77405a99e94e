"""The opening every button listener shares: ack, read the button, refuse or hand over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from slack_bolt import Ack, BoltContext, Respond

from bot.deps import Deps
from registry.views.modals import REASON_BLOCK, REASON_INPUT


class Click(NamedTuple):
    """An authorised click: who clicked, on which model, and what the button named after it."""

    deps: Deps
    user: str
    model: str
    what: str


def authorised_click(
    ack: Ack,
    context: BoltContext,
    body: dict,
    verb: str,
    respond: Respond,
    parse: Callable[[str], tuple[str, str]],
    *,
    requester: str = "",
) -> Click | None:
    """Ack a button click; return the Click (`what` is what `parse` read after the model
    from the button's value), or None once the clicker has been told why not.

    The refusal is the model's (`Deps.refusal`); for Reject, `requester` (as the button
    names them) may open it to withdraw, approver or not.
    """
    ack()
    deps: Deps = context["deps"]
    user = body["user"]["id"]
    model, what = parse(body["actions"][0]["value"])
    refusal = deps.refusal(user, verb, model, requester=requester)
    if refusal:
        ephemeral(respond, refusal, context, body)
        return None
    return Click(deps, user, model, what)


def enqueue_click(click: Click, task: str, body: dict, *, event_id: str, **fields: Any) -> bool:
    """Queue a click's task with who clicked, on which model, and where to answer them."""
    return click.deps.enqueue(
        task,
        event_id=event_id,
        model_name=click.model,
        user=click.user,
        response_url=body.get("response_url", ""),
        **fields,
    )


def click_id(body: dict) -> str:
    """Return the id a click's task is queued and logged under: one per click."""
    action = body["actions"][0]
    return f"click-{action.get('action_ts', '')}-{body['user']['id']}"


def from_home(body: dict) -> bool:
    """Say whether a click came from the App Home tab rather than a channel message."""
    return (body.get("view") or {}).get("type") == "home"


def ephemeral(respond: Respond, text: str, context: BoltContext, body: dict) -> None:
    """Tell the clicker something only they see, where they will see it."""
    if body.get("response_url"):
        respond(text=text, response_type="ephemeral", replace_original=False)
        return
    # A click in the Home tab comes with no response URL: say it in the notice channel.
    deps: Deps = context["deps"]
    context.client.chat_postEphemeral(
        channel=deps.settings.slack_channel, user=body["user"]["id"], text=text
    )


def clicked_message(body: dict, deps: Deps) -> tuple[str, str]:
    """Return (channel, ts) of the message whose button was clicked, for a modal to redraw."""
    channel = (body.get("channel") or {}).get("id", deps.settings.slack_channel)
    return channel, (body.get("message") or {}).get("ts", "")


def modal_reason(ack: Ack, view: dict, empty: str) -> str:
    """Ack a reason modal's submission; return the reason, or '' once the modal shows `empty`.

    An empty reason keeps the modal open with the error under the field.
    """
    reason = (view["state"]["values"][REASON_BLOCK][REASON_INPUT].get("value") or "").strip()
    if not reason:
        ack(response_action="errors", errors={REASON_BLOCK: empty})
        return ""
    ack()
    return reason
