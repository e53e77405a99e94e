"""Publish a user's App Home tab: every version from the registry, the pure view, views.publish."""

from __future__ import annotations

from registry.home import home_view
from registry.services import Services


def publish_home(svc: Services, user: str) -> str:
    """Build and publish `user`'s Home tab from the registry as it is now."""
    versions = svc.gateway.all_versions()
    # The requester check compares e-mails only when some candidate names one.
    with_email = any("@" in mv.tag("requested_by") for mv in versions if mv.stage == "Staging")
    clicker = svc.directory.clicker(user, with_email=with_email)
    view = home_view(clicker, versions, required=svc.settings.required_approvals, now=svc.clock())
    svc.notifier.publish_home(user, view)
    return "published"
