"""The App Home tab: what awaits a user's decision, each model's versions, recent changes. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from registry.rules.decisions import (
    Clicker,
    approvals_on,
    awaits_decision,
    judge_approval,
    judge_rejection,
)
from registry.rules.governance import fill_slots, seated, slot_fills_on, slot_lines
from registry.rules.policy import Slot
from registry.rules.record import history_of, parse_time, time_of
from registry.rules.reports import change_words
from registry.rules.text import (
    SECTION_TEXT,
    VIEW_BLOCKS,
    cut,
    escape,
    fit_lines,
    format_number,
    format_time,
    mention,
    mentions,
    mlflow_link,
    more_line,
    plural,
)
from registry.rules.versions import ModelVersion
from registry.views.blocks import button, context, header, section
from registry.views.notice import (
    APPROVE_ACTION,
    APPROVE_TEXT,
    REJECT_ACTION,
    REJECT_TEXT,
    button_value,
)

BLOCK_LIMIT = VIEW_BLOCKS
WITHDRAW_TEXT = "Withdraw"  # the requester's Reject: the same action, said as what it is
MAX_AWAITING = 20  # two blocks each
MAX_MODELS = 20
MAX_CHANGES = 10
MAX_NAMED = 5  # models named in one warning
HOME_CALLBACK = "registry_bot_home"

TITLE = "registry-bot"
REFRESHED = "Refreshed {at}; open the Home tab again to refresh it."
AWAITING = "Awaiting your decision"
NOTHING_AWAITS = "Nothing awaits your decision."
NOBODY_MAY_DECIDE = (
    ":warning: No approvers are configured for this model (its policy's approvers, or "
    "APPROVERS and APPROVER_GROUP), so nobody can approve it."
)
UNANSWERED = (
    ":warning: Slack could not say who you are just now, so {models} show no buttons here. "
    "Try again in a minute: open the Home tab again."
)
MODELS = "Models"
NO_MODELS = "No model has a Production or Staging version yet."
CHANGES = "Recent changes"
NO_CHANGES = "No lifecycle changes recorded yet."
CHANGE_REASON = 200  # characters of a reason a change line shows, escaped


@dataclass(frozen=True)
class ModelRule:
    """How one model's policy sees this user, and what its Production needs.

    `clicker` is None when Slack could not say who the user is: the model then offers
    them no button at all (fail closed). With `slots`, Production needs every slot full
    and `required` is their sum; without, `required` approvals of any approvers.
    """

    clicker: Clicker | None
    required: int
    slots: tuple[Slot, ...] = ()


@dataclass(frozen=True)
class Decidable:
    """A Staging version this user may act on, and which of the two buttons they get."""

    mv: ModelVersion
    may_approve: bool
    may_reject: bool
    withdraw: bool = False  # Reject is the requester's own withdraw
    nobody_may_approve: bool = False  # its model has no approvers: shown, with a warning


def awaiting_decision(
    versions: Sequence[ModelVersion], rules: Mapping[str, ModelRule]
) -> list[Decidable]:
    """Return the Staging versions awaiting a decision that the user may take, newest first.

    A version of a model nobody may approve is listed for everyone, to say so.
    """
    found = [
        item
        for mv in versions
        if mv.stage == "Staging" and (item := _decidable(mv, rules[mv.name])) is not None
    ]
    return sorted(found, key=_staged_at, reverse=True)


def _decidable(mv: ModelVersion, rule: ModelRule) -> Decidable | None:
    """Judge `mv` as the worker will judge the user's click on it; None: nothing to show."""
    clicker = rule.clicker
    if clicker is None:
        return None
    # Only a click that would count means a button: a full slot or no slot is "done".
    verdict = judge_approval(mv, clicker, required=rule.required, slots=rule.slots)
    approve = verdict.action in ("count", "promote")
    # Reject is also the requester's withdraw, approver or not (registry.rules.decisions).
    rejection = judge_rejection(mv, clicker).action
    reject = rejection in ("reject", "withdraw")
    nobody = clicker.nobody_may_approve and awaits_decision(mv)
    if not (approve or reject or nobody):
        return None
    return Decidable(
        mv, approve, reject, withdraw=rejection == "withdraw", nobody_may_approve=nobody
    )


def home_view(
    versions: Sequence[ModelVersion],
    *,
    rules: Mapping[str, ModelRule],
    now: float,
    url: str = "",
) -> dict:
    """Build the user's Home tab from every version in the registry (at most 100 blocks).

    `rules` holds a rule for every model that has a Staging version; `url`, MLflow's list
    of models, is where the models the tab has no room for can be read.
    """
    blocks: list[dict] = [
        header(TITLE),
        context(REFRESHED.format(at=format_time(now))),
        *_awaiting_blocks(versions, rules),
        {"type": "divider"},
        *_model_blocks(versions, rules, mlflow_link(url)),
        {"type": "divider"},
        *_change_blocks(versions),
    ]
    return {"type": "home", "callback_id": HOME_CALLBACK, "blocks": blocks[:BLOCK_LIMIT]}


def _awaiting_blocks(
    versions: Sequence[ModelVersion], rules: Mapping[str, ModelRule]
) -> list[dict]:
    blocks = [header(AWAITING)]
    unanswered = _unanswered(versions, rules)
    if unanswered:
        blocks.append(context(UNANSWERED.format(models=_named(unanswered))))
    pending = awaiting_decision(versions, rules)
    if not pending and not unanswered:
        return [*blocks, section(NOTHING_AWAITS)]
    for index, item in enumerate(pending[:MAX_AWAITING]):
        blocks += _entry(item, rules[item.mv.name], index)
    if len(pending) > MAX_AWAITING:
        blocks.append(context(more_line(len(pending) - MAX_AWAITING)))
    return blocks


def _unanswered(versions: Sequence[ModelVersion], rules: Mapping[str, ModelRule]) -> list[str]:
    """Return the models with a version to decide whose rule Slack could not give."""
    names = {
        mv.name
        for mv in versions
        if mv.stage == "Staging" and rules[mv.name].clicker is None and awaits_decision(mv)
    }
    return sorted(names)


def _named(names: Sequence[str]) -> str:
    shown = ", ".join(escape(name) for name in names[:MAX_NAMED])
    if len(names) > MAX_NAMED:
        shown += " " + more_line(len(names) - MAX_NAMED)
    return shown


def _entry(item: Decidable, rule: ModelRule, index: int) -> list[dict]:
    """Return a version's section, and its buttons if it has any (Slack refuses none)."""
    count, slots = _tally(item.mv, rule)
    warning = [NOBODY_MAY_DECIDE] if item.nobody_may_approve else []
    lines = [_headline(item.mv), f"{count}{_metrics(item.mv)}", *warning, *slots]
    entry = [section(fit_lines(lines, SECTION_TEXT))]
    if item.may_approve or item.may_reject:
        entry.append(_buttons(item, index))
    return entry


def _headline(mv: ModelVersion) -> str:
    who = mv.tag("requested_by")
    line = f"*{escape(mv.name)} v{mv.version}* in Staging"
    return line + (f", requested by {mention(who)}" if who else "")


def _tally(mv: ModelVersion, rule: ModelRule) -> tuple[str, list[str]]:
    """Say how many approvals count, by the model's own rule, and each slot's line if any."""
    approvals = approvals_on(mv)
    if not rule.slots:
        return f"{len(approvals)} of {plural(rule.required, 'approval')}", []
    # Seated as the worker seats them: one person, one slot (registry.rules.governance).
    filled = fill_slots(rule.slots, slot_fills_on(mv), approvals)
    needed = sum(slot.count for slot in rule.slots)
    return f"{seated(filled)} of {plural(needed, 'approval')}", slot_lines(rule.slots, filled)


def _buttons(item: Decidable, index: int) -> dict:
    mv = item.mv
    value = button_value(mv.name, mv.version)
    # A withdraw names the requester, as the notice's Reject does, so that the bot lets
    # them open the modal even when they are no approver.
    requester = (mv.tag("requested_by_user") or mv.tag("requested_by")) if item.withdraw else ""
    elements = []
    if item.may_approve:
        elements.append(button(APPROVE_TEXT, APPROVE_ACTION, value, "primary"))
    if item.may_reject:
        reject = button_value(mv.name, mv.version, requester)
        text = WITHDRAW_TEXT if item.withdraw else REJECT_TEXT
        elements.append(button(text, REJECT_ACTION, reject, "danger"))
    # Block ids must be unique in a view; action ids are the notice's, so the same listeners run.
    return {"type": "actions", "block_id": f"home_decide_{index}", "elements": elements}


def _model_blocks(
    versions: Sequence[ModelVersion], rules: Mapping[str, ModelRule], link: str
) -> list[dict]:
    live = [mv for mv in versions if mv.stage in ("Production", "Staging")]
    by_model: dict[str, list[ModelVersion]] = {}
    for mv in sorted(live, key=_last_change, reverse=True):
        by_model.setdefault(mv.name, []).append(mv)
    blocks = [header(MODELS)]
    if not by_model:
        return [*blocks, section(NO_MODELS)]
    for name, mvs in list(by_model.items())[:MAX_MODELS]:
        blocks.append(section(_model_text(name, mvs, rules)))
    if len(by_model) > MAX_MODELS:
        blocks.append(context(more_line(len(by_model) - MAX_MODELS, link)))
    return blocks


def _model_text(name: str, mvs: Sequence[ModelVersion], rules: Mapping[str, ModelRule]) -> str:
    lines = [f"*{escape(name)}*"]
    prod = [mv for mv in mvs if mv.stage == "Production"]
    lines += [_production_line(mv) for mv in prod] or ["Production: none"]
    staging = sorted((mv for mv in mvs if mv.stage == "Staging"), key=lambda m: -int(m.version))
    lines += [_staging_line(mv, rules[name]) for mv in staging[:5]] or ["Staging: none"]
    return fit_lines(lines, SECTION_TEXT)


def _staging_line(mv: ModelVersion, rule: ModelRule) -> str:
    count, _ = _tally(mv, rule)
    approvals = approvals_on(mv)
    return f"Staging: v{mv.version}, {count}" + (f" ({mentions(approvals)})" if approvals else "")


def _production_line(mv: ModelVersion) -> str:
    since = time_of(mv, "production_since")
    when = f" since {format_time(since)}" if since is not None else ""
    who = mv.tag("rolled_back_by") if mv.tag("rolled_back_by") else mv.tag("decided_by")
    how = "restored by" if mv.tag("rolled_back_by") else "approved by"
    return f"Production: v{mv.version}{when}" + (f", {how} {mentions(who)}" if who else "")


def _change_blocks(versions: Sequence[ModelVersion]) -> list[dict]:
    entries = [(mv, e) for mv in versions for e in history_of(mv)]
    entries.sort(key=lambda pair: parse_time(pair[1].get("at")) or 0.0, reverse=True)
    lines = [_change_line(mv, e) for mv, e in entries[:MAX_CHANGES]]
    return [header(CHANGES), section(fit_lines(lines, SECTION_TEXT) if lines else NO_CHANGES)]


def _change_line(mv: ModelVersion, entry: dict) -> str:
    at = format_time(parse_time(entry.get("at")) or 0.0)
    line = f"{at} · {escape(mv.name)} {change_words(mv, entry)}"
    if entry.get("actor"):
        line += f" by {mentions(str(entry['actor']))}"
    if entry.get("reason"):
        line += f": {cut(escape(str(entry['reason'])), CHANGE_REASON)}"
    return cut(line, SECTION_TEXT)


def _staged_at(item: Decidable) -> tuple[float, int]:
    return time_of(item.mv, "staged_at") or 0.0, int(item.mv.version)


def _last_change(mv: ModelVersion) -> float:
    entries = history_of(mv)
    times = (parse_time(e.get("at")) or 0.0 for e in entries)
    return max(times, default=mv.created_at / 1000)


def _metrics(mv: ModelVersion) -> str:
    try:
        metrics = json.loads(mv.tag("metrics") or "{}")
    except ValueError:
        return ""
    if not isinstance(metrics, dict):
        return ""
    numbers = sorted((k, v) for k, v in metrics.items() if isinstance(v, int | float))
    if not numbers:
        return ""
    shown = ", ".join(f"{escape(str(k))} {format_number(v)}" for k, v in numbers[:6])
    return f" · {shown}"
