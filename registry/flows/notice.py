"""What Slack shows of a version: the Staging notice (posting it once, redrawing it, its
thread) and each user's App Home tab."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from urllib.parse import quote

from registry.ports.services import Services
from registry.rules.decisions import ASKED_AT, LookupFailed, approvals_on, asked_in_mlflow
from registry.rules.governance import (
    channel_of,
    fill_slots,
    nobody_may_approve,
    required_of,
    slot_fills_on,
    slot_lines,
    slots_of,
)
from registry.rules.policy import Gate, GateVerdict, better_direction, evaluate, verdict_note
from registry.rules.record import time_of
from registry.rules.reports import Outcome, outcome_of, standing
from registry.rules.text import escape, format_time, mentions
from registry.rules.versions import ModelVersion, RunSummary
from registry.views.home import ModelRule, home_view
from registry.views.notice import MetricGate, NoticeFacts, decided_notice, staging_notice

log = logging.getLogger(__name__)

# The Slack metadata event types that carry a notice's nonce, and a told change's.
NOTICE_EVENT = "registry_bot_notice"
TOLD_EVENT = "registry_bot_told"
# "Requested by" of a move asked for in MLflow by someone the server did not sign in.
UNKNOWN_ASKER = "unknown: asked in MLflow, which did not sign them in"


def post_notice_once(svc: Services, mv: ModelVersion) -> str:
    """Post the notice, unless a run that died before recording its ts already posted it.

    The nonce is tagged before posting and travels in the message metadata, so a
    rerun finds a notice Slack received but this service never heard back about.
    """
    found = find_notice(svc, mv)
    if found:
        return found
    channel, nonce = model_channel(svc, mv.name), uuid.uuid4().hex
    svc.gateway.set_tags(mv.name, mv.version, {"registry_bot.notice_nonce": nonce})
    text, blocks = staging_notice(notice_facts(svc, mv))
    metadata = {
        "event_type": NOTICE_EVENT,
        "event_payload": {"model": mv.name, "version": mv.version, "nonce": nonce},
    }
    return svc.notifier.post(text, blocks, channel=channel, metadata=metadata)


def find_notice(svc: Services, mv: ModelVersion) -> str:
    """Return the ts of the version's notice if a run posted it (its nonce is tagged), else ""."""
    nonce = mv.tag("notice_nonce")
    if not nonce:
        return ""
    return svc.notifier.find_posted(NOTICE_EVENT, nonce, channel=model_channel(svc, mv.name))


def refresh_notice(svc: Services, mv: ModelVersion, outcome: Outcome | None = None) -> None:
    """Redraw the version's notice: counts while pending, no buttons once decided."""
    channel, ts = mv.tag("notice_channel"), mv.tag("notice_ts")
    if not (channel and ts):
        return
    facts = notice_facts(svc, mv)
    text, blocks = decided_notice(facts, outcome) if outcome else staging_notice(facts)
    svc.notifier.update(channel, ts, text, blocks)


def redraw_notice(svc: Services, mv: ModelVersion) -> None:
    """Redraw the version's notice from its record, so it says where the version is now."""
    refresh_notice(svc, mv, outcome_of(mv))


def thread(svc: Services, mv: ModelVersion, text: str, *, once: str = "") -> None:
    """Reply in the notice's thread, if the version has a notice; with `once`, only once."""
    channel, ts = mv.tag("notice_channel"), mv.tag("notice_ts")
    if not (channel and ts):
        return
    if once:
        tell_once(svc, mv, once, text, channel=channel, thread_ts=ts)
    else:
        svc.notifier.reply(channel, ts, text)


def tell_once(
    svc: Services, mv: ModelVersion, key: str, text: str, *, channel: str, thread_ts: str = ""
) -> None:
    """Post `text` to `channel` (or the thread `thread_ts`) once, even across a crash.

    As for the notice, a nonce is tagged (`registry_bot.<key>_nonce`) before posting and
    travels in the message metadata, so a rerun finds a post it never heard back about;
    only a rerun pays for that lookup.
    """
    tag = f"{key}_nonce"
    nonce = mv.tag(tag)
    if nonce and svc.notifier.find_posted(TOLD_EVENT, nonce, channel=channel, thread_ts=thread_ts):
        return
    nonce = uuid.uuid4().hex
    svc.gateway.set_tags(mv.name, mv.version, {f"registry_bot.{tag}": nonce})
    metadata = {
        "event_type": TOLD_EVENT,
        "event_payload": {"model": mv.name, "version": mv.version, "nonce": nonce},
    }
    if thread_ts:
        svc.notifier.reply(channel, thread_ts, text, metadata=metadata)
    else:
        svc.notifier.post(text, [], channel=channel, metadata=metadata)


def notice_channel(svc: Services, mv: ModelVersion) -> str:
    """Return the channel of the version's notice, or its model's channel."""
    return mv.tag("notice_channel") or model_channel(svc, mv.name)


def model_channel(svc: Services, model: str) -> str:
    """Return where the model's notices, plans, alerts and announcements go."""
    return channel_of(svc.settings, model, svc.notifier.channel)


def notice_facts(svc: Services, mv: ModelVersion) -> NoticeFacts:
    """Gather what the notice shows: run, links, metrics beside Production's, approvals."""
    gw, settings = svc.gateway, svc.settings
    run = gw.run_summary(mv.run_id)
    metrics = json.loads(mv.tag("metrics") or "{}") or (dict(run.metrics) if run else {})
    prod = gw.production(mv.name)
    if mv.tag("decision") == "approved" or (prod and prod.version == mv.version):
        # Approved: compare with the version it replaced, as the approvers did.
        prod = gw.get_version(mv.name, mv.tag("replaces")) if mv.tag("replaces") else None
    ui = settings.ui_url
    prod_metrics = metrics_of(svc, prod) if prod else {}
    # The gates against the Production already read here, not looked up a second time.
    gates = settings.policy.for_model(mv.name).gates
    verdicts = evaluate(gates, metrics, prod_metrics if prod else None) if gates else []
    return NoticeFacts(
        model_name=mv.name,
        version=mv.version,
        run_id=mv.run_id,
        run_url=f"{ui}/#/experiments/{run.experiment_id}/runs/{mv.run_id}" if ui and run else "",
        version_url=f"{ui}/#/models/{quote(mv.name, safe='')}/versions/{mv.version}" if ui else "",
        requested_by=requested_by_of(mv, run),
        requester=mv.tag("requested_by_user") or mv.tag("requested_by"),
        git_commit=run.git_commit if run else "",
        description=mv.tag("description"),
        metrics=metrics,
        production_version=prod.version if prod else "",
        production_metrics=prod_metrics,
        approvals=tuple(approvals_on(mv)),
        required_approvals=required_of(settings, mv.name),
        nobody_may_approve=nobody_may_approve(settings, mv.name),
        gates=metric_gates(gates, verdicts),
        gates_passed=mv.tag("gates") != "failed",
        status_line=canary_line(mv) or frozen_line(mv),
        slot_lines=_slot_lines(svc, mv),
        standing=standing(mv),
        production_alias=settings.production_alias if ui else "",
        stages_mode=settings.registry_mode == "stages",
    )


def requested_by_of(mv: ModelVersion, run: RunSummary | None) -> str:
    """Say who the notice names as requesting the version: its requester, else its run's
    user; never for a move asked for in MLflow (SPEC 14), whose askers are not requesters
    (its description says who asked) and whose run's user anyone can have set."""
    if mv.tag("requested_by"):
        return mv.tag("requested_by")
    if mv.tag(ASKED_AT):
        return "" if asked_in_mlflow(mv) else UNKNOWN_ASKER
    return run.user if run else ""


def _slot_lines(svc: Services, mv: ModelVersion) -> list[str]:
    slots = slots_of(svc.settings, mv.name)
    if not slots:
        return []
    return slot_lines(slots, fill_slots(slots, slot_fills_on(mv), approvals_on(mv)))


def frozen_line(mv: ModelVersion) -> str:
    """Describe an approved version waiting for a change freeze to end, or ''."""
    if mv.tag("freeze_state") != "waiting":
        return ""
    reason = mv.tag("freeze_reason")
    why = f" ({escape(reason)})" if reason else ""
    return (
        f":snowflake: Approved by {mentions(mv.tag('freeze_approved_by'))}; frozen until "
        f"{escape(mv.tag('freeze_until_text'))}{why}, then Production."
    )


def metric_gates(gates: Sequence[Gate], verdicts: Sequence[GateVerdict]) -> dict[str, MetricGate]:
    """Group the gates' verdicts by metric, with the direction the gates give it."""
    found: dict[str, MetricGate] = {}
    for metric in dict.fromkeys(v.gate.metric for v in verdicts):
        notes = "; ".join(verdict_note(v) for v in verdicts if v.gate.metric == metric)
        direction = better_direction(gates, metric)
        higher = None if direction is None else direction == "higher"
        found[metric] = MetricGate(higher, notes)
    return found


def canary_line(mv: ModelVersion) -> str:
    """Describe a canary window in progress, or '' when there is none."""
    state, until = mv.tag("canary_state"), time_of(mv, "canary_until")
    if state not in ("running", "passed") or until is None:
        return ""
    who = mentions(mv.tag("canary_approved_by"))
    if mv.tag("canary_overdue"):
        expires = time_of(mv, "canary_expires_at") or 0.0
        then = f"; it expires {format_time(expires)} unless one comes" if expires else ""
        return (
            f":hourglass: Approved by {who}; the canary window ended "
            f"{format_time(until)} without a passing report{then}."
        )
    needs = " and a passing canary report" if mv.tag("canary_require_report") == "true" else ""
    if state == "passed":
        needs = " (the canary report passed)"
    return (
        f":hourglass: Approved by {who}; canary in Staging until "
        f"{format_time(until)}{needs}, then Production."
    )


def metrics_of(svc: Services, mv: ModelVersion) -> dict[str, float]:
    """Return the version's metrics: those its event gave, else its run's."""
    tagged = json.loads(mv.tag("metrics") or "{}")
    if tagged:
        return tagged
    run = svc.gateway.run_summary(mv.run_id)
    return dict(run.metrics) if run else {}


def publish_home(svc: Services, user: str) -> str:
    """Build and publish `user`'s Home tab from the registry as it is now."""
    versions = svc.gateway.all_versions()
    ui = svc.settings.ui_url
    rules = model_rules(svc, user, versions)
    view = home_view(versions, rules=rules, now=svc.clock(), url=f"{ui}/#/models" if ui else "")
    svc.notifier.publish_home(user, view)
    return "published"


def model_rules(svc: Services, user: str, versions: Sequence[ModelVersion]) -> dict[str, ModelRule]:
    """Describe `user` to each model with a Staging version, as that model's policy does."""
    staged: dict[str, list[ModelVersion]] = {}
    for mv in versions:
        if mv.stage == "Staging":
            staged.setdefault(mv.name, []).append(mv)
    return {name: _rule(svc, user, name, mvs) for name, mvs in staged.items()}


def _rule(svc: Services, user: str, name: str, staged: Sequence[ModelVersion]) -> ModelRule:
    """Ask who `user` is to the model (the directory caches groups); fail closed if Slack
    cannot say."""
    # As at a click: the e-mail only when some requester is known by an e-mail alone.
    with_email = any(
        "@" in mv.tag("requested_by") and not mv.tag("requested_by_user") for mv in staged
    )
    try:
        clicker = svc.directory.clicker(user, with_email=with_email, model=name)
    except LookupFailed as exc:
        log.warning(
            "home tab without this model's buttons: %s", exc, extra={"user": user, "model": name}
        )
        clicker = None
    return ModelRule(clicker, required_of(svc.settings, name), slots_of(svc.settings, name))
