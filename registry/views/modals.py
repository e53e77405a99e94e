"""The modals a click opens: a rejection's reason, an acceptance's reason, a rollback's. Pure."""

from __future__ import annotations

from registry.rules.reports import REASON_LIMIT, RollbackPlan
from registry.rules.text import (
    INPUT_LABEL,
    MODAL_TITLE,
    PRIVATE_METADATA,
    SECTION_TEXT,
    cut,
    escape,
    fit_json,
)
from registry.views.blocks import plain

REJECT_MODAL = "reject_reason"


REASON_BLOCK = "reason"


REASON_INPUT = "reason_input"


ACCEPT_MODAL = "accept_reason"


def reject_modal(
    model_name: str,
    version: str,
    *,
    channel: str,
    message_ts: str,
    home: bool = False,
    withdraw: bool = False,
) -> dict:
    """Build the modal that asks for a rejection reason (`home`: opened from the Home tab;
    `withdraw`: opened by the version's requester, whose rejection is a withdrawal)."""
    verb = "withdraw" if withdraw else "reject"
    meta: dict[str, str | bool] = {"model": model_name, "version": str(version)}
    meta.update(channel=channel, ts=message_ts, **({"home": True} if home else {}))
    return {
        "type": "modal",
        "callback_id": REJECT_MODAL,
        "private_metadata": fit_json(meta, PRIVATE_METADATA),
        "title": plain(f"{verb.capitalize()} version", MODAL_TITLE),
        "submit": plain(verb.capitalize(), MODAL_TITLE),
        "close": plain("Cancel", MODAL_TITLE),
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": plain(f"Why {verb} {model_name} v{version}?", INPUT_LABEL),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": 2000,
                },
            }
        ],
    }


def accept_modal(model_name: str, key: str, *, channel: str, message_ts: str) -> dict:
    """Build the modal that asks why an out-of-band change is accepted."""
    meta = {"model": model_name, "key": key, "channel": channel, "ts": message_ts}
    return {
        "type": "modal",
        "callback_id": ACCEPT_MODAL,
        "private_metadata": fit_json(meta, PRIVATE_METADATA),
        "title": plain("Accept change", MODAL_TITLE),
        "submit": plain("Accept", MODAL_TITLE),
        "close": plain("Cancel", MODAL_TITLE),
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": plain(f"Why accept the change to {model_name}'s Production?", INPUT_LABEL),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": 2000,
                },
            }
        ],
    }


ROLLBACK_MODAL = "rollback_reason"


def rollback_modal(plan: RollbackPlan, *, channel: str, response_url: str) -> dict:
    """Build the modal Confirm opens: the rollback once more, and an optional reason."""
    meta = {
        "model": plan.model,
        "current": plan.current,
        "target": plan.target,
        "channel": channel,
        "response_url": response_url,  # the plan's own, to replace it once done
    }
    ask = f"Make {escape(plan.model)} v{plan.target} Production again and archive v{plan.current}?"
    return {
        "type": "modal",
        "callback_id": ROLLBACK_MODAL,
        # Without the response URL the bot answers ephemerally instead: better than no modal.
        "private_metadata": fit_json(meta, PRIVATE_METADATA, drop=("response_url",)),
        "title": plain("Roll back", MODAL_TITLE),
        "submit": plain("Roll back", MODAL_TITLE),
        "close": plain("Cancel", MODAL_TITLE),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": cut(ask, SECTION_TEXT)}},
            _reason_input(plan.reason),
        ],
    }


def _reason_input(reason: str) -> dict:
    """Return the optional reason field, holding the reason the command gave, if any."""
    element: dict = {"type": "plain_text_input", "action_id": REASON_INPUT, "multiline": True}
    element["max_length"] = REASON_LIMIT
    if reason:
        element["initial_value"] = reason[:REASON_LIMIT]
    return {
        "type": "input",
        "block_id": REASON_BLOCK,
        "optional": True,
        "label": {"type": "plain_text", "text": "Why? (recorded and announced)"},
        "element": element,
    }
