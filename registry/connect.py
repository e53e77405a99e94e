"""Build a process's real Services: the MLflow gateway, the Slack notifier and directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from registry.approvers import SlackDirectory
from registry.changes import LifecycleEvent
from registry.gateway import MlflowGateway
from registry.services import Services, no_emit
from registry.settings import Settings
from registry.slack import SlackNotifier, web_client

# MLflow's HTTP client retries 7 times with backoff factor 2 by default (minutes of
# waiting); the tasks retry with their own backoff, so keep the client's short.
MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def configure_mlflow_client() -> None:
    """Keep MLflow's own HTTP retries bounded unless the operator chose otherwise."""
    for key, value in MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)


def build_services(
    settings: Settings,
    *,
    emit: Callable[[LifecycleEvent], Any] = no_emit,
    channel: str = "",
) -> Services:
    """Connect to the registry and Slack as `settings` say."""
    configure_mlflow_client()
    gateway = MlflowGateway(
        settings.mlflow_tracking_uri,
        mode=settings.registry_mode,
        staging_alias=settings.staging_alias,
        production_alias=settings.production_alias,
    )
    client = web_client(settings)
    return Services(
        gateway=gateway,
        notifier=SlackNotifier(client, channel or settings.slack_channel),
        settings=settings,
        directory=SlackDirectory(settings, client),
        emit=emit,
    )
