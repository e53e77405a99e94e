"""ServedModel and the prediction API: atomic swaps, events, polling, and broken versions."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import redis
import requests
from mlflow import MlflowClient

from devkit.stack import free_port, start_redis, stop, url_answers, wait_until
from registry.rules.record import LIFECYCLE_CHANNEL as CHANNEL
from registry.rules.record import LifecycleEvent
from registry.serving import NoModelLoaded, ServedModel
from registry.serving.api import create_app, parse_inputs, plain
from registry.serving.model import concerns
from tests.support import log_model

REPO = Path(__file__).resolve().parent.parent
ROWS = [[0.0], [1.0], [2.0]]


# --- fakes -------------------------------------------------------------------------------


class FakeModel:
    """A model that answers its own version, as a float, for every row."""

    def __init__(self, version: str):
        self.version = version

    def predict(self, inputs):
        answers = []
        for _ in inputs:
            time.sleep(0)  # give other threads every chance to swap mid-prediction
            answers.append(float(self.version))
        return answers


class FakeRegistry:
    """Which version is Production, which versions fail to load, and what was asked."""

    def __init__(self, production: str | None = "1"):
        self.production = production
        self.broken: set[str] = set()
        self.gates: dict[str, threading.Event] = {}
        self.loads: list[str] = []
        self.resolves = 0

    def resolve(self, name: str) -> str | None:
        self.resolves += 1
        if self.production == "unreachable":
            raise ConnectionError("registry unreachable")
        return self.production

    def load(self, uri: str) -> FakeModel:
        self.loads.append(uri)
        version = uri.rsplit("/", 1)[1]
        if version in self.gates:
            self.gates[version].wait(10)
        if version in self.broken:
            raise OSError(f"MLmodel of {uri} is garbage")
        return FakeModel(version)


def served_by(registry: FakeRegistry, name: str = "churn", **kw) -> ServedModel:
    """Build a ServedModel on the fake registry (no MLflow; Redis only if started)."""
    kw.setdefault("redis_url", "redis://127.0.0.1:9/0")
    kw.setdefault("refresh_seconds", 60)
    return ServedModel(name, resolver=registry.resolve, loader=registry.load, **kw)


def serving_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"served-{name}-")]


# --- ServedModel, no MLflow ----------------------------------------------------------------


def test_loads_the_resolved_version_by_number():
    registry = FakeRegistry("3")
    served = served_by(registry)
    assert registry.loads == ["models:/churn/3"]
    assert served.version == "3"
    assert served.predict(ROWS) == [3.0, 3.0, 3.0]
    assert served.predict_with_version([[5.0]]) == ("3", [3.0])
    status = served.status()
    assert status["model"] == "churn" and status["version"] == "3"
    assert status["last_error"] is None
    assert status["last_checked_at"] <= status["loaded_at"] <= time.time()


def test_nothing_in_production_raises_no_model_loaded():
    served = served_by(FakeRegistry(None))
    assert served.version is None
    with pytest.raises(NoModelLoaded, match="no Production version of churn"):
        served.predict(ROWS)
    assert served.status()["last_error"] == "no Production version of churn (stage Production)"


def test_failing_load_keeps_the_old_version_logs_it_and_retries(caplog):
    registry = FakeRegistry("1")
    served = served_by(registry)
    registry.production, registry.broken = "2", {"2"}
    with caplog.at_level(logging.ERROR, logger="registry.serving.model"):
        assert served.refresh() is False
    assert served.version == "1"
    assert served.predict(ROWS) == [1.0, 1.0, 1.0]
    assert "cannot load churn version 2: OSError" in served.status()["last_error"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert (record.model, record.version) == ("churn", "2")
    assert "still serving version 1" in record.getMessage()

    registry.broken.clear()
    assert served.refresh() is True
    assert served.version == "2" and served.status()["last_error"] is None


def test_moving_back_to_the_served_version_clears_the_error_without_reloading():
    registry = FakeRegistry("1")
    served = served_by(registry)
    registry.production, registry.broken = "2", {"2"}
    served.refresh()
    registry.production = "1"
    assert served.refresh() is False
    assert served.status()["last_error"] is None
    assert registry.loads == ["models:/churn/1", "models:/churn/2"]


@pytest.mark.parametrize(
    ("production", "error"),
    [(None, "no Production version of churn"), ("unreachable", "registry unreachable")],
)
def test_losing_production_or_the_registry_keeps_serving(production, error):
    registry = FakeRegistry("1")
    served = served_by(registry)
    registry.production = production
    served.refresh()
    assert served.version == "1"
    assert error in served.status()["last_error"]
    assert served.predict([[0.0]]) == [1.0]


def test_swap_is_atomic_under_concurrent_predictions():
    registry = FakeRegistry("1")
    served = served_by(registry)
    answers: list[tuple[str, list[float]]] = []
    done = threading.Event()

    def predict_until_done() -> None:
        while not done.is_set():
            answers.append(served.predict_with_version(ROWS * 10))

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(predict_until_done) for _ in range(8)]
        for i in range(60):
            registry.production = str(i % 2 + 1)
            served.refresh()
            time.sleep(0.005)
        done.set()
        for future in futures:
            future.result()  # any exception in a prediction fails the test here
    assert {version for version, _ in answers} == {"1", "2"}
    for version, predictions in answers:
        assert predictions == [float(version)] * len(ROWS * 10)


def test_predictions_go_on_during_a_slow_load():
    registry = FakeRegistry("1")
    served = served_by(registry)
    registry.production, registry.gates["2"] = "2", threading.Event()
    loading = threading.Thread(target=served.refresh)
    loading.start()
    wait_until(lambda: "models:/churn/2" in registry.loads, 2, "the load of v2")
    started = time.monotonic()
    assert served.predict_with_version([[0.0]]) == ("1", [1.0])
    assert time.monotonic() - started < 0.5
    registry.gates["2"].set()
    loading.join(5)
    assert served.predict_with_version([[0.0]]) == ("2", [2.0])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"type": "promoted", "model_name": "churn", "version": "2"}', True),
        ('{"model_name": "churn"}', True),
        (b'{"model_name": "churned"}', False),
        (b'["churn"]', False),
        (b"not json", False),
        (b"\xff\xfe", False),
    ],
)
def test_only_events_about_the_model_concern_it(data, expected):
    assert concerns(data, "churn") is expected


def test_default_channel_is_the_one_lifecycle_events_are_published_on(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("REDIS_KEY_PREFIX", raising=False)
    assert served_by(FakeRegistry()).channel == CHANNEL
    monkeypatch.setenv("REDIS_KEY_PREFIX", "team-a:")
    assert served_by(FakeRegistry()).channel == f"team-a:{CHANNEL}"


def test_settings_are_read_from_a_dot_env_file_under_the_environment(monkeypatch, tmp_path):
    for name in ("REGISTRY_MODE", "PRODUCTION_ALIAS", "REDIS_URL", "REDIS_KEY_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text(
        "REGISTRY_MODE=aliases\nPRODUCTION_ALIAS=live\nREDIS_KEY_PREFIX=team-a:\n"
        "REDIS_URL=redis://127.0.0.1:6391/2\nREFRESH_SECONDS=7\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRODUCTION_ALIAS", "champion")  # the environment wins over the file
    served = served_by(FakeRegistry(), redis_url=None, refresh_seconds=None)
    assert (served.mode, served.alias, served.refresh_seconds) == ("aliases", "champion", 7.0)
    assert served.redis_url == "redis://127.0.0.1:6391/2"
    assert served.channel == f"team-a:{CHANNEL}"


def test_a_bad_key_prefix_is_refused(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_KEY_PREFIX", "two words")
    with pytest.raises(ValueError, match="REDIS_KEY_PREFIX must be"):
        served_by(FakeRegistry())


def test_settings_default_from_the_environment(monkeypatch):
    monkeypatch.setenv("REGISTRY_MODE", "aliases")
    monkeypatch.setenv("PRODUCTION_ALIAS", "live")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/3")
    monkeypatch.setenv("REFRESH_SECONDS", "5")
    served = served_by(FakeRegistry(), redis_url=None, refresh_seconds=None)
    assert (served.mode, served.alias, served.target) == ("aliases", "live", "alias @live")
    assert (served.redis_url, served.refresh_seconds) == ("redis://127.0.0.1:6390/3", 5.0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REGISTRY_MODE": "labels"}, "REGISTRY_MODE must be one of stages, aliases"),
        ({"REFRESH_SECONDS": "soon"}, "REFRESH_SECONDS must be a number"),
        ({"REFRESH_SECONDS": "0"}, "REFRESH_SECONDS must be positive"),
    ],
)
def test_bad_settings_are_refused(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        served_by(FakeRegistry(), refresh_seconds=None)


def test_a_lifecycle_event_for_the_model_refreshes_within_a_second(redis_url, model_name):
    registry = FakeRegistry("1")
    with served_by(registry, name=model_name, redis_url=f"{redis_url}/14") as served:
        wait_until(lambda: served.status()["listening"], 5, "the subscription")
        # Subscribing wakes one refresh (events may have been missed); let it pass.
        wait_until(lambda: registry.resolves >= 2, 2, "the refresh on subscribing")
        registry.production = "2"
        events = redis.Redis.from_url(f"{redis_url}/14")
        events.publish(CHANNEL, event_body(f"{model_name}-other", "2"))
        events.publish(CHANNEL, b"not json")
        time.sleep(0.7)
        assert served.version == "1"
        events.publish(CHANNEL, event_body(model_name, "2"))
        wait_until(lambda: served.version == "2", 1.0, "the refresh after the event")
        events.close()
    assert serving_threads(model_name) == []


def test_without_redis_it_polls_and_the_subscriber_survives(caplog, model_name):
    registry = FakeRegistry("1")
    served = served_by(registry, name=model_name, refresh_seconds=0.2)
    with caplog.at_level(logging.WARNING, logger="registry.serving.model"), served:
        registry.production = "2"
        wait_until(lambda: served.version == "2", 2, "the poll to pick up v2")
        time.sleep(1.0)  # a few failed reconnections
        assert len(serving_threads(model_name)) == 2
        assert served.status()["listening"] is False
    assert serving_threads(model_name) == []
    unavailable = [r for r in caplog.records if "lifecycle events" in r.getMessage()]
    assert len(unavailable) == 1  # warned once per outage, not once per attempt


@pytest.mark.slow
def test_the_subscriber_reconnects_when_redis_comes_back(tmp_path, model_name, caplog):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    registry = FakeRegistry("1")
    proc = start_redis(port, tmp_path / "redis")
    try:
        with served_by(registry, name=model_name, redis_url=url) as served:
            wait_until(lambda: served.status()["listening"], 5, "the subscription")
            stop(proc)
            wait_until(lambda: not served.status()["listening"], 5, "the lost link")
            proc = start_redis(port, tmp_path / "redis")
            wait_until(lambda: served.status()["listening"], 15, "the reconnection")
            registry.production = "2"
            with redis.Redis.from_url(url) as events:
                events.publish(CHANNEL, event_body(model_name, "2"))
            wait_until(lambda: served.version == "2", 1.0, "the refresh after the event")
    finally:
        stop(proc)
    assert sum("lifecycle events" in r.getMessage() for r in caplog.records) == 1


# --- the HTTP API, in process ------------------------------------------------------------


class NumpyModel(FakeModel):
    def predict(self, inputs):
        return np.full(len(inputs), float(self.version))


@pytest.fixture
def api_client():
    registry = FakeRegistry("7")
    served = ServedModel(
        "churn",
        resolver=registry.resolve,
        loader=lambda uri: NumpyModel("7"),
        redis_url="redis://127.0.0.1:9/0",
        refresh_seconds=60,
    )
    return create_app(served).test_client()


def test_predict_answers_the_version_and_plain_floats(api_client):
    resp = api_client.post("/predict", json={"inputs": [[1, 2.5], [3, 4]]})
    assert resp.status_code == 200
    assert resp.get_json() == {"version": "7", "predictions": [7.0, 7.0]}
    assert all(type(p) is float for p in resp.get_json()["predictions"])


@pytest.mark.parametrize(
    ("body", "details"),
    [
        (None, '{"inputs": [[1.0, 2.0], ...]}'),
        ({"rows": [[1.0]]}, '{"inputs": [[1.0, 2.0], ...]}'),
        ({"inputs": []}, "inputs must be a non-empty list of rows"),
        ({"inputs": [1.0, 2.0]}, "inputs[0] must be a non-empty list of numbers"),
        ({"inputs": [[1.0], []]}, "inputs[1] must be a non-empty list of numbers"),
        ({"inputs": [[1.0, "x"]]}, "inputs[0][1] must be a number, not 'x'"),
        ({"inputs": [[True]]}, "inputs[0][0] must be a number, not True"),
        ({"inputs": [[1.0, 2.0], [3.0]]}, "inputs[1] has 1 values; inputs[0] has 2"),
    ],
)
def test_a_bad_body_is_400_naming_the_field(api_client, body, details):
    resp = (
        api_client.post("/predict", data="not json", content_type="application/json")
        if body is None
        else api_client.post("/predict", json=body)
    )
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "bad request", "details": resp.get_json()["details"]}
    assert details in resp.get_json()["details"]


def test_before_any_model_is_loaded_predict_is_503():
    served = served_by(FakeRegistry(None))
    resp = create_app(served).test_client().post("/predict", json={"inputs": [[1.0]]})
    assert resp.status_code == 503
    assert resp.get_json()["error"] == "no model loaded"
    assert "no Production version" in resp.get_json()["details"]


def test_version_answers_the_status(api_client):
    resp = api_client.get("/version")
    assert resp.status_code == 200
    assert resp.get_json()["version"] == "7" and resp.get_json()["model"] == "churn"
    assert set(resp.get_json()) >= {
        "model",
        "version",
        "loaded_at",
        "last_error",
        "last_checked_at",
    }


def test_a_model_that_crashes_is_500_and_logged(caplog):
    class Crashing(FakeModel):
        def predict(self, inputs):
            raise ValueError("expected 4 features")

    served = ServedModel(
        "churn",
        resolver=lambda name: "1",
        loader=lambda uri: Crashing("1"),
        redis_url="redis://127.0.0.1:9/0",
        refresh_seconds=60,
    )
    with caplog.at_level(logging.ERROR):
        resp = create_app(served).test_client().post("/predict", json={"inputs": [[1.0]]})
    assert resp.status_code == 500
    assert resp.get_json() == {
        "error": "prediction failed",
        "details": "ValueError: expected 4 features",
    }
    assert any(r.exc_info and r.version == "1" for r in caplog.records)


def metric(client, name: str, **labels: str) -> float | None:
    """Read one sample from the API's /metrics, None when it is not there."""
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def test_metrics_count_requests_errors_and_latency_by_model_and_version(api_client):
    for _ in range(3):
        assert api_client.post("/predict", json={"inputs": [[1.0]]}).status_code == 200
    assert api_client.post("/predict", json={"rows": []}).status_code == 400
    churn_v7 = {"model": "churn", "version": "7"}
    assert metric(api_client, "registry_bot_prediction_requests_total", **churn_v7) == 4
    assert metric(api_client, "registry_bot_prediction_errors_total", **churn_v7) == 0
    assert metric(api_client, "registry_bot_prediction_seconds_count", **churn_v7) == 4


def test_metrics_count_a_crashing_model_and_no_model_as_errors():
    class Crashing(FakeModel):
        def predict(self, inputs):
            raise ValueError("expected 4 features")

    crashing = ServedModel(
        "churn",
        resolver=lambda name: "2",
        loader=lambda uri: Crashing("2"),
        redis_url="redis://127.0.0.1:9/0",
        refresh_seconds=60,
    )
    client = create_app(crashing).test_client()
    assert client.post("/predict", json={"inputs": [[1.0]]}).status_code == 500
    assert metric(client, "registry_bot_prediction_errors_total", model="churn", version="2") == 1
    empty = create_app(served_by(FakeRegistry(None))).test_client()
    assert empty.post("/predict", json={"inputs": [[1.0]]}).status_code == 503
    assert metric(empty, "registry_bot_prediction_errors_total", model="churn", version="none") == 1


def test_plain_turns_numpy_and_pandas_into_lists_of_floats():
    assert plain(np.array([1, 2])) == [1.0, 2.0]
    assert plain(np.array([[1.5], [2.5]])) == [[1.5], [2.5]]
    assert plain(pd.Series([np.float32(0.5)])) == [0.5]
    assert plain(pd.DataFrame({"a": [1, 2]})) == [[1.0], [2.0]]
    assert plain([np.int64(3), "label"]) == [3.0, "label"]
    assert parse_inputs({"inputs": [[1, 2]]}) == [[1.0, 2.0]]


# --- the real thing: MLflow server, Redis, the API as a process -----------------------------


@dataclass
class Api:
    """The prediction API running as `python -m registry.serving`."""

    proc: subprocess.Popen
    url: str
    log: Path

    def status(self) -> dict:
        return requests.get(f"{self.url}/version", timeout=5).json()

    def predict(self, rows: list[list[float]]) -> dict:
        resp = requests.post(f"{self.url}/predict", json={"inputs": rows}, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()


def api_env(mlflow_uri: str | None, redis_url: str, refresh: str = "30") -> dict[str, str]:
    """Return the environment for an API process: only the settings this test gives."""
    prefixes = ("MLFLOW_", "REDIS", "REGISTRY_", "PRODUCTION_", "REFRESH_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(PYTHONPATH=str(REPO), REDIS_URL=redis_url, REFRESH_SECONDS=refresh)
    if mlflow_uri:
        env["MLFLOW_TRACKING_URI"] = mlflow_uri
    return env


@pytest.fixture
def start_api(tmp_path, mlflow_server):
    """Start API processes; stop them (SIGTERM, which must exit 0) after the test."""
    started: list[Api] = []

    def start(model: str, *, redis_url: str, refresh: str = "30") -> Api:
        port = free_port()
        out, log = tmp_path / f"api-{port}.out", tmp_path / f"api-{port}.log"
        with out.open("wb") as stdout, log.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "registry.serving", "--model", model, "--port", str(port)],
                env=api_env(mlflow_server, redis_url, refresh),
                cwd=tmp_path,
                stdout=stdout,
                stderr=stderr,
            )
        api = Api(proc, f"http://127.0.0.1:{port}", log)
        started.append(api)
        ready = f"serving {model} on http://127.0.0.1:{port}\n"
        wait_until(lambda: _alive(api) and out.read_text() == ready, 60, "the API")
        return api

    yield start
    for api in started:
        stop(api.proc)
        assert api.proc.returncode == 0, api.log.read_text()[-2000:]


def _alive(api: Api) -> bool:
    if api.proc.poll() is not None:
        raise RuntimeError(f"API exited {api.proc.returncode}: {api.log.read_text()[-2000:]}")
    return True


def register(tracking_uri: str, name: str, constant: float) -> str:
    """Log a model predicting `constant` and register it; return the version."""
    run_id = log_model(tracking_uri, constant=constant)
    return mlflow.register_model(f"runs:/{run_id}/model", name).version


def register_broken(tracking_uri: str, name: str, workdir: Path) -> str:
    """Register a version whose MLmodel is not even YAML; return the version."""
    (workdir / "broken").mkdir()
    (workdir / "broken" / "MLmodel").write_text("flavors: [garbage\n")
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(workdir / "broken"), "model")
    return mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version


def promote(tracking_uri: str, name: str, version: str) -> None:
    """Move `version` to Production, archiving the one there."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are the product's stages mode
        MlflowClient(tracking_uri).transition_model_version_stage(
            name, version, "Production", archive_existing_versions=True
        )


def event_body(name: str, version: str, previous: str = "") -> str:
    """Return the lifecycle event the worker publishes for a promotion."""
    return LifecycleEvent(
        type="promoted",
        model_name=name,
        version=version,
        previous_version=previous,
        actor="UAPPROVER1",
        reason="test",
        at=time.time(),
    ).body()


def publish(redis_url: str, name: str, version: str, previous: str = "") -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.publish(CHANNEL, event_body(name, version, previous))


def hammer(api: Api, answers: list, enough) -> None:
    """POST /predict in a loop until `enough(answers)` (or 30 s); record every answer."""
    deadline = time.monotonic() + 30
    with requests.Session() as session:
        while time.monotonic() < deadline and not enough(answers):
            resp = session.post(f"{api.url}/predict", json={"inputs": ROWS}, timeout=10)
            answers.append((resp.status_code, resp.json() if resp.ok else resp.text))


def enough_across_the_swap(answers: list) -> bool:
    """Say whether 200 answers are in and the promotion back to v1 shows in 20 of them."""
    back = sum(isinstance(body, dict) and body["version"] == "1" for _, body in answers)
    return len(answers) >= 200 and back >= 20


@pytest.mark.slow
def test_a_promotion_event_switches_what_is_served_and_no_request_fails(
    mlflow_server, redis_url, model_name, start_api
):
    v1, v2 = (register(mlflow_server, model_name, c) for c in (1.0, 2.0))
    promote(mlflow_server, model_name, v1)
    events = f"{redis_url}/14"
    api = start_api(model_name, redis_url=events)
    assert api.status()["version"] == v1 == "1"
    assert api.predict([[0.0]]) == {"version": "1", "predictions": [1.0]}
    wait_until(lambda: api.status()["listening"], 5, "the API's subscription")

    promote(mlflow_server, model_name, v2)
    published = time.monotonic()
    publish(events, model_name, v2, v1)
    wait_until(lambda: api.status()["version"] == "2", 2, "v2 served after the event")
    assert time.monotonic() - published < 2
    assert api.predict([[0.0], [5.0]]) == {"version": "2", "predictions": [2.0, 2.0]}

    answers: list = []
    with ThreadPoolExecutor(32) as pool:
        workers = [pool.submit(hammer, api, answers, enough_across_the_swap) for _ in range(32)]
        wait_until(lambda: len(answers) >= 40, 20, "the first answers")
        promote(mlflow_server, model_name, v1)
        publish(events, model_name, v1, v2)
        for worker in workers:
            worker.result()  # a connection error in any request fails the test here
    assert len(answers) >= 200 and all(status == 200 for status, _ in answers), answers[:5]
    assert {body["version"] for _, body in answers} == {"1", "2"}
    for _, body in answers:
        assert body["predictions"] == [float(body["version"])] * len(ROWS)


@pytest.mark.slow
def test_without_redis_a_promotion_is_picked_up_by_polling(mlflow_server, model_name, start_api):
    v1, v2 = (register(mlflow_server, model_name, c) for c in (1.0, 2.0))
    promote(mlflow_server, model_name, v1)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    api = start_api(model_name, redis_url=nowhere, refresh="1")
    assert api.status()["version"] == "1"
    promote(mlflow_server, model_name, v2)
    wait_until(lambda: api.status()["version"] == "2", 3, "v2 served by polling")
    assert api.predict([[0.0]]) == {"version": "2", "predictions": [2.0]}
    assert api.status()["listening"] is False


@pytest.mark.slow
def test_a_version_that_fails_to_load_leaves_the_previous_one_serving(
    mlflow_server, redis_url, model_name, start_api, tmp_path
):
    v1 = register(mlflow_server, model_name, 1.0)
    bad = register_broken(mlflow_server, model_name, tmp_path)
    promote(mlflow_server, model_name, v1)
    events = f"{redis_url}/14"
    api = start_api(model_name, redis_url=events)
    wait_until(lambda: api.status()["listening"], 5, "the API's subscription")

    promote(mlflow_server, model_name, bad)
    publish(events, model_name, bad, v1)
    wait_until(lambda: api.status()["last_error"], 5, "the failed load")
    status = api.status()
    assert status["version"] == v1
    assert f"cannot load {model_name} version {bad}" in status["last_error"]
    assert api.predict([[0.0]]) == {"version": v1, "predictions": [1.0]}
    log = api.log.read_text()
    assert f"cannot load {model_name} version {bad}" in log and '"level": "error"' in log

    promote(mlflow_server, model_name, v1)  # rolled back: the error clears, nothing reloads
    publish(events, model_name, v1, bad)
    wait_until(lambda: api.status()["last_error"] is None, 2, "the error to clear")
    assert api.status()["loaded_at"] == status["loaded_at"]


@pytest.mark.slow
def test_aliases_mode_serves_the_production_alias(mlflow_server, model_name):
    v1, v2 = (register(mlflow_server, model_name, c) for c in (1.0, 2.0))
    MlflowClient(mlflow_server).set_registered_model_alias(model_name, "live", v2)
    served = ServedModel(
        model_name,
        tracking_uri=mlflow_server,
        mode="aliases",
        production_alias="live",
        redis_url="redis://127.0.0.1:9/0",
    )
    assert served.version == v2 == "2"
    assert plain(served.predict([[0.0], [1.0]])) == [2.0, 2.0]
    missing = ServedModel(
        model_name, tracking_uri=mlflow_server, mode="aliases", redis_url="redis://127.0.0.1:9/0"
    )
    assert missing.version is None
    assert missing.status()["last_error"] == (
        f"no Production version of {model_name} (alias @production)"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no tracking uri", "MLFLOW_TRACKING_URI is required but not set"),
        ("port taken", "cannot listen on 127.0.0.1:{port}: Address already in use"),
        ("bad mode", "REGISTRY_MODE must be one of stages, aliases, not 'labels'"),
    ],
)
def test_the_api_refuses_to_start_with_one_clear_line(tmp_path, case, expected):
    env = api_env(None if case == "no tracking uri" else "http://127.0.0.1:9", "redis://x:1/0")
    if case == "bad mode":
        env["REGISTRY_MODE"] = "labels"
    with listening_port() as port:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "registry.serving",
                "--model",
                "churn",
                "--port",
                str(port if case == "port taken" else free_port()),
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr == f"registry-bot serving: {expected.format(port=port)}\n"
    assert result.stdout == ""


@pytest.mark.slow
def test_the_api_reads_its_settings_from_a_dot_env_file(tmp_path, mlflow_server, model_name):
    version = register(mlflow_server, model_name, 4.0)
    promote(mlflow_server, model_name, version)
    (tmp_path / ".env").write_text(f"MLFLOW_TRACKING_URI={mlflow_server}\n")
    port = free_port()
    env = api_env(None, "redis://127.0.0.1:9/0")  # no MLFLOW_TRACKING_URI in the environment
    with (tmp_path / "api.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "registry.serving", "--model", model_name, "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: proc.poll() is None and url_answers(f"{url}/version", status=200), 60, "the API"
        )
        assert requests.get(f"{url}/version", timeout=5).json()["version"] == version
    finally:
        stop(proc)
    assert proc.returncode == 0, (tmp_path / "api.log").read_text()[-2000:]


@contextmanager
def listening_port() -> Iterator[int]:
    """Hold a listening socket on a free port for the duration of a with block."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def test_ready_once_a_version_is_loaded_and_live_before(api_client):
    idle = create_app(served_by(FakeRegistry(None))).test_client()
    assert idle.get("/healthz").status_code == 503
    assert idle.get("/livez").status_code == 200
    assert api_client.get("/healthz").status_code == 200
    assert api_client.get("/healthz").get_json()["version"] == "7"
