"""The demo shows the gate (SPEC 14): the sandbox's "Promote in MLflow by hand" is refused by
the demo's MLflow, and the request appears in the sandbox's channel as a notice."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from mlflow import MlflowClient

from devkit.demo import MODEL
from tests.test_demo import RunningDemo, running_demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[RunningDemo]:
    with running_demo(tmp_path_factory.mktemp("gate-demo") / "demo") as running:
        yield running


def channel_texts(demo: RunningDemo) -> list[str]:
    state = requests.get(f"{demo.url('sandbox')}/sandbox/state?user=UADA", timeout=10).json()
    return [str(m.get("text", "")) + str(m.get("blocks", "")) for m in state["messages"]]


def test_promote_in_mlflow_by_hand_is_refused_and_becomes_a_request(demo):
    before = len(channel_texts(demo))
    answer = requests.post(f"{demo.url('sandbox')}/sandbox/promote", json={}, timeout=60).json()
    message = answer.get("message", "")
    assert "is protected by registry-bot" in message, answer
    assert "Your request to make it Production is filed" in message
    version = message.split("make v", 1)[1].split(" ", 1)[0]
    deadline = time.monotonic() + 60
    while not any("Asked for Production in MLflow by someone" in t for t in channel_texts(demo)):
        assert time.monotonic() < deadline, "no request notice in the sandbox"
        time.sleep(0.5)
    assert len(channel_texts(demo)) > before
    mv = MlflowClient(demo.url("mlflow")).get_model_version(MODEL, version)
    assert mv.current_stage in ("Staging", "None")  # a request, never Production by hand
    assert mv.tags.get("registry_bot.asked_in_mlflow_at")
