"""Run the bot: HTTP mode on BOT_HOST:BOT_PORT, or Socket Mode when SLACK_APP_TOKEN is set."""

from __future__ import annotations

import contextlib
import sys

from registry.logs import configure_logging
from registry.settings import Settings, SettingsError


def main() -> int:
    """Start the bot in the mode the settings choose."""
    configure_logging()
    try:
        settings = Settings.from_env(
            require=("MLFLOW_TRACKING_URI", "SLACK_BOT_TOKEN", "SLACK_CHANNEL")
        )
        if settings.slack_app_token:
            return _socket_mode(settings)
        from bot.web import BOT_REQUIRED, create_wsgi_app

        Settings.from_env(require=BOT_REQUIRED)
        app = create_wsgi_app(settings)
    except SettingsError as exc:
        print(f"registry-bot bot: {exc}", file=sys.stderr)
        return 2
    return _serve(app, settings)


def _serve(app, settings: Settings) -> int:
    from werkzeug.serving import make_server

    try:
        server = make_server(settings.bot_host, settings.bot_port, app, threaded=True)
    except OSError as exc:
        print(
            f"registry-bot bot: cannot listen on {settings.bot_host}:{settings.bot_port}: "
            f"{exc.strerror}",
            file=sys.stderr,
        )
        return 2
    print(f"bot listening on http://{settings.bot_host}:{server.port}/slack/events", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def _socket_mode(settings: Settings) -> int:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.app import build_app

    SocketModeHandler(build_app(settings), settings.slack_app_token).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
