"""Canary windows: an approved version held in Staging, its verdict, and the window's end."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from registry.flows.freeze import hold_if_frozen, tell_held
from registry.flows.notice import refresh_notice, thread
from registry.flows.promotion import archive_decided, promote
from registry.flows.recording import people_tags, record, stamp
from registry.ports.services import Services
from registry.rules.policy import Canary
from registry.rules.record import format_stamp, prefixed, time_of
from registry.rules.text import escape, format_time
from registry.rules.versions import ModelVersion

log = logging.getLogger(__name__)

CANARY = "canary"  # the actor of what a canary verdict does


def start_canary(
    svc: Services, mv: ModelVersion, canary: Canary, approvals: str, *, click: str = ""
) -> None:
    """Record an approved version held in Staging for its canary window instead of promoted
    (`finish_canary_start` then says so: a rerun of the click finishes that once)."""
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
        details={"click": click} if click else None,
    )


def finish_canary_start(svc: Services, mv: ModelVersion) -> None:
    """Redraw the notice of a version whose canary window started, and say so once."""
    refresh_notice(svc, mv)
    until = time_of(mv, "canary_until") or 0.0
    needs = " (needs a passing report)" if mv.tag("canary_require_report") == "true" else ""
    text = f"{escape(mv.name)} v{mv.version} approved; canary until {format_time(until)}{needs}."
    thread(svc, mv, text, once="canary_told")


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
        return _failed(svc, mv, detail, report)
    extra = {"canary_state": "passed", "canary_report": report}
    record(svc, mv, "canary_passed", actor=CANARY, reason=detail, extra=extra)
    mv = svc.gateway.get_version(name, version)
    if svc.clock() >= (time_of(mv, "canary_until") or 0.0):
        return finish_canary(svc, mv)
    refresh_notice(svc, mv)
    return "canary_passed"


def _failed(svc: Services, mv: ModelVersion, detail: str, report: str) -> str:
    """Record a failing verdict as the canary's rejection, then archive and announce it."""
    reason = f"canary failed: {detail}" if detail else "canary failed"
    rejected = {"decision": "rejected", "decided_by": CANARY, "decided_at": stamp(svc)}
    extra = {"canary_state": "failed", "canary_report": report, **rejected, "reason": reason}
    record(svc, mv, "canary_failed", actor=CANARY, reason=reason, extra=extra)
    failed = svc.gateway.get_version(mv.name, mv.version)
    return archive_decided(svc, failed, "rejected", "Rejected")


def finish_canary(svc: Services, mv: ModelVersion) -> str:
    """Promote a version whose canary window is over (and passed, when a report is needed)."""
    approvers, done = mv.tag("canary_approved_by"), {"canary_state": "done"}
    if hold_if_frozen(svc, mv, approvers, actor=CANARY, extra=done):
        tell_held(svc, svc.gateway.get_version(mv.name, mv.version))
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
