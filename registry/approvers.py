"""Who may approve: the APPROVERS list and the members of APPROVER_GROUP, cached briefly."""

from __future__ import annotations

import logging
import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from registry.decisions import Clicker
from registry.settings import Settings

CACHE_SECONDS = 60.0

log = logging.getLogger(__name__)


class SlackDirectory:
    """An ApproverDirectory over the Web API: approvers and e-mails, with a short cache."""

    def __init__(self, settings: Settings, client: WebClient, *, ttl: float = CACHE_SECONDS):
        self.settings = settings
        self.client = client
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, object]] = {}

    def clicker(self, user: str, *, with_email: bool = False) -> Clicker:
        """Describe `user` for the decision rules."""
        return Clicker(
            user=user,
            email=self.email(user) if with_email else "",
            is_approver=self.is_approver(user),
            nobody_may_approve=self.settings.nobody_may_approve,
        )

    def is_approver(self, user: str) -> bool:
        """Say whether `user` is listed in APPROVERS or belongs to APPROVER_GROUP."""
        if user in self.settings.approvers:
            return True
        group = self.settings.approver_group
        return bool(group) and user in self._cached(f"group:{group}", lambda: self._members(group))

    def email(self, user: str) -> str:
        """Return the user's e-mail address, or '' if Slack does not say."""
        return str(self._cached(f"email:{user}", lambda: self._email(user)))

    def user_for_email(self, email: str) -> str:
        """Return the Slack user ID for an e-mail address, or '' if there is none."""
        try:
            return self.client.users_lookupByEmail(email=email)["user"]["id"]
        except SlackApiError:
            return ""

    def display_name(self, user: str) -> str:
        """Return the name Slack shows for `user`, or '' if Slack does not say (never raises)."""
        return str(self._cached(f"name:{user}", lambda: self._display_name(user)))

    def _display_name(self, user: str) -> str:
        # Only for the record's readers: a failed lookup costs a name, never a decision.
        try:
            info = self.client.users_info(user=user)["user"]
        except (SlackApiError, OSError) as exc:
            log.warning("users.info failed, recording the ID alone: %s", exc, extra={"user": user})
            return ""
        profile = info.get("profile") or {}
        name = profile.get("display_name") or profile.get("real_name") or info.get("name")
        return str(name or "")

    def _members(self, group: str) -> frozenset[str]:
        return frozenset(self.client.usergroups_users_list(usergroup=group)["users"])

    def _email(self, user: str) -> str:
        try:
            return self.client.users_info(user=user)["user"].get("profile", {}).get("email", "")
        except SlackApiError:
            return ""

    def _cached(self, key: str, load):
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        value = load()
        with self._lock:
            self._cache[key] = (now, value)
        return value
