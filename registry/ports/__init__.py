"""The ports: what the workflows need of the registry, Slack and a lock, as Protocols."""
