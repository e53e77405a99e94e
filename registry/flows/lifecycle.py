"""A candidate's way to a decision: register, stage behind the gates, notice, approve, reject."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from registry.flows.canary import finish_canary_start, start_canary
from registry.flows.freeze import approval_text, hold_if_frozen, slot_fills_tags
from registry.flows.notice import (
    find_notice,
    metrics_of,
    model_channel,
    notice_channel,
    post_notice_once,
    refresh_notice,
    thread,
)
from registry.flows.promotion import archive_decided, promote
from registry.flows.recording import people_tags, record, stamp
from registry.ports.services import Recipient, Services
from registry.rules.decisions import (
    TRY_AGAIN,
    Clicker,
    LookupFailed,
    approvals_on,
    judge_approval,
    judge_rejection,
    needs_email,
    settled_message,
)
from registry.rules.events import TrainingEvent
from registry.rules.governance import required_of, slots_of
from registry.rules.policy import GateVerdict, evaluate, verdict_line
from registry.rules.record import history_of, logged, prefixed
from registry.rules.text import escape
from registry.rules.versions import (
    PENDING_KEY,
    PENDING_TAG,
    STAGE_TAG,
    ModelVersion,
    VersionNotFound,
)

log = logging.getLogger(__name__)

REQUESTER_TAG = "registry_bot.requested_by"
# What an event records on a version that existed before it, where the record has nothing.
NOTED_TAGS = (REQUESTER_TAG, "registry_bot.description", "registry_bot.metrics")


@dataclass(frozen=True)
class StageResult:
    """What staging an event did."""

    version: str
    outcome: str  # "noticed", "gate_failed", "already_noticed", "already_decided"
    notice_ts: str = ""


def stage_training_event(svc: Services, event: TrainingEvent, *, event_id: str) -> StageResult:
    """Register the event's model version once, move it to Staging and post one notice."""
    gw = svc.gateway
    mv = gw.find_version(event.model_name, event.run_id, event.artifact_path, event.model_uri)
    if mv is None:
        # Where its notice will go is known now: one tag write fewer once it is posted.
        channel = {"registry_bot.notice_channel": model_channel(svc, event.model_name)}
        tags = {**request_tags(event, event_id), **channel, PENDING_TAG: "true"}  # free now
        mv = gw.register(event.model_name, event.run_id, event.artifact_path, event.model_uri, tags)
        log.info("registered", extra=_ctx(event_id, mv))
    else:
        mv = _note_request(svc, mv, event, event_id)
    return stage_version(svc, mv.name, mv.version, event_id=event_id, known=mv)


def _note_request(
    svc: Services, mv: ModelVersion, event: TrainingEvent, event_id: str
) -> ModelVersion:
    """Record what the event says of a version that existed before it (the pipeline's own
    register step, or MLflow's delivery first): above all who asked, so that they cannot
    approve it. What the record already holds stays; a decided version is left alone."""
    if mv.tag("decision"):
        return mv
    wanted = {k: v for k, v in request_tags(event, event_id).items() if k in NOTED_TAGS}
    new = {k: v for k, v in wanted.items() if not mv.tags.get(k)}
    if mv.tag("requested_by") and event.requested_by not in ("", mv.tag("requested_by")):
        log.warning("the version's requester stays as first recorded", extra=_ctx(event_id, mv))
    if not new:
        return mv
    svc.gateway.set_tags(mv.name, mv.version, new)
    mv = replace(mv, tags={**mv.tags, **new})
    if REQUESTER_TAG in new:
        refresh_notice(svc, mv)  # a notice MLflow's delivery posted first names them now
    return mv


def stage_version(
    svc: Services, name: str, version: str, *, event_id: str, known: ModelVersion | None = None
) -> StageResult:
    """Move an existing version to Staging (if still undecided) and post its notice once.

    `known` is the version as the caller has just read or registered it, else it is read.
    """
    mv = known or svc.gateway.get_version(name, version)
    if mv.stage in ("Production", "Archived"):
        log.info("already decided, no notice", extra=_ctx(event_id, mv))
        return StageResult(mv.version, "already_decided")
    mv = apply_gates(svc, mv)
    moved = mv.stage != "Staging" and mv.tag("gates") != "failed"
    if moved:
        svc.gateway.move(name, version, "Staging")
        mv = _moved(svc, mv)
    # Also when a run that moved it died before recording it (one it registered itself).
    if (moved or mv.tag("event_id")) and mv.stage == "Staging" and not logged(mv, "staged"):
        extra = {"staged_at": stamp(svc), **watched(mv)}
        mv = record(svc, mv, "staged", actor=mv.tag("requested_by"), extra=extra)
    if mv.tag("notice_ts"):
        if not mv.tag("evidence"):  # a run that died before queueing the evidence
            follow_notice(svc, mv)
        return StageResult(mv.version, "already_noticed", mv.tag("notice_ts"))
    return _post_notice(svc, mv, event_id)


def apply_gates(svc: Services, mv: ModelVersion) -> ModelVersion:
    """Evaluate the model's gates once for a version with no verdict recorded, whatever its
    stage: one a person moved to Staging by hand gets no pass around them. A failing gate
    keeps the version out of Staging (or, already there, from being approved); the notice
    says why."""
    if mv.tag("gates") or mv.tag("decision"):
        return mv
    report = gate_report(svc, mv)
    failing = [line for v, line in report if not v.passed]
    if failing:
        failed = {"gates": "failed"}
        return record(svc, mv, "gate_failed", reason="; ".join(failing), extra=failed)
    if report:
        passed = prefixed({"gates": "passed"})
        svc.gateway.set_tags(mv.name, mv.version, passed)
        return replace(mv, tags={**mv.tags, **passed})
    return mv


def _post_notice(svc: Services, mv: ModelVersion, event_id: str) -> StageResult:
    """Post the version's notice once, record it, and queue what follows it."""
    outcome = "gate_failed" if mv.tag("gates") == "failed" else "noticed"
    mv = _resolve_requester(svc, mv)
    ts = post_notice_once(svc, mv)
    # notice_ts last: it says "posted".
    tags = noticed_tags(svc, mv, ts)
    svc.gateway.set_tags(mv.name, mv.version, tags)
    log.info("notice posted", extra={**_ctx(event_id, mv), "notice_ts": ts})
    follow_notice(svc, replace(mv, tags={**mv.tags, **tags}))
    return StageResult(mv.version, outcome, ts)


def follow_notice(svc: Services, mv: ModelVersion) -> None:
    """Queue what follows a posted notice (its evidence, SPEC 15); the notice is out
    whatever becomes of it, and the next delivery of the event or the sweep asks again."""
    try:
        svc.after_notice(mv)
    except Exception as exc:
        log.warning("evidence not queued: %s", exc, extra=_ctx("", mv))


def noticed_tags(svc: Services, mv: ModelVersion, ts: str) -> dict[str, str]:
    """Return the tags that record the version's notice as posted at `ts`.

    A version staged by hand is watched by the sweep from now on.
    """
    noticed = {**watched(mv), "noticed_at": stamp(svc), "notice_ts": ts}
    channel = model_channel(svc, mv.name)
    if mv.tag("notice_channel") != channel:
        noticed = {"notice_channel": channel, **noticed}
    return prefixed(noticed)


def watched(mv: ModelVersion) -> dict[str, str]:
    """Return the tag (unprefixed) that puts the version on the sweep's watch, unless it is."""
    return {} if mv.tags.get(PENDING_TAG) == "true" else {PENDING_KEY: "true"}


def gate_report(svc: Services, mv: ModelVersion) -> list[tuple[GateVerdict, str]]:
    """Evaluate the model's gates for the version against the current Production."""
    gates = svc.settings.policy.for_model(mv.name).gates
    if not gates:
        return []
    metrics = metrics_of(svc, mv)
    prod = svc.gateway.production(mv.name)
    prod_metrics = metrics_of(svc, prod) if prod and prod.version != mv.version else None
    return [(v, verdict_line(v)) for v in evaluate(gates, metrics, prod_metrics)]


def approve(
    svc: Services, name: str, version: str, *, user: str, response_url: str = "", click: str = ""
) -> str:
    """Count an Approve click; at the last required approval promote the version.

    `click` names the click (its task's event id): a rerun of a click whose approval is
    recorded finishes what its first run left (the redrawn notice, the answer) instead of
    telling the approver they already approved.
    """
    mv = _current(svc, name, version, user=user, response_url=response_url)
    if mv is None:
        return "missing"
    if mv.tag("decision") == "approved" and not mv.tag("announced"):
        return _finish_for(svc, mv, user, response_url, promote)  # a crash left it half done
    to = Recipient(notice_channel(svc, mv), user, response_url)
    if click and counted_click(mv, click):
        return finish_counted(svc, mv, to)
    mv = _resolve_requester(svc, mv)  # again, if it could not be done at notice time
    # With the requester's Slack user known, their own click is recognised by ID alone.
    clicker = _clicker(svc, mv, user, to, with_email=needs_email(mv))
    if clicker is None:
        return "try_again"
    slots = slots_of(svc.settings, name)
    verdict = judge_approval(mv, clicker, required=required_of(svc.settings, name), slots=slots)
    if verdict.action in ("refused", "done"):
        svc.notifier.tell(to, verdict.message)
        return verdict.action
    return _count(svc, mv, clicker, promotes=verdict.action == "promote", to=to, click=click)


def _count(
    svc: Services, mv: ModelVersion, clicker: Clicker, *, promotes: bool, to: Recipient, click: str
) -> str:
    """Record the approval: at the last one, a canary or a freeze holds it, else it promotes."""
    approvals = ",".join([*approvals_on(mv), clicker.user])
    if slots_of(svc.settings, mv.name):  # who could fill which slot, as Slack said now
        svc.gateway.set_tags(mv.name, mv.version, slot_fills_tags(mv, clicker))
        mv = svc.gateway.get_version(mv.name, mv.version)
    canary = svc.settings.policy.for_model(mv.name).canary
    people = people_tags(svc, mv, clicker.user)
    if promotes and canary:
        start_canary(svc, mv, canary, approvals, click=click)
    elif promotes and not hold_if_frozen(
        svc, mv, approvals, actor=clicker.user, extra=people, click=click
    ):
        return _decide_approved(svc, mv, approvals, people)
    elif not promotes:
        extra = {"approvals": approvals, **people}
        record(svc, mv, "approval", actor=clicker.user, extra=extra, details=_click(click))
    return finish_counted(svc, svc.gateway.get_version(mv.name, mv.version), to)


def _decide_approved(
    svc: Services, mv: ModelVersion, approvals: str, people: dict[str, str]
) -> str:
    """Record the last approval as the decision, then promote (resumable from the record)."""
    current = svc.gateway.production(mv.name)
    decided = {
        "decision": "approved",
        "decided_by": approvals,
        "decided_at": stamp(svc),
        "approvals": approvals,
        "replaces": current.version if current and current.version != mv.version else "",
        **people,
    }
    svc.gateway.set_tags(mv.name, mv.version, prefixed(decided))
    return promote(svc, svc.gateway.get_version(mv.name, mv.version))


def counted_click(mv: ModelVersion, click: str) -> bool:
    """Say whether the version's record holds the approval (or canary start, or freeze
    hold) this click made: its task is running again."""
    return any(entry.get("click") == click for entry in history_of(mv))


def finish_counted(svc: Services, mv: ModelVersion, to: Recipient) -> str:
    """Redraw the notice for a recorded approval and say what it did, once each: the steps
    a run that died (or met a Slack failure) after recording the approval left undone."""
    if mv.tag("canary_state") in ("running", "passed"):
        finish_canary_start(svc, mv)
        return "canary_started"
    refresh_notice(svc, mv)
    waiting = mv.tag("freeze_state") == "waiting"
    if waiting:
        thread(svc, mv, approval_text(svc, mv), once="freeze_told")
    svc.notifier.tell(to, approval_text(svc, mv))
    return "frozen" if waiting else "counted"


def _click(click: str) -> dict[str, str]:
    """Return the log entry's details naming the click that made it, if any."""
    return {"click": click} if click else {}


def reject(
    svc: Services, name: str, version: str, *, user: str, reason: str, response_url: str = ""
) -> str:
    """Archive a Staging version with the rejecter's reason."""
    mv = _current(svc, name, version, user=user, response_url=response_url)
    if mv is None:
        return "missing"
    verb = "Rejected"
    if mv.tag("decision") == "rejected" and not mv.tag("announced") and _by_other(mv, user):
        # Another's rejection a crash left half done: finish it, and answer this click.
        return _finish_for(
            svc, mv, user, response_url, lambda s, m: archive_decided(s, m, "rejected", verb)
        )
    if not (mv.tag("decision") == "rejected" and not mv.tag("announced")):
        to = Recipient(notice_channel(svc, mv), user, response_url)
        mv = _resolve_requester(svc, mv)  # so the requester's withdraw is recognised by ID
        # An e-mail requester not yet matched to a Slack user is recognised by e-mail;
        # a failed lookup is refused with "try again" (fail closed), withdraw or not.
        clicker = _clicker(svc, mv, user, to, with_email=needs_email(mv))
        if clicker is None:
            return "try_again"
        verdict = judge_rejection(mv, clicker)
        if verdict.action not in ("reject", "withdraw"):
            svc.notifier.tell(to, verdict.message)
            return verdict.action
        decided = {
            "decision": "rejected",
            "decided_by": user,
            "decided_at": stamp(svc),
            "reason": reason,
            **people_tags(svc, mv, user),
        }
        if verdict.action == "withdraw" and not mv.tag("requested_by_user"):
            decided["requested_by_user"] = user  # the Slack user behind an e-mail requester
        svc.gateway.set_tags(name, version, prefixed(decided))
        mv = svc.gateway.get_version(name, version)
        verb = "Withdrawn" if verdict.action == "withdraw" else verb
    return archive_decided(svc, mv, "rejected", verb)


def _by_other(mv: ModelVersion, user: str) -> bool:
    """Say whether the version's recorded decision was someone else's, not `user`'s."""
    return user not in mv.tag("decided_by").split(",")


def _finish_for(
    svc: Services,
    mv: ModelVersion,
    user: str,
    response_url: str,
    finish: Callable[[Services, ModelVersion], str],
) -> str:
    """Finish a decision a crash left half done; answer `user` if it was not theirs.

    The decider's own redelivered click is answered by the thread reply; another person's
    click, queued behind the decision, would otherwise get no answer at all.
    """
    action = finish(svc, mv)
    if _by_other(mv, user):
        fresh = svc.gateway.get_version(mv.name, mv.version)
        svc.notifier.tell(
            Recipient(notice_channel(svc, fresh), user, response_url), settled_message(fresh)
        )
    return action


def request_tags(event: TrainingEvent, event_id: str) -> dict[str, str]:
    """Return the tags that remember who asked for this version, and with which event."""
    tags = {
        "registry_bot.event_id": event_id,
        "registry_bot.requested_by": event.requested_by,
        "registry_bot.description": event.description[:4000],
    }
    if event.metrics:
        tags["registry_bot.metrics"] = json.dumps(event.metrics)
    return {k: v for k, v in tags.items() if v}


def _current(
    svc: Services, name: str, version: str, *, user: str, response_url: str
) -> ModelVersion | None:
    """Re-read the version, with its notice; tell the clicker if it no longer exists."""
    try:
        mv = svc.gateway.get_version(name, version)
    except VersionNotFound:
        svc.notifier.tell(
            Recipient(svc.settings.slack_channel, user, response_url),
            f"{escape(name)} v{version} no longer exists in the registry; nothing changed.",
        )
        return None
    return _with_notice(svc, mv)


def _with_notice(svc: Services, mv: ModelVersion) -> ModelVersion:
    """Record the notice a run posted and died before recording, when a click comes first.

    The click came from that notice, while the run's task waits to be delivered again
    (and would then find the version decided). Without its ts no decision would redraw
    the notice or reply in its thread. Only a version with a nonce and no ts pays.
    """
    if mv.tag("notice_ts"):
        return mv
    ts = find_notice(svc, mv)
    if not ts:
        return mv
    tags = noticed_tags(svc, mv, ts)
    svc.gateway.set_tags(mv.name, mv.version, tags)
    log.info("notice found by a click", extra={**_ctx("", mv), "notice_ts": ts})
    return replace(mv, tags={**mv.tags, **tags})


def _clicker(
    svc: Services, mv: ModelVersion, user: str, to: Recipient, *, with_email: bool = False
) -> Clicker | None:
    """Ask Slack who clicked, as the model's policy sees them; when it cannot say, tell the
    clicker to try again (fail closed)."""
    try:
        return svc.directory.clicker(user, with_email=with_email, model=mv.name)
    except LookupFailed as exc:
        log.warning("click refused, lookup failed: %s", exc, extra={**_ctx("", mv), "user": user})
        svc.notifier.tell(to, TRY_AGAIN)
        return None


def _resolve_requester(svc: Services, mv: ModelVersion) -> ModelVersion:
    """Find the Slack user behind an e-mail requester, so their own click is recognised.

    Best effort: when Slack cannot answer, the click compares e-mails instead (and is
    refused if that lookup fails too).
    """
    email = mv.tag("requested_by")
    if "@" not in email or mv.tag("requested_by_user"):
        return mv
    try:
        user = svc.directory.user_for_email(email)
    except LookupFailed as exc:
        log.warning("requester not resolved: %s", exc, extra=_ctx("", mv))
        return mv
    if not user:
        return mv
    resolved = {"registry_bot.requested_by_user": user}
    svc.gateway.set_tags(mv.name, mv.version, resolved)
    return replace(mv, tags={**mv.tags, **resolved})


def _moved(svc: Services, mv: ModelVersion) -> ModelVersion:
    """Return the version as `move(..., "Staging")` left it, without reading it back."""
    if svc.gateway.mode == "stages":
        return replace(mv, stage="Staging")
    return replace(mv, stage="Staging", tags={**mv.tags, STAGE_TAG: "Staging"})


def _ctx(event_id: str, mv: ModelVersion) -> dict[str, str]:
    return {"event_id": event_id, "model": mv.name, "version": mv.version}
