"""The periodic sweep: reminders, expiry, canary windows, and work that missed a step."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from registry import lifecycle
from registry.canary import finish_canary
from registry.decisions import approvals_on
from registry.locks import LockBusy
from registry.messages import format_time
from registry.promotion import archive_decided, promote
from registry.record import format_stamp, record, time_of
from registry.services import Services
from registry.versions import ModelVersion

log = logging.getLogger(__name__)

EXPIRED_REASON = "expired"


@dataclass
class SweepReport:
    """What one sweep did, by action, as (model, version) pairs."""

    done: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def add(self, action: str, mv: ModelVersion) -> None:
        self.done.setdefault(action, []).append((mv.name, mv.version))

    def count(self, action: str) -> int:
        return len(self.done.get(action, []))


def sweep(
    svc: Services, lock: Callable[[str], AbstractContextManager], models: list[str] | None = None
) -> SweepReport:
    """Sweep every registered model (or `models`), each under its lock."""
    report = SweepReport()
    for name in models if models is not None else svc.gateway.model_names():
        try:
            with lock(name):
                for mv in svc.gateway.versions(name):
                    action = sweep_version(svc, mv)
                    if action:
                        report.add(action, mv)
        except LockBusy:
            log.info("sweep skipped a busy model", extra={"model": name})  # next sweep
    if report.done:
        log.info("sweep: %s", {k: len(v) for k, v in report.done.items()})
    return report


def sweep_version(svc: Services, mv: ModelVersion) -> str:
    """Bring one version forward if it is due; return what was done, or ''."""
    if mv.tag("decision") and not mv.tag("announced"):
        return _finish(svc, mv)  # a worker died half way through a decision
    if mv.stage != "Staging":
        return ""
    if not mv.tag("notice_ts"):
        lifecycle.stage_version(svc, mv.name, mv.version, event_id="sweep")
        return "noticed"  # reconciled: a lost event, a crashed worker, a lost MLflow delivery
    if mv.tag("canary_state") in ("running", "passed"):
        return _canary_due(svc, mv)
    if mv.tag("gates") == "failed" or mv.tag("decision"):
        return ""
    return _expire_or_remind(svc, mv)


def _finish(svc: Services, mv: ModelVersion) -> str:
    if mv.tag("decision") == "approved":
        promote(svc, mv)
        return "promoted"
    verb = "Expired" if mv.tag("decision") == "expired" else "Rejected"
    archive_decided(svc, mv, mv.tag("decision"), verb)
    return "archived"


def _canary_due(svc: Services, mv: ModelVersion) -> str:
    if svc.clock() < (time_of(mv, "canary_until") or 0.0):
        return ""
    if mv.tag("canary_require_report") == "true" and mv.tag("canary_state") != "passed":
        return ""  # the window is over but no passing report yet: keep waiting for one
    finish_canary(svc, mv)
    return "promoted"


def _expire_or_remind(svc: Services, mv: ModelVersion) -> str:
    policy = svc.settings.policy.for_model(mv.name)
    now = float(svc.clock())
    since = time_of(mv, "noticed_at") or time_of(mv, "staged_at") or now
    if policy.approval_expires_after and now >= since + policy.approval_expires_after:
        record(
            svc,
            mv,
            "expired",
            actor="registry-bot",
            reason=EXPIRED_REASON,
            extra={
                "decision": "expired",
                "decided_by": "",
                "decided_at": format_stamp(now),
                "reason": EXPIRED_REASON,
            },
        )
        mv = svc.gateway.get_version(mv.name, mv.version)
        archive_decided(svc, mv, "expired", "Expired")
        return "expired"
    last = time_of(mv, "reminded_at") or since
    if policy.remind_every and now >= last + policy.remind_every:
        count = f"{len(approvals_on(mv))} of {svc.settings.required_approvals} approvals"
        expires = ""
        if policy.approval_expires_after:
            expires = f"; expires {format_time(since + policy.approval_expires_after)}"
        svc.notifier.reply(
            mv.tag("notice_channel"),
            mv.tag("notice_ts"),
            f"Reminder: {mv.name} v{mv.version} still awaits approval ({count}{expires}).",
        )
        svc.gateway.set_tags(mv.name, mv.version, {"registry_bot.reminded_at": format_stamp(now)})
        return "reminded"
    return ""
