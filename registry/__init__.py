"""Core of registry-bot shared by every service: settings, events, policy, registry gateway, Slack messages."""
