"""Who may approve: the model's approvers (or APPROVERS and APPROVER_GROUP), groups cached
briefly, failing closed when Slack does not answer."""

from __future__ import annotations

import logging
import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from registry.decisions import Clicker, model_clicker
from registry.services import DirectoryUnavailable
from registry.settings import Settings

log = logging.getLogger(__name__)

CACHE_SECONDS = 60.0


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

    def is_approver(self, user: str) -> bool:
        """Say whether `user` is listed in APPROVERS or belongs to APPROVER_GROUP."""
        return self.clicker(user).is_approver

    def in_group(self, user: str, group: str) -> bool:
        """Say whether `user` belongs to the user group; raise DirectoryUnavailable if Slack
        does not say (a failure is never cached)."""
        return user in self._cached(f"group:{group}", lambda: self._members(group))

    def email(self, user: str) -> str:
        """Return the user's e-mail address, or '' if Slack does not say."""
        return str(self._cached(f"email:{user}", lambda: self._email(user)))

    def user_for_email(self, email: str) -> str:
        """Return the Slack user ID for an e-mail address, or '' if there is none."""
        try:
            return self.client.users_lookupByEmail(email=email)["user"]["id"]
        except SlackApiError:
            return ""

    def _members(self, group: str) -> frozenset[str]:
        try:
            return frozenset(self.client.usergroups_users_list(usergroup=group)["users"])
        except (SlackApiError, OSError) as exc:  # OSError: unreachable, timed out
            log.warning("user group lookup failed: %s", exc, extra={"group": group})
            raise DirectoryUnavailable(f"user group {group} lookup failed") from exc

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
