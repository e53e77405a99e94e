"""Run the bot: HTTP mode on BOT_HOST:BOT_PORT, or Socket Mode when SLACK_APP_TOKEN is set."""

from __future__ import annotations

import sys

from registry.httpserver import serve
from registry.logs import configure_logging
from registry.settings import Settings, SettingsError

# Socket Mode needs no signing secret: there is no HTTP request to sign.
REQUIRED = ("MLFLOW_TRACKING_URI", "SLACK_BOT_TOKEN", "SLACK_CHANNEL")


def main() -> int:
    """Start the bot in the mode the settings choose."""
    configure_logging()
    try:
        settings = Settings.from_env(require=REQUIRED)
        if settings.slack_app_token:
            return _socket_mode(settings)
        if not settings.slack_signing_secret:
            raise SettingsError("SLACK_SIGNING_SECRET is required but not set")
    except SettingsError as exc:
        print(f"registry-bot bot: {exc}", file=sys.stderr)
        return 2
    from bot.web import create_wsgi_app

    return serve(
        lambda: create_wsgi_app(settings),
        settings.bot_host,
        settings.bot_port,
        name="bot",
        path="/slack/events",
    )


def _socket_mode(settings: Settings) -> int:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.app import build_app

    SocketModeHandler(build_app(settings), settings.slack_app_token).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
