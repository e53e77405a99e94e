"""Finishing a recorded decision: Production or Archived, the record, the announcement.

Each function here runs after the decision is written on the version, and every
step checks whether it is already done, so a task that died half way (or the
sweep) runs it again and completes it without doing anything twice.
"""

from __future__ import annotations

from registry.messages import Outcome, mentions
from registry.notice import refresh_notice, thread
from registry.record import logged, prefixed, record, stamp
from registry.services import Services
from registry.versions import ModelVersion


def promote(svc: Services, mv: ModelVersion) -> str:
    """Finish an approval: Production, the old version archived, the record, the announcement."""
    gw, at, actor = svc.gateway, mv.tag("decided_at") or stamp(svc), mv.tag("decided_by")
    replaced = [mv.tag("replaces")] if mv.tag("replaces") else []
    serving = mv.stage in ("Staging", "Production")
    if mv.stage == "Staging":
        # What the move archived, too: a worker killed while writing the decision may have
        # left no `replaces`, and that version's audit entry must not be lost.
        moved = gw.move(mv.name, mv.version, "Production")
        replaced += [v for v in moved if v not in replaced]
    # Otherwise a rerun found it replaced since it got there: never bring it back over the
    # newer one, and never announce it as Production; still finish the records.
    previous = replaced[0] if replaced else ""
    if serving and not logged(mv, "promoted"):
        record(svc, mv, "promoted", actor=actor, previous=previous, extra={"production_since": at})
    for version in replaced:
        _record_replaced(svc, gw.get_version(mv.name, version), mv, actor, at)
    mv = gw.get_version(mv.name, mv.version)
    refresh_notice(svc, mv, Outcome("Approved", actor.split(","), float(at)))
    if serving:
        was = f" v{previous} moved to Archived." if previous else ""
        text = f"{mv.name} v{mv.version} is now Production, approved by {mentions(actor)}.{was}"
        thread(svc, mv, text)
    gw.set_tags(mv.name, mv.version, prefixed({"announced": stamp(svc)}))
    return "promoted" if serving else "superseded"


def _record_replaced(
    svc: Services, old: ModelVersion, new: ModelVersion, actor: str, at: str
) -> None:
    """Log that `new` replaced `old` in Production, unless that is logged already."""
    if not logged(old, "archived", since=at):
        reason = f"replaced by v{new.version}"
        extra = {"production_until": at, "archived_at": at}
        record(svc, old, "archived", actor=actor, reason=reason, extra=extra)


def archive_decided(svc: Services, mv: ModelVersion, change: str, verb: str) -> str:
    """Archive a version whose decision is recorded, log it and announce it (resumable)."""
    by, at, reason = mv.tag("decided_by"), mv.tag("decided_at"), mv.tag("reason")
    if mv.stage != "Archived":
        svc.gateway.move(mv.name, mv.version, "Archived")
    if not logged(mv, change):
        record(svc, mv, change, actor=by, reason=reason, extra={"archived_at": at})
    mv = svc.gateway.get_version(mv.name, mv.version)
    refresh_notice(svc, mv, Outcome(verb, [u for u in by.split(",") if u], float(at), reason))
    who = f" by {mentions(by)}" if by else ""
    thread(svc, mv, f"{mv.name} v{mv.version} was {verb.lower()}{who} and archived.")
    svc.gateway.set_tags(mv.name, mv.version, prefixed({"announced": stamp(svc)}))
    return change
