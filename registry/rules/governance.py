"""Per-model routing, approval slots, change freezes and out-of-band Production: pure rules.

The policy file (registry.rules.policy) says what a model's channel, approvers, approval
slots, protection and freezes are; this module answers what follows from them for
one moment and one set of versions, without I/O (time comes in as a number).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from registry.rules.policy import Approvers, Freeze, Slot
from registry.rules.record import history_of, parse_time
from registry.rules.settings import Settings
from registry.rules.text import escape, mention, mentions, plural
from registry.rules.versions import ModelVersion

SLOT_FILLS_TAG = "slot_fills"  # {user: [slot keys they could fill]} at the time of their click
# Record entries through which registry-bot made (or accepted) a version Production.
SANCTION_TYPES = ("promoted", "rolled_back", "reverted", "accepted")
# Windows that start before the last one ends are one freeze; a schedule that never lets
# go (every minute, lasting an hour) is followed this many starts, then shown as is.
FREEZE_STEPS = 2000
FILLED_MARK = "✅"
OPEN_MARK = "⬜"


# --- who may approve a model, and where it is discussed ---


def channel_of(settings: Settings, model: str, fallback: str = "") -> str:
    """Return the model's channel: its policy's, else `fallback` or SLACK_CHANNEL."""
    return settings.policy.for_model(model).channel or fallback or settings.slack_channel


def approvers_of(settings: Settings, model: str) -> Approvers:
    """Return the model's approvers: its policy's, else APPROVERS and APPROVER_GROUP."""
    chosen = settings.policy.for_model(model).approvers
    if chosen is not None:
        return chosen
    groups = (settings.approver_group,) if settings.approver_group else ()
    return Approvers(users=settings.approvers, groups=groups)


def slots_of(settings: Settings, model: str) -> tuple[Slot, ...]:
    """Return the model's approval slots; () means REQUIRED_APPROVALS of any approvers."""
    return settings.policy.for_model(model).approvals


def required_of(settings: Settings, model: str) -> int:
    """Return how many approvals Production needs for the model."""
    slots = slots_of(settings, model)
    return sum(slot.count for slot in slots) if slots else settings.required_approvals


def nobody_may_approve(settings: Settings, model: str) -> bool:
    """Say whether the model has no approver at all (never 'anyone')."""
    who = approvers_of(settings, model)
    return not (who.users or who.groups or slots_of(settings, model))


def eligible_slots(
    user: str, slots: Sequence[Slot], in_group: Callable[[str, str], bool]
) -> tuple[str, ...]:
    """Return the keys of the slots `user` may fill (`in_group` may raise: fail closed)."""
    return tuple(s.key for s in slots if user in s.users or (s.group and in_group(user, s.group)))


def is_model_approver(
    user: str, approvers: Approvers, slot_keys: Sequence[str], in_group: Callable[[str, str], bool]
) -> bool:
    """Say whether `user` is one of the approvers, or may fill one of the model's slots."""
    if user in approvers.users or slot_keys:
        return True
    return any(in_group(user, group) for group in approvers.groups)


def approvers_line(settings: Settings, model: str) -> str:
    """Describe the model's approvers for status and history."""
    who = approvers_of(settings, model)
    names = [mention(u) for u in who.users] + [f"group {g}" for g in who.groups]
    slots = slots_of(settings, model)
    if slots:
        needs = "; ".join(f"{s.count} from {slot_label(s)}" for s in slots)
    else:
        needs = plural(settings.required_approvals, "approval")
    if nobody_may_approve(settings, model):
        return "Approvers: none configured, so nobody may approve"
    shown = ", ".join(names) or "those in the slots"
    return f"Approvers: {shown}; Production needs {needs}"


# --- approval slots ---


def slot_label(slot: Slot) -> str:
    """Name a slot for people: its group and/or its users."""
    parts = ([f"group {slot.group}"] if slot.group else []) + (
        [mentions(slot.users)] if slot.users else []
    )
    return " or ".join(parts)


def slot_fills_on(mv: ModelVersion) -> dict[str, list[str]]:
    """Return the recorded slot eligibility of each approver of the version."""
    try:
        data = json.loads(mv.tag(SLOT_FILLS_TAG) or "{}")
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(u): [str(k) for k in keys] for u, keys in data.items() if isinstance(keys, list)}


def fill_slots(
    slots: Sequence[Slot], eligible: Mapping[str, Iterable[str]], order: Sequence[str]
) -> dict[str, list[str]]:
    """Seat approvers in slots, as many as can be: each person in one slot at most.

    A maximum matching (augmenting paths), so a person who belongs to two groups never
    blocks a slot someone else could fill. Earlier approvers keep earlier seats.
    """
    seats = [(s.key, i) for s in slots for i in range(s.count)]
    holder: dict[int, str] = {}
    for user in dict.fromkeys(order):
        _seat(user, seats, {u: set(k) for u, k in eligible.items()}, holder, set())
    filled: dict[str, list[str]] = {s.key: [] for s in slots}
    for index in sorted(holder):
        filled[seats[index][0]].append(holder[index])
    return filled


def _seat(
    user: str,
    seats: list[tuple[str, int]],
    eligible: dict[str, set[str]],
    holder: dict[int, str],
    seen: set[int],
) -> bool:
    mine = [i for i, (key, _) in enumerate(seats) if key in eligible.get(user, set())]
    free = next((i for i in mine if i not in holder), None)
    if free is not None:  # a free seat first, so nobody is moved without need
        holder[free] = user
        return True
    for index in mine:
        if index in seen:
            continue
        seen.add(index)
        if _seat(holder[index], seats, eligible, holder, seen):
            holder[index] = user
            return True
    return False


def seated(filled: Mapping[str, Sequence[str]]) -> int:
    """Return how many seats are taken."""
    return sum(len(users) for users in filled.values())


def all_filled(slots: Sequence[Slot], filled: Mapping[str, Sequence[str]]) -> bool:
    """Say whether every slot has its count."""
    return all(len(filled.get(s.key, ())) >= s.count for s in slots)


def missing_text(slots: Sequence[Slot], filled: Mapping[str, Sequence[str]]) -> str:
    """Say what is still missing, e.g. '1 from group S0RISK'."""
    gaps = [
        f"{s.count - len(filled.get(s.key, ()))} from {slot_label(s)}"
        for s in slots
        if len(filled.get(s.key, ())) < s.count
    ]
    return "; ".join(gaps) or "nothing"


def slot_lines(slots: Sequence[Slot], filled: Mapping[str, Sequence[str]]) -> list[str]:
    """Describe each slot for the notice: who filled it, or how many are missing."""
    lines = []
    for slot in slots:
        users = list(filled.get(slot.key, ()))
        gap = slot.count - len(users)
        mark = FILLED_MARK if gap <= 0 else OPEN_MARK
        who = mentions(users) if users else "nobody yet"
        still = f", {gap} missing" if gap > 0 else ""
        lines.append(f"{mark} {slot_label(slot)} ({slot.count} needed): {who}{still}")
    return lines


# --- change freezes ---


@dataclass(frozen=True)
class FreezeWindow:
    """One freeze window (several back-to-back windows merged), in Unix seconds."""

    start: float
    end: float
    reason: str
    timezone: str

    def until_text(self) -> str:
        """Say when the window ends, in its own time zone."""
        return format_local(self.end, self.timezone)


def format_local(at: float, zone: str) -> str:
    """Format a Unix time in an IANA time zone, naming the zone."""
    local = datetime.fromtimestamp(at, ZoneInfo(zone))
    return f"{local:%Y-%m-%d %H:%M} {zone}"


def active_freeze(freezes: Sequence[Freeze], now: float) -> FreezeWindow | None:
    """Return the freeze in force at `now`, ending when no window follows on, or None."""
    found = [w for f in freezes if (w := _window_at(f, now)) is not None]
    if not found:
        return None
    window = max(found, key=lambda w: w.end)
    return _extended(freezes, window)


def next_freeze(freezes: Sequence[Freeze], now: float) -> FreezeWindow | None:
    """Return the next freeze window to start after `now`, or None."""
    starts = [
        FreezeWindow(start, start + f.duration, f.reason, f.timezone)
        for f in freezes
        if (start := _next_start(f, now)) is not None
    ]
    return min(starts, key=lambda w: w.start, default=None)


def freeze_line(freezes: Sequence[Freeze], now: float) -> str:
    """Describe the active or next freeze for status, or '' when there is none."""
    active = active_freeze(freezes, now)
    if active:
        return f"Freeze: active until {active.until_text()}{_why(active.reason)}"
    upcoming = next_freeze(freezes, now)
    if upcoming:
        start = format_local(upcoming.start, upcoming.timezone)
        return f"Next freeze: {start} until {upcoming.until_text()}{_why(upcoming.reason)}"
    return ""


def _why(reason: str) -> str:
    return f" ({escape(reason)})" if reason else ""


def _window_at(freeze: Freeze, now: float) -> FreezeWindow | None:
    zone = ZoneInfo(freeze.timezone)
    # cronsim never yields its own start: look back from just after now.
    after = datetime.fromtimestamp(now, zone) + timedelta(seconds=1)
    started = _first(CronSim(freeze.schedule, after, reverse=True))
    if started is None or started.timestamp() + freeze.duration <= now:
        return None
    start = started.timestamp()
    return FreezeWindow(start, start + freeze.duration, freeze.reason, freeze.timezone)


def _next_start(freeze: Freeze, now: float) -> float | None:
    started = _first(
        CronSim(freeze.schedule, datetime.fromtimestamp(now, ZoneInfo(freeze.timezone)))
    )
    return started.timestamp() if started is not None else None


def _extended(freezes: Sequence[Freeze], window: FreezeWindow) -> FreezeWindow:
    """Merge every window that starts before this one ends (a bounded look ahead)."""
    end, steps = window.end, 0
    grew = True
    while grew and steps < FREEZE_STEPS:
        grew = False
        for freeze in freezes:
            schedule = CronSim(
                freeze.schedule, datetime.fromtimestamp(window.start, ZoneInfo(freeze.timezone))
            )
            while steps < FREEZE_STEPS and (start := _first(schedule)) is not None:
                steps += 1
                if start.timestamp() > end:
                    break
                if start.timestamp() + freeze.duration > end:
                    end, grew = start.timestamp() + freeze.duration, True
    return FreezeWindow(window.start, end, window.reason, window.timezone)


def _first(schedule: CronSim) -> datetime | None:
    try:
        return next(schedule)
    except (StopIteration, CronSimError, OverflowError, ValueError):
        return None


# --- protected Production ---


@dataclass(frozen=True)
class Sanction:
    """The version registry-bot last made Production ('' for none), and when."""

    version: str
    at: float


@dataclass(frozen=True)
class Drift:
    """An out-of-band change: Production is not what registry-bot last made it."""

    model: str
    sanctioned: str
    since: float
    current: tuple[str, ...]

    @property
    def key(self) -> str:
        """Name this change, so it is alerted once: from what, since when, to what.

        `since` is read from the record (either form of time) and written here as
        seconds, so a key recorded or carried by a button before times were ISO 8601
        still names the same change.
        """
        return f"{self.sanctioned or '-'}@{self.since:.3f}->{','.join(self.current) or '-'}"

    @property
    def subject(self) -> str:
        """Return the version the change is recorded on: the newest in Production, else the
        one that left it."""
        return self.current[-1] if self.current else self.sanctioned


def sanction(versions: Sequence[ModelVersion]) -> Sanction:
    """Return the version registry-bot last made Production, from the durable record.

    It is the version of the newest promoted, rolled_back, reverted or accepted entry,
    unless that same version was archived at or after it (an accepted removal).
    """
    best, holder = 0.0, None
    for mv in versions:
        for entry in history_of(mv):
            at = _at(entry)
            if entry.get("type") in SANCTION_TYPES and (holder is None or at >= best):
                best, holder = at, mv
    if holder is None:
        return Sanction("", 0.0)
    removed = any(
        e.get("type") == "archived" and _at(e) >= best and _at(e) > 0 for e in history_of(holder)
    )
    return Sanction("" if removed else holder.version, best)


def production_now(versions: Sequence[ModelVersion], mode: str, alias: str) -> tuple[str, ...]:
    """Return the versions serving as Production: by stage, or by the production alias."""
    if mode == "aliases":
        serving = [mv.version for mv in versions if alias in mv.aliases]
    else:
        serving = [mv.version for mv in versions if mv.stage == "Production"]
    return tuple(sorted(serving, key=int))


def drift_of(model: str, versions: Sequence[ModelVersion], mode: str, alias: str) -> Drift | None:
    """Return the out-of-band change of the model's Production, or None if there is none."""
    made = sanction(versions)
    current = production_now(versions, mode, alias)
    if current == ((made.version,) if made.version else ()):
        return None
    return Drift(model, made.version, made.at, current)


def adoptable(versions: Sequence[ModelVersion], mode: str, alias: str) -> str:
    """Return the version to adopt as sanctioned Production when protection first looks at a
    model registry-bot never made Production: the one version serving, or ''.

    A model with any sanctioning entry in its record (registry-bot promoted, rolled back,
    reverted or accepted something there) is not adopted: what differs from its record is
    an out-of-band change, whenever it happened.
    """
    governed = any(e.get("type") in SANCTION_TYPES for mv in versions for e in history_of(mv))
    serving = production_now(versions, mode, alias)
    return serving[0] if len(serving) == 1 and not governed else ""


def change_in_flight(versions: Sequence[ModelVersion]) -> bool:
    """Say whether registry-bot itself is half way through changing Production: an approval,
    a rollback or a revert recorded and not yet finished (the sweep finishes each, then looks
    at Production; until then a Production that differs is registry-bot's own doing)."""
    return any(
        (mv.tag("decision") == "approved" and not mv.tag("announced"))
        or mv.tag("revert_intent")
        or rollback_pending(mv)
        for mv in versions
    )


def rollback_pending(mv: ModelVersion) -> bool:
    """Say whether a rollback to this version is recorded but not yet finished."""
    at = mv.tag("rollback_at")
    return bool(at) and mv.tag("rollback_done") != at


def alerted_keys(versions: Sequence[ModelVersion]) -> set[str]:
    """Return the out-of-band changes already alerted or handled, from the record."""
    keys: set[str] = set()
    for mv in versions:
        try:
            found = json.loads(mv.tag("oob_keys") or "[]")
        except ValueError:
            continue
        if isinstance(found, list):
            keys.update(k for k in found if isinstance(k, str))
    return keys


def _at(entry: Mapping) -> float:
    return parse_time(entry.get("at")) or 0.0
