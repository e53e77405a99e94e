"""Build a process's real Services: the MLflow gateway, the Slack notifier and directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from registry.adapters.directory import SlackDirectory
from registry.adapters.evidence import MlflowEvidence
from registry.adapters.mlflow import MlflowGateway
from registry.adapters.slack import ChannelPace, SlackNotifier, web_client
from registry.ports.services import Services, no_emit, no_follow
from registry.rules.record import LifecycleEvent
from registry.rules.settings import Settings
from registry.rules.versions import ModelVersion

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


def carry_gate_token(settings: Settings) -> None:
    """Put MLFLOW_GATE_TOKEN where the gate's header provider (an MLflow plugin, which sees
    only the environment) finds it, however the setting arrived: the environment or `.env`;
    and MLFLOW_TRACKING_URI, the one server the provider sends the token to."""
    if settings.mlflow_gate_token:
        os.environ["MLFLOW_GATE_TOKEN"] = settings.mlflow_gate_token
        if settings.mlflow_tracking_uri:
            os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri


def build_services(
    settings: Settings,
    *,
    emit: Callable[[LifecycleEvent], Any] = no_emit,
    channel: str = "",
    after_notice: Callable[[ModelVersion], Any] = no_follow,
) -> Services:
    """Connect to the registry and Slack as `settings` say (and to the model files and
    Slack's uploads, for the evidence a notice's thread shows)."""
    configure_mlflow_client()
    carry_gate_token(settings)
    gateway = MlflowGateway(
        settings.mlflow_tracking_uri,
        mode=settings.registry_mode,
        staging_alias=settings.staging_alias,
        production_alias=settings.production_alias,
    )
    pace = ChannelPace.at(settings.redis_url, settings.redis_key_prefix)
    client = web_client(settings, pace=pace)
    notifier = SlackNotifier(client, channel or settings.slack_channel, pace)
    return Services(
        gateway=gateway,
        notifier=notifier,
        settings=settings,
        directory=SlackDirectory(settings, client),
        emit=emit,
        evidence=MlflowEvidence(settings.mlflow_tracking_uri),
        uploads=notifier,
        after_notice=after_notice,
    )
