"""The opening every button listener shares: ack, read the button, refuse or hand over."""

from __future__ import annotations

from collections.abc import Callable

from slack_bolt import Ack, BoltContext, Respond

from bot.deps import Deps


def authorised_click(
    ack: Ack,
    context: BoltContext,
    body: dict,
    verb: str,
    respond: Respond,
    parse: Callable[[str], tuple[str, str]],
    *,
    requester: str = "",
) -> tuple[Deps, str, str, str] | None:
    """Ack a button click; return (deps, user, model, what `parse` read after the model from
    the button's value), or None once the clicker has been told why not.

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
    return deps, user, model, what


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
