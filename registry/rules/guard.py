"""The post-promotion guard (SPEC 12): which alerts concern which Production. Pure."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime

from registry.rules.events import ModelAlert
from registry.rules.policy import Guard
from registry.rules.record import history_of, parse_time, time_of
from registry.rules.reports import previous_production, pulled_since
from registry.rules.versions import ModelVersion

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


NONE_UNPULLED = NO_EARLIER + " that nobody pulled"


def nothing_to_restore(why: str) -> bool:
    """Say whether a refusal means the alert concerns the Production registry-bot made, but
    no earlier version may be restored (the alert then says so: no plan, and why)."""
    return why.startswith(NO_EARLIER)


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
        pulled = ", ".join(f"v{mv.version}" for mv in pulled_since(versions, current))
        return f"{NONE_UNPULLED} (pulled: {pulled})" if pulled else NO_EARLIER
    return ""


def became_production(mv: ModelVersion) -> float | None:
    """Return when the version last became Production, as its record says, or None.

    The time of the promoted or rolled_back entry, which is also the time of the
    lifecycle event the door's guard entry is made from, so both agree on the window.
    """
    changes = [e for e in history_of(mv) if e.get("type") in PRODUCTION_CHANGES]
    return parse_time(changes[-1].get("at")) if changes else time_of(mv, "production_since")


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


def alert_time(text: str) -> float | None:
    """Return an RFC 3339 time as Unix seconds; None for Go's zero time or a malformed one."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at.timestamp() if at.year >= 1970 and at.tzinfo is not None else None


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:  # "36h" rather than "1.5d"
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"
