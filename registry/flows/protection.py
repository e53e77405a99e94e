"""Protected Production (SPEC 11): find out-of-band changes, alert once, revert or accept.

Production is what registry-bot last made it (registry.rules.governance.sanction). When the
registry says otherwise, the model's channel gets one alert per change with Revert and
Accept, or, with `protect_production: revert`, the approved version is restored at once.
A revert records its intent on the restored version before it moves anything, so a
rerun or the sweep finishes it.
"""

from __future__ import annotations

import json
import logging
import uuid

from registry.flows.notice import model_channel, redraw_notice, refresh_notice
from registry.flows.recording import authorised, people_tags, record, stamp
from registry.ports.services import Recipient, Services
from registry.rules.governance import (
    Drift,
    adoptable,
    alerted_keys,
    change_in_flight,
    drift_of,
    production_now,
)
from registry.rules.record import LEFT_PRODUCTION, TAG_PREFIX, logged, parse_time, prefixed
from registry.rules.reports import Outcome, outcome_of
from registry.rules.text import escape, mention
from registry.rules.versions import PENDING_KEY, ModelVersion
from registry.views.alerts import OutOfBandFacts, out_of_band_alert, resolved_alert

log = logging.getLogger(__name__)

ALERT_EVENT = "registry_bot_out_of_band"
KEYS_KEPT = 20  # alerted changes remembered per version
NO_APPROVAL = "moved outside registry-bot; no approval was recorded"
AUTO_REASON = "protect_production: revert"
REGISTRY_BOT = "registry-bot"  # the actor of what protection does by itself
CLICKED = "Revert on the out-of-band alert"
STALE = (
    "{model}'s Production changed since this alert (now {now}); nothing was done. "
    "A new alert follows if it is out of band."
)
NOTHING_TO_RESTORE = (
    "{model} has no version registry-bot made Production, so there is nothing to revert to; "
    "nothing changed."
)
REVERTED = "{who} reverted {model}: v{target} is Production again{undone} ({why})."
# On the registered model: when protection first looked at it, and in which mode.
PROTECTED_SINCE = TAG_PREFIX + "protected_since"
ADOPTED = (
    "adopted as the sanctioned Production when protect_production: {mode} (from {policy}) "
    "first looked at this model; no approval was recorded before"
)
ACCEPTED = "{who} accepted the change: {now} is Production for {model}. Reason: {reason}"


def check_production(svc: Services, name: str) -> tuple[str, str]:
    """Compare the model's Production with what registry-bot made it; act once per change.

    Return (what was done, the version it concerns), or ('', '').
    """
    mode = svc.settings.policy.protection(name)
    if mode == "off":
        return "", ""
    versions = svc.gateway.versions(name)
    if not versions:
        return "", ""
    intent = _intent(versions)
    if intent is not None:
        return "reverted", _finish_revert(svc, name, intent)
    if change_in_flight(versions):
        return "", ""  # registry-bot itself is moving Production: the sweep finishes it first
    if not svc.gateway.model_tags(name).get(PROTECTED_SINCE):
        adopted = _start_protecting(svc, name, mode, versions)
        if adopted:
            return "adopted", adopted
    drift = _drift(svc, name, versions)
    if drift is None or drift.key in alerted_keys(versions):
        return "", ""
    if mode == "revert" and drift.sanctioned:
        log.info("reverting an out-of-band change", extra={"model": name, "key": drift.key})
        _begin_revert(svc, name, drift, actor=REGISTRY_BOT, reason=AUTO_REASON)
        return "reverted", _finish_revert(svc, name, _intent(svc.gateway.versions(name)) or {})
    return "out_of_band", _alert(svc, name, drift, versions)


def _start_protecting(svc: Services, name: str, mode: str, versions: list[ModelVersion]) -> str:
    """Mark the model as protected from now on; adopt a Production registry-bot never made.

    Switching protection on for a registry that existed before must not alert on every
    model (an alert storm): their Production is recorded once as accepted, by registry-bot,
    at adoption. From then on, what differs from the record is out of band. A model that
    registry-bot already governed is not adopted: its drift is alerted as usual.
    Return the version adopted, or ''.
    """
    version = adoptable(versions, svc.settings.registry_mode, svc.settings.production_alias)
    if version:
        policy = svc.settings.policy_file or "the policy"
        reason = ADOPTED.format(mode=mode, policy=policy)
        record(svc, _by_version(versions)[version], "accepted", actor=REGISTRY_BOT, reason=reason)
        log.info(
            "adopted Production as protection began", extra={"model": name, "version": version}
        )
    # The mark last: a rerun after a death in between finds the adoption in the record.
    svc.gateway.set_model_tag(name, PROTECTED_SINCE, f"{stamp(svc)} ({mode})")
    return version


def revert(svc: Services, name: str, *, key: str, user: str, response_url: str = "") -> str:
    """Revert the alerted change `key` at an approver's click, if it still stands."""
    versions = svc.gateway.versions(name)
    intent = _intent(versions)
    if intent is not None:
        _finish_revert(svc, name, intent)
        return "reverted"
    to = Recipient(model_channel(svc, name), user, response_url)
    if not authorised(svc, user=user, verb="revert", model=name, to=to):
        return "refused"
    drift = _drift(svc, name, versions)
    if drift is None or drift.key != key:
        svc.notifier.tell(to, _stale(svc, name, versions))
        return "stale"
    if not drift.sanctioned:
        svc.notifier.tell(to, NOTHING_TO_RESTORE.format(model=escape(name)))
        return "refused"
    _begin_revert(svc, name, drift, actor=user, reason=CLICKED)
    _finish_revert(svc, name, _intent(svc.gateway.versions(name)) or {})
    return "reverted"


def accept(
    svc: Services, name: str, *, key: str, user: str, reason: str, response_url: str = ""
) -> str:
    """Record the alerted change `key` as approved by `user`, if it still stands."""
    to = Recipient(model_channel(svc, name), user, response_url)
    if not authorised(svc, user=user, verb="accept", model=name, to=to):
        return "refused"
    versions = svc.gateway.versions(name)
    drift = _drift(svc, name, versions)
    if drift is None or drift.key != key:
        svc.notifier.tell(to, _stale(svc, name, versions))
        return "stale"
    at = stamp(svc)
    if drift.current:
        _adopt(svc, name, drift, user=user, reason=reason, at=at)
    else:
        _accept_removal(svc, name, drift, user=user, reason=reason)
    now = ", ".join(f"v{v}" for v in drift.current) or "no version"
    line = ACCEPTED.format(who=mention(user), now=now, model=escape(name), reason=escape(reason))
    _resolve_alert(svc, name, drift, line)
    return "accepted"


# --- alert ---


def _alert(svc: Services, name: str, drift: Drift, versions: list[ModelVersion]) -> str:
    """Post one alert for the change, found again by its nonce if a rerun posted it."""
    subject = _by_version(versions)[drift.subject]
    channel = model_channel(svc, name)
    facts = OutOfBandFacts(name, drift.key, drift.current, drift.sanctioned)
    pending = _json(subject.tag("oob_pending"))
    ts = ""
    if pending.get("key") == drift.key:
        ts = svc.notifier.find_posted(ALERT_EVENT, str(pending.get("nonce")), channel=channel)
    if not ts:
        nonce = uuid.uuid4().hex
        marker = json.dumps({"key": drift.key, "nonce": nonce})
        svc.gateway.set_tags(name, subject.version, {TAG_PREFIX + "oob_pending": marker})
        text, blocks = out_of_band_alert(facts)
        metadata = {"event_type": ALERT_EVENT, "event_payload": {"model": name, "nonce": nonce}}
        ts = svc.notifier.post(text, blocks, channel=channel, metadata=metadata)
    subject = svc.gateway.get_version(name, subject.version)
    alert = json.dumps({"key": drift.key, "channel": channel, "ts": ts})
    record(
        svc,
        subject,
        "out_of_band",
        reason=NO_APPROVAL,
        previous=drift.sanctioned,
        extra={"oob_keys": _with_key(subject, drift.key), "oob_alert": alert},
    )
    log.info("out-of-band change alerted", extra={"model": name, "key": drift.key})
    return subject.version


def _resolve_alert(svc: Services, name: str, drift: Drift, line: str) -> None:
    """Take the buttons off the change's alert and say what was done there."""
    facts = OutOfBandFacts(name, drift.key, drift.current, drift.sanctioned)
    _close_alert(svc, name, drift.key, line, resolved_alert(facts, line)[1])


def _close_alert(svc: Services, name: str, key: str, line: str, blocks: list[dict]) -> None:
    """Replace the change's alert and reply under it; without one, post to the channel."""
    for mv in svc.gateway.versions(name):
        alert = _json(mv.tag("oob_alert"))
        if alert.get("key") == key and alert.get("ts"):
            channel, ts = str(alert["channel"]), str(alert["ts"])
            svc.notifier.update(channel, ts, line, blocks)
            svc.notifier.reply(channel, ts, line)
            return
    svc.notifier.post(line, [], channel=model_channel(svc, name))


# --- revert: intent first, then the moves, each step checked so a rerun finishes it ---


def _begin_revert(svc: Services, name: str, drift: Drift, *, actor: str, reason: str) -> None:
    intent = {
        "key": drift.key,
        "target": drift.sanctioned,
        "current": list(drift.current),
        "actor": actor,
        "reason": reason,
        "at": stamp(svc),
    }
    target = svc.gateway.get_version(name, drift.sanctioned)
    extra = {
        "revert_intent": json.dumps(intent),
        "oob_keys": _with_key(target, drift.key),
        PENDING_KEY: "true",  # the sweep finishes it if this run dies
    }
    svc.gateway.set_tags(name, drift.sanctioned, prefixed(extra))


def _finish_revert(svc: Services, name: str, intent: dict) -> str:
    """Restore the target, archive what replaced it, record and announce; each step once."""
    target, at = str(intent.get("target", "")), str(intent.get("at", ""))
    if not target:
        return ""
    actor, reason = str(intent.get("actor", "")), str(intent.get("reason", ""))
    gw = svc.gateway
    undone = [str(v) for v in intent.get("current", []) if str(v) != target]
    if gw.get_version(name, target).stage != "Production" or _serving_others(svc, name, target):
        gw.move(name, target, "Production")
    for version in undone:
        _archive(svc, name, version, actor=actor, why=f"reverted to v{target}", at=at)
    mv = gw.get_version(name, target)
    if not logged(mv, "reverted", since=at):
        extra = {"production_since": stamp(svc), **people_tags(svc, mv, actor)}
        previous = ",".join(undone)
        record(
            svc,
            mv,
            "reverted",
            actor=actor,
            reason=reason,
            previous=previous,
            extra=extra,
            drop=LEFT_PRODUCTION,  # Production again: no longer archived
        )
    _redraw_decided(svc, gw.get_version(name, target))  # its notice says it is back
    archived = f"; {', '.join(f'v{v}' for v in undone)} archived" if undone else ""
    line = REVERTED.format(
        who=REGISTRY_BOT if actor == REGISTRY_BOT else mention(actor),
        model=escape(name),
        target=target,
        undone=archived,
        why=f"{AUTO_REASON}: the change was {NO_APPROVAL}"
        if actor == REGISTRY_BOT
        else escape(reason),
    )
    _close_alert(svc, name, str(intent.get("key", "")), line, _line_blocks(line))
    gw.set_tags(name, target, prefixed({"revert_intent": ""}))
    return target


def _line_blocks(line: str) -> list[dict]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": f":rotating_light: {line}"}}]


def _archive(svc: Services, name: str, version: str, *, actor: str, why: str, at: str) -> None:
    mv = svc.gateway.get_version(name, version)
    if mv.stage != "Archived":
        svc.gateway.move(name, version, "Archived")
        mv = svc.gateway.get_version(name, version)
    if not logged(mv, "archived", since=at):
        record(
            svc,
            mv,
            "archived",
            actor=actor,
            reason=f"{why}: {NO_APPROVAL}",
            extra={"archived_at": stamp(svc)},
            details={"via": "revert"},  # pulled: a rollback plan never restores it unsaid
        )
        mv = svc.gateway.get_version(name, version)
        refresh_notice(svc, mv, Outcome("Archived", [actor], float(svc.clock()), why))


# --- accept ---


def _adopt(svc: Services, name: str, drift: Drift, *, user: str, reason: str, at: str) -> None:
    """Make the changed-to version the one Production, approved by `user`."""
    gw, chosen = svc.gateway, drift.subject
    if _serving_others(svc, name, chosen) or gw.get_version(name, chosen).stage != "Production":
        gw.move(name, chosen, "Production")  # one Production, and the stage tag in aliases mode
    mv = gw.get_version(name, chosen)
    decided = {
        "production_since": at,
        "decision": "approved",
        "decided_by": user,
        "decided_at": at,
        "reason": reason,
        "announced": at,
        **people_tags(svc, mv, user),
    }
    record(
        svc,
        mv,
        "accepted",
        actor=user,
        reason=reason,
        previous=drift.sanctioned,
        extra=decided,
        drop=LEFT_PRODUCTION,  # Production now: not archived, whatever it was before
    )
    accepted = Outcome("Accepted", [user], parse_time(at) or svc.clock(), reason)
    refresh_notice(svc, gw.get_version(name, chosen), accepted)
    if drift.sanctioned and drift.sanctioned not in drift.current:
        old = gw.get_version(name, drift.sanctioned)
        if old.stage == "Production":
            gw.move(name, old.version, "Archived")
            old = gw.get_version(name, old.version)
        extra = {"production_until": at, "archived_at": at}
        why = f"replaced by v{chosen} (out-of-band change accepted)"
        details = {"replaced_by": chosen}
        record(svc, old, "archived", actor=user, reason=why, extra=extra, details=details)
        _redraw_decided(svc, gw.get_version(name, old.version))


def _accept_removal(svc: Services, name: str, drift: Drift, *, user: str, reason: str) -> None:
    """Accept that the model has no Production: the old version is archived for good."""
    old = svc.gateway.get_version(name, drift.sanctioned)
    record(svc, old, "accepted", actor=user, reason=reason)
    old = svc.gateway.get_version(name, old.version)
    if old.stage == "Production":  # aliases mode: the alias is gone, the stage tag is not
        svc.gateway.move(name, old.version, "Archived")
        old = svc.gateway.get_version(name, old.version)
    at = stamp(svc)
    extra = {"production_until": at, "archived_at": at}
    record(
        svc,
        old,
        "archived",
        actor=user,
        reason=f"Production removal accepted: {reason}",
        extra=extra,
    )


# --- helpers ---


def _redraw_decided(svc: Services, mv: ModelVersion) -> None:
    """Redraw a decided version's notice with where it is now (one never decided keeps its)."""
    if outcome_of(mv) is not None:
        redraw_notice(svc, mv)


def _drift(svc: Services, name: str, versions: list[ModelVersion]) -> Drift | None:
    mode, alias = svc.settings.registry_mode, svc.settings.production_alias
    return drift_of(name, versions, mode, alias)


def _serving_others(svc: Services, name: str, version: str) -> bool:
    """Say whether Production is served by anything but `version` (stage or alias)."""
    serving = production_now(
        svc.gateway.versions(name), svc.settings.registry_mode, svc.settings.production_alias
    )
    return serving != (version,)


def _intent(versions: list[ModelVersion]) -> dict | None:
    for mv in versions:
        intent = _json(mv.tag("revert_intent"))
        if intent.get("target"):
            return intent
    return None


def _stale(svc: Services, name: str, versions: list[ModelVersion]) -> str:
    serving = production_now(versions, svc.settings.registry_mode, svc.settings.production_alias)
    now = ", ".join(f"v{v}" for v in serving) or "no version"
    return STALE.format(model=escape(name), now=now)


def _with_key(mv: ModelVersion, key: str) -> str:
    keys = [k for k in _json_list(mv.tag("oob_keys")) if k != key]
    return json.dumps([*keys, key][-KEYS_KEPT:])


def _by_version(versions: list[ModelVersion]) -> dict[str, ModelVersion]:
    return {mv.version: mv for mv in versions}


def _json(text: str) -> dict:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _json_list(text: str) -> list[str]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
