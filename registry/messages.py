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
    blocks.append(_context(approval_count(facts)))
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
        line += f"\n>{_escape(outcome.reason)}"
    state = facts.standing.state if facts.standing else outcome.verb
    blocks = [*_facts_blocks(facts, state), {"type": "section", "text": _mrkdwn(line)}]
    if facts.standing and facts.standing.line:
        now = facts.standing.line
        if facts.standing.reason:
            now += f"\n>{_escape(facts.standing.reason)}"
        blocks.append({"type": "section", "text": _mrkdwn(now)})
    return _headline(facts, state.lower()), blocks


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
    return f"<@{user}>" if user and user[0] in "UW" and user.isalnum() else _escape(user)


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
    return "```\n" + _escape(_aligned([TABLE_HEADER, *rows])) + "\n```"


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
    return f"{facts.model_name} v{facts.version} {state}"


def _facts_blocks(facts: NoticeFacts, state: str = "Staging candidate") -> list[dict]:
    title = f"{facts.model_name} v{facts.version}"
    fields = [
        _mrkdwn(f"*Model*\n{_link(facts.version_url, title)}"),
        _mrkdwn(f"*Run*\n{_link(facts.run_url, facts.run_id[:12] or '–')}"),
        _mrkdwn(f"*Requested by*\n{mention(facts.requested_by) or '–'}"),
        _mrkdwn(f"*Code version*\n{facts.git_commit[:12] or '–'}"),
    ]
    prod = f"v{facts.production_version}" if facts.production_version else "none yet"
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{title}: {state}"}},
        {"type": "section", "fields": fields},
    ]
    if facts.description:
        blocks.append({"type": "section", "text": _mrkdwn(_escape(facts.description[:2900]))})
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
    return f"<{url}|{_escape(text)}>" if url else _escape(text)


def _context(text: str) -> dict:
    return {"type": "context", "elements": [_mrkdwn(text)]}


def _mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text}


def _escape(text: str) -> str:
    # Slack mrkdwn treats &, < and > as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def reject_modal(model_name: str, version: str, *, channel: str, message_ts: str) -> dict:
    """Build the modal that asks for a rejection reason."""
    meta = {"model": model_name, "version": str(version), "channel": channel, "ts": message_ts}
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
