"""Change freezes at work: an approved version waits for the window's end, then the sweep
promotes it; and the clicker's answer, which names slots and freezes."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from registry.flows.notice import refresh_notice, thread
from registry.flows.promotion import promote
from registry.flows.recording import record, stamp
from registry.ports.services import Services
from registry.rules.decisions import Clicker, approvals_on
from registry.rules.governance import (
    SLOT_FILLS_TAG,
    FreezeWindow,
    active_freeze,
    fill_slots,
    missing_text,
    slot_fills_on,
    slot_label,
    slots_of,
)
from registry.rules.record import TAG_PREFIX, format_stamp, prefixed
from registry.rules.text import escape
from registry.rules.versions import ModelVersion

log = logging.getLogger(__name__)

COUNTED = "Your approval of {name} v{version} is counted: {count} approvals."
SLOT_COUNTED = (
    "Your approval of {name} v{version} fills a slot for {slot}; still missing: {missing}."
)
FROZEN = (
    "{name} v{version} is approved; Production is frozen until {until}{why}, so it will be "
    "promoted when the freeze ends."
)
FREEZE_OVER_CHANGED = (
    "The change freeze is over, but Production changed meanwhile (now {now}, was {was}): "
    "{name} v{version} was not promoted. Its approvals were reset; approve it again to "
    "promote it."
)


def slot_fills_tags(mv: ModelVersion, clicker: Clicker) -> dict[str, str]:
    """Return the tag that remembers which slots the clicker could fill."""
    fills = {**slot_fills_on(mv), clicker.user: list(clicker.slots)}
    return {TAG_PREFIX + SLOT_FILLS_TAG: json.dumps(fills, separators=(",", ":"))}


def approval_text(svc: Services, mv: ModelVersion) -> str:
    """Tell an approver what their counted approval did."""
    if mv.tag("freeze_state") == "waiting":
        return FROZEN.format(
            name=escape(mv.name),
            version=mv.version,
            until=escape(mv.tag("freeze_until_text")),
            why=f" ({escape(mv.tag('freeze_reason'))})" if mv.tag("freeze_reason") else "",
        )
    slots = slots_of(svc.settings, mv.name)
    approvals = approvals_on(mv)
    if not slots:
        count = f"{len(approvals)} of {svc.settings.required_approvals}"
        return COUNTED.format(name=escape(mv.name), version=mv.version, count=count)
    filled = fill_slots(slots, slot_fills_on(mv), approvals)
    mine = [s for s in slots if approvals and approvals[-1] in filled.get(s.key, ())]
    return SLOT_COUNTED.format(
        name=escape(mv.name),
        version=mv.version,
        slot=slot_label(mine[0]) if mine else "an approver",
        missing=missing_text(slots, filled),
    )


def hold_if_frozen(
    svc: Services,
    mv: ModelVersion,
    approvals: str,
    *,
    actor: str,
    extra: Mapping[str, str] | None = None,
    click: str = "",
) -> bool:
    """Record an approval that would promote as approved and waiting, if a freeze is on
    (`tell_held`, or a click's finishing steps, then say so)."""
    window = active_freeze(svc.settings.policy.for_model(mv.name).freeze, float(svc.clock()))
    if window is None:
        return False
    _hold(svc, mv, approvals, window, actor, {**(extra or {}), "freeze_told_nonce": ""}, click)
    return True


def tell_held(svc: Services, mv: ModelVersion) -> None:
    """Redraw the notice of a version held by a freeze, and say so once in its thread."""
    refresh_notice(svc, mv)
    thread(svc, mv, approval_text(svc, mv), once="freeze_told")


def _hold(
    svc: Services,
    mv: ModelVersion,
    approvals: str,
    window: FreezeWindow,
    actor: str,
    extra: Mapping[str, str],
    click: str,
) -> None:
    current = svc.gateway.production(mv.name)
    why = f" ({window.reason})" if window.reason else ""
    record(
        svc,
        mv,
        "approval",
        actor=actor,
        reason=f"approved; frozen until {window.until_text()}{why}",
        extra={
            "approvals": approvals,
            "freeze_state": "waiting",
            "freeze_until": format_stamp(window.end),
            "freeze_until_text": window.until_text(),
            "freeze_reason": window.reason,
            "freeze_approved_by": approvals,
            "freeze_production": current.version if current else "",
            **extra,
        },
        details={"click": click} if click else None,
    )


def freeze_due(svc: Services, mv: ModelVersion) -> str:
    """Promote a version approved during a freeze once no freeze is on, if nothing changed."""
    policy = svc.settings.policy.for_model(mv.name)
    if active_freeze(policy.freeze, float(svc.clock())) is not None:
        return ""
    current = svc.gateway.production(mv.name)
    now_serving = current.version if current else ""
    if now_serving != mv.tag("freeze_production"):
        return _reset(svc, mv, now_serving)
    decided = {
        "decision": "approved",
        "decided_by": mv.tag("freeze_approved_by"),
        "decided_at": stamp(svc),
        "replaces": now_serving if now_serving != mv.version else "",
        "freeze_state": "done",
    }
    svc.gateway.set_tags(mv.name, mv.version, prefixed(decided))
    return promote(svc, svc.gateway.get_version(mv.name, mv.version))


def _reset(svc: Services, mv: ModelVersion, now_serving: str) -> str:
    """Production moved during the freeze: the approvers approved replacing another one."""
    tags = {"freeze_state": "reset", "approvals": "", SLOT_FILLS_TAG: "{}"}
    svc.gateway.set_tags(mv.name, mv.version, prefixed(tags))
    mv = svc.gateway.get_version(mv.name, mv.version)
    refresh_notice(svc, mv)
    was = mv.tag("freeze_production")
    text = FREEZE_OVER_CHANGED.format(
        name=escape(mv.name),
        version=mv.version,
        now=f"v{now_serving}" if now_serving else "none",
        was=f"v{was}" if was else "none",
    )
    thread(svc, mv, text)
    log.info("freeze over, Production changed", extra={"model": mv.name, "version": mv.version})
    return "reset"
