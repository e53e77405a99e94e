"""Finishing an approval that stopped half way, against the in-memory registry."""

from __future__ import annotations

from dataclasses import replace

from registry.flows.promotion import promote
from registry.ports.services import Services
from registry.rules.record import prefixed
from registry.rules.settings import Settings
from tests.fakes import FakeDirectory, FakeGateway, RecordingNotifier

MODEL = "churn"


def _services(gateway: FakeGateway) -> Services:
    settings = Settings(mlflow_tracking_uri="fake", slack_channel="CNOTICES", approvers=("UA",))
    return Services(gateway, RecordingNotifier(), settings, FakeDirectory(["UA"]), lambda: 1e6)


def test_a_promotion_that_died_before_archiving_is_finished():
    gateway = FakeGateway()
    for run in ("run1", "run2"):
        gateway.register(MODEL, run, "model", "", {})
    decided = prefixed({"decided_by": "UA", "decided_at": "1000000", "replaces": "1"})
    old, new = gateway.get_version(MODEL, "1"), gateway.get_version(MODEL, "2")
    # The worker moved v2 to Production, then died before archiving v1: both serve.
    gateway.put(replace(old, stage="Production"))
    gateway.put(replace(new, stage="Production", tags={**new.tags, **decided}))

    promote(_services(gateway), gateway.get_version(MODEL, "2"))

    stages = {mv.version: mv.stage for mv in gateway.versions(MODEL)}
    assert stages == {"1": "Archived", "2": "Production"}


def test_the_tag_that_commits_a_decision_is_written_last():
    """MLflow sets a version's tags one request at a time: a kill half way must never leave
    a decision without its who, when and why."""
    from registry.adapters.mlflow import MlflowGateway

    written: list[str] = []

    class OneTagAtATime:
        def set_model_version_tag(self, name, version, key, value):
            written.append(key)

    gateway = MlflowGateway("http://127.0.0.1:9")
    gateway.writes = OneTagAtATime()  # what set_tags writes through
    decided = {"decision": "approved", "decided_by": "UA", "decided_at": "t", "reason": "r"}
    gateway.set_tags(MODEL, "2", prefixed(decided))
    assert written[-1] == "registry_bot.decision" and sorted(written) == sorted(prefixed(decided))
