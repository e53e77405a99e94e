"""Experimental builds of a service, for profiles only: what a candidate fix would change."""

from __future__ import annotations

from typing import Any


def bot_acking_inline() -> Any:
    """Build the bot with Bolt's `process_before_response=True`: listeners ack in the request."""
    import bot.app
    from bot.web import create_wsgi_app

    build = bot.app.App

    def inline(*args: Any, **kwargs: Any) -> Any:
        return build(*args, process_before_response=True, **kwargs)

    # This process only: the experiment's gunicorn workers build the bot through here.
    bot.app.App = inline  # type: ignore[misc, assignment]
    return create_wsgi_app()
