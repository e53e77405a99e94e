"""Finishing a recorded change: a decision (Production or Archived) or a rollback.

Each function here runs after the change is written on the version (what it is
about to do, by whom, when, why), and every step checks whether it is already
done, so a task that died half way (or the sweep) runs it again and completes it
without doing anything twice: the record is never lost, the channel is told once.
"""

from __future__ import annotations

from registry.governance import active_freeze
from registry.messages import Outcome, escape, mentions, rollback_abandoned, rollback_announcement
from registry.notice import model_channel, refresh_notice, tell_once, thread
from registry.record import logged, prefixed, record, stamp
from registry.services import Services
from registry.versions import ModelVersion


def promote(svc: Services, mv: ModelVersion) -> str:
    """Finish an approval: Production, the old version archived, the record, the announcement."""
    gw, at, actor = svc.gateway, mv.tag("decided_at") or stamp(svc), mv.tag("decided_by")
    replaced = [mv.tag("replaces")] if mv.tag("replaces") else []
    serving = mv.stage in ("Staging", "Production")
    half_done = mv.stage == "Production" and _still_serving(svc, mv.name, mv.tag("replaces"))
    if mv.stage == "Staging" or half_done:
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
        name, who = escape(mv.name), mentions(actor)
        text = f"{name} v{mv.version} is now Production, approved by {who}.{was}"
        thread(svc, mv, text, once="decision_told")
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


def _still_serving(svc: Services, name: str, version: str) -> bool:
    """Say whether `version` is still Production: a promotion that stopped half way."""
    return bool(version) and svc.gateway.get_version(name, version).stage == "Production"


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
    thread(
        svc,
        mv,
        f"{escape(mv.name)} v{mv.version} was {verb.lower()}{who} and archived.",
        once="decision_told",
    )
    svc.gateway.set_tags(mv.name, mv.version, prefixed({"announced": stamp(svc)}))
    return change


def rollback_intent(current: str, user: str, at: str, reason: str, channel: str) -> dict[str, str]:
    """Return the tags that record a rollback on its target before anything moves."""
    return prefixed(
        {
            "rollback_from": current,
            "rollback_by": user,
            "rollback_at": at,
            "rollback_reason": reason,
            "rollback_channel": channel,
            "rollback_done": "",
            "rollback_state": "",
            "rollback_told_nonce": "",  # a nonce of an earlier rollback to this version
        }
    )


def rollback_pending(mv: ModelVersion) -> bool:
    """Say whether a rollback to this version is recorded but not yet finished."""
    at = mv.tag("rollback_at")
    return bool(at) and mv.tag("rollback_done") != at


def finish_rollback(svc: Services, mv: ModelVersion) -> str:
    """Finish a recorded rollback to `mv`: Production, the log, the archive, the announcement."""
    gw = svc.gateway
    at, by, old_version = mv.tag("rollback_at"), mv.tag("rollback_by"), mv.tag("rollback_from")
    channel = mv.tag("rollback_channel") or model_channel(svc, mv.name)
    if mv.stage != "Production":
        current = gw.production(mv.name)
        if current is not None and current.version != old_version:
            return _abandon_rollback(svc, mv, current.version, channel)
        gw.move(mv.name, mv.version, "Production")
    reason = mv.tag("rollback_reason")
    old = gw.get_version(mv.name, old_version)
    if not logged(old, "archived", since=at):
        record(
            svc,
            old,
            "archived",
            actor=by,
            reason=f"rolled back to v{mv.version}: {reason or 'no reason given'}",
            extra={"production_until": at, "archived_at": at},
        )
    if not logged(mv, "rolled_back", since=at):
        record(
            svc,
            mv,
            "rolled_back",
            actor=by,
            reason=reason,
            previous=old_version,
            extra={"production_since": at, "production_until": "", "rolled_back_by": by},
        )
    mv = gw.get_version(mv.name, mv.version)
    text = rollback_announcement(mv.name, old_version, mv.version, by, reason)
    text += during_freeze(svc, mv.name)
    tell_once(svc, mv, "rollback_told", text, channel=channel)
    gw.set_tags(mv.name, mv.version, prefixed({"rollback_done": at, "rollback_state": "done"}))
    return "rolled_back"


def _abandon_rollback(svc: Services, mv: ModelVersion, now_serving: str, channel: str) -> str:
    """Drop a recorded rollback whose plan no longer holds: Production changed meanwhile."""
    text = rollback_abandoned(mv.name, mv.version, mv.tag("rollback_by"), now_serving)
    tell_once(svc, mv, "rollback_told", text, channel=channel)
    done = {"rollback_done": mv.tag("rollback_at"), "rollback_state": "abandoned"}
    svc.gateway.set_tags(mv.name, mv.version, prefixed(done))
    return "rollback_abandoned"


def during_freeze(svc: Services, model: str) -> str:
    """Say that a rollback ran during a change freeze, which never holds it back."""
    window = active_freeze(svc.settings.policy.for_model(model).freeze, float(svc.clock()))
    if window is None:
        return ""
    why = f" ({window.reason})" if window.reason else ""
    return (
        f"\nThis rollback ran during a change freeze until {window.until_text()}{why}: "
        "rollback is never frozen."
    )
