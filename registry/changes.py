"""A lifecycle change as published to subscribers and sinks (SPEC 9). Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

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
    """The payload every subscriber and sink receives (README: "Lifecycle events")."""

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

    The entry keeps its time as ISO 8601 text (registry.record); subscribers get a number.
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
