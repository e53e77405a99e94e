"""Flask webhook receiver for training events and MLflow registry webhooks."""

from __future__ import annotations

from typing import Any


def create_app(*args: Any, **kwargs: Any):
    """Build the webhooks app (for gunicorn: `webhooks:create_app()`).

    Imported on use, so `python -m webhooks notify` loads neither Flask nor Celery.
    """
    from webhooks.app import create_app as build

    return build(*args, **kwargs)


__all__ = ["create_app"]
