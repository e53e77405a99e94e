"""Run the bot: HTTP mode on BOT_HOST:BOT_PORT, or Socket Mode with SLACK_TRANSPORT=socket."""

from __future__ import annotations

import sys

import redis

from registry.process.heartbeat import Heartbeat, keep_beating
from registry.process.httpserver import serve
from registry.process.logs import configure_logging
from registry.process.settings import load_settings
from registry.rules.settings import Settings, SettingsError

# Socket Mode needs no signing secret: there is no HTTP request to sign.
REQUIRED = ("MLFLOW_TRACKING_URI", "SLACK_BOT_TOKEN", "SLACK_CHANNEL")
UNSAID = (
    "SLACK_APP_TOKEN is set but SLACK_TRANSPORT is not: set SLACK_TRANSPORT=socket to run the "
    "bot in Socket Mode, or SLACK_TRANSPORT=http to serve Slack over HTTP (every request "
    "signed; the app token is then unused)"
)


def main() -> int:
    """Start the bot in the transport the settings name."""
    configure_logging()
    try:
        settings = load_settings(require=REQUIRED)
        if transport(settings) == "socket":
            return _socket_mode(settings)
        if not settings.slack_signing_secret:
            raise SettingsError("SLACK_SIGNING_SECRET is required but not set")
        from bot.web import create_wsgi_app

        # The app is built once the port is taken; a token Slack refuses stops it there.
        return serve(
            lambda: create_wsgi_app(settings),
            settings.bot_host,
            settings.bot_port,
            name="bot",
            path="/slack/events",
        )
    except SettingsError as exc:
        print(f"registry-bot bot: {exc}", file=sys.stderr)
        return 2


def transport(settings: Settings) -> str:
    """Return "http" or "socket" as SLACK_TRANSPORT says; never guess it from the tokens set.

    An app token left in a shared `.env` once turned signature checks off for an HTTP
    endpoint: with a token set and no transport named, the bot refuses to start instead.
    """
    if settings.slack_transport:
        return settings.slack_transport
    if settings.slack_app_token:
        raise SettingsError(UNSAID)
    return "http"


def _socket_mode(settings: Settings) -> int:
    """Connect to Slack over Socket Mode, then beat the bot's heartbeat until stopped: live
    while the process runs (slack_sdk reconnects by itself), ready while the link to Slack
    is up and Redis answers (registry.process.heartbeat)."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.app import start_app

    if not settings.slack_app_token:
        raise SettingsError("SLACK_APP_TOKEN is required with SLACK_TRANSPORT=socket")
    heart = Heartbeat("bot")
    heart.reset()
    handler = SocketModeHandler(start_app(settings, socket_mode=True), settings.slack_app_token)
    handler.connect()
    store = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=2)
    keep_beating(heart, lambda: handler.client.is_connected() and _answers(store))
    return 0


def _answers(store: redis.Redis) -> bool:
    try:
        return bool(store.ping())
    except redis.RedisError:
        return False


if __name__ == "__main__":
    sys.exit(main())
