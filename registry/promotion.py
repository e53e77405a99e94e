"""Finishing a recorded decision: Production or Archived, the record, the announcement.

Each function here runs after the decision is written on the version, and every
step checks whether it is already done, so a task that died half way (or the
sweep) runs it again and completes it without doing anything twice.
"""

from __future__ import annotations

from registry.messages import Outcome, mentions
from registry.notice import redraw_notice, refresh_notice, thread
from registry.record import (
    LEFT_PRODUCTION,
    format_stamp,
    logged,
    prefixed,
    record,
    stamp,
    time_of,
)
from registry.reports import outcome_of
from registry.services import Services
from registry.versions import ModelVersion


def promote(svc: Services, mv: ModelVersion) -> str:
    """Finish an approval: Production, the old version archived, the record, the announcement."""
    gw = svc.gateway
    actor, previous = mv.tag("decided_by"), mv.tag("replaces")
    displaced = gw.move(mv.name, mv.version, "Production") if mv.stage != "Production" else []
    # What the move archived, in case Production changed since the decision (a rollback).
    previous = displaced[0] if displaced else previous
    promoted = logged(mv, "promoted")
    # When it entered Production: now, or as recorded by a run that died after recording it.
    since = time_of(mv, "production_since") if promoted else None
    at = format_stamp(since) if since is not None else stamp(svc)
    if not promoted:
        record(
            svc,
            mv,
            "promoted",
            actor=actor,
            previous=previous,
            extra={"production_since": at},
            drop=LEFT_PRODUCTION,
        )
    for old in [previous, *displaced[1:]] if previous else []:
        _archive_replaced(svc, gw.get_version(mv.name, old), by=mv, actor=actor, at=at)
    mv = gw.get_version(mv.name, mv.version)
    redraw_notice(svc, mv)
    was = f" v{previous} moved to Archived." if previous else ""
    thread(
        svc,
        mv,
        f"{mv.name} v{mv.version} is now Production, approved by {mentions(actor)}.{was}",
    )
    gw.set_tags(mv.name, mv.version, prefixed({"announced": stamp(svc)}))
    return "promoted"


def _archive_replaced(
    svc: Services, old: ModelVersion, *, by: ModelVersion, actor: str, at: str
) -> None:
    """Record that `by` replaced `old` in Production (once), and redraw old's notice."""
    if not logged(old, "archived", since=at):
        record(
            svc,
            old,
            "archived",
            actor=actor,
            reason=f"replaced by v{by.version}",
            extra={"production_until": at, "archived_at": at},
            details={"replaced_by": by.version},
        )
        old = svc.gateway.get_version(old.name, old.version)
    redraw_notice(svc, old)


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
    # The record says whether it was a rejection or the requester's withdrawal.
    outcome = outcome_of(mv) or Outcome(verb, [u for u in by.split(",") if u], decided, reason)
    refresh_notice(svc, mv, outcome)
    who = f" by {'the requester ' if outcome.by_requester else ''}{mentions(by)}" if by else ""
    thread(svc, mv, f"{mv.name} v{mv.version} was {outcome.verb.lower()}{who} and archived.")
    svc.gateway.set_tags(mv.name, mv.version, prefixed({"announced": stamp(svc)}))
    return change
