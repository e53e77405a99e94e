"""A version's evidence from MLflow's artifacts, and its trend chart drawn with matplotlib.

Only the worker builds this (registry.process.connect): the front doors import neither
MLflow nor matplotlib. Files are read only from the tracking server's own host or the object
stores MLflow writes to, and never past their limit: from MLflow's artifact proxy they are
streamed and cut off there, whatever size the listing gave.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from registry.ports.evidence import ModelFiles
from registry.rules.evidence import MAX_TEXT_BYTES, Artifact, TrendPoint, Unreadable
from registry.rules.versions import ModelVersion

log = logging.getLogger(__name__)

MAX_LISTED = 500  # a run's files looked at for pictures, at most
QUOTE = "'"
MEMO_SIZE = 256  # model files and run metrics kept per process: they do not change
MAX_DEPTH = 4  # folders deep
# Where a model may be read from: MLflow's own stores and the object stores it writes to;
# never the worker's own disk, which a version's source could otherwise name.
REMOTE_SCHEMES = ("mlflow-artifacts:", "runs:", "models:/m-", "s3:", "gs:", "wasbs:", "abfss:")
# Where a `runs:` or `models:/m-` source leads, as a run's or logged model's location says.
STORES = ("mlflow-artifacts:", "s3:", "gs:", "wasbs:", "abfss:")
PROXY = "mlflow-artifacts:"  # MLflow's artifact proxy: read over HTTP from its host
STREAM_CHUNK = 64 * 1024  # bytes read at a time; a file stops one chunk past its limit
CHART_SIZE = (7.0, 3.2)  # inches, at 100 dpi: 700 × 320 pixels


class MlflowEvidence:
    """EvidenceSource over an MLflow tracking server's artifacts."""

    def __init__(self, tracking_uri: str):
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        # A version's model files and a run's metrics do not change once logged: Production's
        # are read once, not for every candidate.
        self._files: OrderedDict[str, ModelFiles] = OrderedDict()
        self._metrics: OrderedDict[str, dict[str, float]] = OrderedDict()

    def model_files(self, mv: ModelVersion) -> ModelFiles:
        """Read the version's MLmodel and requirements.txt (None for each the model lacks)."""
        if mv.source in self._files:
            return self._files[mv.source]
        try:
            found = self._model_files(mv)
        except Unreadable as exc:
            return ModelFiles(problem=f"the model's files are unreadable: {exc}")
        if not found.problem:
            _remember(self._files, mv.source, found)
        return found

    def trend(self, name: str, count: int) -> list[TrendPoint]:
        """Return the model's last `count` versions, oldest first, with their metrics: those
        their event gave, else their run's."""
        with refused_as_unreadable():
            found = self.client.search_model_versions(
                f"name = '{name.replace(QUOTE, QUOTE * 2)}'",  # as the gateway quotes
                max_results=count,
                order_by=["version_number DESC"],
            )
        return [TrendPoint(str(v.version), self._version_metrics(v)) for v in reversed(found)]

    def _version_metrics(self, mv: Any) -> dict[str, float]:
        tagged = _json_metrics((mv.tags or {}).get("registry_bot.metrics", ""))
        if tagged or not mv.run_id:
            return tagged
        if mv.run_id not in self._metrics:
            with refused_as_unreadable():
                metrics = dict(self.client.get_run(mv.run_id).data.metrics)
            _remember(self._metrics, mv.run_id, metrics)
        return self._metrics[mv.run_id]

    def _model_files(self, mv: ModelVersion) -> ModelFiles:
        with refused_as_unreadable():
            location = self._location(mv.source)
        if not location:
            return ModelFiles(problem=f"the model's files are not readable from {mv.source!r}")
        from mlflow.artifacts import list_artifacts

        with refused_as_unreadable():
            found = list_artifacts(artifact_uri=location, tracking_uri=self.tracking_uri)
        listed = {Path(f.path).name: f for f in found}
        texts: dict[str, str | None] = {}
        problems = []
        for name in ("MLmodel", "requirements.txt"):
            info = listed.get(name)
            texts[name] = None
            if info is None or info.is_dir:
                continue
            try:
                texts[name] = self._text(f"{location}/{name}", info.file_size)
            except Unreadable as exc:
                problems.append(f"{name}: {exc}")
        return ModelFiles(texts["MLmodel"], texts["requirements.txt"], "; ".join(problems))

    def run_artifacts(self, run_id: str) -> list[Artifact]:
        """List the run's files, folders included down to MAX_DEPTH, at most MAX_LISTED:
        from the run's own store, checked first (not through `runs:/`, which MLflow may
        follow on to a logged model's store)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        root = self._run_root(run_id)
        repo = get_artifact_repository(root, tracking_uri=self.tracking_uri)
        found: list[Artifact] = []
        folders: list[tuple[str | None, int]] = [(None, 0)]
        while folders and len(found) < MAX_LISTED:
            folder, depth = folders.pop(0)
            with refused_as_unreadable():
                listed = repo.list_artifacts(folder)
            for info in listed:
                if info.is_dir:
                    if depth + 1 < MAX_DEPTH:
                        folders.append((info.path, depth + 1))
                else:
                    found.append(Artifact(info.path, int(info.file_size or -1)))
        return found[:MAX_LISTED]

    def read_artifact(self, run_id: str, path: str, limit: int) -> bytes:
        """Read one of the run's files and return its bytes, unless it is over `limit`."""
        return self._read(f"{self._run_root(run_id)}/{path.lstrip('/')}", limit, None)

    def chart(self, title: str, metrics: Sequence[str], points: Sequence[TrendPoint]) -> bytes:
        """Draw the metrics over the versions, one line each, Production's version marked."""
        return draw_trend(title, metrics, points)

    def _location(self, source: str) -> str:
        """Return where the version's model files are, or '' where they may not be read:
        a `runs:` or `models:/m-` source is followed to its run's or logged model's store,
        and that store is checked as a source naming it would be."""
        if not source.startswith(REMOTE_SCHEMES):
            return ""
        if source.startswith("models:/m-"):
            model_id = source.removeprefix("models:/").split("/", 1)[0]
            where = str(self.client.get_logged_model(model_id).artifact_location)
            return self._checked(where)
        if source.startswith("runs:"):
            run_id, _, path = source.removeprefix("runs:").lstrip("/").partition("/")
            root = self._checked(str(self.client.get_run(run_id).info.artifact_uri))
            return f"{root}/{path.strip('/')}".rstrip("/") if root else ""
        return self._checked(source)

    def _checked(self, location: str) -> str:
        """Return `location` if it may be read, else ''. MLflow's client sends its request
        headers (the gate's token among them) to whatever host an `mlflow-artifacts:`
        location names: only one without a host, or with the tracking server's own, is read."""
        location = location.rstrip("/")
        if not location.startswith(STORES):
            return ""
        if location.startswith(PROXY) and not _own_host(location, self.tracking_uri):
            log.warning("artifacts on another host are not read: %s", location[:200])
            return ""
        return location

    def _run_root(self, run_id: str) -> str:
        """Return where the run's files are, checked; Unreadable where they may not be read."""
        with refused_as_unreadable():
            where = str(self.client.get_run(run_id).info.artifact_uri)
        root = self._checked(where)
        if not root:
            raise Unreadable(f"the run's files are not read from {where[:200]!r}")
        return root

    def _text(self, uri: str, size: Any) -> str:
        if size is not None and int(size) > MAX_TEXT_BYTES:
            raise Unreadable(f"{int(size)} bytes, over the {MAX_TEXT_BYTES // 1024} KiB read")
        try:
            data = self._read(uri, MAX_TEXT_BYTES, size)
        except Over:
            raise Unreadable(f"over the {MAX_TEXT_BYTES // 1024} KiB read") from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise Unreadable("not UTF-8 text") from None

    def _read(self, uri: str, limit: int, size: Any) -> bytes:
        """Read the file at `uri`, at most `limit` bytes whatever its listing said: streamed
        from MLflow's artifact proxy and cut off past the limit; from an object store only
        when its listed size is known and within the limit (its SDK reads a file whole)."""
        if uri.startswith(PROXY):
            return stream_capped(uri, self.tracking_uri, limit)
        if size is None or int(size) < 0:
            raise Unreadable("its size is not listed, so it is not read")
        from mlflow.artifacts import download_artifacts

        with tempfile.TemporaryDirectory(prefix="registry-bot-") as where:
            with refused_as_unreadable():
                local = download_artifacts(
                    artifact_uri=uri, dst_path=where, tracking_uri=self.tracking_uri
                )
            return _bytes(Path(local), limit)


@contextmanager
def refused_as_unreadable() -> Iterator[None]:
    """Turn MLflow's refusal (a 4xx: no such model, run or file) into Unreadable, said in
    the thread; leave MLflow's silence (5xx, 429, no connection) for the task to retry."""
    from mlflow.exceptions import MlflowException, RestException

    try:
        yield
    except RestException as exc:
        status = exc.get_http_status_code()
        if status >= 500 or status == 429:
            raise
        raise Unreadable(_first_line(exc)) from None
    except MlflowException as exc:
        if "Max retries" in str(exc) or "failures occurred" not in str(exc):
            raise
        raise Unreadable("MLflow could not download it") from None


class Over(Unreadable):
    """A file read is over its limit (its size unknown: the read stopped there)."""


def _own_host(location: str, tracking_uri: str) -> bool:
    """Say whether an `mlflow-artifacts:` location is read from the tracking server itself:
    it names no host (MLflow then uses the tracking URI's), or exactly the tracking URI's."""
    netloc = urlsplit(location).netloc
    return netloc == "" or netloc.lower() == urlsplit(tracking_uri).netloc.lower()


def stream_capped(uri: str, tracking_uri: str, limit: int) -> bytes:
    """GET a file from MLflow's artifact proxy as MLflow's own client does (its credentials
    and headers), stopping one chunk past `limit`: a missing or stale listed size never
    makes the worker read a whole large file. A 4xx is Unreadable; a 5xx or 429 is raised
    for the task to retry."""
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import augmented_raise_for_status, http_request

    url = MlflowArtifactsRepository.resolve_uri(uri, tracking_uri)
    response = http_request(get_default_host_creds(url), "", "GET", stream=True)
    with response:
        if response.status_code >= 500 or response.status_code == 429:
            augmented_raise_for_status(response)
        if response.status_code >= 400:
            raise Unreadable(f"MLflow answered {response.status_code} for it")
        data = bytearray()
        for chunk in response.iter_content(chunk_size=STREAM_CHUNK):
            data += chunk
            if len(data) > limit:
                raise Over(f"over the {_size(limit)} limit")
    return bytes(data)


def _remember(memo: OrderedDict, key: str, value: Any) -> None:
    memo[key] = value
    while len(memo) > MEMO_SIZE:
        memo.popitem(last=False)


def _json_metrics(text: str) -> dict[str, float]:
    try:
        found = json.loads(text or "{}")
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {str(k): float(v) for k, v in found.items() if isinstance(v, int | float)}


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _bytes(local: Path, limit: int) -> bytes:
    size = local.stat().st_size
    if size > limit:
        raise Unreadable(f"{_size(size)}, over the {_size(limit)} limit")
    return local.read_bytes()


def _size(count: int) -> str:
    return f"{count / 1024 / 1024:.1f} MB" if count >= 1024 * 1024 else f"{count} bytes"


def draw_trend(title: str, metrics: Sequence[str], points: Sequence[TrendPoint]) -> bytes:
    """Return a PNG of each metric over the versions (oldest left), Production starred."""
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))
    import matplotlib

    matplotlib.use("Agg")  # no display, never an interactive backend
    from matplotlib.figure import Figure

    fig = Figure(figsize=CHART_SIZE, dpi=100)
    ax = fig.add_subplot()
    labels = [f"v{p.version}" for p in points]
    for metric in metrics:
        values = [p.metrics.get(metric, float("nan")) for p in points]
        ax.plot(labels, values, marker="o", label=metric)
        for label, value, point in zip(labels, values, points, strict=True):
            if point.production:
                ax.plot([label], [value], marker="*", markersize=16, color="black", zorder=3)
    production = [i for i, p in enumerate(points) if p.production]
    if production:  # the category axis puts the versions at 0, 1, 2...
        ax.axvline(production[0], color="grey", linestyle=":", label="Production")
    ax.set_title(title[:80])
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
