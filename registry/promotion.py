"""Finishing a recorded decision: Production or Archived, the record, the announcement.

Each function here runs after the decision is written on the version, and every
step checks whether it is already done, so a task that died half way (or the
sweep) runs it again and completes it without doing anything twice.
"""

from __future__ import annotations

from registry.messages import Outcome, mentions
from registry.notice import refresh_notice, thread
from registry.record import format_stamp, logged, prefixed, record, stamp, time_of
from registry.services import Services
from registry.versions import ModelVersion


def promote(svc: Services, mv: ModelVersion) -> str:
    """Finish an approval: Production, the old version archived, the record, the announcement."""
    gw = svc.gateway
    decided = time_of(mv, "decided_at") or svc.clock()
    at = format_stamp(decided)
    actor, previous = mv.tag("decided_by"), mv.tag("replaces")
    if mv.stage != "Production":
        gw.move(mv.name, mv.version, "Production")
    if not logged(mv, "promoted"):
        record(svc, mv, "promoted", actor=actor, previous=previous, extra={"production_since": at})
    if previous:
        old = gw.get_version(mv.name, previous)
        if not logged(old, "archived", since=at):
            record(
                svc,
                old,
                "archived",
                actor=actor,
                reason=f"replaced by v{mv.version}",
                extra={"production_until": at, "archived_at": at},
            )
    mv = gw.get_version(mv.name, mv.version)
    refresh_notice(svc, mv, Outcome("Approved", actor.split(","), decided))
    was = f" v{previous} moved to Archived." if previous else ""
    thread(
        svc,
        mv,
        f"{mv.name} v{mv.version} is now Production, approved by {mentions(actor)}.{was}",
    )
    gw.set_tags(mv.name, mv.version, prefixed({"announced": stamp(svc)}))
    return "promoted"


def archive_decided(svc: Services, mv: ModelVersion, change: str, verb: str) -> str:
    """Archive a version whose decision is recorded, log it and announce it (resumable)."""
    by, reason = mv.tag("decided_by"), mv.tag("reason")
    decided = time_of(mv, "decided_at") or svc.clock()
    if mv.stage != "Archived":
        svc.gateway.move(mv.name, mv.version, "Archived")
    if not logged(mv, change):
        record(
            svc, mv, change, actor=by, reason=reason, extra={"archived_at": format_stamp(decided)}
        )
    mv = svc.gateway.get_version(mv.name, mv.version)
    refresh_notice(svc, mv, Outcome(verb, [u for u in by.split(",") if u], decided, reason))
    who = f" by {mentions(by)}" if by else ""
    thread(svc, mv, f"{mv.name} v{mv.version} was {verb.lower()}{who} and archived.")
    svc.gateway.set_tags(mv.name, mv.version, prefixed({"announced": stamp(svc)}))
    return change
