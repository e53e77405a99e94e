"""Celery worker for registry-bot; `celery -A worker worker` finds the app here."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Built on first use, not at import: the settings are read when a service starts.
    if name in ("app", "celery"):
        from worker.app import create_celery

        app = create_celery(require_slack=True)
        globals().update(app=app, celery=app)
        return app
    raise AttributeError(name)
