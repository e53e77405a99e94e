"""Finishing a recorded change: a decision (Production or Archived) or a rollback.

Each function here runs after the change is written on the version (what it is
about to do, by whom, when, why), and every step checks whether it is already
done, so a task that died half way (or the sweep) runs it again and completes it
without doing anything twice: the record is never lost, the channel is told once.
"""

from __future__ import annotations

from registry.flows.notice import model_channel, redraw_notice, refresh_notice, tell_once, thread
from registry.flows.recording import people_tags, record, stamp
from registry.ports.services import Services
from registry.rules.governance import active_freeze
from registry.rules.record import LEFT_PRODUCTION, format_stamp, logged, prefixed, time_of
from registry.rules.reports import Outcome, outcome_of
from registry.rules.text import escape, mentions
from registry.rules.versions import PENDING_KEY, ModelVersion
from registry.views.announcements import rollback_abandoned, rollback_announcement


def promote(svc: Services, mv: ModelVersion) -> str:
    """Finish an approval: Production, the old version archived, the record, the announcement."""
    # Promoted already: a run died after recording when it entered Production.
    promoted = logged(mv, "promoted")
    since = time_of(mv, "production_since") if promoted else None
    at = format_stamp(since) if since is not None else stamp(svc)
    serving = mv.stage in ("Staging", "Production")
    replaced = _into_production(svc, mv)
    if serving:  # and what a run that died after its move archived (recorded or not)
        replaced += [v for v in _left_unrecorded(svc, mv, at) if v not in replaced]
        _record_promoted(svc, mv, replaced, at, promoted)
    # Otherwise a rerun found it replaced since it got there: never bring it back over the
    # newer one, and never announce it as Production; still finish the records.
    for old in replaced:
        left = svc.gateway.get_version(mv.name, old)
        # A version back in Production since (a rollback to it) was not replaced by this one.
        if left.stage != "Production":
            _archive_replaced(svc, left, by=mv, actor=mv.tag("decided_by"), at=at)
    mv = svc.gateway.get_version(mv.name, mv.version)
    redraw_notice(svc, mv)
    _announce_promotion(svc, mv, replaced[0] if replaced else "", serving, promoted)
    svc.gateway.set_tags(mv.name, mv.version, prefixed({"announced": stamp(svc)}))
    return "promoted" if serving else "superseded"


def _into_production(svc: Services, mv: ModelVersion) -> list[str]:
    """Move an approved version into Production, if a run has not; return what it replaced."""
    replaced = [mv.tag("replaces")] if mv.tag("replaces") else []
    half_done = mv.stage == "Production" and _still_serving(svc, mv.name, mv.tag("replaces"))
    if mv.stage == "Staging" or half_done:
        # What the move archived, too: a worker killed while writing the decision may have
        # left no `replaces`, and that version's audit entry must not be lost.
        moved = svc.gateway.move(mv.name, mv.version, "Production")
        replaced += [v for v in moved if v not in replaced]
    return replaced


def _record_promoted(
    svc: Services, mv: ModelVersion, replaced: list[str], at: str, promoted: bool
) -> None:
    """Record the version's entry into Production once (`at`), dropping what it left."""
    if promoted:  # maybe before dropping the tags of a state it had left
        _drop_left_production(svc, svc.gateway.get_version(mv.name, mv.version))
        return
    previous = replaced[0] if replaced else ""
    extra = {"production_since": at}
    actor = mv.tag("decided_by")
    record(svc, mv, "promoted", actor=actor, previous=previous, extra=extra, drop=LEFT_PRODUCTION)


def _announce_promotion(
    svc: Services, mv: ModelVersion, previous: str, serving: bool, promoted: bool
) -> None:
    """Say it in the notice's thread once: now Production, or was, replaced since."""
    name, who = escape(mv.name), mentions(mv.tag("decided_by"))
    if serving:
        was = f" v{previous} moved to Archived." if previous else ""
        text = f"{name} v{mv.version} is now Production, approved by {who}.{was}"
        thread(svc, mv, text, once="decision_told")
    elif promoted:  # it served, and a later version replaced it before the thread was told
        text = (
            f"{name} v{mv.version} was promoted to Production, approved by {who}; "
            "a later version has replaced it since."
        )
        thread(svc, mv, text, once="decision_told")


def _still_serving(svc: Services, name: str, version: str) -> bool:
    """Say whether `version` is still Production: a promotion that stopped half way."""
    return bool(version) and svc.gateway.get_version(name, version).stage == "Production"


def _left_unrecorded(svc: Services, mv: ModelVersion, replaced_since: str = "") -> list[str]:
    """Return the versions that left Production with no record of it (entered, never left),
    and with `replaced_since`, those whose record says `mv` replaced them since then: a run
    that died after recording that may not have redrawn their notices."""

    def left(other: ModelVersion) -> bool:
        if other.tag("production_since") and not other.tag("production_until"):
            return True
        by_mv = {"replaced_by": mv.version}
        return bool(replaced_since) and logged(other, "archived", replaced_since, by_mv)

    return [
        other.version
        for other in svc.gateway.versions(mv.name)
        if other.version != mv.version and other.stage != "Production" and left(other)
    ]


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
    thread(
        svc,
        mv,
        f"{escape(mv.name)} v{mv.version} was {outcome.verb.lower()}{who} and archived.",
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
            PENDING_KEY: "true",  # the sweep finishes it if this run dies
        }
    )


def finish_rollback(svc: Services, mv: ModelVersion) -> str:
    """Finish a recorded rollback to `mv`: Production, the log, the archive, the notices,
    the announcement.

    Each step is done once: the log entries by `logged`, the announcement by its nonce;
    the tags that describe a state the target left are dropped and both notices are
    redrawn with where each version is now, which is harmless to repeat.
    """
    at, old_version = mv.tag("rollback_at"), mv.tag("rollback_from")
    channel = mv.tag("rollback_channel") or model_channel(svc, mv.name)
    if mv.stage != "Production" and (
        logged(mv, "rolled_back", since=at) or _archived_by_rollback(svc, mv, old_version, at)
    ):
        # It ran (its record says so, or the archive of the version it replaced does), and a
        # later change replaced it before the channel was told: never move it back over the
        # newer version, never call it off; say what happened, once.
        return _announce_rollback(
            svc, mv, channel, f" A later version has replaced v{mv.version} since."
        )
    if mv.stage != "Production":
        current = svc.gateway.production(mv.name)
        if current is not None and current.version != old_version:
            return _abandon_rollback(svc, mv, current.version, channel)
        svc.gateway.move(mv.name, mv.version, "Production")
    when = format_stamp(_handover(svc, mv, old_version))  # as the record writes times
    _record_rolled_away(svc, mv, when)
    _record_rolled_back(svc, mv, when)
    return _announce_rollback(svc, mv, channel, during_freeze(svc, mv.name))


def _handover(svc: Services, mv: ModelVersion, old_version: str) -> float:
    """Return when Production passed from `old_version` to `mv`: when the rollback was asked,
    unless the old version became Production after that (a sweep finished its interrupted
    promotion first), when it could only be handed over as it did."""
    asked = time_of(mv, "rollback_at") or svc.clock()
    old = svc.gateway.get_version(mv.name, old_version) if old_version else None
    since = time_of(old, "production_since") if old is not None else None
    return max(asked, since or asked)


def _record_rolled_away(svc: Services, mv: ModelVersion, when: str) -> None:
    """Record, once, that the rollback to `mv` archived the version it replaced, and any
    other a change that died after its move left out of Production unrecorded."""
    at, by, old_version = mv.tag("rollback_at"), mv.tag("rollback_by"), mv.tag("rollback_from")
    old = svc.gateway.get_version(mv.name, old_version)
    if not logged(old, "archived", since=at):
        reason = mv.tag("rollback_reason")
        why = f": {reason}" if reason else ""
        extra = {"production_until": when, "archived_at": when, **people_tags(svc, old, by)}
        rolled = f"rolled back to v{mv.version}{why}"
        details = _rolled_back_to(mv.version)
        record(svc, old, "archived", actor=by, reason=rolled, extra=extra, details=details)
    # An earlier rollback this one overtook, say: it was replaced by now.
    for other in _left_unrecorded(svc, mv):
        if other != old_version:
            left = svc.gateway.get_version(mv.name, other)
            _archive_replaced(svc, left, by=mv, actor=by, at=when)


def _record_rolled_back(svc: Services, mv: ModelVersion, when: str) -> None:
    """Record, once, that `mv` is Production again by the rollback; drop what it left."""
    at, by = mv.tag("rollback_at"), mv.tag("rollback_by")
    if logged(mv, "rolled_back", since=at):  # a run died between: only the drop is left
        _drop_left_production(svc, svc.gateway.get_version(mv.name, mv.version))
        return
    extra = {"production_since": when, "rolled_back_by": by, **people_tags(svc, mv, by)}
    if mv.tag("decision") == "approved" and not mv.tag("announced"):
        # Its approval died before promoting it; the rollback made it Production and says
        # so: that finishes the approval too, which the sweep must not promote again later.
        extra["announced"] = when
    reason, previous = mv.tag("rollback_reason"), mv.tag("rollback_from")
    # Production again: it is no longer archived.
    record(
        svc,
        mv,
        "rolled_back",
        actor=by,
        reason=reason,
        previous=previous,
        extra=extra,
        drop=LEFT_PRODUCTION,
    )


def _archived_by_rollback(svc: Services, mv: ModelVersion, old_version: str, at: str) -> bool:
    """Say whether `old_version`'s log records this rollback to `mv` archiving it."""
    old = svc.gateway.get_version(mv.name, old_version)
    return logged(old, "archived", since=at, details=_rolled_back_to(mv.version))


def _rolled_back_to(target: str) -> dict[str, str]:
    """Return what the archive entry of a version a rollback to `target` replaced carries."""
    return {"replaced_by": target, "via": "rollback"}


def _announce_rollback(svc: Services, mv: ModelVersion, channel: str, tail: str = "") -> str:
    """Redraw both notices, announce the rollback recorded on `mv` once (with `tail`), and
    mark it done."""
    gw, old_version = svc.gateway, mv.tag("rollback_from")
    for version in (old_version, mv.version):
        redraw_notice(svc, gw.get_version(mv.name, version))
    mv = gw.get_version(mv.name, mv.version)
    text = rollback_announcement(
        mv.name, old_version, mv.version, mv.tag("rollback_by"), mv.tag("rollback_reason")
    )
    tell_once(svc, mv, "rollback_told", text + tail, channel=channel)
    done = {"rollback_done": mv.tag("rollback_at"), "rollback_state": "done"}
    gw.set_tags(mv.name, mv.version, prefixed(done))
    return "rolled_back"


def _drop_left_production(svc: Services, mv: ModelVersion) -> None:
    """Delete state tags a version in Production again must not carry (archived_at, ...)."""
    stale = [key for key in prefixed(dict.fromkeys(LEFT_PRODUCTION, "")) if key in mv.tags]
    if stale:
        svc.gateway.delete_tags(mv.name, mv.version, stale)


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
    why = f" ({escape(window.reason)})" if window.reason else ""
    return (
        f"\nThis rollback ran during a change freeze until {window.until_text()}{why}: "
        "rollback is never frozen."
    )
