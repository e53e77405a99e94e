"""A rollback plan with Confirm and Cancel, and reading it back from its buttons. Pure."""

from __future__ import annotations

import json

from registry.rules.record import parse_time
from registry.rules.reports import RollbackPlan
from registry.rules.text import (
    BUTTON_VALUE,
    SECTION_TEXT,
    cut,
    escape,
    fit_json,
    format_span,
    format_time,
    mentions,
)
from registry.views.blocks import button

ROLLBACK_CONFIRM = "rollback_confirm"


ROLLBACK_CANCEL = "rollback_cancel"


CONFIRM_ASKS = "_Confirm asks for the reason (optional); it is recorded and announced._"


def plan_blocks(plan: RollbackPlan) -> tuple[str, list[dict]]:
    """Render a rollback plan with Confirm and Cancel buttons."""
    served = ""
    since, until = parse_time(plan.target_since), parse_time(plan.target_until)
    if since is not None and until is not None:
        served = f" It last served {format_span(since, until)}."
    elif since is not None:
        served = f" It last served from {format_time(since)}."
    approved = (
        f" Approved by {mentions(plan.target_approved_by)}." if plan.target_approved_by else ""
    )
    why = f"\nReason: {escape(plan.reason)}" if plan.reason else ""
    pulled = f"\n{plan.pulled}" if plan.pulled else ""  # mrkdwn the rules wrote
    # A plan an alert posted in the channel is confirmed at once, with the alert as reason.
    asks = "" if plan.alert else f"\n{CONFIRM_ASKS}"
    text = (
        f"Roll {escape(plan.model)} back from v{plan.current} to v{plan.target}?{served}{approved}"
        f" v{plan.current} will be archived; nothing is retrained.{why}{pulled}{asks}"
    )
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, SECTION_TEXT)}},
        {"type": "actions", "block_id": "rollback", "elements": _plan_buttons(plan)},
    ]
    return text, blocks


def _plan_buttons(plan: RollbackPlan) -> list[dict]:
    """Return Confirm and Cancel, each carrying the plan, which Slack sends back on a click."""
    fields = {"model": plan.model, "current": plan.current, "target": plan.target}
    fields.update({"reason": plan.reason, **({"alert": plan.alert} if plan.alert else {})})
    # A reason too long for the value (2,000 characters) is carried cut.
    value = fit_json(fields, BUTTON_VALUE, shorten="reason")
    return [
        button("Confirm", ROLLBACK_CONFIRM, value, "danger"),
        button("Cancel", ROLLBACK_CANCEL, value),
    ]


def parse_plan_value(value: str) -> RollbackPlan:
    """Rebuild a plan from its button value; raise ValueError if it is not one."""
    data = json.loads(value)
    if not isinstance(data, dict) or not all(data.get(k) for k in ("model", "current", "target")):
        raise ValueError("not a rollback plan")
    return RollbackPlan(
        str(data["model"]),
        str(data["current"]),
        str(data["target"]),
        str(data.get("reason") or ""),
        alert=str(data.get("alert") or ""),
    )
