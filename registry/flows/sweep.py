"""The periodic sweep: reminders, expiry, canary windows, and work that missed a step."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from registry.flows import lifecycle
from registry.flows.canary import finish_canary
from registry.flows.freeze import freeze_due
from registry.flows.notice import refresh_notice, thread
from registry.flows.promotion import archive_decided, finish_rollback, promote
from registry.flows.protection import check_production
from registry.flows.recording import record, stamp
from registry.ports.locks import LockBusy, LockLost
from registry.ports.services import Services
from registry.rules.decisions import approvals_on
from registry.rules.events import MODEL_NAME
from registry.rules.governance import required_of, rollback_pending
from registry.rules.record import format_stamp, prefixed, time_of
from registry.rules.text import escape, format_time
from registry.rules.versions import PENDING_TAG, TAG, ModelVersion
from registry.views.announcements import canary_overdue_note

log = logging.getLogger(__name__)

EXPIRED_REASON = "expired"
PROMPT_TAG = "mlflow.prompt.is_prompt"
MARK_SLACK_MS = 60_000
# A model whose work failed waits BACKOFF_BASE x 2^n seconds after its nth failure in a row
# before the sweep tries it again, never more than BACKOFF_MAX.
BACKOFF_BASE = 60.0
BACKOFF_MAX = 3600.0


@dataclass
class SweepReport:
    """What one sweep did, by action, as (model, version) pairs."""

    done: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    read_in_full: list[str] = field(default_factory=list)  # models whose every version was read
    # (model, version or '', what was raised): work that failed, logged and left for later.
    failures: list[tuple[str, str, Exception]] = field(default_factory=list)

    def add(self, action: str, mv: ModelVersion) -> None:
        self.done.setdefault(action, []).append((mv.name, mv.version))

    def failed(self, model: str, version: str, exc: Exception) -> None:
        """Note work that failed; log it with its model and version."""
        self.failures.append((model, version, exc))
        ctx = {"model": model, "version": version}
        log.warning("sweep failed on %s v%s: %r", model, version or "-", exc, extra=ctx)

    def count(self, action: str) -> int:
        return len(self.done.get(action, []))


@dataclass
class SweepMemory:
    """What one process's sweeps remember of the registry since their first, full, read.

    Lost with the process (a restart, a new pool process): its first sweep then reads
    every version once, which is also how versions from before PENDING_TAG get it.
    """

    seen: dict[str, str] = field(default_factory=dict)  # model: fingerprint at its full look
    mark: int = 0  # the newest model update time seen (ms); 0: nothing read yet
    marked_at: float = 0.0  # when (this process's clock) the mark last moved
    # Changed models whose full look is still due (a busy lock), with their new fingerprint.
    owed: dict[str, str] = field(default_factory=dict)
    slack_ms: int = MARK_SLACK_MS  # how far before the mark each listing starts
    # Models whose work failed: (failures in a row, when the sweep may try them again).
    failing: dict[str, tuple[int, float]] = field(default_factory=dict)
    pending: int = 0  # versions tagged PENDING_TAG at the last listing (a metric)

    def waits(self, model: str, now: float) -> bool:
        """Say whether `model` is backing off after a failure."""
        return now < self.failing.get(model, (0, 0.0))[1]

    def outcome(self, model: str, failed: bool, now: float) -> None:
        """Back a failing model off for longer each time in a row; forget it once it works."""
        if not failed:
            self.failing.pop(model, None)
            return
        count = self.failing.get(model, (0, 0.0))[0] + 1
        self.failing[model] = (count, now + min(BACKOFF_BASE * 2**count, BACKOFF_MAX))


@dataclass(frozen=True)
class Look:
    """How the sweep looks at one model: every version, or the pending ones only."""

    full: bool
    fingerprint: str = ""  # remembered once a full look is done
    pending: bool = True  # without a full look: has versions tagged pending


def sweep(
    svc: Services,
    lock: Callable[[str], AbstractContextManager],
    models: list[str] | None = None,
    memory: SweepMemory | None = None,
) -> SweepReport:
    """Sweep the models with pending work or a change since `memory`'s last look, each under
    its lock; without `memory` (or for `models`), every version of every model."""
    report = SweepReport()
    missed = missed_deliveries(svc)
    if models is not None:
        looks = {name: Look(full=True) for name in models}
    else:
        looks = plan_looks(svc, memory, set(missed))
    for name, look in looks.items():
        if memory is not None and memory.waits(name, float(svc.clock())):
            continue  # it failed lately: its backoff is not over
        failures = len(report.failures)
        if not _swept(svc, report, lock, name, look, missed.get(name, [])):
            continue
        if memory is not None:
            _remember(memory, name, look, len(report.failures) > failures, float(svc.clock()))
    if report.done or report.read_in_full:
        done = {k: len(v) for k, v in report.done.items()}
        log.info("sweep: %s; %d model(s) read in full", done, len(report.read_in_full))
    return report


def _remember(memory: SweepMemory, name: str, look: Look, failed: bool, now: float) -> None:
    """Remember a model's full look as done; one that failed is looked at in full again
    once its backoff is over (what failed may have left no pending mark)."""
    memory.outcome(name, failed, now)
    if failed and look.full:
        memory.owed[name] = look.fingerprint
    elif look.full:
        memory.seen[name] = look.fingerprint
        memory.owed.pop(name, None)


def _swept(
    svc: Services,
    report: SweepReport,
    lock: Callable[[str], AbstractContextManager],
    name: str,
    look: Look,
    missed: list[ModelVersion],
) -> bool:
    """Sweep one model under its lock; say whether it was swept (False: its lock was busy or
    lost). Whatever else fails is the model's own: noted, and the other models go on."""
    try:
        with lock(name):
            sweep_model(svc, report, name, look, missed)
            if look.full:
                report.read_in_full.append(name)
    except LockBusy:
        log.info("sweep skipped a busy model", extra={"model": name})  # next sweep
        return False
    except LockLost as exc:  # stopped before its next write; the next sweep goes on
        log.error("sweep stopped a model: %s", exc, extra={"model": name})
        return False
    except Exception as exc:  # one model's failure must never stop the sweep of the others
        report.failed(name, "", exc)
    return True


def plan_looks(svc: Services, memory: SweepMemory | None, missed: set[str]) -> dict[str, Look]:
    """Choose the models to sweep: in full those changed since the last look, else those with
    pending versions or a lost delivery; the rest not at all.

    A model's update time and aliases move when a version is staged by hand or Production
    changes out of band, so those get a full look; work that waits on time (reminders,
    expiry, canary windows, freezes) or on a dead worker's rerun (a decision or a rollback
    half done) carries PENDING_TAG.
    """
    if memory is None:
        return {model.name: Look(True) for model in svc.gateway.models_updated_since(0)}
    stamps = svc.gateway.models_updated_since(_listed_since(svc, memory))
    listed = svc.gateway.pending_versions()
    memory.pending = len(listed)
    pending = {mv.name for mv in listed}
    looks: dict[str, Look] = {}
    for model in stamps:
        if memory.seen.get(model.name) != model.fingerprint:
            memory.owed[model.name] = model.fingerprint
    for name, fingerprint in memory.owed.items():  # with those a busy lock put off
        looks[name] = Look(True, fingerprint)
    for name in sorted(pending | missed):
        looks.setdefault(name, Look(False, pending=name in pending))
    newest = max([memory.mark, *(model.updated_at for model in stamps)])
    if newest > memory.mark:
        memory.mark, memory.marked_at = newest, float(svc.clock())
    return looks


def _listed_since(svc: Services, memory: SweepMemory) -> int:
    """Return the update time (ms) the listing reads back to.

    From the newest update the last listing saw: it reads newest first, so a model updated
    while it ran went to a page already read, and is newer. While that update is recent,
    from `slack_ms` before it: a server clock that stepped back, one server of several
    stamping a little behind another.
    """
    if not memory.mark:
        return 0
    recent = float(svc.clock()) - memory.marked_at < memory.slack_ms / 1000
    return max(0, memory.mark - memory.slack_ms) if recent else memory.mark


def sweep_model(
    svc: Services, report: SweepReport, name: str, look: Look, missed: list[ModelVersion]
) -> None:
    """Sweep one model's versions (all, or the pending ones), its lost deliveries and,
    after a full look or with a revert half done, its Production."""
    versions = _read(svc, name, look)
    # A rollback that died after its move goes first: finishing a decision before
    # it would move Production again and leave the version it moved away unlogged.
    finished = False
    for mv in versions:
        if _rollback_moved(mv):
            finished = _note(report, finish_rollback(svc, mv), mv) or finished
    if finished:
        versions = _read(svc, name, look)
    for mv in versions:
        _isolated(report, mv, _sweep_and_mark, svc)
    for mv in missed:
        _isolated(report, mv, _catch_up_noted, svc)
    if look.full or any(mv.tag("revert_intent") for mv in versions):
        # After the versions: a decision finished above is no out-of-band change.
        action, version = check_production(svc, name)
        if action:
            report.done.setdefault(action, []).append((name, version))


def _sweep_and_mark(svc: Services, report: SweepReport, mv: ModelVersion) -> None:
    action = sweep_version(svc, mv)
    _note(report, action, mv)
    keep_mark(svc, svc.gateway.get_version(mv.name, mv.version) if action else mv)


def _catch_up_noted(svc: Services, report: SweepReport, mv: ModelVersion) -> None:
    _note(report, catch_up(svc, mv), mv)


VersionWork = Callable[[Services, SweepReport, ModelVersion], None]


def _isolated(report: SweepReport, mv: ModelVersion, work: VersionWork, svc: Services) -> None:
    """Do one version's work; a failure (a malformed tag, a version deleted meanwhile, a post
    Slack refuses) is noted with the version, and the model's other versions go on."""
    try:
        work(svc, report, mv)
    except (LockBusy, LockLost):
        raise  # the model's lock, not this version: the whole model waits
    except Exception as exc:
        report.failed(mv.name, mv.version, exc)


def _read(svc: Services, name: str, look: Look) -> list[ModelVersion]:
    """Read the model's versions for this look, under its lock."""
    if look.full:
        return svc.gateway.versions(name)
    return svc.gateway.pending_versions(name) if look.pending else []


def needs_sweep(mv: ModelVersion) -> bool:
    """Say whether the sweep must watch the version: what PENDING_TAG marks."""
    if (mv.tag("decision") and not mv.tag("announced")) or rollback_pending(mv):
        return True  # a change half done, for the sweep to finish
    if mv.tag("revert_intent") or unstaged(mv):
        return True
    if mv.stage != "Staging":
        return False
    if not mv.tag("notice_ts") or mv.tag("freeze_state") == "waiting":
        return True
    if mv.tag("canary_state") in ("running", "passed"):
        return True
    return not (mv.tag("gates") == "failed" or mv.tag("decision"))  # reminders and expiry


def keep_mark(svc: Services, mv: ModelVersion) -> None:
    """Set or clear the version's PENDING_TAG to say whether the sweep must watch it."""
    marked = mv.tags.get(PENDING_TAG) == "true"
    if needs_sweep(mv) and not marked:
        svc.gateway.set_tags(mv.name, mv.version, {PENDING_TAG: "true"})
    elif marked and not needs_sweep(mv):
        svc.gateway.delete_tags(mv.name, mv.version, [PENDING_TAG])


def _rollback_moved(mv: ModelVersion) -> bool:
    """Say whether a rollback to `mv` is half done with its target already Production."""
    return rollback_pending(mv) and mv.stage == "Production"


def _note(report: SweepReport, action: str, mv: ModelVersion) -> bool:
    if action:
        report.add(action, mv)
    return bool(action)


def sweep_version(svc: Services, mv: ModelVersion) -> str:
    """Bring one version forward if it is due; return what was done, or ''."""
    if mv.tag("decision") and not mv.tag("announced"):
        # Read afresh: finishing another version's change in this sweep may have moved it.
        mv = svc.gateway.get_version(mv.name, mv.version)
        action = _finish(svc, mv)  # a worker died half way through a decision
        mv = svc.gateway.get_version(mv.name, mv.version)
        if not rollback_pending(mv):
            return action
    if rollback_pending(mv):
        # ... or half way through a rollback (read afresh, as above)
        return finish_rollback(svc, svc.gateway.get_version(mv.name, mv.version))
    if unstaged(mv):  # registered by a run that died before it staged the version
        lifecycle.stage_version(svc, mv.name, mv.version, event_id="sweep")
        return "noticed"
    if mv.stage != "Staging":
        return ""
    if not mv.tag("notice_ts"):
        lifecycle.stage_version(svc, mv.name, mv.version, event_id="sweep")
        return "noticed"  # reconciled: a lost event, a crashed worker, a version staged by hand
    if mv.tag("freeze_state") == "waiting":
        return freeze_due(svc, mv)  # promoted once the freeze is over
    if mv.tag("canary_state") in ("running", "passed"):
        return _canary_due(svc, mv)
    if mv.tag("gates") == "failed" or mv.tag("decision"):
        return ""
    return _expire_or_remind(svc, mv)


def unstaged(mv: ModelVersion) -> bool:
    """Say whether registry-bot registered the version for an event and never finished
    staging it: no stage, no decision, no notice yet (a gate that failed still has one)."""
    return (
        mv.stage == "None"
        and bool(mv.tag("event_id"))
        and not mv.tag("decision")
        and not mv.tag("notice_ts")
    )


def missed_deliveries(svc: Services) -> dict[str, list[ModelVersion]]:
    """Return, by model, the versions registered elsewhere in CATCHUP_WINDOW that we never saw.

    Only while `/hooks/mlflow` is enabled: these are versions whose MLflow delivery was
    lost (SPEC 8). The registry is read newest first and only back to the window's start.
    """
    if not svc.settings.mlflow_webhook_secret:
        return {}
    since = float(svc.clock()) - svc.settings.catchup_window
    missed: dict[str, list[ModelVersion]] = {}
    for mv in svc.gateway.created_since(since):
        if _unseen(mv):
            missed.setdefault(mv.name, []).append(mv)
    return missed


def catch_up(svc: Services, mv: ModelVersion) -> str:
    """Handle a version whose MLflow delivery was lost, exactly as the delivery would have."""
    fresh = svc.gateway.get_version(mv.name, mv.version)  # under the lock: a delivery may have
    if not _unseen(fresh) or fresh.status != "READY":  # come meanwhile, or it is not ready yet
        return ""
    result = lifecycle.stage_version(
        svc, mv.name, mv.version, event_id=f"catchup-{mv.name}-{mv.version}"
    )
    return "caught_up" if result.outcome in ("noticed", "gate_failed") else ""


def _unseen(mv: ModelVersion) -> bool:
    """Say whether a version is one /hooks/mlflow would stage and registry-bot never touched."""
    if any(key.startswith(TAG) for key in mv.tags) or mv.tags.get(PROMPT_TAG) == "true":
        return False  # ours already, or a prompt (MLflow keeps prompts as model versions)
    # A delivery for a name outside the model-name grammar is refused; so is its catch-up.
    return mv.stage == "None" and bool(MODEL_NAME.fullmatch(mv.name))


def _finish(svc: Services, mv: ModelVersion) -> str:
    if mv.tag("decision") == "approved":
        promote(svc, mv)
        return "promoted"
    verb = "Expired" if mv.tag("decision") == "expired" else "Rejected"
    archive_decided(svc, mv, mv.tag("decision"), verb)
    return "archived"


def _canary_due(svc: Services, mv: ModelVersion) -> str:
    until = time_of(mv, "canary_until") or 0.0
    if svc.clock() < until:
        return ""
    if mv.tag("canary_require_report") == "true" and mv.tag("canary_state") != "passed":
        return _canary_overdue(svc, mv, until)
    finish_canary(svc, mv)
    return "promoted"


def _canary_overdue(svc: Services, mv: ModelVersion, until: float) -> str:
    """A window over without its passing report: say so once, then expire it (SPEC 7)."""
    expires_after = svc.settings.policy.for_model(mv.name).approval_expires_after
    expires = until + expires_after if expires_after else 0.0
    if expires and svc.clock() >= expires:
        return _expire(svc, mv)
    if mv.tag("canary_overdue"):
        return ""
    note = canary_overdue_note(mv.name, mv.version, until, expires)
    thread(svc, mv, note, once="canary_overdue_told")
    until_text = format_stamp(expires) if expires else ""
    overdue = {"canary_overdue": stamp(svc), "canary_expires_at": until_text}
    svc.gateway.set_tags(mv.name, mv.version, prefixed(overdue))
    refresh_notice(svc, svc.gateway.get_version(mv.name, mv.version))
    return "canary_overdue"


def _expire_or_remind(svc: Services, mv: ModelVersion) -> str:
    policy = svc.settings.policy.for_model(mv.name)
    now = float(svc.clock())
    since = time_of(mv, "noticed_at") or time_of(mv, "staged_at") or now
    if policy.approval_expires_after and now >= since + policy.approval_expires_after:
        return _expire(svc, mv)
    last = time_of(mv, "reminded_at") or since
    if policy.remind_every and now >= last + policy.remind_every:
        count = f"{len(approvals_on(mv))} of {required_of(svc.settings, mv.name)} approvals"
        expires = ""
        if policy.approval_expires_after:
            expires = f"; expires {format_time(since + policy.approval_expires_after)}"
        svc.notifier.reply(
            mv.tag("notice_channel"),
            mv.tag("notice_ts"),
            f"Reminder: {escape(mv.name)} v{mv.version} still awaits approval ({count}{expires}).",
        )
        svc.gateway.set_tags(mv.name, mv.version, {"registry_bot.reminded_at": format_stamp(now)})
        return "reminded"
    return ""


def _expire(svc: Services, mv: ModelVersion) -> str:
    """Record the expiry of a pending version, then archive and announce it."""
    now = stamp(svc)
    extra = {"decision": "expired", "decided_by": "", "decided_at": now, "reason": EXPIRED_REASON}
    if mv.tag("canary_state"):
        extra["canary_state"] = "expired"  # a late canary report must not revive it
    record(svc, mv, "expired", actor="registry-bot", reason=EXPIRED_REASON, extra=extra)
    archive_decided(svc, svc.gateway.get_version(mv.name, mv.version), "expired", "Expired")
    return "expired"
