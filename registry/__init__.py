"""The core every registry-bot service shares: settings, events, policy, gateway, messages."""
