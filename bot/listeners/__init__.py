"""Bolt listeners, one module per feature, each with a `register(app)`."""
