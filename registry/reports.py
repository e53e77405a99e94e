"""Status, history and rollback plans, computed from the versions' durable record. Pure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from registry.messages import (
    REASON_BLOCK,
    REASON_INPUT,
    Outcome,
    Standing,
    escape,
    format_time,
    mention,
    mentions,
)
from registry.record import history_of, parse_time, time_of
from registry.versions import ModelVersion

ROLLBACK_CONFIRM = "rollback_confirm"
ROLLBACK_CANCEL = "rollback_cancel"
ROLLBACK_MODAL = "rollback_reason"
REASON_LIMIT = 500  # as a reason typed after `rollback <model> <version>`
CONFIRM_ASKS = "_Confirm asks for the reason (optional); it is recorded and announced._"
# A change that caused another in the same instant is listed first.
_RANK = {"rolled_back": 0, "promoted": 0, "rejected": 0, "expired": 0, "archived": 1}
VERBS = {"approved": "Approved", "rejected": "Rejected", "expired": "Expired"}
WITHDRAWN = "Withdrawn"
# The changes that move a decided version into or out of Production.
_MOVES = ("promoted", "rolled_back", "archived", "rejected", "expired")
IN_PRODUCTION = "*Now in Production* since {since}."
BACK_IN_PRODUCTION = "*Now in Production again* since {since}: {who} rolled back to it{origin}."
REPLACED = "*Now Archived* since {since}, when v{by} replaced it."
ROLLED_AWAY = "*Now Archived* since {since}, when {who} rolled back to v{by}."
ARCHIVED = "*Now Archived* since {since}."


@dataclass(frozen=True)
class RollbackPlan:
    """Make `target` Production again in place of `current`."""

    model: str
    current: str
    target: str
    reason: str = ""
    target_since: str = ""
    target_until: str = ""
    target_approved_by: str = ""
    alert: str = ""  # the alert's key when the guard proposed it: a plan posted in the channel


class RollbackRefused(ValueError):
    """The rollback cannot be done; the message says why."""


def plan_rollback(
    versions: Sequence[ModelVersion], model: str, version: str = "", reason: str = ""
) -> RollbackPlan:
    """Choose the rollback target: the given version, or the one Production before the current."""
    if not versions:
        raise RollbackRefused(f"No model named {model} in the registry.")
    target = next((mv for mv in versions if mv.version == version), None)
    if version and target is None:
        raise RollbackRefused(f"{model} has no version {version}.")
    current = next((mv for mv in versions if mv.stage == "Production"), None)
    if current is None:
        raise RollbackRefused(f"{model} has no Production version to roll back from.")
    if target is None:
        target = previous_production(versions, current)
        if target is None:
            raise RollbackRefused(f"{model} has no earlier Production version to roll back to.")
    if target.version == current.version:
        raise RollbackRefused(f"{model} v{target.version} is already Production.")
    if not (target.tag("production_since") or target.tag("decision") == "approved"):
        raise RollbackRefused(
            f"{model} v{target.version} never passed approval, so it cannot be restored."
        )
    return RollbackPlan(
        model=model,
        current=current.version,
        target=target.version,
        reason=reason,
        target_since=target.tag("production_since"),
        target_until=target.tag("production_until"),
        target_approved_by=target.tag("decided_by"),
    )


def previous_production(
    versions: Sequence[ModelVersion], current: ModelVersion
) -> ModelVersion | None:
    """Return the version that entered Production most recently before `current`."""
    served = [mv for mv in versions if mv.version != current.version and mv.tag("production_until")]
    return max(served, key=lambda mv: time_of(mv, "production_until") or 0.0, default=None)


def outcome_of(mv: ModelVersion) -> Outcome | None:
    """Return the recorded decision on a version, or None if it has none yet.

    A rejection by the person who requested the version is their withdrawal.
    """
    decision = mv.tag("decision")
    if decision not in VERBS:
        return None
    actors = [u for u in mv.tag("decided_by").split(",") if u]
    asked = {mv.tag("requested_by").lower(), mv.tag("requested_by_user").lower()} - {""}
    withdrawn = decision == "rejected" and bool(actors) and actors[0].lower() in asked
    return Outcome(
        WITHDRAWN if withdrawn else VERBS[decision],
        actors,
        time_of(mv, "decided_at") or 0.0,
        mv.tag("reason") if decision != "approved" else "",
        by_requester=withdrawn,
    )


def standing(mv: ModelVersion) -> Standing | None:
    """Say where a decided version stands now, from its stage and its log; None if undecided."""
    outcome = outcome_of(mv)
    if outcome is None or mv.stage not in ("Production", "Archived"):
        return None
    moves = [e for e in history_of(mv) if e.get("type") in _MOVES]
    last = moves[-1] if moves else {}
    if mv.stage == "Production":
        return _in_production(mv, last)
    state = "Approved, now Archived" if outcome.verb == "Approved" else outcome.verb
    return _archived(mv, last, state)


def _in_production(mv: ModelVersion, last: dict) -> Standing:
    since = _when(time_of(mv, "production_since") or parse_time(last.get("at")))
    if last.get("type") != "rolled_back":
        return Standing("Approved, in Production", IN_PRODUCTION.format(since=since))
    origin = f" from v{last['previous_version']}" if last.get("previous_version") else ""
    line = BACK_IN_PRODUCTION.format(since=since, who=_who(last), origin=origin)
    return Standing("Production again", line, str(last.get("reason") or ""))


def _archived(mv: ModelVersion, last: dict, state: str) -> Standing:
    since = _when(time_of(mv, "archived_at") or parse_time(last.get("at")))
    if last.get("type") != "archived":  # rejected, withdrawn, expired: the outcome says why
        return Standing(state, ARCHIVED.format(since=since))
    if last.get("via") == "rollback" and last.get("replaced_by"):
        why = str(last.get("reason", "")).partition(": ")[2]  # "rolled back to v1: <why>"
        line = ROLLED_AWAY.format(since=since, who=_who(last), by=last["replaced_by"])
        return Standing(state, line, why)
    if last.get("replaced_by"):
        return Standing(state, REPLACED.format(since=since, by=last["replaced_by"]))
    # Records written before the log named the successor say it in the reason.
    return Standing(state, ARCHIVED.format(since=since), str(last.get("reason") or ""))


def _when(at: float | None) -> str:
    return format_time(at) if at is not None else "an unrecorded time"


def _who(entry: dict) -> str:
    return mention(entry["actor"]) if entry.get("actor") else "someone"


def plan_blocks(plan: RollbackPlan) -> tuple[str, list[dict]]:
    """Render a rollback plan with Confirm and Cancel buttons."""
    served = ""
    since, until = parse_time(plan.target_since), parse_time(plan.target_until)
    if since is not None:
        served = f" It last served from {format_time(since)}"
        if until is not None:
            served += f" to {format_time(until)}"
        served += "."
    approved = (
        f" Approved by {mentions(plan.target_approved_by)}." if plan.target_approved_by else ""
    )
    why = f"\nReason: {escape(plan.reason)}" if plan.reason else ""
    # A plan an alert posted in the channel is confirmed at once, with the alert as reason.
    asks = "" if plan.alert else f"\n{CONFIRM_ASKS}"
    text = (
        f"Roll {escape(plan.model)} back from v{plan.current} to v{plan.target}?{served}{approved}"
        f" v{plan.current} will be archived; nothing is retrained.{why}{asks}"
    )
    fields = {"model": plan.model, "current": plan.current, "target": plan.target}
    fields.update({"reason": plan.reason, **({"alert": plan.alert} if plan.alert else {})})
    value = json.dumps(fields, separators=(",", ":"))
    buttons: list[dict] = [
        {
            "type": "button",
            "text": {"type": "plain_text", "text": "Confirm"},
            "style": "danger",
            "action_id": ROLLBACK_CONFIRM,
            "value": value,
        },
        {
            "type": "button",
            "text": {"type": "plain_text", "text": "Cancel"},
            "action_id": ROLLBACK_CANCEL,
            "value": value,
        },
    ]
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "block_id": "rollback", "elements": buttons},
    ]
    return text, blocks


def rollback_modal(plan: RollbackPlan, *, channel: str, response_url: str) -> dict:
    """Build the modal Confirm opens: the rollback once more, and an optional reason."""
    meta = {
        "model": plan.model,
        "current": plan.current,
        "target": plan.target,
        "channel": channel,
        "response_url": response_url,  # the plan's own, to replace it once done
    }
    element: dict = {
        "type": "plain_text_input",
        "action_id": REASON_INPUT,
        "multiline": True,
        "max_length": REASON_LIMIT,
    }
    if plan.reason:
        element["initial_value"] = plan.reason[:REASON_LIMIT]
    return {
        "type": "modal",
        "callback_id": ROLLBACK_MODAL,
        "private_metadata": json.dumps(meta, separators=(",", ":")),
        "title": {"type": "plain_text", "text": "Roll back"},  # at most 24 characters
        "submit": {"type": "plain_text", "text": "Roll back"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"Make {escape(plan.model)} v{plan.target} Production again "
                    f"and archive v{plan.current}?",
                },
            },
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "optional": True,
                "label": {"type": "plain_text", "text": "Why? (recorded and announced)"},
                "element": element,
            },
        ],
    }


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


def status_text(model: str, versions: Sequence[ModelVersion], required: int) -> str:
    """Describe the Production and Staging versions with metrics and approvals."""
    if not versions:
        return f"No model named {model} in the registry."
    lines = [f"*{escape(model)}*"]
    prod = [mv for mv in versions if mv.stage == "Production"]
    lines += [_production_line(mv) for mv in prod] or ["Production: none"]
    staging = [mv for mv in versions if mv.stage == "Staging"]
    lines += [_staging_line(mv, required) for mv in staging] or ["Staging: none"]
    return "\n".join(lines)


def history_entries(versions: Sequence[ModelVersion], count: int) -> list[dict]:
    """Return the model's last `count` lifecycle changes across versions, newest first."""
    entries = [{**e, "version": mv.version} for mv in versions for e in history_of(mv)]
    entries.sort(key=lambda e: (-(parse_time(e.get("at")) or 0.0), _RANK.get(e.get("type", ""), 0)))
    return entries[:count]


def history_text(model: str, versions: Sequence[ModelVersion], count: int) -> str:
    """Render the last `count` lifecycle changes, newest first."""
    if not versions:
        return f"No model named {model} in the registry."
    entries = history_entries(versions, count)
    if not entries:
        return f"No recorded changes for {model} yet."
    return "\n".join(
        [f"*{escape(model)}*: last {len(entries)} changes"] + [_entry_line(e) for e in entries]
    )


def _entry_line(entry: dict) -> str:
    line = (
        f"{format_time(parse_time(entry.get('at')) or 0.0)} · v{entry['version']} "
        f"{entry.get('type', '?')}"
    )
    line = line.replace("rolled_back", "rolled back to")
    if entry.get("previous_version"):
        line += f" (from v{entry['previous_version']})"
    if entry.get("actor"):
        line += f" by {mentions(entry['actor'])}"
    if entry.get("reason"):
        line += f": {escape(entry['reason'])}"
    return line


def _production_line(mv: ModelVersion) -> str:
    since = time_of(mv, "production_since")
    when = f" since {format_time(since)}" if since is not None else ""
    who = f", approved by {mentions(mv.tag('decided_by'))}" if mv.tag("decided_by") else ""
    return f"Production: v{mv.version}{when}{who}{_metrics(mv)}"


def _staging_line(mv: ModelVersion, required: int) -> str:
    approvals = [u for u in mv.tag("approvals").split(",") if u]
    return f"Staging: v{mv.version}, {len(approvals)} of {required} approvals{_metrics(mv)}"


def _metrics(mv: ModelVersion) -> str:
    metrics = json.loads(mv.tag("metrics") or "{}")
    return (
        (" · " + ", ".join(f"{escape(k)}={v:.4g}" for k, v in sorted(metrics.items())))
        if metrics
        else ""
    )
