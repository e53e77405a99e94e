"""Slack Bolt app for registry-bot: buttons, modals and chat commands."""

from __future__ import annotations

from typing import Any


def create_wsgi_app(*args: Any, **kwargs: Any):
    """Build the bot's WSGI app (for gunicorn: `bot:create_wsgi_app()`)."""
    from bot.web import create_wsgi_app as build

    return build(*args, **kwargs)
