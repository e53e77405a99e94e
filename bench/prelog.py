"""Pre-log training runs, one logged model each, so training is never what the bench times."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

ARTIFACT_PATH = "model"  # the name log_model gives the model, as in a training script


@dataclass(frozen=True)
class LoggedRun:
    """A finished run with one logged model, ready to be sent as a training event."""

    run_id: str
    model_id: str
    experiment_id: str

    @property
    def source(self) -> str:
        """Return the logged model's URI, what a version of it is registered from."""
        return f"models:/{self.model_id}"


def save_model(workdir: Path) -> Path:
    """Save one tiny real sklearn model; every run's logged model uploads a copy of it."""
    import mlflow.sklearn
    from sklearn.dummy import DummyRegressor

    path = workdir / "model-template"
    if not path.exists():
        model = DummyRegressor(strategy="constant", constant=1.0).fit([[0.0]], [1.0])
        mlflow.sklearn.save_model(model, str(path), pip_requirements=["scikit-learn"])
    return path


def log_runs(tracking_uri: str, experiment: str, count: int, template: Path) -> list[LoggedRun]:
    """Log `count` runs in a fresh experiment, each with the model logged as `model`."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.create_experiment(experiment)
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: log_run(client, experiment_id, template), range(count)))


def log_run(
    client: MlflowClient, experiment_id: str, template: Path, picture: Path | None = None
) -> LoggedRun:
    """Log one run and its model as `mlflow.sklearn.log_model` would, without training;
    `picture`, when given, is logged as one of the run's artifacts."""
    from mlflow.entities import LoggedModelOutput

    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "accuracy", 0.93)
    if picture is not None:
        client.log_artifact(run_id, str(picture))
    logged = client.create_logged_model(experiment_id, name=ARTIFACT_PATH, source_run_id=run_id)
    client.log_model_artifacts(logged.model_id, str(template))
    client.finalize_logged_model(logged.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    client.set_terminated(run_id)
    return LoggedRun(run_id, logged.model_id, experiment_id)
