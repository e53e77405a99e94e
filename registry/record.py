"""The durable record: each lifecycle change as MLflow tags on its version. Pure.

A version's `registry_bot.*` tags are the whole truth about its lifecycle (SPEC 4):
the log of changes (`registry_bot.log`) that `history` and `rollback` read, and the
state tags a person sees in the MLflow UI. Each change is also published as a
LifecycleEvent (registry.changes) once its tags are written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from registry.changes import LifecycleEvent, event_for
from registry.versions import ModelVersion, RegistryGateway

TAG_PREFIX = "registry_bot."
LOG_TAG = TAG_PREFIX + "log"
LOG_LIMIT = 25  # entries kept per version; MLflow caps a tag value at a few KB
# The state tags that stop being true once a version is Production (again).
LEFT_PRODUCTION = ("production_until", "archived_at")


class Recorder(Protocol):
    """What writing the record needs of `registry.services.Services`.

    A Protocol rather than Services itself, so the pure rules that read recorded
    times (registry.decisions) may import this module without an import cycle.
    """

    @property
    def gateway(self) -> RegistryGateway: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def emit(self) -> Callable[[LifecycleEvent], Any]: ...


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


def stamp(svc: Recorder) -> str:
    """Return the services' clock as the record writes it."""
    return format_stamp(svc.clock())


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


def record(
    svc: Recorder,
    mv: ModelVersion,
    change: str,
    *,
    actor: str = "",
    reason: str = "",
    previous: str = "",
    extra: Mapping[str, str] | None = None,
    details: Mapping[str, str] | None = None,
    drop: Sequence[str] = (),
) -> ModelVersion:
    """Append a lifecycle change to the version's durable log, with any extra tags; publish it.

    Return the version with the tags written (and without those dropped), so that the
    caller need not read back what it has just written.

    `details` go into the log entry only (what the notice's state line reads); `drop`
    names state tags the change makes untrue, which are deleted so that no tag
    describes a state the version has left.
    """
    now = svc.clock()
    entry = {"type": change, "at": format_stamp(now), "actor": actor, "reason": reason}
    if previous:
        entry["previous_version"] = previous
    entry.update(details or {})
    written = entry_tags(mv, entry, extra)
    svc.gateway.set_tags(mv.name, mv.version, written)
    stale = [key for key in prefixed(dict.fromkeys(drop, "")) if key in mv.tags]
    if stale:
        svc.gateway.delete_tags(mv.name, mv.version, stale)
    at = parse_time(entry["at"]) or now  # what a reader of the log gets, to the millisecond
    svc.emit(event_for(change, mv.name, mv.version, entry, at=at))
    kept = {k: v for k, v in mv.tags.items() if k not in stale}
    return replace(mv, tags={**kept, **written})
