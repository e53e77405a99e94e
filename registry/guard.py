"""The post-promotion guard (SPEC 12): which alerts concern a Production, what they say. Pure."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from registry.changes import LifecycleEvent
from registry.events import ModelAlert
from registry.messages import escape, format_time
from registry.policy import Guard
from registry.record import history_of, parse_time, time_of
from registry.reports import ROLLBACK_CONFIRM, RollbackPlan, plan_blocks, previous_production
from registry.versions import ModelVersion

ALERTMANAGER = "alertmanager"  # the actor of what the guard does by itself
ALERT_EVENT = "registry_bot_alert"  # Slack metadata type carrying an alert plan's nonce
ALERT_TAG = "alert."  # registry_bot.alert.<key>: the record of one alert on its version
REASON_LIMIT = 300  # a reason travels in a button value, which Slack caps at 2000 characters
# The lifecycle changes after which a version is the model's new Production.
PRODUCTION_CHANGES = ("promoted", "rolled_back")

NOT_REGISTERED = "no model of that name in the registry"
NO_PRODUCTION = "the model has no Production version"
NOT_MADE_BY_US = "its Production v{version} was not made Production by registry-bot"
OUTSIDE_WINDOW = (
    "its Production v{version} became Production {age} ago, outside the {window} window"
)
OTHER_VERSION = "the alert names v{named}, but Production is v{version}"
NO_EARLIER = "there is no earlier Production version to roll back to"

FIRING = ":rotating_light: *Alert {name}* is firing for *{model}* v{version}{since}"
SOURCE = "<{url}|Open the alert's source>"
PLAN_HEAD = "Alert {name} for {model}: "
PLAN_CONFIRMED = "*Confirmed* by {who} at {at}: rolling {model} back to v{target}."
PLAN_CANCELLED = "*Cancelled* by {who} at {at}; nothing changed."
RESOLVED = ":white_check_mark: Alert {name} resolved{at}."
ROLLED_BACK_NOTE = "Rolled back by the guard policy (`guard.action: rollback`) because of:\n{alert}"
NOT_ROLLED_BACK = "{alert}\nThe guard policy would roll back, but: {why}"


@dataclass(frozen=True)
class Watched:
    """A model under guard: its Production version and when the guard window closes."""

    model: str
    version: str
    until: float


def alert_key(fingerprint: str, starts_at: str) -> str:
    """Return the key of one alert: Alertmanager repeats it with the same fingerprint and start."""
    return hashlib.sha256(f"{fingerprint}|{starts_at}".encode()).hexdigest()[:24]


def alert_reason(alert: ModelAlert) -> str:
    """Return the reason a rollback for this alert records: `alert <alertname>: <summary>`."""
    summary = " ".join((alert.summary or alert.description).split())
    reason = f"alert {alert.alertname or 'unnamed'}" + (f": {summary}" if summary else "")
    return reason if len(reason) <= REASON_LIMIT else reason[: REASON_LIMIT - 1] + "…"


def guard_refusal(
    versions: Sequence[ModelVersion], named_version: str, guard: Guard, now: float
) -> str:
    """Say why an alert does not concern the model's Production version, or '' if it does."""
    if not versions:
        return NOT_REGISTERED
    current = next((mv for mv in versions if mv.stage == "Production"), None)
    if current is None:
        return NO_PRODUCTION
    since = became_production(current)
    if since is None:
        return NOT_MADE_BY_US.format(version=current.version)
    if now - since > guard.window:
        age, window = _duration(now - since), _duration(guard.window)
        return OUTSIDE_WINDOW.format(version=current.version, age=age, window=window)
    if named_version and named_version != current.version:
        return OTHER_VERSION.format(named=named_version, version=current.version)
    if previous_production(versions, current) is None:
        return NO_EARLIER
    return ""


def watch_entry(
    model: str, versions: Sequence[ModelVersion], guard: Guard, now: float
) -> Watched | None:
    """Return the model's guard entry, read from its versions, or None if none is under guard."""
    if guard_refusal(versions, "", guard, now):
        return None
    current = next(mv for mv in versions if mv.stage == "Production")
    return Watched(model, current.version, (became_production(current) or 0.0) + guard.window)


def became_production(mv: ModelVersion) -> float | None:
    """Return when the version last became Production, as its record says, or None.

    The time of the promoted or rolled_back entry, which is also the time of the
    lifecycle event the door's guard entry is made from, so both agree on the window.
    """
    changes = [e for e in history_of(mv) if e.get("type") in PRODUCTION_CHANGES]
    return parse_time(changes[-1].get("at")) if changes else time_of(mv, "production_since")


def watch_after(event: LifecycleEvent, guard: Guard) -> Watched | None:
    """Return the guard entry a Production change starts; None when nothing earlier to restore."""
    if not event.previous_version:
        return None  # the model's first Production: there is nothing to roll back to
    return Watched(event.model_name, event.version, event.at + guard.window)


def find_alert(versions: Sequence[ModelVersion], key: str) -> tuple[ModelVersion, dict] | None:
    """Return the version carrying the record of alert `key`, and that record."""
    for mv in versions:
        raw = mv.tag(ALERT_TAG + key)
        if raw:
            try:
                state = json.loads(raw)
            except ValueError:
                continue
            if isinstance(state, dict):
                return mv, state
    return None


def alert_text(alert: ModelAlert, version: str) -> str:
    """Describe the alert in mrkdwn: its name, the model, its summary, a link to its source."""
    started = alert_time(alert.starts_at)
    since = f" since {format_time(started)}" if started is not None else ""
    name = escape(alert.alertname or "unnamed")
    lines = [FIRING.format(name=name, model=escape(alert.model_name), version=version, since=since)]
    lines += [f">{escape(_one_line(text))}" for text in (alert.summary, alert.description) if text]
    url = link_target(alert.generator_url)
    if url:
        lines.append(SOURCE.format(url=url))
    return "\n".join(lines)


def alert_plan(plan: RollbackPlan, alert: ModelAlert) -> tuple[str, list[dict]]:
    """Render the rollback plan for an alert: the alert, then the plan `rollback` makes."""
    text, blocks = plan_blocks(plan)
    head = {"type": "section", "text": {"type": "mrkdwn", "text": alert_text(alert, plan.current)}}
    name, model = escape(alert.alertname or "unnamed"), escape(alert.model_name)
    headline = PLAN_HEAD.format(name=name, model=model)
    return headline + text, [head, *blocks]


def closed_plan(blocks: Sequence[Mapping], line: str) -> list[dict]:
    """Return a plan's blocks without its buttons, ending with what became of it."""
    kept = [dict(b) for b in blocks if not _has_confirm(b)]
    return [*kept, {"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}]


def resolved_note(alert: ModelAlert) -> str:
    """Say in a plan's thread that its alert stopped firing."""
    ended = alert_time(alert.ends_at)
    at = f" at {format_time(ended)}" if ended is not None else ""
    return RESOLVED.format(name=escape(alert.alertname or "unnamed"), at=at)


def link_target(url: str) -> str:
    """Return an http(s) URL ready for a mrkdwn link, or '' for anything else."""
    if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
        return ""
    # `|` would end the link's target and start its label.
    return escape(url).replace("|", "%7C")


def alert_time(text: str) -> float | None:
    """Return an RFC 3339 time as Unix seconds; None for Go's zero time or a malformed one."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at.timestamp() if at.year >= 1970 and at.tzinfo is not None else None


def _has_confirm(block: Mapping) -> bool:
    elements = block.get("elements") or []
    return block.get("type") == "actions" and any(
        isinstance(e, Mapping) and e.get("action_id") == ROLLBACK_CONFIRM for e in elements
    )


def _one_line(text: str, limit: int = 500) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:  # "36h" rather than "1.5d"
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"
