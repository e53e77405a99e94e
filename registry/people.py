"""Readable names beside the Slack user IDs the record keeps, for people reading MLflow.

The record needs IDs (`decided_by`, `approvals`, each log entry's `actor`): they are
what a click is checked against. Someone reading the tags in the MLflow UI needs
names, so each decision also writes `registry_bot.people`, such as
`UADA=ada, URITA=rita`: every person on the version by ID and name, as Slack knew
them when they acted. A name is a courtesy: when Slack cannot say, the IDs stand.
"""

from __future__ import annotations

from collections.abc import Mapping

from registry.services import Services
from registry.versions import ModelVersion

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
