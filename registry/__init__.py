"""The core every registry-bot service shares: settings, events, policy, gateway, messages."""

__version__ = "0.2.0"  # the one place the version is written; pyproject.toml reads it
