"""The MLflow gateway against a real server: finding a run's model among many."""

from __future__ import annotations

import uuid

import mlflow
import pytest
from mlflow import MlflowClient

from registry.gateway import MlflowGateway
from tests.support import log_model

pytestmark = pytest.mark.slow


def test_registers_a_runs_model_beyond_the_first_page_of_logged_models(mlflow_server, model_name):
    client = MlflowClient(mlflow_server)
    experiment = client.create_experiment(f"nightly-{uuid.uuid4().hex[:8]}")
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment(experiment_id=experiment)
    run_id = log_model(mlflow_server, constant=9.0)
    # A nightly retrain leaves many models named "model" in one experiment: more than
    # one page of search results, most of them newer than this run's.
    for _ in range(120):
        client.create_logged_model(experiment, name="model")
    mlflow.set_experiment("Default")

    gateway = MlflowGateway(mlflow_server)
    mv = gateway.register(model_name, run_id, "model", "", {})
    assert mv.run_id == run_id and mv.status == "READY"
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/{mv.version}")
    assert list(loaded.predict([[0.0]])) == [9.0]
