"""The durable record read: each change as MLflow tags on its version, and as published. Pure."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from registry.rules.versions import ModelVersion

TAG_PREFIX = "registry_bot."


LOG_TAG = TAG_PREFIX + "log"


LOG_LIMIT = 25  # entries kept per version; MLflow caps a tag value at a few KB


# The state tags that stop being true once a version is Production (again).
LEFT_PRODUCTION = ("production_until", "archived_at")


def prefixed(values: Mapping[str, str]) -> dict[str, str]:
    """Return `values` with each key under the `registry_bot.` prefix."""
    return {f"{TAG_PREFIX}{k}": v for k, v in values.items()}


def history_of(mv: ModelVersion) -> list[dict]:
    """Return the version's recorded lifecycle changes, oldest first."""
    try:
        entries = json.loads(mv.tags.get(LOG_TAG, "[]"))
    except ValueError:
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def logged(
    mv: ModelVersion, change: str, since: str = "", details: Mapping[str, str] | None = None
) -> bool:
    """Say whether the version's log already has `change` (at or after `since`, and with
    these `details` in its entry)."""
    floor = parse_time(since) or 0.0
    wanted = (details or {}).items()
    return any(
        e.get("type") == change
        and (parse_time(e.get("at")) or 0.0) >= floor
        and all(e.get(key) == value for key, value in wanted)
        for e in history_of(mv)
    )


def entry_tags(
    mv: ModelVersion,
    entry: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the tags that append `entry` to the version's log, with any extra state tags."""
    entries = [*history_of(mv), dict(entry)][-LOG_LIMIT:]
    tags = prefixed(extra or {})
    tags[LOG_TAG] = json.dumps(entries, separators=(",", ":"))
    return tags


def format_stamp(at: float) -> str:
    """Write a Unix time as the record keeps it: ISO 8601 in UTC, to the millisecond."""
    millis = round(at * 1000)  # whole milliseconds: no float noise truncated away
    moment = datetime.fromtimestamp(millis // 1000, UTC).replace(microsecond=millis % 1000 * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: object) -> float | None:
    """Read a recorded time as a Unix time: ISO 8601, or the epoch seconds written before it.

    Registries recorded before times were ISO 8601 hold "1795800000.123"; both read
    the same. Anything else (empty, garbage, not finite) is None.
    """
    if isinstance(text, bool) or text is None:
        return None
    raw = str(text).strip()
    if not raw:
        return None
    try:
        seconds = float(raw)  # the earlier form
    except ValueError:
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    return seconds if math.isfinite(seconds) else None


def time_of(mv: ModelVersion, key: str) -> float | None:
    """Return the time in the version's tag `registry_bot.<key>`, in either recorded form."""
    return parse_time(mv.tag(key))


# Where every lifecycle event is published on Redis (SPEC 9).
LIFECYCLE_CHANNEL = "registry-bot:lifecycle"


# What `record` calls a change, and what the published event calls it.
EVENT_TYPES = {
    "staged": "staged",
    "approval": "approval_counted",
    "promoted": "promoted",
    "rejected": "rejected",
    "archived": "archived",
    "rolled_back": "rolled_back",
    "expired": "expired",
    "canary_passed": "canary_verdict",
    "canary_failed": "canary_verdict",
    "out_of_band": "out_of_band",
    "reverted": "reverted",
    "accepted": "accepted",
    "alert_received": "alert_received",
}


@dataclass(frozen=True)
class LifecycleEvent:
    """The payload every subscriber and sink receives (docs/reference/lifecycle-events.md)."""

    type: str
    model_name: str
    version: str
    previous_version: str
    actor: str
    reason: str
    at: float

    @property
    def event_id(self) -> str:
        """Return an id that is the same if the same change is published again."""
        return f"evt_{self.model_name}_{self.version}_{self.type}_{int(self.at * 1000)}"

    def body(self) -> str:
        """Return the JSON body."""
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)


def event_for(
    change: str, model: str, version: str, entry: Mapping[str, str], *, at: float
) -> LifecycleEvent:
    """Build the published event from a recorded log entry and its time as a Unix time.

    The entry keeps its time as ISO 8601 text (registry.rules.record); subscribers get a number.
    """
    return LifecycleEvent(
        type=EVENT_TYPES.get(change, change),
        model_name=model,
        version=str(version),
        previous_version=str(entry.get("previous_version", "")),
        actor=str(entry.get("actor", "")),
        reason=str(entry.get("reason", "")),
        at=at,
    )
