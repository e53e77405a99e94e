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
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from registry import operations
from registry.events import ModelAlert
from registry.guard import (
    ALERT_EVENT,
    ALERT_TAG,
    ALERTMANAGER,
    NOT_ROLLED_BACK,
    ROLLED_BACK_NOTE,
    alert_key,
    alert_plan,
    alert_reason,
    alert_text,
    find_alert,
    guard_refusal,
    resolved_note,
)
from registry.notice import model_channel
from registry.record import prefixed, record
from registry.reports import RollbackPlan, RollbackRefused, plan_rollback
from registry.services import Blocks, Notifier, Recipient, Services
from registry.versions import ModelVersion

log = logging.getLogger(__name__)

Remember = Callable[[str, str], None]


def handle_alert(svc: Services, alert: ModelAlert, *, remember: Remember | None = None) -> str:
    """Act on one alert for its model; return what was done."""
    key = alert_key(alert.fingerprint, alert.starts_at)
    ctx = {"event_id": f"alert-{key}", "model": alert.model_name, "version": alert.version}
    versions = svc.gateway.versions(alert.model_name)
    found = find_alert(versions, key)
    if alert.status == "resolved":
        return _resolved(svc, alert, key, found)
    if found is not None:
        mv, state = found
        if state.get("ts"):
            log.info("alert already handled", extra=ctx)
            return "duplicate"
        return _carry_out(svc, alert, key, mv, state, remember, rerun=True)  # finish it
    plan = _plan(svc, alert, versions, ctx)
    if plan is None:
        return "ignored"
    mv = next(v for v in versions if v.version == plan.current)
    action = svc.settings.policy.for_model(alert.model_name).guard.action
    state = {"action": action, "current": plan.current, "target": plan.target}
    state["nonce"] = uuid.uuid4().hex
    # The intent goes with the log entry, in one write, before anything is posted or moved.
    intent = {ALERT_TAG + key: _json(state)}
    record(svc, mv, "alert_received", actor=ALERTMANAGER, reason=plan.reason, extra=intent)
    return _carry_out(svc, alert, key, mv, state, remember, rerun=False)


def _plan(
    svc: Services, alert: ModelAlert, versions: Sequence[ModelVersion], ctx: dict
) -> RollbackPlan | None:
    """Return the rollback plan the alert calls for, or None (logged) if it concerns nothing."""
    guard = svc.settings.policy.for_model(alert.model_name).guard
    why = guard_refusal(versions, alert.version, guard, svc.clock())
    if not why:
        try:
            return plan_rollback(versions, alert.model_name, "", alert_reason(alert))
        except RollbackRefused as exc:
            why = str(exc)
    log.info("alert ignored: %s", why, extra=ctx)
    return None


def _carry_out(
    svc: Services,
    alert: ModelAlert,
    key: str,
    mv: ModelVersion,
    state: dict,
    remember: Remember | None,
    *,
    rerun: bool,
) -> str:
    plan = RollbackPlan(
        alert.model_name, state["current"], state["target"], alert_reason(alert), alert=key
    )
    if state["action"] == "rollback":
        ts, outcome = _roll_back(svc, alert, plan)
    else:
        ts, outcome = _post_plan(svc, alert, plan, state["nonce"], rerun=rerun), "proposed"
    state = {**state, "channel": model_channel(svc, alert.model_name), "ts": ts}
    svc.gateway.set_tags(mv.name, mv.version, _tag(key, state))
    if remember is not None:
        remember(key, alert.model_name)
    log.info("alert %s", outcome, extra={"event_id": f"alert-{key}", "model": mv.name})
    return outcome


def _post_plan(
    svc: Services, alert: ModelAlert, plan: RollbackPlan, nonce: str, *, rerun: bool
) -> str:
    """Post the plan in the channel once, even if a run died before recording its ts."""
    channel = model_channel(svc, plan.model)
    found = svc.notifier.find_posted(ALERT_EVENT, nonce, channel=channel) if rerun else ""
    if found:
        return found
    text, blocks = alert_plan(plan, alert)
    metadata = {
        "event_type": ALERT_EVENT,
        "event_payload": {"model": plan.model, "nonce": nonce},
    }
    return svc.notifier.post(
        text, blocks, channel=model_channel(svc, plan.model), metadata=metadata
    )


def _roll_back(svc: Services, alert: ModelAlert, plan: RollbackPlan) -> tuple[str, str]:
    """Roll back as `rollback` does, announced in the channel, the alert in its thread."""
    unattended = Unattended(svc.notifier)
    outcome = operations.rollback(
        replace(svc, notifier=unattended),
        plan,
        user=ALERTMANAGER,
        channel=model_channel(svc, alert.model_name),
        response_url="",
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
        self,
        event_type: str,
        nonce: str,
        *,
        channel: str = "",
        thread_ts: str = "",
        limit: int = 200,
    ) -> str:
        """Find a posted message as the inner notifier does."""
        return self.inner.find_posted(
            event_type, nonce, channel=channel, thread_ts=thread_ts, limit=limit
        )

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
