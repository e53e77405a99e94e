"""Status, history, rollback plans and where a decided version stands, from the record. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from registry.rules.record import history_of, parse_time, time_of
from registry.rules.text import (
    MESSAGE_TEXT,
    SECTION_TEXT,
    cut,
    escape,
    fit_lines,
    format_number,
    format_time,
    mention,
    mentions,
    mlflow_link,
    plural,
)
from registry.rules.versions import ModelVersion


@dataclass(frozen=True)
class Standing:
    """Where a decided version stands now, read from its record."""

    state: str  # for the header: "Approved, in Production", "Approved, now Archived", ...
    line: str = ""  # mrkdwn, e.g. "*Now Archived* since …, when v3 replaced it."
    reason: str = ""  # why, as the person gave it (quoted, escaped)


@dataclass(frozen=True)
class Outcome:
    """A decided notice: what happened, by whom, when."""

    verb: str  # "Approved", "Rejected", "Withdrawn", "Expired", ...
    actors: Sequence[str]
    at: float
    reason: str = ""
    by_requester: bool = False  # the requester withdrew their own candidate


REASON_LIMIT = 500  # as a reason typed after `rollback <model> <version>`


HISTORY_REASON = 300  # characters of a reason one history line shows; MLflow keeps it whole


# A change that caused another in the same instant is listed first.
_RANK = {"rolled_back": 0, "promoted": 0, "rejected": 0, "expired": 0, "archived": 1}


VERBS = {"approved": "Approved", "rejected": "Rejected", "expired": "Expired"}


WITHDRAWN = "Withdrawn"


# The changes that move a decided version into or out of Production.
_MOVES = ("promoted", "rolled_back", "archived", "rejected", "expired")


IN_PRODUCTION = "*Now in Production* since {since}."


BACK_IN_PRODUCTION = "*Now in Production again* since {since}: {who} rolled back to it{origin}."


REPLACED = "*Now Archived* since {since}, when v{by} replaced it."


ROLLED_AWAY = "*Now Archived* since {since}, when {who} rolled back to v{by}."


ARCHIVED = "*Now Archived* since {since}."


@dataclass(frozen=True)
class RollbackPlan:
    """Make `target` Production again in place of `current`."""

    model: str
    current: str
    target: str
    reason: str = ""
    target_since: str = ""
    target_until: str = ""
    target_approved_by: str = ""
    alert: str = ""  # the alert's key when the guard proposed it: a plan posted in the channel
    pulled: str = ""  # mrkdwn: who took the target, or a version passed over, out of service


# How the record says a person took a version out of Production on purpose, as its archive
# entry's `via` says: a rollback away from it, or registry-bot's revert of a change to it
# nobody approved. A plan never proposes such a version unnamed (nor one rejected since it
# last served; one rejected in Staging never served, so no plan can restore it at all).
PULLED_VIA = {"rollback": "rolled back from", "revert": "reverted out of Production"}
REJECTED = "rejected"  # a rejection after the version last served pulls it as surely
PULLED = "v{version} was {how} by {who} on {when}{why}."
PASSED_OVER = "Passed over: {pulled}"
PULLED_REASON = 300  # characters of the pull's reason a plan repeats
RESTORES_PULLED = "Note: {pulled} Confirm only if that no longer holds."


class RollbackRefused(ValueError):
    """The rollback cannot be done; the message says why."""


def plan_rollback(
    versions: Sequence[ModelVersion], model: str, version: str = "", reason: str = ""
) -> RollbackPlan:
    """Choose the rollback target: the given version, or the one Production before the current."""
    name = escape(model)  # the refusal is said in Slack
    if not versions:
        raise RollbackRefused(f"No model named {name} in the registry.")
    target = next((mv for mv in versions if mv.version == version), None)
    if version and target is None:
        raise RollbackRefused(f"{name} has no version {escape(version)}.")
    current = next((mv for mv in versions if mv.stage == "Production"), None)
    if current is None:
        raise RollbackRefused(f"{name} has no Production version to roll back from.")
    passed = pulled_since(versions, current)
    if target is None:
        # One nobody pulled; else the latest pulled, named as such in the plan. (The guard
        # never gets this far with only pulled ones: it proposes nothing then.)
        target = previous_production(versions, current) or next(iter(passed), None)
        if target is None:
            raise RollbackRefused(f"{name} has no earlier Production version to roll back to.")
    if target.version == current.version:
        raise RollbackRefused(f"{name} v{target.version} is already Production.")
    if not (target.tag("production_since") or target.tag("decision") == "approved"):
        raise RollbackRefused(
            f"{name} v{target.version} never passed approval, so it cannot be restored."
        )
    return RollbackPlan(
        model=model,
        current=current.version,
        target=target.version,
        reason=reason,
        target_since=target.tag("production_since"),
        target_until=target.tag("production_until"),
        target_approved_by=target.tag("decided_by"),
        pulled=_pulled_note(target, passed, explicit=bool(version)),
    )


def _pulled_note(target: ModelVersion, passed: Sequence[ModelVersion], *, explicit: bool) -> str:
    """Say what a plan must not keep quiet: the target was pulled (it was named), or the
    versions pulled since it served, passed over (it was chosen)."""
    if pulled_entry(target) is not None:
        return RESTORES_PULLED.format(pulled=pulled_line(target))
    served_until = time_of(target, "production_until") or 0.0
    skipped = [
        mv
        for mv in passed
        if not explicit and (time_of(mv, "production_until") or 0.0) > served_until
    ]
    said = " ".join(pulled_line(mv) for mv in skipped[:3])  # the three latest at most
    return PASSED_OVER.format(pulled=said) if skipped else ""


def previous_production(
    versions: Sequence[ModelVersion], current: ModelVersion
) -> ModelVersion | None:
    """Return the version that entered Production most recently before `current`, passing
    over any a person pulled from Production since (a rollback away from it, a revert)."""
    served = [
        mv
        for mv in versions
        if mv.version != current.version and mv.tag("production_until") and pulled_entry(mv) is None
    ]
    return max(served, key=lambda mv: time_of(mv, "production_until") or 0.0, default=None)


def pulled_since(versions: Sequence[ModelVersion], current: ModelVersion) -> list[ModelVersion]:
    """Return the versions other than `current` that served and that a person pulled from
    Production (or rejected since), newest first."""
    pulled = [
        mv
        for mv in versions
        if mv.version != current.version and mv.tag("production_until") and pulled_entry(mv)
    ]
    return sorted(pulled, key=lambda mv: time_of(mv, "production_until") or 0.0, reverse=True)


def pulled_entry(mv: ModelVersion) -> dict | None:
    """Return the log entry in which a person took `mv` out of Production on purpose (a
    rollback away from it, a revert of a change to it) or rejected it, or None if nobody did
    or it has served again since."""
    pulled = None
    for entry in history_of(mv):
        kind = entry.get("type")
        if (kind == "archived" and entry.get("via") in PULLED_VIA) or kind == REJECTED:
            pulled = entry
        elif kind in ("promoted", "rolled_back", "reverted", "accepted"):
            pulled = None  # back in service since
    return pulled


def pulled_line(mv: ModelVersion) -> str:
    """Say who pulled `mv` from Production, when and why (mrkdwn, escaped)."""
    entry = pulled_entry(mv) or {}
    why = str(entry.get("reason", "")).partition(": ")[2]
    at = parse_time(entry.get("at"))
    return PULLED.format(
        version=escape(mv.version),
        how=REJECTED
        if entry.get("type") == REJECTED
        else PULLED_VIA.get(str(entry.get("via")), "taken out of Production"),
        who=_who(entry),
        when=_when(at),
        why=f" ({cut(escape(why), PULLED_REASON)})" if why else "",
    )


def outcome_of(mv: ModelVersion) -> Outcome | None:
    """Return the recorded decision on a version, or None if it has none yet.

    A rejection by the person who requested the version is their withdrawal.
    """
    decision = mv.tag("decision")
    if decision not in VERBS:
        return None
    actors = [u for u in mv.tag("decided_by").split(",") if u]
    asked = {mv.tag("requested_by").lower(), mv.tag("requested_by_user").lower()} - {""}
    withdrawn = decision == "rejected" and bool(actors) and actors[0].lower() in asked
    return Outcome(
        WITHDRAWN if withdrawn else VERBS[decision],
        actors,
        time_of(mv, "decided_at") or 0.0,
        mv.tag("reason") if decision != "approved" else "",
        by_requester=withdrawn,
    )


def standing(mv: ModelVersion) -> Standing | None:
    """Say where a decided version stands now, from its stage and its log; None if undecided."""
    outcome = outcome_of(mv)
    if outcome is None or mv.stage not in ("Production", "Archived"):
        return None
    moves = [e for e in history_of(mv) if e.get("type") in _MOVES]
    last = moves[-1] if moves else {}
    if mv.stage == "Production":
        return _in_production(mv, last)
    state = "Approved, now Archived" if outcome.verb == "Approved" else outcome.verb
    return _archived(mv, last, state)


IN_PRODUCTION_STATES = ("Approved, in Production", "Production again")


def _in_production(mv: ModelVersion, last: dict) -> Standing:
    since = _when(time_of(mv, "production_since") or parse_time(last.get("at")))
    if last.get("type") != "rolled_back":
        return Standing(IN_PRODUCTION_STATES[0], IN_PRODUCTION.format(since=since))
    origin = f" from v{escape(last['previous_version'])}" if last.get("previous_version") else ""
    line = BACK_IN_PRODUCTION.format(since=since, who=_who(last), origin=origin)
    return Standing(IN_PRODUCTION_STATES[1], line, str(last.get("reason") or ""))


def _archived(mv: ModelVersion, last: dict, state: str) -> Standing:
    since = _when(time_of(mv, "archived_at") or parse_time(last.get("at")))
    if last.get("type") != "archived":  # rejected, withdrawn, expired: the outcome says why
        return Standing(state, ARCHIVED.format(since=since))
    if last.get("via") == "rollback" and last.get("replaced_by"):
        why = str(last.get("reason", "")).partition(": ")[2]  # "rolled back to v1: <why>"
        line = ROLLED_AWAY.format(since=since, who=_who(last), by=escape(last["replaced_by"]))
        return Standing(state, line, why)
    if last.get("replaced_by"):
        return Standing(state, REPLACED.format(since=since, by=escape(last["replaced_by"])))
    # Records written before the log named the successor say it in the reason.
    return Standing(state, ARCHIVED.format(since=since), str(last.get("reason") or ""))


def _when(at: float | None) -> str:
    return format_time(at) if at is not None else "an unrecorded time"


def _who(entry: dict) -> str:
    return mention(entry["actor"]) if entry.get("actor") else "someone"


def status_text(
    model: str,
    versions: Sequence[ModelVersion],
    required: int,
    *,
    url: str = "",
    limit: int = MESSAGE_TEXT,
) -> str:
    """Describe the Production and Staging versions with metrics and approvals, in at most
    `limit` characters: the versions beyond are counted, with a link to the model's `url`."""
    if not versions:
        return f"No model named {escape(model)} in the registry."
    lines = [f"*{escape(model)}*"]
    prod = [mv for mv in versions if mv.stage == "Production"]
    lines += [_production_line(mv) for mv in prod] or ["Production: none"]
    staging = [mv for mv in versions if mv.stage == "Staging"]
    lines += [_staging_line(mv, required) for mv in staging] or ["Staging: none"]
    lines = [cut(line, SECTION_TEXT) for line in lines]
    return fit_lines(lines, limit, link=mlflow_link(url))


def history_entries(versions: Sequence[ModelVersion], count: int) -> list[dict]:
    """Return the model's last `count` lifecycle changes across versions, newest first."""
    entries = [{**e, "version": mv.version} for mv in versions for e in history_of(mv)]
    entries.sort(key=lambda e: (-(parse_time(e.get("at")) or 0.0), _RANK.get(e.get("type", ""), 0)))
    return entries[:count]


def history_text(
    model: str,
    versions: Sequence[ModelVersion],
    count: int,
    *,
    url: str = "",
    limit: int = MESSAGE_TEXT,
) -> str:
    """Render the last `count` lifecycle changes, newest first, in at most `limit` characters:
    the changes beyond are counted, with a link to the model's `url`."""
    if not versions:
        return f"No model named {escape(model)} in the registry."
    entries = history_entries(versions, count)
    if not entries:
        return f"No recorded changes for {escape(model)} yet."
    by_version = {mv.version: mv for mv in versions}
    lines = [f"*{escape(model)}*: last {plural(len(entries), 'change')}"]
    lines += [_entry_line(by_version[e["version"]], e) for e in entries]
    return fit_lines(lines, limit, link=mlflow_link(url))


# What each recorded change is called where people read it (history, the Home tab): never
# the event's own name (`gate_failed`), and a rollback named by both its ends.
CHANGE_WORDS = {
    "staged": "staged",
    "approval": "approval counted",
    "promoted": "promoted to Production",
    "rejected": "rejected",
    "archived": "archived",
    "expired": "expired unanswered",
    "canary_passed": "passed its canary",
    "canary_failed": "failed its canary",
    "out_of_band": "changed outside registry-bot",
    "accepted": "out-of-band change accepted",
    "alert_received": "alert received",
    "gate_failed": "kept out of Staging by its gates",
}


def change_words(mv: ModelVersion, entry: Mapping[str, object]) -> str:
    """Say what one recorded change did to `mv` (mrkdwn, escaped): `v3 staged`, `rolled back
    from v3 to v1`, `v2 withdrawn` (a rejection by its requester)."""
    # The log is a tag anyone with MLflow access may edit: every field of it is outside text.
    kind, version = str(entry.get("type", "?")), escape(mv.version)
    previous = escape(str(entry.get("previous_version") or ""))
    if kind == "rolled_back":
        return f"rolled back from v{previous} to v{version}" if previous else f"v{version} restored"
    if kind == "reverted":
        undone = ", ".join(f"v{v}" for v in previous.split(",") if v)
        return f"v{version} restored by a revert" + (f" of {undone}" if undone else "")
    if kind == "rejected" and _by_requester(mv, str(entry.get("actor") or "")):
        return f"v{version} withdrawn"
    words = CHANGE_WORDS.get(kind) or escape(kind).replace("_", " ")
    replacing = f" (replacing v{previous})" if kind == "promoted" and previous else ""
    return f"v{version} {words}{replacing}"


def _by_requester(mv: ModelVersion, actor: str) -> bool:
    asked = {mv.tag("requested_by").lower(), mv.tag("requested_by_user").lower()} - {""}
    return bool(actor) and actor.split(",")[0].lower() in asked


def _entry_line(mv: ModelVersion, entry: dict) -> str:
    line = f"{format_time(parse_time(entry.get('at')) or 0.0)} · {change_words(mv, entry)}"
    if entry.get("actor"):
        line += f" by {mentions(entry['actor'])}"
    if entry.get("reason"):
        line += f": {cut(escape(entry['reason']), HISTORY_REASON)}"
    return cut(line, SECTION_TEXT)


def _production_line(mv: ModelVersion) -> str:
    since = time_of(mv, "production_since")
    when = f" since {format_time(since)}" if since is not None else ""
    who = f", approved by {mentions(mv.tag('decided_by'))}" if mv.tag("decided_by") else ""
    return f"Production: v{mv.version}{when}{who}{_metrics(mv)}"


def _staging_line(mv: ModelVersion, required: int) -> str:
    approvals = [u for u in mv.tag("approvals").split(",") if u]
    count = plural(required, "approval")
    return f"Staging: v{mv.version}, {len(approvals)} of {count}{_metrics(mv)}"


def _metrics(mv: ModelVersion) -> str:
    metrics = json.loads(mv.tag("metrics") or "{}")
    return (
        (" · " + ", ".join(f"{escape(k)} {format_number(v)}" for k, v in sorted(metrics.items())))
        if metrics
        else ""
    )
