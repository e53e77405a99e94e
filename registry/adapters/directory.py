"""Who may approve: the model's approvers (or APPROVERS and APPROVER_GROUP), cached briefly.

Only answers are cached. A lookup Slack could not answer (a 5xx or 429 past the
client's retries, a timeout, a missing scope) raises LookupFailed and leaves the
cache as it was, so the decision that needed it is refused with "try again" and
the next click asks Slack afresh (SPEC 8).
"""

from __future__ import annotations

import logging
import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from registry.rules.decisions import Clicker, LookupFailed, model_clicker
from registry.rules.settings import Settings

log = logging.getLogger(__name__)

CACHE_SECONDS = 60.0
# Errors that are Slack's answer ("there is no such user"), not a failure to answer.
NO_SUCH_USER = ("users_not_found", "user_not_found")
# What a Web API call raises when Slack did not answer: its own errors, and the
# network's (URLError and timeouts are OSErrors); a garbled body is a ValueError.
UNANSWERED = (SlackClientError, OSError, ValueError)


class SlackDirectory:
    """An ApproverDirectory over the Web API: approvers and e-mails, with a short cache."""

    def __init__(self, settings: Settings, client: WebClient, *, ttl: float = CACHE_SECONDS):
        self.settings = settings
        self.client = client
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, object]] = {}

    def clicker(self, user: str, *, with_email: bool = False, model: str = "") -> Clicker:
        """Describe `user` for the decision rules, as `model`'s policy sees them."""
        return model_clicker(
            self.settings,
            model,
            user,
            in_group=self.in_group,
            email=self.email(user) if with_email else "",
        )

    def in_group(self, user: str, group: str) -> bool:
        """Say whether `user` belongs to the user group; raise LookupFailed if Slack
        does not say (a failure is never cached)."""
        return user in self._cached(f"group:{group}", lambda: self._members(group))

    def email(self, user: str) -> str:
        """Return the user's e-mail address; raise LookupFailed if Slack does not say."""
        return str(self._cached(f"email:{user}", lambda: self._email(user)))

    def user_for_email(self, email: str) -> str:
        """Return the Slack user ID for an e-mail address, or '' if Slack has no such user."""
        try:
            return self.client.users_lookupByEmail(email=email)["user"]["id"]
        except SlackApiError as exc:
            if exc.response.get("error") in NO_SUCH_USER:
                return ""
            raise _failed("users.lookupByEmail", email, exc) from exc
        except UNANSWERED as exc:
            raise _failed("users.lookupByEmail", email, exc) from exc

    def display_name(self, user: str) -> str:
        """Return the name Slack shows for `user`, or '' if Slack does not say (never raises).

        Unlike the lookups a decision needs, this one does not fail closed: a name is
        only for the record's readers, so a failure costs the name, never the decision
        (and, like any failure, is not cached).
        """
        try:
            return str(self._cached(f"name:{user}", lambda: self._display_name(user)))
        except UNANSWERED as exc:
            log.warning("users.info failed, recording the ID alone: %s", exc, extra={"user": user})
            return ""

    def _display_name(self, user: str) -> str:
        info = self.client.users_info(user=user)["user"]
        profile = info.get("profile") or {}
        name = profile.get("display_name") or profile.get("real_name") or info.get("name")
        return str(name or "")

    def _members(self, group: str) -> frozenset[str]:
        try:
            return frozenset(self.client.usergroups_users_list(usergroup=group)["users"])
        except UNANSWERED as exc:
            raise _failed("usergroups.users.list", group, exc) from exc

    def _email(self, user: str) -> str:
        try:
            profile = self.client.users_info(user=user)["user"].get("profile", {})
        except UNANSWERED as exc:
            raise _failed("users.info", user, exc) from exc
        email = profile.get("email", "")
        if not email:
            # Slack leaves the e-mail out without the users:read.email scope: that is no answer.
            raise _failed("users.info", user, "no e-mail in the profile (users:read.email scope?)")
        return email

    def _cached(self, key: str, load):
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        value = load()  # raises on failure, so nothing failed is cached
        with self._lock:
            self._cache[key] = (now, value)
        return value


def _failed(method: str, subject: str, why: object) -> LookupFailed:
    """Log a Slack lookup that got no answer and return the error to raise."""
    log.warning("slack lookup failed: %s %s: %s", method, subject, why, extra={"user": subject})
    return LookupFailed(f"{method} for {subject} failed: {why}")
