"""The MLflow gateway against a real server: finding a run's model among many."""

from __future__ import annotations

import uuid

import mlflow
import pytest
from mlflow import MlflowClient

from registry.adapters.mlflow import MlflowGateway
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


def _versions_of_one_run(gateway: MlflowGateway, tracking_uri: str, name: str, count: int) -> None:
    """Register `count` versions of one logged model under `name`."""
    run_id = log_model(tracking_uri, constant=1.0)
    for _ in range(count):
        gateway.register(name, run_id, "model", "", {})


def _spy_on_transitions(gateway: MlflowGateway) -> list[dict]:
    """Record the keyword arguments of every stage transition the gateway makes."""
    calls: list[dict] = []
    real = gateway.writes.transition_model_version_stage

    def transition(name, version, stage, **kwargs):
        calls.append({"version": str(version), "stage": stage, **kwargs})
        return real(name, version, stage, **kwargs)

    gateway.writes.transition_model_version_stage = transition  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("mode", ["stages", "aliases"])
def test_promotion_archives_the_old_production_itself(mlflow_server, model_name, mode):
    gateway = MlflowGateway(mlflow_server, mode=mode)
    _versions_of_one_run(gateway, mlflow_server, model_name, 3)
    calls = _spy_on_transitions(gateway)
    assert gateway.move(model_name, "1", "Production") == []
    assert gateway.move(model_name, "2", "Production") == ["1"]
    stages = {mv.version: mv.stage for mv in gateway.versions(model_name)}
    assert stages == {"1": "Archived", "2": "Production", "3": "None"}
    aliases = MlflowClient(mlflow_server).get_registered_model(model_name).aliases
    assert aliases == {"production": "2"}
    # Each archived version has its own transition, none with MLflow's archive flag (it
    # fails on PostgreSQL through psycopg 3).
    if mode == "stages":
        assert [(c["version"], c["stage"]) for c in calls] == [
            ("1", "Production"),
            ("2", "Production"),
            ("1", "Archived"),
        ]
        assert all(c.get("archive_existing_versions") is False for c in calls)
    else:
        assert calls == []


def test_promoting_again_finishes_archiving_left_half_done(mlflow_server, model_name):
    gateway = MlflowGateway(mlflow_server)
    _versions_of_one_run(gateway, mlflow_server, model_name, 2)
    gateway.move(model_name, "1", "Production")
    # A promotion that died after moving v2 but before archiving v1: two Production versions.
    gateway.client.transition_model_version_stage(model_name, "2", "Production")
    assert gateway.move(model_name, "2", "Production") == ["1"]
    assert [mv.version for mv in gateway.versions(model_name) if mv.stage == "Production"] == ["2"]


@pytest.mark.parametrize("mode", ["stages", "aliases"])
def test_production_is_found_when_its_alias_names_a_version_moved_out_of_band(
    mlflow_server, model_name, mode
):
    gateway = MlflowGateway(mlflow_server, mode=mode)
    _versions_of_one_run(gateway, mlflow_server, model_name, 2)
    gateway.move(model_name, "1", "Production")
    assert gateway.production(model_name).version == "1"  # by its alias
    # By hand, in MLflow: v1 archived and v2 made Production; the alias still names v1.
    client = MlflowClient(mlflow_server)
    if mode == "stages":
        client.transition_model_version_stage(model_name, "1", "Archived")
        client.transition_model_version_stage(model_name, "2", "Production")
    else:
        client.set_model_version_tag(model_name, "1", "registry_bot.stage", "Archived")
        client.set_model_version_tag(model_name, "2", "registry_bot.stage", "Production")
    assert client.get_registered_model(model_name).aliases == {"production": "1"}
    assert gateway.production(model_name).version == "2"
