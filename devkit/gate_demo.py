"""The demo's gate (SPEC 14): its MLflow runs behind `--app-name registry-bot`, and the
sandbox's "Promote in MLflow by hand" does what a person with MLflow access would.

The demo's model is protected (devkit/demo-policy.yaml), so MLflow refuses the move and
registry-bot files it as a transition request: a notice appears in the channel, naming
who asked through MLflow (here "someone": the demo's MLflow signs nobody in).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

GATE_TOKEN = "demo-gate-token-not-a-secret"  # the demo's services and its MLflow share it
APP_ARGS = ("--app-name", "registry-bot")
REFUSED = "MLflow refused to make v{version} Production: {message}"
PASSED = "MLflow made v{version} Production: the gate is not on (see the mlflow log)."


def mlflow_gate_env(services: Mapping[str, str]) -> dict[str, str]:
    """The gate's settings for the demo's MLflow server: the services' own."""
    names = ("MLFLOW_GATE_TOKEN", "REDIS_URL", "POLICY_FILE", "SLACK_CHANNEL")
    return {name: services[name] for name in names if services.get(name)}


def promote_by_hand(tracking_uri: str, model: str, run_id: str) -> str:
    """Register the run's model by hand and ask MLflow to make it Production, as a person
    would in the UI; say what MLflow answered."""
    from mlflow import MlflowClient
    from mlflow.exceptions import RestException

    client = MlflowClient(tracking_uri)
    mv = client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id)
    try:
        with warnings.catch_warnings():  # stage APIs are deprecated, yet the UI still offers them
            warnings.simplefilter("ignore", FutureWarning)
            client.transition_model_version_stage(model, mv.version, "Production")
    except RestException as exc:
        message = (exc.json or {}).get("message") or str(exc)
        return REFUSED.format(version=mv.version, message=message)
    return PASSED.format(version=mv.version)
