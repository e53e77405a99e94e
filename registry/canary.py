"""Canary windows: an approved version held in Staging, its verdict, and the window's end."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from registry.freeze import hold_if_frozen
from registry.messages import escape, format_time
from registry.notice import refresh_notice, thread
from registry.people import people_tags
from registry.policy import Canary
from registry.promotion import archive_decided, promote
from registry.record import format_stamp, prefixed, record, stamp, time_of
from registry.services import Services
from registry.versions import ModelVersion

log = logging.getLogger(__name__)


def start_canary(svc: Services, mv: ModelVersion, canary: Canary, approvals: str) -> str:
    """Hold an approved version in Staging for its canary window instead of promoting it."""
    until = float(svc.clock()) + canary.duration
    record(
        svc,
        mv,
        "canary_started",
        actor=approvals,
        extra={
            "approvals": approvals,
            "canary_state": "running",
            "canary_until": format_stamp(until),
            "canary_approved_by": approvals,
            "canary_require_report": "true" if canary.require_report else "false",
            **people_tags(svc, mv, *approvals.split(",")),
        },
    )
    mv = svc.gateway.get_version(mv.name, mv.version)
    refresh_notice(svc, mv)
    thread(
        svc,
        mv,
        f"{escape(mv.name)} v{mv.version} approved; canary until {format_time(until)}"
        f"{' (needs a passing report)' if canary.require_report else ''}.",
    )
    return "canary_started"


def canary_verdict(
    svc: Services,
    name: str,
    version: str,
    *,
    passed: bool,
    detail: str,
    metrics: Mapping[str, float],
    event_id: str,
) -> str:
    """Apply a canary report: a failure archives the version, a pass lets it be promoted."""
    mv = svc.gateway.get_version(name, version)
    if mv.tag("canary_state") not in ("running", "passed") or mv.tag("decision"):
        ctx = {"event_id": event_id, "model": mv.name, "version": mv.version}
        log.info("canary report for a version not in a canary window", extra=ctx)
        return "ignored"
    report = json.dumps({"passed": passed, "detail": detail[:500], "metrics": dict(metrics)})
    if not passed:
        reason = f"canary failed: {detail}" if detail else "canary failed"
        record(
            svc,
            mv,
            "canary_failed",
            actor="canary",
            reason=reason,
            extra={
                "canary_state": "failed",
                "canary_report": report,
                "decision": "rejected",
                "decided_by": "canary",
                "decided_at": stamp(svc),
                "reason": reason,
            },
        )
        return archive_decided(svc, svc.gateway.get_version(name, version), "rejected", "Rejected")
    record(
        svc,
        mv,
        "canary_passed",
        actor="canary",
        reason=detail,
        extra={"canary_state": "passed", "canary_report": report},
    )
    mv = svc.gateway.get_version(name, version)
    if svc.clock() >= (time_of(mv, "canary_until") or 0.0):
        return finish_canary(svc, mv)
    refresh_notice(svc, mv)
    return "canary_passed"


def finish_canary(svc: Services, mv: ModelVersion) -> str:
    """Promote a version whose canary window is over (and passed, when a report is needed)."""
    approvers, done = mv.tag("canary_approved_by"), {"canary_state": "done"}
    if hold_if_frozen(svc, mv, approvers, actor="canary", extra=done):
        return "frozen"  # the sweep promotes it when the freeze ends
    current = svc.gateway.production(mv.name)
    replaces = current.version if current and current.version != mv.version else ""
    decided = {
        "decision": "approved",
        "decided_by": mv.tag("canary_approved_by"),
        "decided_at": stamp(svc),
        "replaces": replaces,
        "canary_state": "done",
    }
    svc.gateway.set_tags(mv.name, mv.version, prefixed(decided))
    return promote(svc, svc.gateway.get_version(mv.name, mv.version))
