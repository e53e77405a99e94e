"""The App Home tab: what awaits a user's decision, each model's versions, recent changes. Pure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from registry.decisions import Clicker, approvals_on, judge_approval, judge_rejection
from registry.messages import (
    APPROVE_ACTION,
    APPROVE_TEXT,
    REJECT_ACTION,
    REJECT_TEXT,
    button_value,
    format_time,
    mention,
    mentions,
)
from registry.record import history_of, parse_time, time_of
from registry.versions import ModelVersion

BLOCK_LIMIT = 100  # Slack refuses a view with more blocks
MAX_AWAITING = 20  # two blocks each
MAX_MODELS = 20
MAX_CHANGES = 10
HOME_CALLBACK = "registry_bot_home"

TITLE = "registry-bot"
REFRESHED = "Refreshed {at}; open the Home tab again to refresh it."
AWAITING = "Awaiting your decision"
NOTHING_AWAITS = "Nothing awaits your decision."
NOBODY_MAY_DECIDE = (
    ":warning: No approvers are configured (APPROVERS or APPROVER_GROUP), so nobody can approve."
)
MODELS = "Models"
NO_MODELS = "No model has a Production or Staging version yet."
CHANGES = "Recent changes"
NO_CHANGES = "No lifecycle changes recorded yet."
MORE = "…and {count} more"


@dataclass(frozen=True)
class Decidable:
    """A Staging version this user may act on, and which of the two buttons they get."""

    mv: ModelVersion
    may_approve: bool
    may_reject: bool
    withdraw: bool = False  # Reject is the requester's own withdraw


def awaiting_decision(
    versions: Sequence[ModelVersion], clicker: Clicker, *, required: int
) -> list[Decidable]:
    """Return the Staging versions awaiting a decision that `clicker` may take, newest first."""
    found = []
    for mv in versions:
        if mv.stage != "Staging":
            continue
        approve = judge_approval(mv, clicker, required=required).action in ("count", "promote")
        # Reject is also the requester's withdraw, approver or not (registry.decisions).
        rejection = judge_rejection(mv, clicker).action
        reject = rejection in ("reject", "withdraw")
        if approve or reject:
            found.append(Decidable(mv, approve, reject, withdraw=rejection == "withdraw"))
    return sorted(found, key=_staged_at, reverse=True)


def home_view(
    clicker: Clicker, versions: Sequence[ModelVersion], *, required: int, now: float
) -> dict:
    """Build the user's Home tab from every version in the registry (at most 100 blocks)."""
    blocks: list[dict] = [
        _header(TITLE),
        _context(REFRESHED.format(at=format_time(now))),
        *_awaiting_blocks(clicker, versions, required),
        {"type": "divider"},
        *_model_blocks(versions, required),
        {"type": "divider"},
        *_change_blocks(versions),
    ]
    return {"type": "home", "callback_id": HOME_CALLBACK, "blocks": blocks[:BLOCK_LIMIT]}


def _awaiting_blocks(
    clicker: Clicker, versions: Sequence[ModelVersion], required: int
) -> list[dict]:
    blocks = [_header(AWAITING)]
    if clicker.nobody_may_approve:
        return [*blocks, _context(NOBODY_MAY_DECIDE)]
    pending = awaiting_decision(versions, clicker, required=required)
    if not pending:
        return [*blocks, _section(NOTHING_AWAITS)]
    for index, item in enumerate(pending[:MAX_AWAITING]):
        blocks += [_section(_pending_line(item.mv, required)), _buttons(item, index)]
    if len(pending) > MAX_AWAITING:
        blocks.append(_context(MORE.format(count=len(pending) - MAX_AWAITING)))
    return blocks


def _pending_line(mv: ModelVersion, required: int) -> str:
    who = mv.tag("requested_by")
    line = f"*{_plain(mv.name)} v{mv.version}* in Staging"
    if who:
        line += f", requested by {mention(who)}"
    line += f"\n{len(approvals_on(mv))} of {required} approvals{_metrics(mv)}"
    return line


def _buttons(item: Decidable, index: int) -> dict:
    mv = item.mv
    value = button_value(mv.name, mv.version)
    # A withdraw names the requester, as the notice's Reject does, so that the bot lets
    # them open the modal even when they are no approver.
    requester = (mv.tag("requested_by_user") or mv.tag("requested_by")) if item.withdraw else ""
    elements = []
    if item.may_approve:
        elements.append(_button(APPROVE_TEXT, APPROVE_ACTION, value, "primary"))
    if item.may_reject:
        reject = button_value(mv.name, mv.version, requester)
        elements.append(_button(REJECT_TEXT, REJECT_ACTION, reject, "danger"))
    # Block ids must be unique in a view; action ids are the notice's, so the same listeners run.
    return {"type": "actions", "block_id": f"home_decide_{index}", "elements": elements}


def _model_blocks(versions: Sequence[ModelVersion], required: int) -> list[dict]:
    live = [mv for mv in versions if mv.stage in ("Production", "Staging")]
    by_model: dict[str, list[ModelVersion]] = {}
    for mv in sorted(live, key=_last_change, reverse=True):
        by_model.setdefault(mv.name, []).append(mv)
    blocks = [_header(MODELS)]
    if not by_model:
        return [*blocks, _section(NO_MODELS)]
    for name, mvs in list(by_model.items())[:MAX_MODELS]:
        blocks.append(_section(_model_text(name, mvs, required)))
    if len(by_model) > MAX_MODELS:
        blocks.append(_context(MORE.format(count=len(by_model) - MAX_MODELS)))
    return blocks


def _model_text(name: str, mvs: Sequence[ModelVersion], required: int) -> str:
    lines = [f"*{_plain(name)}*"]
    prod = [mv for mv in mvs if mv.stage == "Production"]
    lines += [_production_line(mv) for mv in prod] or ["Production: none"]
    staging = sorted((mv for mv in mvs if mv.stage == "Staging"), key=lambda m: -int(m.version))
    lines += [
        f"Staging: v{mv.version}, {len(approvals_on(mv))} of {required} approvals"
        + (f" ({mentions(approvals_on(mv))})" if approvals_on(mv) else "")
        for mv in staging[:5]
    ] or ["Staging: none"]
    return "\n".join(lines)[:2900]


def _production_line(mv: ModelVersion) -> str:
    since = time_of(mv, "production_since")
    when = f" since {format_time(since)}" if since is not None else ""
    who = mv.tag("rolled_back_by") if mv.tag("rolled_back_by") else mv.tag("decided_by")
    how = "restored by" if mv.tag("rolled_back_by") else "approved by"
    return f"Production: v{mv.version}{when}" + (f", {how} {mentions(who)}" if who else "")


def _change_blocks(versions: Sequence[ModelVersion]) -> list[dict]:
    entries = [(mv, e) for mv in versions for e in history_of(mv)]
    entries.sort(key=lambda pair: parse_time(pair[1].get("at")) or 0.0, reverse=True)
    lines = [_change_line(mv, e) for mv, e in entries[:MAX_CHANGES]]
    return [_header(CHANGES), _section("\n".join(lines)[:2900] if lines else NO_CHANGES)]


def _change_line(mv: ModelVersion, entry: dict) -> str:
    change = str(entry.get("type", "?")).replace("_", " ")
    at = format_time(parse_time(entry.get("at")) or 0.0)
    line = f"{at} · {_plain(mv.name)} v{mv.version} {change}"
    if entry.get("actor"):
        line += f" by {mentions(str(entry['actor']))}"
    if entry.get("reason"):
        line += f": {_plain(str(entry['reason']))[:200]}"
    return line


def _staged_at(item: Decidable) -> tuple[float, int]:
    return time_of(item.mv, "staged_at") or 0.0, int(item.mv.version)


def _last_change(mv: ModelVersion) -> float:
    entries = history_of(mv)
    times = (parse_time(e.get("at")) or 0.0 for e in entries)
    return max(times, default=mv.created_at / 1000)


def _metrics(mv: ModelVersion) -> str:
    try:
        metrics = json.loads(mv.tag("metrics") or "{}")
    except ValueError:
        return ""
    if not isinstance(metrics, dict):
        return ""
    numbers = sorted((k, v) for k, v in metrics.items() if isinstance(v, int | float))
    if not numbers:
        return ""
    shown = ", ".join(f"{_plain(str(k))}={v:.4g}" for k, v in numbers[:6])
    return f" · {shown}"


def _button(text: str, action_id: str, value: str, style: str) -> dict:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "style": style,
        "value": value,
    }


def _header(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _plain(text: str) -> str:
    # Slack mrkdwn treats &, < and > as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
