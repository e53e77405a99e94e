"""Slack Block Kit messages, built as pure functions of what they show."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

APPROVE_ACTION = "approve_version"
REJECT_ACTION = "reject_version"
APPROVE_TEXT = "Approve"
REJECT_TEXT = "Reject"
DECISION_BLOCK = "decision"
REJECT_MODAL = "reject_reason"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_input"

GATES_FAILED = (
    ":no_entry: Kept out of Staging: a promotion gate failed (see above). Nothing to approve."
)
NOBODY_MAY_APPROVE = (
    ":warning: No approvers are configured (APPROVERS or APPROVER_GROUP), so nobody can approve."
)
NO_METRICS = "_no metrics recorded_"
NO_REASON = "No reason was given."
TABLE_HEADER = ("metric", "candidate", "production", "change", "", "gate")
NO_DIRECTION = "no gate: direction unknown"
BETTER, WORSE, SAME = "better", "worse", "same"
MISSING = "–"
VALUE_DIGITS = 4  # significant digits every value of a metric gets at least
CHANGE_DIGITS = 2  # ...and its change, so a small difference still shows
MAX_DECIMALS = 6
EPSILON = 1e-12  # as registry.policy: float noise is no change


@dataclass(frozen=True)
class MetricGate:
    """What a metric's gates say: which way is better (None: they do not say), and the verdict."""

    higher_is_better: bool | None
    verdict: str = ""  # e.g. "✓ ≥ 0.9" or "✗ < min 0.9 (short by 0.05)"


@dataclass(frozen=True)
class Standing:
    """Where a decided version stands now, read from its record."""

    state: str  # for the header: "Approved, in Production", "Approved, now Archived", ...
    line: str = ""  # mrkdwn, e.g. "*Now Archived* since …, when v3 replaced it."
    reason: str = ""  # why, as the person gave it (quoted, escaped)


@dataclass(frozen=True)
class NoticeFacts:
    """Everything a Staging notice shows about one candidate version."""

    model_name: str
    version: str
    run_id: str = ""
    run_url: str = ""
    version_url: str = ""
    requested_by: str = ""
    requester: str = ""  # the Slack user ID (or e-mail) who may withdraw it
    git_commit: str = ""
    description: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    production_version: str = ""
    production_metrics: Mapping[str, float] = field(default_factory=dict)
    approvals: Sequence[str] = ()
    required_approvals: int = 1
    nobody_may_approve: bool = False
    gates: Mapping[str, MetricGate] = field(default_factory=dict)  # by metric name
    gates_passed: bool = True
    status_line: str = ""  # e.g. a canary window in progress
    slot_lines: Sequence[str] = ()  # one line per approvals slot, when the model has slots
    standing: Standing | None = None  # set once decided: where the version is now


@dataclass(frozen=True)
class Outcome:
    """A decided notice: what happened, by whom, when."""

    verb: str  # "Approved", "Rejected", "Withdrawn", "Expired", ...
    actors: Sequence[str]
    at: float
    reason: str = ""
    by_requester: bool = False  # the requester withdrew their own candidate


def outcome_line(outcome: Outcome) -> str:
    """Say who decided what and when: `*Withdrawn* by the requester @rita at …`."""
    role = "the requester " if outcome.by_requester else ""
    by = f" by {role}{mentions(outcome.actors)}" if outcome.actors else ""
    return f"*{outcome.verb}*{by} at {format_time(outcome.at)}"


def button_value(model_name: str, version: str, requester: str = "") -> str:
    """Return the value carried by a notice's buttons (Reject's also names the requester).

    Slack sends the value back exactly as posted, so the bot can let the requester
    open the withdraw modal without asking MLflow; the worker still checks the record.
    """
    data = {"model": model_name, "version": str(version)}
    if requester:
        data["requester"] = requester
    return json.dumps(data, separators=(",", ":"))


def button_requester(value: str) -> str:
    """Return the requester a Reject button names, or '' (older notices name none)."""
    try:
        data = json.loads(value)
    except ValueError:
        return ""
    return str(data.get("requester") or "") if isinstance(data, dict) else ""


def parse_button_value(value: str) -> tuple[str, str]:
    """Return (model, version) from a button value; raise ValueError if it is not ours."""
    data = json.loads(value)
    if not isinstance(data, dict) or not data.get("model") or not data.get("version"):
        raise ValueError("not a registry-bot button value")
    return str(data["model"]), str(data["version"])


def staging_notice(facts: NoticeFacts) -> tuple[str, list[dict]]:
    """Build the Staging notice with its Approve and Reject buttons."""
    blocks = _facts_blocks(facts)
    if not facts.gates_passed:
        blocks.append({"type": "section", "text": _mrkdwn(GATES_FAILED)})
        return _headline(facts, "failed its promotion gates"), blocks
    blocks.append(_approvals_block(facts))
    if facts.status_line:
        blocks.append({"type": "section", "text": _mrkdwn(facts.status_line)})
        return _headline(facts, "is in Staging"), blocks
    if facts.nobody_may_approve:
        blocks.append(_context(NOBODY_MAY_APPROVE))
    blocks.append(
        {
            "type": "actions",
            "block_id": DECISION_BLOCK,
            "elements": [
                _button(APPROVE_TEXT, APPROVE_ACTION, facts, "primary"),
                _button(REJECT_TEXT, REJECT_ACTION, facts, "danger"),
            ],
        }
    )
    return _headline(facts, "is in Staging and needs approval"), blocks


def decided_notice(facts: NoticeFacts, outcome: Outcome) -> tuple[str, list[dict]]:
    """Build the notice after a decision: no buttons, who decided and when, where it is now."""
    line = outcome_line(outcome)
    if outcome.reason:
        line += f"\n>{escape(outcome.reason)}"
    state = facts.standing.state if facts.standing else outcome.verb
    blocks = [*_facts_blocks(facts, state), {"type": "section", "text": _mrkdwn(line)}]
    if facts.standing and facts.standing.line:
        now = facts.standing.line
        if facts.standing.reason:
            now += f"\n>{escape(facts.standing.reason)}"
        blocks.append({"type": "section", "text": _mrkdwn(now)})
    return _headline(facts, state.lower()), blocks


def _approvals_block(facts: NoticeFacts) -> dict:
    if not facts.slot_lines:
        return _context(approval_count(facts))
    lines = "\n".join(facts.slot_lines)
    return {"type": "section", "text": _mrkdwn(f"*Approvals* ({approval_count(facts)})\n{lines}")}


def rollback_announcement(model: str, current: str, target: str, user: str, reason: str) -> str:
    """Tell the channel that `user` rolled `model` back from v`current` to v`target`, and why
    if they said (Confirm asks them, so the channel also hears when they did not)."""
    why = f" Reason: {escape(reason)}" if reason else f" {NO_REASON}"
    return (
        f"{mention(user)} rolled {escape(model)} back from v{current} to v{target}"
        f" (v{current} archived).{why}"
    )


def rollback_abandoned(model: str, target: str, user: str, serving: str) -> str:
    """Tell the channel that a confirmed rollback was dropped because Production changed."""
    return (
        f"The rollback of {escape(model)} to v{target} that {mention(user)} confirmed was not"
        f" carried out: Production changed to v{serving} meanwhile. Nothing was rolled back."
    )


def canary_overdue_note(model: str, version: str, ended: float, expires: float) -> str:
    """Say, once in the thread, that a canary window ended without its passing report."""
    then = (
        f"it expires at {format_time(expires)} unless a passing report comes first"
        if expires
        else "it waits for a passing report (no approval_expires_after is set)"
    )
    return (
        f"{escape(model)} v{version}: the canary window ended at {format_time(ended)} without a "
        f"passing canary report, so it stays in Staging; {then}."
    )


def approval_count(facts: NoticeFacts) -> str:
    """Say how many approvals the version has and needs."""
    text = f"{len(facts.approvals)} of {facts.required_approvals} approvals"
    if facts.approvals:
        text += f" ({mentions(facts.approvals)})"
    return text


def format_time(at: float) -> str:
    """Format a Unix time for people, in UTC."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def mention(user: str) -> str:
    """Render a Slack user ID as a mention; leave e-mail addresses as they are."""
    return f"<@{user}>" if user and user[0] in "UW" and user.isalnum() else escape(user)


def mentions(users: str | Sequence[str]) -> str:
    """Render users (a list, or the comma-separated form the record keeps) as mentions."""
    names = users.split(",") if isinstance(users, str) else users
    return ", ".join(mention(u) for u in names if u)


def metrics_table(
    current: Mapping[str, float],
    production: Mapping[str, float],
    gates: Mapping[str, MetricGate] | None = None,
) -> str:
    """Render candidate metrics beside Production's in aligned columns, one precision per metric.

    Each change is marked better or worse the way the metric's gates say it should go,
    with the gates' verdict beside it; a metric without a gate has no known direction,
    and the table says so rather than guess.
    """
    gates = gates or {}
    names = sorted(set(current) | set(gates))
    if not names:
        return NO_METRICS
    rows = [_metric_row(n, current.get(n), production.get(n), gates.get(n)) for n in names]
    return "```\n" + escape(_aligned([TABLE_HEADER, *rows])) + "\n```"


def _metric_row(
    name: str, value: float | None, prod: float | None, gate: MetricGate | None
) -> tuple[str, ...]:
    real, real_prod = _real(value), _real(prod)
    change = real - real_prod if real is not None and real_prod is not None else None
    places = _decimals([value, prod], change)
    marker = _marker(change, gate.higher_is_better if gate else None)
    verdict = (gate.verdict if gate else "") or NO_DIRECTION
    return (
        name,
        _number(value, places),
        _number(prod, places),
        MISSING if change is None else f"{change:+.{places}f}",
        marker,
        verdict,
    )


def _marker(change: float | None, higher_is_better: bool | None) -> str:
    if change is None or higher_is_better is None:
        return ""
    if abs(change) <= EPSILON:
        return SAME
    return BETTER if (change > 0) == higher_is_better else WORSE


def _decimals(values: Sequence[float | None], change: float | None) -> int:
    """Return the decimals one metric's values and change all get."""
    places = [_places(v, VALUE_DIGITS) for v in values]
    places.append(_places(change, CHANGE_DIGITS))
    return min(MAX_DECIMALS, max(places))


def _places(number: float | None, digits: int) -> int:
    real = _real(number)
    if real is None or abs(real) <= EPSILON:
        return 0
    return max(0, digits - 1 - math.floor(math.log10(abs(real))))


def _number(number: float | None, places: int) -> str:
    return MISSING if number is None else f"{number:.{places}f}"


def _real(number: float | None) -> float | None:
    return float(number) if number is not None and math.isfinite(number) else None


def _aligned(rows: Sequence[Sequence[str]]) -> str:
    """Lay rows out in columns: names left, numbers right, the notes left and last."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if 1 <= i <= 3 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _headline(facts: NoticeFacts, state: str) -> str:
    return f"{escape(facts.model_name)} v{facts.version} {state}"


def _facts_blocks(facts: NoticeFacts, state: str = "Staging candidate") -> list[dict]:
    title = f"{facts.model_name} v{facts.version}"
    fields = [
        _mrkdwn(f"*Model*\n{_link(facts.version_url, title)}"),
        _mrkdwn(f"*Run*\n{_link(facts.run_url, facts.run_id[:12] or '–')}"),
        _mrkdwn(f"*Requested by*\n{mention(facts.requested_by) or '–'}"),
        _mrkdwn(f"*Code version*\n{escape(facts.git_commit[:12]) or '–'}"),
    ]
    prod = f"v{facts.production_version}" if facts.production_version else "none yet"
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{title}: {state}"}},
        {"type": "section", "fields": fields},
    ]
    if facts.description:
        blocks.append({"type": "section", "text": _mrkdwn(escape(facts.description[:2900]))})
    table = metrics_table(facts.metrics, facts.production_metrics, facts.gates)
    blocks.append({"type": "section", "text": _mrkdwn(f"*Metrics* (Production: {prod})\n{table}")})
    return blocks


def _button(text: str, action_id: str, facts: NoticeFacts, style: str) -> dict:
    requester = facts.requester if action_id == REJECT_ACTION else ""
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "style": style,
        "value": button_value(facts.model_name, facts.version, requester),
    }


def _link(url: str, text: str) -> str:
    # A `|` or `>` inside the URL (a model name can hold them) would end the link early.
    target = escape(url).replace("|", "%7C")
    return f"<{target}|{escape(text)}>" if url else escape(text)


def _context(text: str) -> dict:
    return {"type": "context", "elements": [_mrkdwn(text)]}


def _mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text}


def escape(text: object) -> str:
    """Return text from a person or a pipeline made inert for Slack mrkdwn.

    Slack reads &, < and > as control characters (`<!channel>`, `<@U…>`, `<url|label>`);
    every posting path puts outside text through here, and only here.
    """
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def reject_modal(
    model_name: str, version: str, *, channel: str, message_ts: str, home: bool = False
) -> dict:
    """Build the modal that asks for a rejection reason (`home`: opened from the Home tab)."""
    meta: dict[str, str | bool] = {
        "model": model_name,
        "version": str(version),
        "channel": channel,
        "ts": message_ts,
    }
    if home:
        meta["home"] = True
    return {
        "type": "modal",
        "callback_id": REJECT_MODAL,
        "private_metadata": json.dumps(meta, separators=(",", ":")),
        "title": {"type": "plain_text", "text": "Reject version"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": f"Why reject {model_name} v{version}?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": 2000,
                },
            }
        ],
    }


REVERT_ACTION = "revert_production"
ACCEPT_ACTION = "accept_production"
REVERT_TEXT = "Revert"
ACCEPT_TEXT = "Accept"
ACCEPT_MODAL = "accept_reason"
ALERT_BLOCK = "out_of_band"


@dataclass(frozen=True)
class OutOfBandFacts:
    """What an out-of-band alert says: the model, what serves now, what it replaced."""

    model_name: str
    key: str
    current: Sequence[str]
    sanctioned: str
    can_revert: bool = True


def out_of_band_alert(facts: OutOfBandFacts) -> tuple[str, list[dict]]:
    """Build the alert about a Production change made outside registry-bot."""
    text = f"Out-of-band change: {_production_change(facts)}; no approval was recorded."
    blocks: list[dict] = [{"type": "section", "text": _mrkdwn(f":rotating_light: {text}")}]
    action = (
        "Revert restores the version registry-bot last made Production"
        if (facts.can_revert and facts.sanctioned)
        else "There is no approved version to restore"
    )
    blocks.append(_context(f"{action}; Accept records this change as approved by you."))
    buttons = [_alert_button(ACCEPT_TEXT, ACCEPT_ACTION, facts, "primary")]
    if facts.can_revert and facts.sanctioned:
        buttons.insert(0, _alert_button(REVERT_TEXT, REVERT_ACTION, facts, "danger"))
    blocks.append({"type": "actions", "block_id": ALERT_BLOCK, "elements": buttons})
    return text, blocks


def resolved_alert(facts: OutOfBandFacts, line: str) -> tuple[str, list[dict]]:
    """Build the alert once handled: no buttons, what was done."""
    text = f"Out-of-band change: {_production_change(facts)}."
    return text, [
        {"type": "section", "text": _mrkdwn(f":rotating_light: {text}")},
        {"type": "section", "text": _mrkdwn(line)},
    ]


def _production_change(facts: OutOfBandFacts) -> str:
    now = ", ".join(f"v{v}" for v in facts.current)
    was = f"v{facts.sanctioned}" if facts.sanctioned else "no version approved through registry-bot"
    if not facts.current:
        return f"{facts.model_name} has no Production version any more (it was {was})"
    return f"{facts.model_name} {now} became Production in place of {was}"


def _alert_button(text: str, action_id: str, facts: OutOfBandFacts, style: str) -> dict:
    value = json.dumps({"model": facts.model_name, "key": facts.key}, separators=(",", ":"))
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "style": style,
        "value": value,
    }


def parse_alert_value(value: str) -> tuple[str, str]:
    """Return (model, change key) from an alert button; raise ValueError if it is not ours."""
    data = json.loads(value)
    if not isinstance(data, dict) or not data.get("model") or not data.get("key"):
        raise ValueError("not a registry-bot alert value")
    return str(data["model"]), str(data["key"])


def accept_modal(model_name: str, key: str, *, channel: str, message_ts: str) -> dict:
    """Build the modal that asks why an out-of-band change is accepted."""
    meta = {"model": model_name, "key": key, "channel": channel, "ts": message_ts}
    return {
        "type": "modal",
        "callback_id": ACCEPT_MODAL,
        "private_metadata": json.dumps(meta, separators=(",", ":")),
        "title": {"type": "plain_text", "text": "Accept change"},
        "submit": {"type": "plain_text", "text": "Accept"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {
                    "type": "plain_text",
                    "text": f"Why accept the change to {model_name}'s Production?",
                },
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": 2000,
                },
            }
        ],
    }
