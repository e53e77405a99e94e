"""Alerts in the channel: an out-of-band change (Revert, Accept), and the guard's plan. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from registry.rules.events import ModelAlert
from registry.rules.guard import alert_time
from registry.rules.reports import RollbackPlan
from registry.rules.text import (
    BUTTON_VALUE,
    SECTION_TEXT,
    cut,
    escape,
    fit_json,
    format_time,
)
from registry.views.blocks import button, context, section
from registry.views.plans import ROLLBACK_CONFIRM, plan_blocks

REVERT_ACTION = "revert_production"


ACCEPT_ACTION = "accept_production"


REVERT_TEXT = "Revert"


ACCEPT_TEXT = "Accept"


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
    blocks: list[dict] = [section(f":rotating_light: {text}")]
    action = (
        "Revert restores the version registry-bot last made Production"
        if (facts.can_revert and facts.sanctioned)
        else "There is no approved version to restore"
    )
    blocks.append(context(f"{action}; Accept records this change as approved by you."))
    buttons = [_alert_button(ACCEPT_TEXT, ACCEPT_ACTION, facts, "primary")]
    if facts.can_revert and facts.sanctioned:
        buttons.insert(0, _alert_button(REVERT_TEXT, REVERT_ACTION, facts, "danger"))
    blocks.append({"type": "actions", "block_id": ALERT_BLOCK, "elements": buttons})
    return text, blocks


def resolved_alert(facts: OutOfBandFacts, line: str) -> tuple[str, list[dict]]:
    """Build the alert once handled: no buttons, what was done."""
    text = f"Out-of-band change: {_production_change(facts)}."
    return text, [section(f":rotating_light: {text}"), section(line)]


def _production_change(facts: OutOfBandFacts) -> str:
    now = ", ".join(f"v{v}" for v in facts.current)
    was = f"v{facts.sanctioned}" if facts.sanctioned else "no version approved through registry-bot"
    name = escape(facts.model_name)
    if not facts.current:
        return f"{name} has no Production version any more (it was {was})"
    return f"{name} {now} became Production in place of {was}"


def _alert_button(text: str, action_id: str, facts: OutOfBandFacts, style: str) -> dict:
    value = fit_json({"model": facts.model_name, "key": facts.key}, BUTTON_VALUE)
    return button(text, action_id, value, style)


def parse_alert_value(value: str) -> tuple[str, str]:
    """Return (model, change key) from an alert button; raise ValueError if it is not ours."""
    data = json.loads(value)
    if not isinstance(data, dict) or not data.get("model") or not data.get("key"):
        raise ValueError("not a registry-bot alert value")
    return str(data["model"]), str(data["key"])


ALERT_NAME = 200  # characters of an alert's name shown, escaped (Alertmanager sends up to 2,000)


ALERT_QUOTE = 800  # ...and of its summary, and of its description


SOURCE_LIMIT = 1_000  # a longer link to the alert's source is left out: the alert still shows


FIRING = ":rotating_light: *Alert {name}* is firing for *{model}* v{version}{since}"


SOURCE = "<{url}|Open the alert's source>"


PLAN_HEAD = "Alert {name} for {model}: "


PLAN_CONFIRMED = "*Confirmed* by {who} at {at}: rolling {model} back to v{target}."


PLAN_CANCELLED = "*Cancelled* by {who} at {at}; nothing changed."


RESOLVED = ":white_check_mark: Alert {name} resolved{at}."


ROLLED_BACK_NOTE = "Rolled back by the guard policy (`guard.action: rollback`) because of:\n{alert}"


NOT_ROLLED_BACK = "{alert}\nThe guard policy would roll back, but: {why}"


NO_PLAN = (
    "*No rollback plan:* {why}.{pulled} Nothing was changed. Fix forward, or restore a "
    "version by name (`{command} rollback {model} &lt;version&gt;`) if what pulled it "
    "no longer holds."
)


def no_plan_text(alert: ModelAlert, state: Mapping[str, object], *, command: str) -> str:
    """Say that an alert on the Production registry-bot made has nothing it may restore, and
    why: who pulled the earlier versions, when and for what (`state`'s `pulled`)."""
    pulled = str(state.get("pulled") or "")
    said = NO_PLAN.format(
        why=escape(str(state.get("why") or "")).rstrip("."),
        pulled=f" {pulled}" if pulled else "",
        command=command,
        model=escape(alert.model_name),
    )
    return cut(alert_text(alert, str(state.get("current") or "")) + "\n" + said, SECTION_TEXT)


def alert_text(alert: ModelAlert, version: str) -> str:
    """Describe the alert in mrkdwn: its name, the model, its summary, a link to its source."""
    started = alert_time(alert.starts_at)
    since = f" since {format_time(started)}" if started is not None else ""
    name, model = alert_name(alert), escape(alert.model_name)
    lines = [FIRING.format(name=name, model=model, version=version, since=since)]
    quoted = (alert.summary, alert.description)
    lines += [f">{cut(escape(_one_line(text)), ALERT_QUOTE)}" for text in quoted if text]
    url = link_target(alert.generator_url)
    source = SOURCE.format(url=url) if url else ""
    if not source or len(source) > SOURCE_LIMIT:
        return cut("\n".join(lines), SECTION_TEXT)
    return cut("\n".join(lines), SECTION_TEXT - len(source) - 1) + "\n" + source


def alert_name(alert: ModelAlert) -> str:
    """Return the alert's name as Slack shows it: escaped, and cut if it is long."""
    return cut(escape(alert.alertname or "unnamed"), ALERT_NAME)


def alert_plan(plan: RollbackPlan, alert: ModelAlert) -> tuple[str, list[dict]]:
    """Render the rollback plan for an alert: the alert, then the plan `rollback` makes."""
    text, blocks = plan_blocks(plan)
    head = {"type": "section", "text": {"type": "mrkdwn", "text": alert_text(alert, plan.current)}}
    headline = PLAN_HEAD.format(name=alert_name(alert), model=escape(alert.model_name))
    return headline + text, [head, *blocks]


def closed_plan(blocks: Sequence[Mapping], line: str) -> list[dict]:
    """Return a plan's blocks without its buttons, ending with what became of it."""
    kept = [dict(b) for b in blocks if not _has_confirm(b)]
    said = {"type": "mrkdwn", "text": cut(line, SECTION_TEXT)}
    return [*kept, {"type": "context", "elements": [said]}]


def resolved_note(alert: ModelAlert) -> str:
    """Say in a plan's thread that its alert stopped firing."""
    ended = alert_time(alert.ends_at)
    at = f" at {format_time(ended)}" if ended is not None else ""
    return RESOLVED.format(name=alert_name(alert), at=at)


def link_target(url: str) -> str:
    """Return an http(s) URL ready for a mrkdwn link, or '' for anything else."""
    if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
        return ""
    # `|` would end the link's target and start its label.
    return escape(url).replace("|", "%7C")


def _has_confirm(block: Mapping) -> bool:
    elements = block.get("elements") or []
    return block.get("type") == "actions" and any(
        isinstance(e, Mapping) and e.get("action_id") == ROLLBACK_CONFIRM for e in elements
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())
