"""The proof on registry-bot's own MLflow requests: MLflow's request-header provider plugin.

MLflow's client asks every provider of the `mlflow.request_header_provider` entry-point
group for headers on each request; this one adds MLFLOW_GATE_TOKEN whenever the process has
it, and only to a request addressed to the tracking server itself: the scheme, host and
port of MLFLOW_TRACKING_URI. A request to any other host (an artifact location a model
version's source names, say) never carries it. registry-bot's processes put both settings
in their environment however they arrived (`registry.process.connect.carry_gate_token`), so
a token in `.env` is sent too. It composes with MLflow's basic-auth, which uses the
Authorization header.

MLflow does not hand a provider the request's URL: the provider reads it from the frame of
MLflow's `http_request`, which builds every request of MLflow's HTTP client. Called from
anywhere else, or with no tracking URI to compare, it adds nothing (the gate then refuses
registry-bot's write, which is seen at once, rather than sending the token anywhere).
"""

from __future__ import annotations

import os
import sys
from types import FrameType
from urllib.parse import urlsplit

from mlflow.tracking.request_header.abstract_request_header_provider import (
    RequestHeaderProvider,
)
from mlflow.utils import rest_utils

from gate.rules import HEADER

TOKEN = "MLFLOW_GATE_TOKEN"
TRACKING_URI = "MLFLOW_TRACKING_URI"
# Set by `mlflow server --app-name registry-bot` for every process it starts (its workers,
# MLflow's job runner): the token is never sent from within the gated server itself.
IN_MLFLOW_SERVER = "REGISTRY_BOT_IN_MLFLOW_SERVER"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_DEPTH = 8  # frames between MLflow's http_request and this provider (3 in MLflow 3.17)


class GateTokenProvider(RequestHeaderProvider):
    """Adds `X-Registry-Bot-Gate: <MLFLOW_GATE_TOKEN>` to requests to the tracking server."""

    def in_context(self) -> bool:
        return bool(os.environ.get(TOKEN, "").strip()) and IN_MLFLOW_SERVER not in os.environ

    def request_headers(self) -> dict[str, str]:
        token = os.environ.get(TOKEN, "").strip()
        tracking = origin(os.environ.get(TRACKING_URI, ""))
        if not token or tracking is None or origin(_request_url()) != tracking:
            return {}
        return {HEADER: token}


def origin(url: str) -> tuple[str, str, int] | None:
    """Return an http(s) URL's (scheme, host, port); None for anything else."""
    try:
        parts = urlsplit(url.strip())
        scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def _request_url() -> str:
    """Return the URL MLflow's `http_request` is about to call, or '' if not called by it."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_DEPTH):
        if frame is None:
            return ""
        if frame.f_code is rest_utils.http_request.__code__:
            url = frame.f_locals.get("url")
            return url if isinstance(url, str) else ""
        frame = frame.f_back
    return ""
