"""One set of cases for every RegistryGateway: the in-memory fake and MLflow's must agree.

The domain tests run against `tests.fakes.FakeGateway`; these cases hold it to what
`registry.adapters.mlflow.MlflowGateway` does against a real server, in both registry modes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from registry.adapters.mlflow import MlflowGateway, source_key
from registry.ports.gateway import RegistryGateway
from registry.rules.events import CREATED_BY_TAG
from registry.rules.versions import SOURCE_KEY_TAG, VersionNotFound
from tests.fakes import FakeGateway
from tests.support import log_model


@dataclass
class Registry:
    """A gateway and a way to make a training run with a model logged as "model"."""

    gateway: RegistryGateway
    new_run: Callable[[], str]


@pytest.fixture(
    params=[
        "fake",
        pytest.param("mlflow", marks=pytest.mark.slow),
        pytest.param("mlflow-aliases", marks=pytest.mark.slow),
    ]
)
def registry(request) -> Registry:
    """Each gateway in turn, empty of the test's model."""
    if request.param == "fake":
        fake = FakeGateway()

        def fake_run() -> str:
            run_id = uuid.uuid4().hex
            fake.add_run(run_id, {"accuracy": 0.9})
            return run_id

        return Registry(fake, fake_run)
    uri = request.getfixturevalue("mlflow_server")
    mode = "aliases" if request.param.endswith("aliases") else "stages"
    return Registry(MlflowGateway(uri, mode=mode), lambda: log_model(uri, constant=1.0))


def register(registry: Registry, name: str, **tags: str):
    """Register a new run's model under `name`."""
    return registry.gateway.register(name, registry.new_run(), "model", "", tags)


def test_a_registered_version_is_found_again_for_its_source(registry, model_name):
    gateway, run_id = registry.gateway, registry.new_run()
    assert gateway.find_version(model_name, run_id, "model", "") is None
    mv = gateway.register(model_name, run_id, "model", "", {"registry_bot.requested_by": "UR"})
    assert (mv.name, mv.version, mv.stage, mv.run_id, mv.status) == (
        model_name,
        "1",
        "None",
        run_id,
        "READY",
    )
    assert mv.tags["registry_bot.requested_by"] == "UR"

    found = gateway.find_version(model_name, run_id, "model", "")
    assert found is not None and (found.name, found.version) == (model_name, mv.version)
    assert found.tags["registry_bot.requested_by"] == "UR"
    # Another artifact of the same run, or another run, is another registration.
    assert gateway.find_version(model_name, run_id, "other", "") is None
    assert gateway.find_version(model_name, registry.new_run(), "model", "") is None
    assert [v.version for v in gateway.versions(model_name)] == [mv.version]


def test_get_version_of_an_unknown_version_raises_version_not_found(registry, model_name):
    with pytest.raises(VersionNotFound):
        registry.gateway.get_version(model_name, "1")  # no such model
    register(registry, model_name)
    with pytest.raises(VersionNotFound):
        registry.gateway.get_version(model_name, "2")  # no such version


def test_promotion_archives_the_previous_production(registry, model_name):
    gateway = registry.gateway
    v1, v2 = register(registry, model_name).version, register(registry, model_name).version
    assert gateway.production(model_name) is None

    assert gateway.move(model_name, v1, "Staging") == []
    assert gateway.get_version(model_name, v1).stage == "Staging"
    assert gateway.move(model_name, v1, "Production") == []
    assert gateway.production(model_name).version == v1

    assert gateway.move(model_name, v2, "Staging") == []
    assert gateway.get_version(model_name, v1).stage == "Production"  # Staging archives nothing
    assert gateway.move(model_name, v2, "Production") == [v1]
    assert gateway.production(model_name).version == v2
    assert gateway.get_version(model_name, v1).stage == "Archived"
    assert [(v.version, v.stage) for v in gateway.versions(model_name)] == [
        (v2, "Production"),
        (v1, "Archived"),
    ]


def test_set_tags_adds_to_the_versions_tags(registry, model_name):
    gateway = registry.gateway
    version = register(registry, model_name, **{"registry_bot.requested_by": "UR"}).version
    gateway.set_tags(model_name, version, {"registry_bot.notice_ts": "1700000000.000100"})
    gateway.set_tags(model_name, version, {"registry_bot.decision": "approved"})
    tags = gateway.get_version(model_name, version).tags
    assert tags["registry_bot.requested_by"] == "UR"
    assert tags["registry_bot.notice_ts"] == "1700000000.000100"
    assert tags["registry_bot.decision"] == "approved"
    assert gateway.versions(model_name)[0].tags == tags


def test_versions_lists_every_version_newest_first(registry, model_name):
    assert registry.gateway.versions(model_name) == []
    made = [register(registry, model_name).version for _ in range(3)]
    assert made == ["1", "2", "3"]
    listed = registry.gateway.versions(model_name)
    assert [v.version for v in listed] == ["3", "2", "1"]
    assert {v.name for v in listed} == {model_name}


def test_run_summary_reads_the_runs_metrics(registry):
    run_id = registry.new_run()
    summary = registry.gateway.run_summary(run_id)
    assert summary is not None
    assert (summary.run_id, dict(summary.metrics)) == (run_id, {"accuracy": 0.9})
    assert registry.gateway.run_summary("") is None
    assert registry.gateway.run_summary(uuid.uuid4().hex) is None


def test_a_registered_version_is_marked_as_registry_bots_own(registry, model_name):
    """`/hooks/mlflow` ignores a version carrying CREATED_BY_TAG: registering must set it."""
    mv = register(registry, model_name)
    for tags in (mv.tags, registry.gateway.get_version(model_name, mv.version).tags):
        assert tags[SOURCE_KEY_TAG] == source_key(mv.run_id, "model", "")
        assert CREATED_BY_TAG in tags


def test_model_tags_are_the_registered_models_own(registry, model_name):
    gateway = registry.gateway
    assert gateway.model_tags(model_name) == {}  # no such model yet: nothing, no error
    register(registry, model_name)
    gateway.set_model_tag(model_name, "registry_bot.protected_since", "now (alert)")
    assert gateway.model_tags(model_name) == {"registry_bot.protected_since": "now (alert)"}
    assert "registry_bot.protected_since" not in gateway.get_version(model_name, "1").tags
