"""The lifecycle of a candidate version: register, stage, notify, and the durable record."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from registry.approvers import ApproverDirectory
from registry.decisions import approvals_on, judge_approval, judge_rejection
from registry.events import TrainingEvent
from registry.gateway import ModelVersion, RegistryGateway, VersionNotFound
from registry.messages import (
    NoticeFacts,
    Outcome,
    decided_notice,
    format_time,
    mention,
    staging_notice,
)
from registry.policy import Canary, GateVerdict, evaluate, verdict_line
from registry.publish import LifecycleEvent, event_for
from registry.settings import Settings
from registry.slack import Notifier

log = logging.getLogger(__name__)

LOG_TAG = "registry_bot.log"
NOTICE_EVENT = "registry_bot_notice"
LOG_LIMIT = 25  # entries kept per version; MLflow caps a tag value at a few KB


@dataclass
class Services:
    """What the domain code needs: the registry, Slack, the settings and a clock."""

    gateway: RegistryGateway
    notifier: Notifier
    settings: Settings
    directory: ApproverDirectory
    clock: Any = time.time
    # Called with each LifecycleEvent after its registry write succeeded.
    emit: Callable[[LifecycleEvent], None] = lambda event: None


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
        tags = request_tags(event, event_id)
        mv = gw.register(event.model_name, event.run_id, event.artifact_path, event.model_uri, tags)
        log.info("registered", extra=_ctx(event_id, mv))
    elif event.metrics and not mv.tag("metrics"):
        gw.set_tags(mv.name, mv.version, {"registry_bot.metrics": json.dumps(event.metrics)})
    return stage_version(svc, mv.name, mv.version, event_id=event_id)


def stage_version(svc: Services, name: str, version: str, *, event_id: str) -> StageResult:
    """Move an existing version to Staging (if still undecided) and post its notice once."""
    mv = svc.gateway.get_version(name, version)
    if mv.stage in ("Production", "Archived"):
        log.info("already decided, no notice", extra=_ctx(event_id, mv))
        return StageResult(mv.version, "already_decided")
    if mv.stage != "Staging" and not mv.tag("gates"):
        report = gate_report(svc, mv)
        failing = [line for v, line in report if not v.passed]
        if failing:
            # A failing gate keeps the version out of Staging; the notice says why.
            record(svc, mv, "gate_failed", reason="; ".join(failing), extra={"gates": "failed"})
            mv = svc.gateway.get_version(name, version)
        elif report:
            svc.gateway.set_tags(name, version, _tags({"gates": "passed"}))
    if mv.stage != "Staging" and mv.tag("gates") != "failed":
        svc.gateway.move(name, version, "Staging")
        record(svc, mv, "staged", actor=mv.tag("requested_by"), extra={"staged_at": _now(svc)})
        mv = svc.gateway.get_version(name, version)
    outcome = "gate_failed" if mv.tag("gates") == "failed" else "noticed"
    if mv.tag("notice_ts"):
        return StageResult(mv.version, "already_noticed", mv.tag("notice_ts"))
    mv = _resolve_requester(svc, mv)
    ts = _post_notice_once(svc, mv)
    svc.gateway.set_tags(
        name,
        version,
        _tags({"notice_channel": svc.notifier.channel, "notice_ts": ts, "noticed_at": _now(svc)}),
    )
    log.info("notice posted", extra={**_ctx(event_id, mv), "notice_ts": ts})
    return StageResult(mv.version, outcome, ts)


def gate_report(svc: Services, mv: ModelVersion) -> list[tuple[GateVerdict, str]]:
    """Evaluate the model's gates for the version against the current Production."""
    gates = svc.settings.policy.for_model(mv.name).gates
    if not gates:
        return []
    metrics = _metrics_of(svc, mv)
    prod = svc.gateway.production(mv.name)
    prod_metrics = _metrics_of(svc, prod) if prod and prod.version != mv.version else None
    return [(v, verdict_line(v)) for v in evaluate(gates, metrics, prod_metrics)]


def approve(svc: Services, name: str, version: str, *, user: str, response_url: str = "") -> str:
    """Count an Approve click; at the last required approval promote the version."""
    mv = _current(svc, name, version, user=user, response_url=response_url)
    if mv is None:
        return "missing"
    if mv.tag("decision") == "approved" and not mv.tag("announced"):
        return promote(svc, mv)  # a crash left it half done: finish it
    clicker = svc.directory.clicker(user, with_email="@" in mv.tag("requested_by"))
    verdict = judge_approval(mv, clicker, required=svc.settings.required_approvals)
    if verdict.action in ("refused", "done"):
        svc.notifier.tell(
            channel=_channel(svc, mv), user=user, text=verdict.message, response_url=response_url
        )
        return verdict.action
    approvals = ",".join([*approvals_on(mv), user])
    canary = svc.settings.policy.for_model(name).canary
    if verdict.action == "promote" and canary:
        return start_canary(svc, mv, canary, approvals)
    if verdict.action == "promote":
        current = svc.gateway.production(name)
        replaces = current.version if current and current.version != version else ""
        decided = {
            "decision": "approved",
            "decided_by": approvals,
            "decided_at": _now(svc),
            "approvals": approvals,
            "replaces": replaces,
        }
        svc.gateway.set_tags(name, version, _tags(decided))
        return promote(svc, svc.gateway.get_version(name, version))
    record(svc, mv, "approval", actor=user, extra={"approvals": approvals})
    mv = svc.gateway.get_version(name, version)
    refresh_notice(svc, mv)
    count = f"{len(approvals_on(mv))} of {svc.settings.required_approvals}"
    svc.notifier.tell(
        channel=_channel(svc, mv),
        user=user,
        response_url=response_url,
        text=f"Your approval of {name} v{version} is counted: {count} approvals.",
    )
    return "counted"


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
            "canary_until": f"{until:.3f}",
            "canary_approved_by": approvals,
            "canary_require_report": "true" if canary.require_report else "false",
        },
    )
    mv = svc.gateway.get_version(mv.name, mv.version)
    refresh_notice(svc, mv)
    _thread(
        svc,
        mv,
        f"{mv.name} v{mv.version} approved; canary until {format_time(until)}"
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
    if mv.tag("canary_state") not in ("running", "passed"):
        log.info("canary report for a version not in a canary window", extra=_ctx(event_id, mv))
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
                "decided_at": _now(svc),
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
    if svc.clock() >= float(mv.tag("canary_until") or 0):
        return finish_canary(svc, mv)
    refresh_notice(svc, mv)
    return "canary_passed"


def finish_canary(svc: Services, mv: ModelVersion) -> str:
    """Promote a version whose canary window is over (and passed, when a report is needed)."""
    current = svc.gateway.production(mv.name)
    replaces = current.version if current and current.version != mv.version else ""
    approvals = mv.tag("canary_approved_by")
    svc.gateway.set_tags(
        mv.name,
        mv.version,
        _tags(
            {
                "decision": "approved",
                "decided_by": approvals,
                "decided_at": _now(svc),
                "replaces": replaces,
                "canary_state": "done",
            }
        ),
    )
    return promote(svc, svc.gateway.get_version(mv.name, mv.version))


def promote(svc: Services, mv: ModelVersion) -> str:
    """Finish an approval: Production, the old version archived, the record, the announcement.

    Every step checks whether it is already done, so a task that died half way
    and runs again completes the promotion without doing anything twice.
    """
    gw, at = svc.gateway, mv.tag("decided_at") or _now(svc)
    actor, previous = mv.tag("decided_by"), mv.tag("replaces")
    if mv.stage != "Production":
        gw.move(mv.name, mv.version, "Production")
    if not _logged(mv, "promoted"):
        record(svc, mv, "promoted", actor=actor, previous=previous, extra={"production_since": at})
    if previous:
        old = gw.get_version(mv.name, previous)
        if not _logged(old, "archived", since=at):
            record(
                svc,
                old,
                "archived",
                actor=actor,
                reason=f"replaced by v{mv.version}",
                extra={"production_until": at, "archived_at": at},
            )
    mv = gw.get_version(mv.name, mv.version)
    refresh_notice(svc, mv, Outcome("Approved", actor.split(","), float(at)))
    was = f" v{previous} moved to Archived." if previous else ""
    _thread(
        svc,
        mv,
        f"{mv.name} v{mv.version} is now Production, approved by "
        f"{', '.join(mention(u) for u in actor.split(','))}.{was}",
    )
    gw.set_tags(mv.name, mv.version, _tags({"announced": _now(svc)}))
    return "promoted"


def reject(
    svc: Services, name: str, version: str, *, user: str, reason: str, response_url: str = ""
) -> str:
    """Archive a Staging version with the rejecter's reason."""
    mv = _current(svc, name, version, user=user, response_url=response_url)
    if mv is None:
        return "missing"
    if not (mv.tag("decision") == "rejected" and not mv.tag("announced")):
        verdict = judge_rejection(mv, svc.directory.clicker(user))
        if verdict.action != "reject":
            svc.notifier.tell(
                channel=_channel(svc, mv),
                user=user,
                text=verdict.message,
                response_url=response_url,
            )
            return verdict.action
        decided = {
            "decision": "rejected",
            "decided_by": user,
            "decided_at": _now(svc),
            "reason": reason,
        }
        svc.gateway.set_tags(name, version, _tags(decided))
        mv = svc.gateway.get_version(name, version)
    return archive_decided(svc, mv, "rejected", "Rejected")


def archive_decided(svc: Services, mv: ModelVersion, change: str, verb: str) -> str:
    """Archive a version whose decision is recorded, log it and announce it (resumable)."""
    by, at, reason = mv.tag("decided_by"), mv.tag("decided_at"), mv.tag("reason")
    if mv.stage != "Archived":
        svc.gateway.move(mv.name, mv.version, "Archived")
    if not _logged(mv, change):
        record(svc, mv, change, actor=by, reason=reason, extra={"archived_at": at})
    mv = svc.gateway.get_version(mv.name, mv.version)
    refresh_notice(svc, mv, Outcome(verb, [u for u in by.split(",") if u], float(at), reason))
    who = f" by {mention(by)}" if by else ""
    _thread(svc, mv, f"{mv.name} v{mv.version} was {verb.lower()}{who} and archived.")
    svc.gateway.set_tags(mv.name, mv.version, _tags({"announced": _now(svc)}))
    return change


def refresh_notice(svc: Services, mv: ModelVersion, outcome: Outcome | None = None) -> None:
    """Redraw the version's notice: counts while pending, no buttons once decided."""
    channel, ts = mv.tag("notice_channel"), mv.tag("notice_ts")
    if not (channel and ts):
        return
    facts = notice_facts(svc, mv)
    text, blocks = decided_notice(facts, outcome) if outcome else staging_notice(facts)
    svc.notifier.update(channel, ts, text, blocks)


def _post_notice_once(svc: Services, mv: ModelVersion) -> str:
    """Post the notice, unless a run that died before recording its ts already posted it.

    The nonce is tagged before posting and travels in the message metadata, so a
    rerun finds a notice Slack received but this service never heard back about.
    """
    nonce = mv.tag("notice_nonce")
    if nonce:
        found = svc.notifier.find_posted(NOTICE_EVENT, nonce)
        if found:
            return found
    nonce = uuid.uuid4().hex
    svc.gateway.set_tags(mv.name, mv.version, {"registry_bot.notice_nonce": nonce})
    text, blocks = staging_notice(notice_facts(svc, mv))
    metadata = {
        "event_type": NOTICE_EVENT,
        "event_payload": {"model": mv.name, "version": mv.version, "nonce": nonce},
    }
    return svc.notifier.post(text, blocks, metadata=metadata)


def notice_facts(svc: Services, mv: ModelVersion) -> NoticeFacts:
    """Gather what the notice shows: run, links, metrics beside Production's, approvals."""
    gw, settings = svc.gateway, svc.settings
    run = gw.run_summary(mv.run_id)
    metrics = json.loads(mv.tag("metrics") or "{}") or (dict(run.metrics) if run else {})
    prod = gw.production(mv.name)
    if prod and prod.version == mv.version:
        # Promoted already: compare with the version it replaced, as the approvers did.
        prod = gw.get_version(mv.name, mv.tag("replaces")) if mv.tag("replaces") else None
    ui = settings.ui_url
    prod_metrics = _metrics_of(svc, prod) if prod else {}
    # The gates against the Production already read here, not looked up a second time.
    gates = settings.policy.for_model(mv.name).gates
    verdicts = evaluate(gates, metrics, prod_metrics if prod else None) if gates else []
    return NoticeFacts(
        model_name=mv.name,
        version=mv.version,
        run_id=mv.run_id,
        run_url=f"{ui}/#/experiments/{run.experiment_id}/runs/{mv.run_id}" if ui and run else "",
        version_url=f"{ui}/#/models/{mv.name}/versions/{mv.version}" if ui else "",
        requested_by=mv.tag("requested_by") or (run.user if run else ""),
        git_commit=run.git_commit if run else "",
        description=mv.tag("description"),
        metrics=metrics,
        production_version=prod.version if prod else "",
        production_metrics=prod_metrics,
        approvals=tuple(approvals_on(mv)),
        required_approvals=settings.required_approvals,
        nobody_may_approve=settings.nobody_may_approve,
        gate_lines=[verdict_line(v) for v in verdicts],
        gates_passed=mv.tag("gates") != "failed",
        status_line=canary_line(mv),
    )


def canary_line(mv: ModelVersion) -> str:
    """Describe a canary window in progress, or '' when there is none."""
    state, until = mv.tag("canary_state"), mv.tag("canary_until")
    if state not in ("running", "passed") or not until:
        return ""
    who = ", ".join(mention(u) for u in mv.tag("canary_approved_by").split(",") if u)
    needs = " and a passing canary report" if mv.tag("canary_require_report") == "true" else ""
    if state == "passed":
        needs = " (the canary report passed)"
    return (
        f":hourglass: Approved by {who}; canary in Staging until "
        f"{format_time(float(until))}{needs}, then Production."
    )


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


def record(
    svc: Services,
    mv: ModelVersion,
    change: str,
    *,
    actor: str = "",
    reason: str = "",
    previous: str = "",
    extra: Mapping[str, str] | None = None,
) -> None:
    """Append a lifecycle change to the version's durable log, with any extra tags."""
    entries = history_of(mv)
    entry = {"type": change, "at": _now(svc), "actor": actor, "reason": reason}
    if previous:
        entry["previous_version"] = previous
    entries = [*entries, entry][-LOG_LIMIT:]
    tags = _tags(extra or {})
    tags[LOG_TAG] = json.dumps(entries, separators=(",", ":"))
    svc.gateway.set_tags(mv.name, mv.version, tags)
    svc.emit(event_for(change, mv.name, mv.version, entry))


def history_of(mv: ModelVersion) -> list[dict]:
    """Return the version's recorded lifecycle changes, oldest first."""
    try:
        entries = json.loads(mv.tags.get(LOG_TAG, "[]"))
    except ValueError:
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _current(
    svc: Services, name: str, version: str, *, user: str, response_url: str
) -> ModelVersion | None:
    """Re-read the version; tell the clicker if it no longer exists."""
    try:
        return svc.gateway.get_version(name, version)
    except VersionNotFound:
        svc.notifier.tell(
            channel=svc.settings.slack_channel,
            user=user,
            response_url=response_url,
            text=f"{name} v{version} no longer exists in the registry; nothing changed.",
        )
        return None


def _resolve_requester(svc: Services, mv: ModelVersion) -> ModelVersion:
    """Find the Slack user behind an e-mail requester, so their own click is recognised."""
    email = mv.tag("requested_by")
    if "@" not in email or mv.tag("requested_by_user"):
        return mv
    user = svc.directory.user_for_email(email)
    if not user:
        return mv
    svc.gateway.set_tags(mv.name, mv.version, {"registry_bot.requested_by_user": user})
    return svc.gateway.get_version(mv.name, mv.version)


def _logged(mv: ModelVersion, change: str, since: str = "") -> bool:
    """Say whether the version's log already has `change` (at or after `since`)."""
    floor = float(since or 0)
    return any(e.get("type") == change and float(e.get("at", 0)) >= floor for e in history_of(mv))


def _thread(svc: Services, mv: ModelVersion, text: str) -> None:
    channel, ts = mv.tag("notice_channel"), mv.tag("notice_ts")
    if channel and ts:
        svc.notifier.reply(channel, ts, text)


def _channel(svc: Services, mv: ModelVersion) -> str:
    return mv.tag("notice_channel") or svc.settings.slack_channel


def _tags(values: Mapping[str, str]) -> dict[str, str]:
    return {f"registry_bot.{k}": v for k, v in values.items()}


def _metrics_of(svc: Services, mv: ModelVersion) -> dict[str, float]:
    """Return the version's metrics: those its event gave, else its run's."""
    tagged = json.loads(mv.tag("metrics") or "{}")
    if tagged:
        return tagged
    run = svc.gateway.run_summary(mv.run_id)
    return dict(run.metrics) if run else {}


def _now(svc: Services) -> str:
    return f"{svc.clock():.3f}"


def _ctx(event_id: str, mv: ModelVersion) -> dict[str, str]:
    return {"event_id": event_id, "model": mv.name, "version": mv.version}
