"""The durable record: each lifecycle change as MLflow tags on its version. Pure.

A version's `registry_bot.*` tags are the whole truth about its lifecycle (SPEC 4):
the log of changes (`registry_bot.log`) that `history` and `rollback` read, and the
state tags a person sees in the MLflow UI. Each change is also published as a
LifecycleEvent (registry.changes) once its tags are written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from registry.changes import event_for
from registry.versions import ModelVersion

if TYPE_CHECKING:
    from registry.services import Services

TAG_PREFIX = "registry_bot."
LOG_TAG = TAG_PREFIX + "log"
LOG_LIMIT = 25  # entries kept per version; MLflow caps a tag value at a few KB


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


def logged(mv: ModelVersion, change: str, since: str = "") -> bool:
    """Say whether the version's log already has `change` (at or after `since`)."""
    floor = float(since or 0)
    return any(e.get("type") == change and float(e.get("at", 0)) >= floor for e in history_of(mv))


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


def stamp(svc: Services) -> str:
    """Return the services' clock as the record writes it."""
    return f"{svc.clock():.3f}"


def record(
    svc: Services,
    mv: ModelVersion,
    change: str,
    *,
    actor: str = "",
    reason: str = "",
    previous: str = "",
    extra: Mapping[str, str] | None = None,
) -> None:
    """Append a lifecycle change to the version's durable log, with any extra tags; publish it."""
    entry = {"type": change, "at": stamp(svc), "actor": actor, "reason": reason}
    if previous:
        entry["previous_version"] = previous
    svc.gateway.set_tags(mv.name, mv.version, entry_tags(mv, entry, extra))
    svc.emit(event_for(change, mv.name, mv.version, entry))
