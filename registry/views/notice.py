"""The Staging notice: its facts, its metrics table, its buttons, and its decided form. Pure."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from registry.rules.reports import IN_PRODUCTION_STATES, Outcome, Standing
from registry.rules.text import (
    BUTTON_VALUE,
    FIELD_TEXT,
    HEADER_TEXT,
    SECTION_TEXT,
    cut,
    escape,
    fit_json,
    fit_lines,
    format_number,
    format_time,
    link,
    mention,
    mentions,
    mlflow_link,
    plural,
)
from registry.views.blocks import button, context, mrkdwn, section

BETTER, WORSE, SAME = "better", "worse", "same"
APPROVE_ACTION = "approve_version"


REJECT_ACTION = "reject_version"


APPROVE_TEXT = "Approve"


REJECT_TEXT = "Reject"


DECISION_BLOCK = "decision"


GATES_FAILED = (
    ":no_entry: Kept out of Staging: a promotion gate failed (see above). Nothing to approve."
)


NOBODY_MAY_APPROVE = (
    ":warning: No approvers are configured (APPROVERS or APPROVER_GROUP), so nobody can approve."
)


NO_METRICS = "_no metrics recorded_"


# The label of the link after a cut text or list: MLflow shows the whole of it.
REST_IN_MLFLOW = "the rest in MLflow"


FENCE = "```"


TABLE_HEADER = ("metric", "candidate", "production", "change", "", "gate")


NO_DIRECTION = "no gate: direction unknown"


MISSING = "–"


EPSILON = 1e-12  # as registry.rules.policy: float noise is no change


@dataclass(frozen=True)
class MetricGate:
    """What a metric's gates say: which way is better (None: they do not say), and the verdict."""

    higher_is_better: bool | None
    verdict: str = ""  # e.g. "✓ ≥ 0.9" or "✗ < min 0.9 (short by 0.05)"


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
    # Where MLflow shows that it is Production: the alias registry-bot keeps on it, and in
    # stages mode the classic view's Stage column ("" when there is no MLflow UI to link).
    production_alias: str = ""
    stages_mode: bool = True


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
    return fit_json(data, BUTTON_VALUE)


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
    if not facts.gates_passed:  # kept out of Staging: no candidate, whatever it asked for
        blocks = [*_facts_blocks(facts, KEPT_OUT), section(GATES_FAILED)]
        return _headline(facts, "failed its promotion gates"), blocks
    blocks = _facts_blocks(facts)
    blocks.append(_approvals_block(facts))
    if facts.status_line:
        blocks.append(section(facts.status_line))
        return _headline(facts, "is in Staging"), blocks
    if facts.nobody_may_approve:
        blocks.append(context(NOBODY_MAY_APPROVE))
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
    rest = mlflow_link(facts.version_url, REST_IN_MLFLOW)
    blocks = [*_facts_blocks(facts, state), section(line, link=rest)]
    if facts.standing and facts.standing.line:
        now = facts.standing.line
        if facts.standing.reason:
            now += f"\n>{escape(facts.standing.reason)}"
        blocks.append(section(now, link=rest))
    if facts.standing and facts.standing.state in IN_PRODUCTION_STATES and facts.production_alias:
        blocks.append(context(where_in_mlflow(facts)))
    return _headline(facts, state.lower()), blocks


WHERE_IN_MLFLOW = "In MLflow it is the version with the alias `@{alias}` on the model's page"
CLASSIC_VIEW = (
    "; MLflow 3 shows no Stage column there unless you switch off *New model registry UI* "
    "(the classic view)"
)


def where_in_mlflow(facts: NoticeFacts) -> str:
    """Say where MLflow's UI shows that the version is Production."""
    said = WHERE_IN_MLFLOW.format(alias=escape(facts.production_alias))
    return said + (CLASSIC_VIEW if facts.stages_mode else "") + "."


def _approvals_block(facts: NoticeFacts) -> dict:
    if not facts.slot_lines:
        return context(approval_count(facts))
    return section(
        fit_lines([f"*Approvals* ({approval_count(facts)})", *facts.slot_lines], SECTION_TEXT)
    )


def approval_count(facts: NoticeFacts) -> str:
    """Say how many approvals the version has and needs."""
    text = f"{len(facts.approvals)} of {plural(facts.required_approvals, 'approval')}"
    if facts.approvals:
        text += f" ({mentions(facts.approvals)})"
    return text


def metrics_table(
    current: Mapping[str, float],
    production: Mapping[str, float],
    gates: Mapping[str, MetricGate] | None = None,
    *,
    limit: int = SECTION_TEXT,
    link: str = "",
) -> str:
    """Render candidate metrics beside Production's in aligned columns, one precision per metric.

    Each change is marked better or worse the way the metric's gates say it should go,
    with the gates' verdict beside it; a metric without a gate has no known direction,
    and the table says so rather than guess. Rows beyond `limit` characters are left out
    and counted, with `link` to where all of them can be read.
    """
    gates = gates or {}
    names = sorted(set(current) | set(gates))
    if not names:
        return NO_METRICS
    rows = [_metric_row(n, current.get(n), production.get(n), gates.get(n)) for n in names]
    lines = [escape(line) for line in _aligned([TABLE_HEADER, *rows]).split("\n")]
    return _fenced(lines, limit, link)


def _fenced(lines: Sequence[str], limit: int, link: str) -> str:
    """Put table lines in a code block; when they do not all fit, say how many more after it."""
    fitted = fit_lines(lines, limit - 2 * len(FENCE) - 2, link=link)
    if fitted == "\n".join(lines):
        return f"{FENCE}\n{fitted}\n{FENCE}"
    shown, _, more = fitted.rpartition("\n")
    return f"{FENCE}\n{shown}\n{FENCE}\n{more}"


def _metric_row(
    name: str, value: float | None, prod: float | None, gate: MetricGate | None
) -> tuple[str, ...]:
    real, real_prod = _real(value), _real(prod)
    change = real - real_prod if real is not None and real_prod is not None else None
    marker = _marker(change, gate.higher_is_better if gate else None)
    verdict = (gate.verdict if gate else "") or NO_DIRECTION
    return (
        name,
        _number(value),
        _number(prod),
        MISSING if change is None else format_number(change, signed=True),
        marker,
        verdict,
    )


def _marker(change: float | None, higher_is_better: bool | None) -> str:
    if change is None or higher_is_better is None:
        return ""
    if abs(change) <= EPSILON:
        return SAME
    return BETTER if (change > 0) == higher_is_better else WORSE


def _number(number: float | None) -> str:
    return MISSING if number is None else format_number(number)


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


CANDIDATE = "Staging candidate"  # the header's state while the version awaits its decision


KEPT_OUT = "kept out of Staging by its gates"


def _facts_blocks(facts: NoticeFacts, state: str = CANDIDATE) -> list[dict]:
    title = f"{facts.model_name} v{facts.version}"
    fields = [
        f"*Model*\n{link(facts.version_url, title)}",
        f"*Run*\n{link(facts.run_url, facts.run_id[:12] or '–')}",
        f"*Requested by*\n{mention(facts.requested_by) or '–'}",
        f"*Code version*\n{escape(facts.git_commit[:12]) or '–'}",
    ]
    header = {"type": "plain_text", "text": cut(f"{title}: {state}", HEADER_TEXT)}
    blocks: list[dict] = [
        {"type": "header", "text": header},
        {"type": "section", "fields": [mrkdwn(cut(f, FIELD_TEXT)) for f in fields]},
    ]
    rest = mlflow_link(facts.version_url, REST_IN_MLFLOW)
    if facts.description:
        blocks.append(section(escape(facts.description), link=rest))
    return [*blocks, _metrics_block(facts)]


def _metrics_block(facts: NoticeFacts) -> dict:
    prod = f"v{facts.production_version}" if facts.production_version else "none yet"
    heading = f"*Metrics* (Production: {prod})\n"
    url = facts.run_url or facts.version_url  # the run lists every metric
    table = metrics_table(
        facts.metrics,
        facts.production_metrics,
        facts.gates,
        limit=SECTION_TEXT - len(heading),
        link=mlflow_link(url),
    )
    return section(heading + table)


def _button(text: str, action_id: str, facts: NoticeFacts, style: str) -> dict:
    requester = facts.requester if action_id == REJECT_ACTION else ""
    return button(text, action_id, button_value(facts.model_name, facts.version, requester), style)
