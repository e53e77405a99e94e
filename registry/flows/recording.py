"""Writing the durable record, and the people in it: each change appended to its version's
log and published; names beside IDs; whether a person may still make the change."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

from registry.ports.services import Recipient, Services
from registry.rules.decisions import TRY_AGAIN, LookupFailed, may_decide
from registry.rules.record import entry_tags, event_for, format_stamp, parse_time, prefixed
from registry.rules.versions import ModelVersion

log = logging.getLogger(__name__)


def stamp(svc: Services) -> str:
    """Return the services' clock as the record writes it."""
    return format_stamp(svc.clock())


def record(
    svc: Services,
    mv: ModelVersion,
    change: str,
    *,
    actor: str = "",
    reason: str = "",
    previous: str = "",
    extra: Mapping[str, str] | None = None,
    details: Mapping[str, str] | None = None,
    drop: Sequence[str] = (),
) -> ModelVersion:
    """Append a lifecycle change to the version's durable log, with any extra tags; publish it.

    Return the version with the tags written (and without those dropped), so that the
    caller need not read back what it has just written.

    `details` go into the log entry only (what the notice's state line reads); `drop`
    names state tags the change makes untrue, which are deleted so that no tag
    describes a state the version has left.
    """
    now = svc.clock()
    entry = {"type": change, "at": format_stamp(now), "actor": actor, "reason": reason}
    if previous:
        entry["previous_version"] = previous
    entry.update(details or {})
    written = entry_tags(mv, entry, extra)
    svc.gateway.set_tags(mv.name, mv.version, written)
    stale = [key for key in prefixed(dict.fromkeys(drop, "")) if key in mv.tags]
    if stale:
        svc.gateway.delete_tags(mv.name, mv.version, stale)
    at = parse_time(entry["at"]) or now  # what a reader of the log gets, to the millisecond
    svc.emit(event_for(change, mv.name, mv.version, entry, at=at))
    kept = {k: v for k, v in mv.tags.items() if k not in stale}
    return replace(mv, tags={**kept, **written})


PEOPLE_KEY = "people"  # the tag registry_bot.people


def people_tags(svc: Services, mv: ModelVersion, *users: str) -> dict[str, str]:
    """Return `{"people": ...}` naming these users and the version's requester, or {}."""
    requester = mv.tag("requested_by_user") or mv.tag("requested_by")
    wanted = [u for u in dict.fromkeys((*users, requester)) if is_user_id(u)]
    known = people_on(mv)
    found = {u: svc.directory.display_name(u) for u in wanted if u not in known}
    named = {u: _clean(name) for u, name in found.items() if _clean(name)}
    return {PEOPLE_KEY: format_people({**known, **named})} if named else {}


def people_on(mv: ModelVersion) -> dict[str, str]:
    """Return the names the version's record has, by user ID."""
    pairs = (part.partition("=") for part in mv.tag(PEOPLE_KEY).split(","))
    return {user.strip(): name.strip() for user, _, name in pairs if user.strip() and name}


def format_people(names: Mapping[str, str]) -> str:
    """Write names as the tag keeps them: `UADA=ada, URITA=rita`."""
    return ", ".join(f"{user}={name}" for user, name in sorted(names.items()))


def is_user_id(user: str) -> bool:
    """Say whether `user` is a Slack user ID (not an e-mail, `canary` or `registry-bot`)."""
    return bool(user) and user[0] in "UW" and user.isalnum() and user.isupper()


def _clean(name: str) -> str:
    # The tag separates people with commas and IDs from names with "=".
    return " ".join(name.replace(",", " ").replace("=", " ").split())[:80]


# Who may change a model is asked again where the change happens: in the worker, under its
# lock. The doors refuse a non-approver at once, but a task runs later (a person may have
# left the approvers meanwhile), and a task on the queue names its person without proof
# (anyone who can write to Redis can queue one). So every task that changes the registry
# on a person's behalf asks Slack, through the model's policy, whether that person may do
# it now, before it writes anything; when Slack cannot say, the answer is no (SPEC 8).
def authorised(svc: Services, *, user: str, verb: str, model: str, to: Recipient) -> bool:
    """Say whether `user` may `verb` on `model` now; if not, tell them why and log it."""
    try:
        refusal = may_decide(svc.directory.clicker(user, model=model), verb)
    except LookupFailed as exc:  # fail closed: never act on a guess
        log.warning("refused, lookup failed: %s", exc, extra={"model": model, "user": user})
        svc.notifier.tell(to, TRY_AGAIN)
        return False
    if refusal:
        log.warning("refused %s where it would change", verb, extra={"model": model, "user": user})
        svc.notifier.tell(to, refusal)
        return False
    return True
