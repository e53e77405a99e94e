"""The apps MLflow's `--app-name` loads: the gate alone, or after basic-auth.

Each server worker builds the app once: under uvicorn (`mlflow server`'s default) the
FastAPI app that wraps MLflow's Flask app, under `--gunicorn-opts` or `--waitress-opts` the
Flask app itself, as MLflow's own `basic-auth` does. Either way the gate is a
`before_request` hook on MLflow's Flask app, where every registry route is served.

The entry points name module attributes (`gate.app:app`), built when a server first asks
for them, rather than factory functions: for a factory, MLflow 3.17 hands waitress both
`--call` and `module:factory()`, which waitress refuses, so `--waitress-opts` would not
start (MLflow's own basic-auth has that fault). The `mlflow server` command itself only
looks at what the entry point names, and is shown a stand-in.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from flask import Flask

from gate.header import IN_MLFLOW_SERVER
from gate.hook import Gate
from gate.settings import GateSettings, check_start
from registry.process.settings import merged_env

log = logging.getLogger("registry_bot.gate")


def _started_by_mlflow_server() -> bool:
    """Say whether this is the `mlflow server --app-name …` command itself, which imports
    this module (to see whether it names a factory) before it starts any server worker."""
    return sys.argv[1:2] == ["server"] and any(a.startswith("--app-name") for a in sys.argv)


if _started_by_mlflow_server():
    # A missing or malformed token (or another setting) stops `mlflow server` here with one
    # line, rather than every server worker failing as it starts, and restarting, for ever.
    check_start(merged_env(None, ".env"))
    # Every process this server starts inherits the environment, the token with it: its
    # server workers, which need it, and MLflow's job runner, whose MLflow calls go back to
    # this server. The mark keeps registry-bot's header provider from sending the token
    # from any of them; each server worker also drops the token once it has read it.
    os.environ[IN_MLFLOW_SERVER] = "1"


class _NotBuiltHere:
    """What `mlflow server` sees when it looks at the entry point: not a factory, so each
    server is told `gate.app:<name>` as it is; the server's own import builds the app."""

    def __init__(self, name: str):
        self.name = name


def __getattr__(name: str) -> Any:
    """Build `app` or `app_with_basic_auth` once, as the server asks for it (PEP 562)."""
    if name not in APPS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _started_by_mlflow_server():
        return _NotBuiltHere(name)
    if name not in _BUILT:
        _BUILT[name] = APPS[name]()
    return _BUILT[name]


def install(app: Flask, settings: GateSettings | None = None) -> Gate:
    """Add the gate's hook to MLflow's Flask app, after any hook already there (basic-auth's,
    which names the signed-in user first)."""
    hook = Gate(settings or GateSettings())
    app.before_request(hook)
    log.info("registry-bot's gate is on")
    return hook


def create_app() -> Any:
    """`mlflow server --app-name registry-bot`: MLflow behind the gate."""
    from mlflow.server import app

    install(app)
    return _served(app)


def create_app_with_basic_auth() -> Any:
    """`mlflow server --app-name registry-bot-basic-auth`: MLflow's basic-auth, then the gate.

    basic-auth's factory adds its hooks to MLflow's Flask app (and under uvicorn wraps it);
    the gate's hook comes after, so it sees the signed-in user's name, and a request
    basic-auth refuses never reaches it.
    """
    from mlflow.server import app
    from mlflow.server.auth import create_app as basic_auth

    served = basic_auth(app)
    install(app)
    return served


def _served(app: Flask) -> Any:
    """Return what the server runs: the FastAPI wrapper under uvicorn, else the Flask app."""
    from mlflow.environment_variables import _MLFLOW_SGI_NAME
    from mlflow.server.fastapi_app import create_fastapi_app

    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        return create_fastapi_app(app)
    return app


APPS = {"app": create_app, "app_with_basic_auth": create_app_with_basic_auth}
_BUILT: dict[str, Any] = {}
