"""Flask webhook receiver for training events and MLflow registry webhooks."""

from webhooks.app import create_app

__all__ = ["create_app"]
