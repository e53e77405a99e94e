"""Whether a click may approve or reject a version, and what to tell the clicker: pure."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from registry.rules.governance import (
    all_filled,
    approvers_of,
    eligible_slots,
    fill_slots,
    is_model_approver,
    missing_text,
    nobody_may_approve,
    seated,
    slot_fills_on,
    slots_of,
)
from registry.rules.policy import Slot
from registry.rules.record import time_of
from registry.rules.settings import Settings
from registry.rules.text import escape, format_time, mentions
from registry.rules.versions import TAG, ModelVersion

NOT_APPROVER = "Only approvers may {verb} model versions; you are not one."
NOT_APPROVER_NOR_REQUESTER = (
    "Only approvers may reject model versions, and a requester may withdraw their own; "
    "you are neither an approver nor the requester of this one."
)
NO_APPROVERS = "No approvers are configured (APPROVERS or APPROVER_GROUP), so nobody may {verb}."
OWN_VERSION = "You requested {name} v{version}, so someone else has to approve it."
ASKED_VERSION = "You asked for {name} v{version} in MLflow, so someone else has to approve it."
CANARY_RUNNING = (
    "{name} v{version} is already approved and in its canary window until {until}; nothing changed."
)
ALREADY_APPROVED_BY_YOU = "You already approved {name} v{version} ({count})."
IN_NO_SLOT = (
    "{name} v{version} needs approvals from {missing}; you are in none of those, so your "
    "click fills no slot. Nothing changed."
)
SLOT_FULL = (
    "Your slot on {name} v{version} is already full; still missing: {missing}. Nothing changed."
)
FROZEN_WAITING = (
    "{name} v{version} is already approved and waits for the change freeze to end "
    "({until}); nothing changed."
)
TRY_AGAIN = (
    "Slack could not tell registry-bot who you are just now, so nothing changed and nothing "
    "was counted. Please try again in a minute."
)


ASKED_BY = "asked_in_mlflow_by"  # one tag a person who asked through MLflow: see asker_key
ASKED_AT = "asked_in_mlflow_at"  # when a move into Production was first asked for in MLflow


class LookupFailed(RuntimeError):
    """Slack could not say who someone is (users.info, users.lookupByEmail, a user group)."""


@dataclass(frozen=True)
class Clicker:
    """Who clicked, as far as the decision needs to know."""

    user: str
    email: str = ""
    is_approver: bool = False
    nobody_may_approve: bool = False
    slots: tuple[str, ...] = ()  # keys of the model's approval slots this user may fill


@dataclass(frozen=True)
class Verdict:
    """What a click does: 'refused', 'done' (nothing to do), 'count', 'promote', 'reject'
    or 'withdraw' (the requester's own rejection)."""

    action: str
    message: str = ""


def model_clicker(
    settings: Settings,
    model: str,
    user: str,
    *,
    in_group: Callable[[str, str], bool],
    email: str = "",
) -> Clicker:
    """Describe `user` as the model's policy sees them (`in_group` raising fails closed).

    Without a model entry (or with model ''), the defaults: APPROVERS and APPROVER_GROUP.
    """
    slots = eligible_slots(user, slots_of(settings, model), in_group)
    return Clicker(
        user=user,
        email=email,
        is_approver=is_model_approver(user, approvers_of(settings, model), slots, in_group),
        nobody_may_approve=nobody_may_approve(settings, model),
        slots=slots,
    )


def judge_approval(
    mv: ModelVersion, clicker: Clicker, *, required: int, slots: Sequence[Slot] = ()
) -> Verdict:
    """Decide what an Approve click on `mv` does (with `slots`, by the model's slots)."""
    refusal = _refusal(clicker, "approve") or _settled(mv)
    if refusal:
        return refusal
    if is_requester(mv, clicker):
        return Verdict("refused", OWN_VERSION.format(name=escape(mv.name), version=mv.version))
    if is_asker(mv, clicker):
        return Verdict("refused", ASKED_VERSION.format(name=escape(mv.name), version=mv.version))
    approvals = approvals_on(mv)
    if slots:
        return _judge_slots(mv, clicker, slots, approvals)
    if clicker.user in approvals:
        count = f"{len(approvals)} of {required} approvals"
        return Verdict(
            "done",
            ALREADY_APPROVED_BY_YOU.format(name=escape(mv.name), version=mv.version, count=count),
        )
    if len(approvals) + 1 >= required:
        return Verdict("promote")
    return Verdict("count")


def _judge_slots(
    mv: ModelVersion, clicker: Clicker, slots: Sequence[Slot], approvals: list[str]
) -> Verdict:
    """Seat the clicker in an open slot if any can be had; promote when all are full."""
    eligible = slot_fills_on(mv)
    before = fill_slots(slots, eligible, approvals)
    if clicker.user in approvals:
        count = f"{seated(before)} of {sum(s.count for s in slots)} approvals"
        return Verdict(
            "done",
            ALREADY_APPROVED_BY_YOU.format(name=escape(mv.name), version=mv.version, count=count),
        )
    after = fill_slots(slots, {**eligible, clicker.user: clicker.slots}, [*approvals, clicker.user])
    if seated(after) == seated(before):
        template = SLOT_FULL if clicker.slots else IN_NO_SLOT
        missing = missing_text(slots, before)
        return Verdict(
            "done", template.format(name=escape(mv.name), version=mv.version, missing=missing)
        )
    return Verdict("promote" if all_filled(slots, after) else "count")


def judge_rejection(mv: ModelVersion, clicker: Clicker) -> Verdict:
    """Decide what a Reject (or its modal's submission) on `mv` does: 'reject' or 'withdraw'.

    The requester may always withdraw their own candidate, approver or not (SPEC 6):
    that never promotes anything.
    """
    if is_requester(mv, clicker):
        return _settled(mv) or Verdict("withdraw")
    return _rejection_refusal(clicker) or _settled(mv) or Verdict("reject")


def may_reject(clicker: Clicker, requester: str) -> str:
    """Return why `clicker` may not open the Reject modal of a candidate `requester` asked for.

    '' when they may: an approver, or the requester (a Slack user ID or e-mail) themselves.
    The worker decides again from the record (`judge_rejection`).
    """
    mine = {clicker.user.lower(), clicker.email.lower()} - {""}
    if requester and requester.lower() in mine:
        return ""
    refusal = _rejection_refusal(clicker)
    return refusal.message if refusal else ""


def may_decide(clicker: Clicker, verb: str) -> str:
    """Return why `clicker` may not `verb`, or '' when they may."""
    refusal = _refusal(clicker, verb)
    return refusal.message if refusal else ""


def is_requester(mv: ModelVersion, clicker: Clicker) -> bool:
    """Say whether the clicker is the version's requester, by user ID or e-mail: the one
    person who may withdraw it (SPEC 6). Asking for it in MLflow makes nobody its requester."""
    return _named(clicker, mv.tag("requested_by"), mv.tag("requested_by_user"))


def is_asker(mv: ModelVersion, clicker: Clicker) -> bool:
    """Say whether the clicker asked for the version through MLflow (the gate's transition
    requests, SPEC 14): that bars them from approving it, and gives them nothing else."""
    return _named(clicker, *asked_in_mlflow(mv))


def _named(clicker: Clicker, *people: str) -> bool:
    named = {same_person(who) for who in people} - {""}
    mine = {same_person(clicker.user), same_person(clicker.email)} - {""}
    return bool(named & mine)


def same_person(name: str) -> str:
    """Return `name` as people are compared: trimmed, case folded (a Slack ID, an e-mail)."""
    return name.strip().casefold()


def asker_key(asked_by: str) -> str:
    """Return the record's key for one person who asked in MLflow (after `registry_bot.`).

    One tag a person, never a list in one tag: a list must be capped somewhere, and then
    enough people asking after someone would drop them and let them approve. The key is a
    digest of the name, which MLflow takes as a tag key whatever the name holds, and the
    same however the server cases or pads it.
    """
    return f"{ASKED_BY}.{hashlib.sha256(same_person(asked_by).encode()).hexdigest()}"


def asked_in_mlflow(mv: ModelVersion) -> list[str]:
    """Return who asked for the version in MLflow (SPEC 14), as the record names them."""
    prefix = f"{TAG}{ASKED_BY}."
    return sorted(who for key, who in mv.tags.items() if key.startswith(prefix) and who)


def needs_email(mv: ModelVersion) -> bool:
    """Say whether telling a clicker from the version's requesters needs their e-mail: one
    of them is known by an e-mail address alone."""
    unresolved = "@" in mv.tag("requested_by") and not mv.tag("requested_by_user")
    return unresolved or any("@" in who for who in asked_in_mlflow(mv))


def awaits_decision(mv: ModelVersion) -> bool:
    """Say whether the version still waits for someone to approve or reject it."""
    return _settled(mv) is None


def approvals_on(mv: ModelVersion) -> list[str]:
    """Return the distinct approvers recorded on the version, in order."""
    return [u for u in mv.tag("approvals").split(",") if u]


def settled_message(mv: ModelVersion) -> str:
    """Say what already happened to a version that is no longer awaiting a decision."""
    decision = mv.tag("decision")
    by = mv.tag("decided_by")
    at = time_of(mv, "decided_at")
    when = f" at {format_time(at)}" if at is not None else ""
    who, name = mentions(by), escape(mv.name)
    if decision:
        return f"{name} v{mv.version} was already {decision} by {who or 'someone'}{when}."
    return (
        f"{name} v{mv.version} is no longer in Staging (now {mv.stage}); it was moved "
        "outside registry-bot, in MLflow itself. Nothing changed."
    )


def _refusal(clicker: Clicker, verb: str) -> Verdict | None:
    if clicker.nobody_may_approve:
        return Verdict("refused", NO_APPROVERS.format(verb=verb))
    if not clicker.is_approver:
        return Verdict("refused", NOT_APPROVER.format(verb=verb))
    return None


def _rejection_refusal(clicker: Clicker) -> Verdict | None:
    refusal = _refusal(clicker, "reject")
    if refusal and not clicker.nobody_may_approve:
        return Verdict("refused", NOT_APPROVER_NOR_REQUESTER)
    return refusal


def _settled(mv: ModelVersion) -> Verdict | None:
    if mv.stage != "Staging" or mv.tag("decision"):
        return Verdict("done", settled_message(mv))
    if mv.tag("canary_state") in ("running", "passed"):
        until = format_time(time_of(mv, "canary_until") or 0.0)
        text = CANARY_RUNNING.format(name=escape(mv.name), version=mv.version, until=until)
        return Verdict("done", text)
    if mv.tag("freeze_state") == "waiting":
        until = mv.tag("freeze_until_text") or format_time(time_of(mv, "freeze_until") or 0.0)
        text = FROZEN_WAITING.format(name=escape(mv.name), version=mv.version, until=until)
        return Verdict("done", text)
    if mv.tag("gates") == "failed":
        return Verdict(
            "done",
            f"{escape(mv.name)} v{mv.version} failed its promotion gates; "
            "there is nothing to decide.",
        )
    return None
