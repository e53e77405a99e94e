"""Serve the webhooks (`python -m webhooks`) or send an event (`python -m webhooks notify`)."""

from __future__ import annotations

import sys

from registry.process.httpserver import serve
from registry.process.logs import configure_logging
from registry.rules.settings import SettingsError


def main(argv: list[str]) -> int:
    """Dispatch to `notify` or serve the app."""
    if argv[:1] == ["notify"]:
        from webhooks.notify import main as notify

        return notify(argv[1:])
    configure_logging()
    from webhooks.app import create_app

    try:
        app = create_app()
    except SettingsError as exc:
        print(f"registry-bot webhooks: {exc}", file=sys.stderr)
        return 2
    settings = app.extensions["registry_bot"].settings
    return serve(lambda: app, settings.webhooks_host, settings.webhooks_port, name="webhooks")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
