"""The evidence reader's reach (SPEC 15): where it reads a version's files from, and how much.

A version's source, a run's artifact location and a logged model's are all set by whoever
logs them. MLflow's client sends every request header provider's headers (the gate's
token among them) to the host an `mlflow-artifacts://<host>/…` location names, so the
reader follows such a location only without a host or with the tracking server's own.
And a listed size can be missing or stale: every file is streamed and cut off one byte
past its limit, never read whole first.

Two small HTTP servers stand in for MLflow's REST API (the far edge): the tracking server,
and another host that counts every request it gets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pytest

from registry.adapters.evidence import MlflowEvidence
from registry.rules.evidence import MAX_TEXT_BYTES, Unreadable
from registry.rules.versions import ModelVersion

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
RUN_ROOT = "mlflow-artifacts:/0/r1/artifacts"
CHUNK = 64 * 1024


class FakeMlflow(ThreadingHTTPServer):
    """Runs/get, artifact listings and downloads; `files` by artifact path; counts bytes sent."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, int] = {}  # path under the artifact root -> its size in bytes
        self.listed_sizes = True
        self.run_root = RUN_ROOT
        self.requests: list[str] = []
        self.sent = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeMlflow
    protocol_version = "HTTP/1.0"  # a body ends when the connection closes: no length

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        self.server.requests.append(self.path)
        if url.path == "/api/2.0/mlflow/runs/get":
            info = {
                "run_id": "r1",
                "run_uuid": "r1",
                "experiment_id": "0",
                "status": "FINISHED",
                "artifact_uri": self.server.run_root,
                "lifecycle_stage": "active",
            }
            return self._json({"run": {"info": info, "data": {}}})
        if url.path == ARTIFACTS:
            return self._list(parse_qs(url.query).get("path", [""])[0])
        if url.path.startswith(ARTIFACTS + "/"):
            return self._file(url.path.removeprefix(ARTIFACTS + "/"))
        return self._json({"error_code": "ENDPOINT_NOT_FOUND"}, 404)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.server.requests.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if urlparse(self.path).path == "/api/2.0/mlflow/logged-models/search":
            return self._json({"models": []})  # the run logged no model of that name
        return self._json({"error_code": "ENDPOINT_NOT_FOUND"}, 404)

    def _list(self, folder: str) -> None:
        prefix = folder.rstrip("/") + "/"
        files = []
        for path, size in self.server.files.items():
            if path.startswith(prefix) and "/" not in path.removeprefix(prefix):
                entry = {"path": path.removeprefix(prefix), "is_dir": False}
                if self.server.listed_sizes:
                    entry["file_size"] = size
                files.append(entry)
        self._json({"files": files} if files else {})

    def _file(self, path: str) -> None:
        size = self.server.files.get(path)
        if size is None:
            return self._json({"error_code": "RESOURCE_DOES_NOT_EXIST"}, 404)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        try:
            for start in range(0, size, CHUNK):
                self.wfile.write(b"x" * min(CHUNK, size - start))
                with self.server.lock:
                    self.server.sent += min(CHUNK, size - start)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reader stopped listening: what it was meant to do

    def _json(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve() -> FakeMlflow:
    server = FakeMlflow()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def mlflow() -> Iterator[FakeMlflow]:
    server = serve()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def elsewhere() -> Iterator[FakeMlflow]:
    """Another host, as an attacker's would be: every request it gets is a leak."""
    server = serve()
    yield server
    server.shutdown()
    server.server_close()


def version(source: str) -> ModelVersion:
    return ModelVersion("churn", "2", "Staging", run_id="r1", source=source)


# -- where: only the tracking server's own host ---------------------------------------------


def test_a_source_naming_another_host_is_not_read_and_that_host_hears_nothing(mlflow, elsewhere):
    reader = MlflowEvidence(mlflow.url)
    for source in (
        f"mlflow-artifacts://{elsewhere.netloc}/0/r1/artifacts/model",
        f"mlflow-artifacts://user@{mlflow.netloc}/0/r1/artifacts/model",
        f"mlflow-artifacts://{mlflow.netloc}.attacker.example/0/r1/artifacts/model",
    ):
        files = reader.model_files(version(source))
        assert files.problem == f"the model's files are not readable from {source!r}"
    assert elsewhere.requests == []


def test_a_source_without_a_host_or_with_the_tracking_servers_own_is_read(mlflow):
    mlflow.files = {"0/r1/artifacts/model/MLmodel": 20}
    reader = MlflowEvidence(mlflow.url)
    for source in (
        "mlflow-artifacts:/0/r1/artifacts/model",
        f"mlflow-artifacts://{mlflow.netloc}/0/r1/artifacts/model",
    ):
        files = MlflowEvidence(mlflow.url).model_files(version(source))
        assert files.problem == "" and files.mlmodel == "x" * 20, files
    assert reader._location("mlflow-artifacts:/0/r1/artifacts/model/")


def test_a_runs_source_whose_run_stores_its_files_on_another_host_is_not_read(mlflow, elsewhere):
    mlflow.run_root = f"mlflow-artifacts://{elsewhere.netloc}/0/r1/artifacts"
    elsewhere.files = {"0/r1/artifacts/model/MLmodel": 20, "0/r1/artifacts/roc.png": 20}
    reader = MlflowEvidence(mlflow.url)
    files = reader.model_files(version("runs:/r1/model"))
    assert files.problem == "the model's files are not readable from 'runs:/r1/model'"
    with pytest.raises(Unreadable, match="not read from"):
        reader.run_artifacts("r1")
    with pytest.raises(Unreadable, match="not read from"):
        reader.read_artifact("r1", "roc.png", 1024)
    assert elsewhere.requests == []


def test_a_runs_source_on_the_tracking_servers_store_is_read_under_its_run(mlflow):
    mlflow.files = {"0/r1/artifacts/model/MLmodel": 20, "0/r1/artifacts/model/requirements.txt": 3}
    files = MlflowEvidence(mlflow.url).model_files(version("runs:/r1/model"))
    assert files.problem == "" and files.mlmodel == "x" * 20 and files.requirements == "xxx"


def test_a_logged_model_stored_on_another_host_is_not_read(mlflow, elsewhere):
    reader = MlflowEvidence(mlflow.url)
    where = f"mlflow-artifacts://{elsewhere.netloc}/0/models/m-abc/artifacts"
    reader.client.get_logged_model = lambda model_id: SimpleNamespace(artifact_location=where)
    files = reader.model_files(version("models:/m-abc"))
    assert files.problem == "the model's files are not readable from 'models:/m-abc'"
    assert elsewhere.requests == []


# -- how much: streamed, cut off past the limit ----------------------------------------------


def test_a_picture_over_its_limit_is_cut_off_not_downloaded_whole(mlflow):
    mlflow.files = {"0/r1/artifacts/big.png": 64 * 1024 * 1024}
    with pytest.raises(Unreadable, match="over the 1.0 MB limit"):
        MlflowEvidence(mlflow.url).read_artifact("r1", "big.png", 1024 * 1024)
    assert mlflow.sent < 16 * 1024 * 1024, mlflow.sent  # a few socket buffers past 1 MB


def test_an_mlmodel_listed_without_a_size_is_cut_off_at_the_text_limit(mlflow):
    mlflow.listed_sizes = False
    mlflow.files = {"0/r1/artifacts/model/MLmodel": 64 * 1024 * 1024}
    files = MlflowEvidence(mlflow.url).model_files(
        version("mlflow-artifacts:/0/r1/artifacts/model")
    )
    assert files.problem.startswith("MLmodel: over the 256 KiB read"), files.problem
    assert mlflow.sent < 16 * 1024 * 1024, mlflow.sent


def test_a_picture_within_its_limit_is_read_whole(mlflow):
    mlflow.files = {"0/r1/artifacts/roc.png": 3 * CHUNK + 5}
    reader = MlflowEvidence(mlflow.url)
    assert [(a.path, a.size) for a in reader.run_artifacts("r1")] == [("roc.png", 3 * CHUNK + 5)]
    assert reader.read_artifact("r1", "roc.png", MAX_TEXT_BYTES) == b"x" * (3 * CHUNK + 5)
    # Listed from the run's own store: never a logged model's that `runs:/` could lead to.
    assert not any("logged-models" in request for request in mlflow.requests)
