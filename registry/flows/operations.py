"""Chat command work done in the worker: status, history, promote, rollback plans and rollbacks."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from urllib.parse import quote

from registry.flows import lifecycle
from registry.flows.notice import model_channel
from registry.flows.promotion import finish_rollback, rollback_intent
from registry.flows.recording import authorised, stamp
from registry.ports.services import Recipient, Services
from registry.rules.commands import APPROVER_VERBS, VERB_WORDS, Command
from registry.rules.governance import approvers_line, freeze_line, required_of, rollback_pending
from registry.rules.record import prefixed
from registry.rules.reports import (
    RollbackPlan,
    RollbackRefused,
    history_text,
    plan_rollback,
    status_text,
)
from registry.rules.text import MESSAGE_TEXT, escape
from registry.rules.versions import ModelVersion, VersionNotFound
from registry.views.plans import plan_blocks

log = logging.getLogger(__name__)

ROLLED_BACK = "Done: {model} v{target} is Production again."
ROLLED_BACK_REPLACED = (
    "Done: {model} v{target} was Production again, and a later version has replaced it since."
)


def answer_command(
    svc: Services, cmd: Command, *, user: str, channel: str, response_url: str
) -> str:
    """Run a parsed command that needs the registry and answer the person who typed it."""

    to = Recipient(channel, user, response_url)

    def tell(text: str, blocks: list[dict] | None = None) -> None:
        svc.notifier.tell(to, text, blocks=blocks)

    if cmd.verb in APPROVER_VERBS:
        verb = VERB_WORDS.get(cmd.verb, cmd.verb)
        if not authorised(svc, user=user, verb=verb, model=cmd.model, to=to):
            return "refused"
    versions = svc.gateway.versions(cmd.model)
    if cmd.verb == "status":
        required = required_of(svc.settings, cmd.model)
        after = _governance(svc, cmd.model, versions, status=True)
        shown = _with_run_metrics(svc, versions)
        limit, url = MESSAGE_TEXT - len(after), model_url(svc, cmd.model)
        tell(status_text(cmd.model, shown, required, url=url, limit=limit) + after)
    elif cmd.verb == "history":
        after = _governance(svc, cmd.model, versions)
        limit, url = MESSAGE_TEXT - len(after), model_url(svc, cmd.model)
        tell(history_text(cmd.model, versions, cmd.count, url=url, limit=limit) + after)
    elif cmd.verb == "promote":
        tell(_promote(svc, cmd, versions))
    elif cmd.verb == "rollback":
        try:
            plan = plan_rollback(versions, cmd.model, cmd.version, cmd.reason)
        except RollbackRefused as exc:
            tell(str(exc))
            return "refused"
        tell(*plan_blocks(plan))
    return cmd.verb


def rollback(
    svc: Services,
    plan: RollbackPlan,
    *,
    user: str,
    channel: str,
    response_url: str,
    on_behalf: bool = True,
) -> str:
    """Carry out a confirmed rollback plan, if it still holds: record it first, then do it.

    `on_behalf` (a person confirmed it): they must still be one of the model's approvers,
    asked here; only the guard's own rollback, which no person confirms, says False.
    """
    to = Recipient(channel, user, response_url)
    versions = svc.gateway.versions(plan.model)
    target = next((mv for mv in versions if mv.version == plan.target), None)
    if target is not None and _same_rollback(target, plan, user):
        return _finish(svc, target, to)  # this task ran before and died half way
    if on_behalf and not authorised(svc, user=user, verb="roll back", model=plan.model, to=to):
        return "refused"
    versions = _settle_older_rollbacks(svc, plan, versions)
    try:
        fresh = plan_rollback(versions, plan.model, plan.target, plan.reason)
        if fresh.current != plan.current:
            raise RollbackRefused(
                f"{escape(plan.model)} Production changed to v{fresh.current} since this was "
                "proposed; nothing was rolled back."
            )
    except RollbackRefused as exc:
        svc.notifier.tell(to, str(exc))
        return "refused"
    # Announced in the model's channel, wherever Confirm was clicked.
    announce_in = model_channel(svc, plan.model)
    intent = rollback_intent(plan.current, user, stamp(svc), plan.reason, announce_in)
    svc.gateway.set_tags(plan.model, plan.target, intent)
    return _finish(svc, svc.gateway.get_version(plan.model, plan.target), to)


def _settle_older_rollbacks(
    svc: Services, plan: RollbackPlan, versions: list[ModelVersion]
) -> list[ModelVersion]:
    """Settle rollbacks a dead worker left on other versions before recording this one.

    One that already moved is finished (its record must not be lost); one that never
    moved is superseded by this newer plan, so no sweep can apply it after this one.
    """
    settled = False
    for other in versions:
        if other.version == plan.target or not rollback_pending(other):
            continue
        if other.stage == "Production":
            finish_rollback(svc, other)
        else:
            done = {"rollback_done": other.tag("rollback_at"), "rollback_state": "superseded"}
            svc.gateway.set_tags(other.name, other.version, prefixed(done))
        settled = True
    return svc.gateway.versions(plan.model) if settled else versions


def _finish(svc: Services, target: ModelVersion, to: Recipient) -> str:
    """Finish the rollback recorded on `target` and tell the person who confirmed it."""
    outcome = finish_rollback(svc, target)
    if outcome == "rolled_back":
        serving = svc.gateway.get_version(target.name, target.version).stage == "Production"
        done = ROLLED_BACK if serving else ROLLED_BACK_REPLACED
        text = done.format(model=escape(target.name), target=target.version)
        svc.notifier.tell(to, text, replace=True)
    return outcome


def _same_rollback(target: ModelVersion, plan: RollbackPlan, user: str) -> bool:
    """Say whether `target` carries this plan's rollback, recorded but not finished."""
    return (
        rollback_pending(target)
        and target.tag("rollback_from") == plan.current
        and target.tag("rollback_by") == user
    )


def _governance(
    svc: Services, model: str, versions: list[ModelVersion], *, status: bool = False
) -> str:
    """Say where the model is discussed, who approves it and, for status, its freeze: the
    lines that follow a report (which is cut to leave them room)."""
    if not versions:
        return ""
    lines = [f"Channel: <#{model_channel(svc, model)}>", approvers_line(svc.settings, model)]
    freezes = svc.settings.policy.for_model(model).freeze
    frozen = freeze_line(freezes, float(svc.clock())) if status else ""
    return "".join(f"\n{line}" for line in ([*lines, frozen] if frozen else lines))


def model_url(svc: Services, model: str) -> str:
    """Return the model's page in the MLflow UI, where all its versions can be read."""
    ui = svc.settings.ui_url
    return f"{ui}/#/models/{quote(model, safe='')}" if ui else ""


def _with_run_metrics(svc: Services, versions: list[ModelVersion]) -> list[ModelVersion]:
    """Fill in run metrics for the versions status shows, where no event gave any."""
    shown = []
    for mv in versions:
        if mv.stage in ("Production", "Staging") and not mv.tag("metrics"):
            run = svc.gateway.run_summary(mv.run_id)
            if run and run.metrics:
                metrics = json.dumps(dict(run.metrics))
                mv = replace(mv, tags={**mv.tags, "registry_bot.metrics": metrics})
        shown.append(mv)
    return shown


def _promote(svc: Services, cmd: Command, versions) -> str:
    name = escape(cmd.model)
    mv = next((v for v in versions if v.version == cmd.version), None)
    if mv is None:
        return (
            f"{name} has no version {cmd.version}."
            if versions
            else (f"No model named {name} in the registry.")
        )
    if mv.stage in ("Production", "Archived"):
        hint = " Use rollback to restore an earlier version." if mv.stage == "Archived" else ""
        return f"{name} v{cmd.version} is {mv.stage}; nothing to promote.{hint}"
    try:
        result = lifecycle.stage_version(
            svc, cmd.model, cmd.version, event_id=f"promote-{cmd.model}-{cmd.version}"
        )
    except VersionNotFound:
        return f"{name} has no version {cmd.version}."
    if result.outcome == "already_noticed":
        return f"{name} v{cmd.version} is already awaiting approval in Staging."
    return f"{name} v{cmd.version} is in Staging; its notice asks for approval."
