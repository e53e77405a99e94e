"""The prediction API over a ServedModel: POST /predict, GET /version and GET /metrics."""

from __future__ import annotations

import logging
import time
from numbers import Real
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from werkzeug.exceptions import HTTPException

from registry.serving.model import NoModelLoaded, ServedModel

log = logging.getLogger(__name__)

BODY_SHAPE = 'the body must be JSON like {"inputs": [[1.0, 2.0], ...]}'
NO_VERSION = "none"  # the version label while nothing is loaded


class PredictionMetrics:
    """Requests, errors and latency of /predict by model and version, for alert rules."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "version"]
        self.requests = Counter(
            "registry_bot_prediction_requests",
            "Prediction requests",
            labels,
            registry=self.registry,
        )
        # Failures of the served model (500) or of having none (503), not bad requests (400).
        self.errors = Counter(
            "registry_bot_prediction_errors", "Failed predictions", labels, registry=self.registry
        )
        self.latency = Histogram(
            "registry_bot_prediction_seconds",
            "Time to answer /predict",
            labels,
            registry=self.registry,
        )

    def observe(self, model: str, version: str | None, status: int, seconds: float) -> None:
        """Count one answered /predict request."""
        labels = (model, version or NO_VERSION)
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)
        errors = self.errors.labels(*labels)  # exported at 0 too, so a rate has a series
        if status >= 500:
            errors.inc()


class BadInputs(ValueError):
    """The request body is not {"inputs": a non-empty list of equal-length rows of numbers}."""


def parse_inputs(body: Any) -> list[list[float]]:
    """Return the rows of a /predict body; raise BadInputs naming the first bad field."""
    if not isinstance(body, dict) or "inputs" not in body:
        raise BadInputs(BODY_SHAPE)
    rows = body["inputs"]
    if not isinstance(rows, list) or not rows:
        raise BadInputs("inputs must be a non-empty list of rows")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not row:
            raise BadInputs(f"inputs[{i}] must be a non-empty list of numbers")
        for j, value in enumerate(row):
            # bool is an int in Python, but true/false is no feature value.
            if isinstance(value, bool) or not isinstance(value, Real):
                raise BadInputs(f"inputs[{i}][{j}] must be a number, not {value!r}")
        if len(row) != len(rows[0]):
            raise BadInputs(f"inputs[{i}] has {len(row)} values; inputs[0] has {len(rows[0])}")
    return [[float(value) for value in row] for row in rows]


def plain(predictions: Any) -> Any:
    """Return predictions (numpy arrays, pandas objects, scalars) as JSON-ready lists and floats."""
    if hasattr(predictions, "to_numpy"):  # pandas Series and DataFrame
        predictions = predictions.to_numpy()
    if hasattr(predictions, "tolist"):  # numpy arrays and numpy scalars
        predictions = predictions.tolist()
    if isinstance(predictions, list | tuple):
        return [plain(item) for item in predictions]
    if isinstance(predictions, Real) and not isinstance(predictions, bool):
        return float(predictions)
    return predictions


def create_app(served: ServedModel) -> Flask:
    """Build the Flask app answering for `served`."""
    app = Flask(__name__)
    measured = PredictionMetrics()

    @app.post("/predict")
    def predict():
        started = time.perf_counter()
        body, status = _predict(served)
        version = body.get("version") or served.version  # the version that answered, if any
        measured.observe(served.name, version, status, time.perf_counter() - started)
        return jsonify(body), status

    @app.get("/version")
    def version():
        return jsonify(served.status())

    _probes(app, served)

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(measured.registry), mimetype="text/plain; version=0.0.4")

    @app.errorhandler(Exception)
    def crashed(exc: Exception):
        if isinstance(exc, HTTPException):  # 404, 405 and friends answer as themselves
            return exc
        log.exception(
            "request failed for %s",
            served.name,
            extra={"model": served.name, "version": served.version},
        )
        return jsonify(error="prediction failed", details=f"{type(exc).__name__}: {exc}"), 500

    return app


def _probes(app: Flask, served: ServedModel) -> None:
    """Serve the probes: ready (`/healthz`) once a version is loaded, live (`/livez`) always."""

    @app.get("/healthz")
    def healthz():
        # Ready once a version is loaded: before that every /predict would answer 503.
        status = served.status()
        return jsonify(status), 200 if status["version"] else 503

    @app.get("/livez")
    def livez():
        return jsonify(live=True), 200


def _predict(served: ServedModel) -> tuple[dict[str, Any], int]:
    """Answer one /predict request: the body and its status."""
    try:
        rows = parse_inputs(request.get_json(silent=True))
    except BadInputs as exc:
        return {"error": "bad request", "details": str(exc)}, 400
    try:
        version, predictions = served.predict_with_version(rows)
    except NoModelLoaded as exc:
        return {"error": "no model loaded", "model": served.name, "details": str(exc)}, 503
    except Exception as exc:  # the model's own failure: counted as an error, then answered
        log.exception(
            "request failed for %s",
            served.name,
            extra={"model": served.name, "version": served.version},
        )
        return {"error": "prediction failed", "details": f"{type(exc).__name__}: {exc}"}, 500
    return {"version": version, "predictions": plain(predictions)}, 200
