"""Chat command work done in the worker: status, history, promote, rollback plans and rollbacks."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from registry import lifecycle
from registry.commands import Command
from registry.messages import mention
from registry.notice import redraw_notice
from registry.people import people_tags
from registry.record import LEFT_PRODUCTION, record, stamp
from registry.reports import (
    RollbackPlan,
    RollbackRefused,
    history_text,
    plan_blocks,
    plan_rollback,
    status_text,
)
from registry.services import Recipient, Services
from registry.versions import ModelVersion, VersionNotFound

log = logging.getLogger(__name__)

NO_REASON = "No reason was given."


def answer_command(
    svc: Services, cmd: Command, *, user: str, channel: str, response_url: str
) -> str:
    """Run a parsed command that needs the registry and answer the person who typed it."""

    def tell(text: str, blocks: list[dict] | None = None) -> None:
        svc.notifier.tell(Recipient(channel, user, response_url), text, blocks=blocks)

    versions = svc.gateway.versions(cmd.model)
    if cmd.verb == "status":
        tell(
            status_text(
                cmd.model, _with_run_metrics(svc, versions), svc.settings.required_approvals
            )
        )
    elif cmd.verb == "history":
        tell(history_text(cmd.model, versions, cmd.count))
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
    svc: Services, plan: RollbackPlan, *, user: str, channel: str, response_url: str
) -> str:
    """Carry out a confirmed rollback plan, if it still holds."""
    versions = svc.gateway.versions(plan.model)
    try:
        fresh = plan_rollback(versions, plan.model, plan.target, plan.reason)
        if fresh.current != plan.current:
            raise RollbackRefused(
                f"{plan.model} Production changed to v{fresh.current} since this was proposed; "
                "nothing was rolled back."
            )
    except RollbackRefused as exc:
        svc.notifier.tell(Recipient(channel, user, response_url), str(exc))
        return "refused"
    now = stamp(svc)
    svc.gateway.move(plan.model, plan.target, "Production")
    by_version = {mv.version: mv for mv in versions}
    current, target = by_version[plan.current], by_version[plan.target]
    why = f": {plan.reason}" if plan.reason else ""
    record(
        svc,
        current,
        "archived",
        actor=user,
        reason=f"rolled back to v{plan.target}{why}",
        extra={"production_until": now, "archived_at": now, **people_tags(svc, current, user)},
        details={"replaced_by": plan.target, "via": "rollback"},
    )
    record(
        svc,
        target,
        "rolled_back",
        actor=user,
        reason=plan.reason,
        previous=plan.current,
        extra={"production_since": now, "rolled_back_by": user, **people_tags(svc, target, user)},
        drop=LEFT_PRODUCTION,  # Production again: it is no longer archived
    )
    for version in (plan.current, plan.target):
        redraw_notice(svc, svc.gateway.get_version(plan.model, version))
    svc.notifier.post(rollback_announcement(plan, user), [], channel=channel)
    svc.notifier.tell(
        Recipient(channel, user, response_url),
        f"Done: {plan.model} v{plan.target} is Production again.",
        replace=True,
    )
    return "rolled_back"


def rollback_announcement(plan: RollbackPlan, user: str) -> str:
    """Say in the channel who rolled back what, and why if they said."""
    why = f" Reason: {plan.reason}" if plan.reason else f" {NO_REASON}"
    return (
        f"{mention(user)} rolled {plan.model} back from v{plan.current} to v{plan.target}"
        f" (v{plan.current} archived).{why}"
    )


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
    mv = next((v for v in versions if v.version == cmd.version), None)
    if mv is None:
        return (
            f"{cmd.model} has no version {cmd.version}."
            if versions
            else (f"No model named {cmd.model} in the registry.")
        )
    if mv.stage in ("Production", "Archived"):
        hint = " Use rollback to restore an earlier version." if mv.stage == "Archived" else ""
        return f"{cmd.model} v{cmd.version} is {mv.stage}; nothing to promote.{hint}"
    try:
        result = lifecycle.stage_version(
            svc, cmd.model, cmd.version, event_id=f"promote-{cmd.model}-{cmd.version}"
        )
    except VersionNotFound:
        return f"{cmd.model} has no version {cmd.version}."
    if result.outcome == "already_noticed":
        return f"{cmd.model} v{cmd.version} is already awaiting approval in Staging."
    return f"{cmd.model} v{cmd.version} is in Staging; its notice asks for approval."
