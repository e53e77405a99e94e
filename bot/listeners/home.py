"""The App Home tab: each time a user opens it, queue a fresh one for them."""

from __future__ import annotations

import logging

from slack_bolt import App, BoltContext

from bot.deps import Deps
from registry.adapters.queue import TASK_PUBLISH_HOME


def register(app: App) -> None:
    """Register this group's listeners."""
    app.event("app_home_opened")(on_home_opened)


def on_home_opened(event: dict, context: BoltContext, logger: logging.Logger) -> None:
    """Queue the user's Home tab; the worker reads the registry and publishes it."""
    if event.get("tab", "home") != "home":
        return  # the Messages tab: nothing to draw
    deps: Deps = context["deps"]
    user = event["user"]
    queued = deps.enqueue(
        TASK_PUBLISH_HOME, event_id=f"home-{user}-{event.get('event_ts', '')}", user=user
    )
    if not queued:
        # Nobody to tell: the tab keeps what it showed, and opening it again retries.
        logger.warning("home tab not queued", extra={"user": user})
