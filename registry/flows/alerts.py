"""The guard's work in the worker: an alert becomes a rollback plan, a rollback or a thread note.

Runs under the model's lock. Each alert's record (`registry_bot.alert.<key>` on the
version it was about) is written before anything is posted or moved, so a repeat of
the alert, or a rerun of a task that died half way, finishes what is missing and does
nothing twice, whatever Redis remembers.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from registry.flows import operations
from registry.flows.notice import model_channel
from registry.flows.recording import record
from registry.ports.services import Blocks, Notifier, Recipient, Services
from registry.rules.events import ModelAlert
from registry.rules.governance import change_in_flight
from registry.rules.guard import (
    ALERT_EVENT,
    ALERT_TAG,
    ALERTMANAGER,
    NO_EARLIER,
    NONE_UNPULLED,
    alert_key,
    alert_reason,
    find_alert,
    guard_refusal,
    nothing_to_restore,
)
from registry.rules.record import prefixed
from registry.rules.reports import (
    RollbackPlan,
    RollbackRefused,
    plan_rollback,
    pulled_line,
    pulled_since,
)
from registry.rules.text import cut
from registry.rules.versions import ModelVersion
from registry.views.alerts import (
    NOT_ROLLED_BACK,
    ROLLED_BACK_NOTE,
    alert_plan,
    alert_text,
    no_plan_text,
    resolved_note,
)

log = logging.getLogger(__name__)

PULLED_KEPT = 1_500  # characters of the plan's note on pulled versions kept with the alert


class ChangeInFlight(RuntimeError):
    """registry-bot is half way through changing the model's Production: decide later."""


def handle_alert(svc: Services, alert: ModelAlert) -> str:
    """Act on one alert for its model; return what was done."""
    key = alert_key(alert.fingerprint, alert.starts_at)
    ctx = {"event_id": f"alert-{key}", "model": alert.model_name, "version": alert.version}
    versions = svc.gateway.versions(alert.model_name)
    if change_in_flight(versions):
        # A promotion moved Production and died before its record (the sweep or its rerun
        # finishes it within a minute): which Production the alert is about is not known
        # yet. The task runs again shortly, never drops the alert.
        raise ChangeInFlight(f"{alert.model_name}: a change of Production is being finished")
    found = find_alert(versions, key)
    if alert.status == "resolved":
        return _resolved(svc, alert, key, found)
    if found is not None:
        mv, state = found
        if state.get("ts"):
            log.info("alert already handled", extra=ctx)
            return "duplicate"
        return _carry_out(svc, alert, key, mv, state, rerun=True)  # finish it
    plan, why = _plan(svc, alert, versions, ctx)
    if plan is None:
        return _no_plan(svc, alert, key, versions, why) if nothing_to_restore(why) else "ignored"
    mv = next(v for v in versions if v.version == plan.current)
    action = svc.settings.policy.for_model(alert.model_name).guard.action
    state = {"action": action, "current": plan.current, "target": plan.target}
    state.update(nonce=uuid.uuid4().hex, pulled=cut(plan.pulled, PULLED_KEPT))
    # The intent goes with the log entry, in one write, before anything is posted or moved.
    intent = {ALERT_TAG + key: _json(state)}
    record(svc, mv, "alert_received", actor=ALERTMANAGER, reason=plan.reason, extra=intent)
    return _carry_out(svc, alert, key, mv, state, rerun=False)


def _plan(
    svc: Services, alert: ModelAlert, versions: Sequence[ModelVersion], ctx: dict
) -> tuple[RollbackPlan | None, str]:
    """Return the rollback plan the alert calls for, or None (logged) and why there is none."""
    guard = svc.settings.policy.for_model(alert.model_name).guard
    why = guard_refusal(versions, alert.version, guard, svc.clock())
    if not why:
        try:
            return plan_rollback(versions, alert.model_name, "", alert_reason(alert)), ""
        except RollbackRefused as exc:
            why = str(exc)
    log.info("alert ignored: %s", why, extra=ctx)
    return None, why


def _no_plan(
    svc: Services, alert: ModelAlert, key: str, versions: Sequence[ModelVersion], why: str
) -> str:
    """The alert concerns the Production registry-bot made, but nothing may be restored: say
    so in the channel once, naming who pulled what and why, and move nothing."""
    current = next(mv for mv in versions if mv.stage == "Production")
    pulled = " ".join(pulled_line(mv) for mv in pulled_since(versions, current)[:3])
    said = NONE_UNPULLED if pulled else NO_EARLIER  # the pulled versions are named after it
    state = {"action": "none", "current": current.version, "target": ""}
    state.update(nonce=uuid.uuid4().hex, pulled=cut(pulled, PULLED_KEPT), why=said)
    intent = {ALERT_TAG + key: _json(state)}
    reason = alert_reason(alert)
    record(svc, current, "alert_received", actor=ALERTMANAGER, reason=reason, extra=intent)
    return _carry_out(svc, alert, key, current, state, rerun=False)


def _carry_out(
    svc: Services,
    alert: ModelAlert,
    key: str,
    mv: ModelVersion,
    state: dict,
    *,
    rerun: bool,
) -> str:
    if state["action"] == "none":
        text = no_plan_text(alert, state, command=svc.settings.slack_command)
        ts, outcome = _post_once(svc, alert.model_name, text, [], state["nonce"], rerun), "no plan"
        return _noted(svc, key, mv, {**state, "ts": ts}, outcome)
    plan = RollbackPlan(
        alert.model_name,
        state["current"],
        state["target"],
        alert_reason(alert),
        alert=key,
        pulled=str(state.get("pulled") or ""),
    )
    if state["action"] == "rollback":
        ts, outcome = _roll_back(svc, alert, plan)
    else:
        ts, outcome = _post_plan(svc, alert, plan, state["nonce"], rerun=rerun), "proposed"
    return _noted(svc, key, mv, {**state, "ts": ts}, outcome)


def _noted(svc: Services, key: str, mv: ModelVersion, state: dict, outcome: str) -> str:
    """Record where the alert's message is on its version; return `outcome`."""
    state = {**state, "channel": model_channel(svc, mv.name)}
    svc.gateway.set_tags(mv.name, mv.version, _tag(key, state))
    log.info("alert %s", outcome, extra={"event_id": f"alert-{key}", "model": mv.name})
    return outcome


def _post_plan(
    svc: Services, alert: ModelAlert, plan: RollbackPlan, nonce: str, *, rerun: bool
) -> str:
    """Post the plan in the channel once, even if a run died before recording its ts."""
    text, blocks = alert_plan(plan, alert)
    return _post_once(svc, plan.model, text, blocks, nonce, rerun)


def _post_once(
    svc: Services, model: str, text: str, blocks: Sequence[dict], nonce: str, rerun: bool
) -> str:
    """Post in the model's channel once, even if a run died before recording the ts."""
    channel = model_channel(svc, model)
    found = svc.notifier.find_posted(ALERT_EVENT, nonce, channel=channel) if rerun else ""
    if found:
        return found
    metadata = {"event_type": ALERT_EVENT, "event_payload": {"model": model, "nonce": nonce}}
    return svc.notifier.post(text, blocks, channel=channel, metadata=metadata)


def _roll_back(svc: Services, alert: ModelAlert, plan: RollbackPlan) -> tuple[str, str]:
    """Roll back as `rollback` does, announced in the channel, the alert in its thread."""
    unattended = Unattended(svc.notifier)
    outcome = operations.rollback(
        replace(svc, notifier=unattended),
        plan,
        user=ALERTMANAGER,
        channel=model_channel(svc, alert.model_name),
        response_url="",
        on_behalf=False,  # the model's guard policy, not a person, asked for it
    )
    described = alert_text(alert, plan.current)
    if unattended.posted:
        ts = unattended.posted[-1]
        channel = model_channel(svc, alert.model_name)
        svc.notifier.reply(channel, ts, ROLLED_BACK_NOTE.format(alert=described))
        return ts, outcome
    # Refused (say, a run that died had rolled back already): the channel hears why, once.
    why = unattended.untold[-1] if unattended.untold else outcome
    text = NOT_ROLLED_BACK.format(alert=described, why=why)
    return svc.notifier.post(text, [], channel=model_channel(svc, alert.model_name)), outcome


def _resolved(
    svc: Services, alert: ModelAlert, key: str, found: tuple[ModelVersion, dict] | None
) -> str:
    """Add one thread note to the alert's plan or announcement."""
    ctx = {"event_id": f"alert-{key}", "model": alert.model_name}
    if found is None or not found[1].get("ts"):
        log.info("resolved alert without a plan", extra=ctx)
        return "ignored"
    mv, state = found
    if state.get("resolved"):
        log.info("resolved alert already noted", extra=ctx)
        return "duplicate"
    svc.notifier.reply(state["channel"], state["ts"], resolved_note(alert))
    resolved = {**state, "resolved": alert.ends_at or "yes"}
    svc.gateway.set_tags(mv.name, mv.version, _tag(key, resolved))
    return "noted"


def _tag(key: str, state: dict) -> dict[str, str]:
    """Return the version tag that records alert `key`'s state."""
    return prefixed({ALERT_TAG + key: _json(state)})


def _json(state: dict) -> str:
    return json.dumps(state, separators=(",", ":"))


class Unattended:
    """A Notifier for what the guard does by itself: nobody to tell, posts remembered."""

    def __init__(self, inner: Notifier):
        self.inner = inner
        self.channel = inner.channel
        self.posted: list[str] = []
        self.untold: list[str] = []

    def post(self, text: str, blocks: Sequence[dict], *, channel: str = "", **meta: Any) -> str:
        """Post as the inner notifier does; remember the ts."""
        ts = self.inner.post(text, blocks, channel=channel, **meta)
        self.posted.append(ts)
        return ts

    def find_posted(
        self, event_type: str, nonce: str, *, channel: str = "", thread_ts: str = ""
    ) -> str:
        """Find a posted message as the inner notifier does."""
        return self.inner.find_posted(event_type, nonce, channel=channel, thread_ts=thread_ts)

    def publish_home(self, user: str, view: dict) -> None:
        """Publish a Home tab as the inner notifier does."""
        self.inner.publish_home(user, view)

    def update(self, channel: str, ts: str, text: str, blocks: Sequence[dict]) -> None:
        """Update a message as the inner notifier does."""
        self.inner.update(channel, ts, text, blocks)

    def reply(self, channel: str, thread_ts: str, text: str, **meta: Any) -> None:
        """Reply in a thread as the inner notifier does."""
        self.inner.reply(channel, thread_ts, text, **meta)

    def tell(
        self, to: Recipient, text: str, *, blocks: Blocks = None, replace: bool = False
    ) -> None:
        """Keep what would go to a person: the alertmanager actor is nobody in Slack."""
        self.untold.append(text)
